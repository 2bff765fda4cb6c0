"""Translation validation: every pass keeps the model's meaning, bit for bit.

The semantic executor runs the graph before and after the pass on the same inputs (drawn inside
the input quantizer's range); outputs must be identical to the bit (compared as raw float32 bits,
so that -0.0 and 0.0 or two NaNs are told apart).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import JET_TAGGER, data_model

from hawqc.errors import UnsupportedModelError
from hawqc.frontends.onnx import load_onnx, load_onnx_text
from hawqc.ir.interfaces import has_interfaces
from hawqc.ir.io import to_proto
from hawqc.passes.manager import PassManager
from hawqc.passes.registry import BUILTIN_PASSES, BUILTIN_PIPELINES, default_registry
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

QUANT = 'qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 1, rounding_mode: string = "ROUND">'

# Small graphs aimed at what each pass rewrites.
GRAPHS = {
    "brevitas_dense_per_channel": f"""<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
g (float[1,3] x) => (float[1,2] y)
   <float[2,3] w = {{0.3,-1.2,2.6,0.9,-0.4,1.7}}, float[2,1] s = {{0.5, 0.25}}, float z = {{0}}, float b = {{4}},
    float[2] bias = {{0.125, -0.375}}, float xs = {{0.0625}}, float xb = {{8}}>
{{
   xq = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (x, xs, z, xb)
   wq = {QUANT} (w, s, z, b)
   y = Gemm <transB: int = 1> (xq, wq, bias)
}}""",
    "gemm_alpha_beta_row_scale": f"""<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
g (float[1,3] x) => (float[1,2] y, float[1,2] y2)
   <float[2,3] w = {{0.3,-1.2,2.6,0.9,-0.4,1.7}}, float[3] s = {{0.5, 0.25, 0.125}}, float z = {{0}}, float b = {{5}},
    float[1,2] c = {{1.5, -2}}, float[2,3] w2 = {{1,2,3,4,5,6}}>
{{
   wq = {QUANT} (w, s, z, b)
   y = Gemm <transB: int = 1, alpha: float = 0.5, beta: float = 2.0> (x, wq, c)
   y2 = Gemm <transB: int = 1> (x, w2)
}}""",
    "identities_and_dead_code": """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y)
   <float[4] a = {1, 2, 3, 4}, float[4] c = {0.5, 0.5, 0.5, 0.5}>
{
   i1 = Identity (x)
   ac = Mul (a, c)
   i2 = Identity (ac)
   dead = Sub (i1, a)
   r = Relu (i1)
   y = Add (r, i2)
}""",
}

MODELS = {
    "jet_tagger": lambda: load_onnx(JET_TAGGER),
    "bnn_model_fc_1layer": lambda: load_onnx(data_model("bnn_model_fc_1layer.onnx")),
    # three_layer_pytorch.onnx ends in Softmax, which the executor runs from the CNN issue on.
    **{name: (lambda text=text, name=name: load_onnx_text(text, source=name)) for name, text in GRAPHS.items()},
}
# Passes that change the outputs on purpose (read-as-hawq, default-precision, input-precision...) are
# tested in their own files.
PIPELINES = sorted(name for name in BUILTIN_PASSES if not default_registry().lookup(name).changes_meaning) + sorted(BUILTIN_PIPELINES)
# infer-precision types quantized graphs only; these have a float input, a Gemm or a BipolarQuant, and
# it must refuse them (naming the node) rather than annotate part of the graph.
EXPECTED_REFUSALS = {
    "infer-precision": {"bnn_model_fc_1layer", "brevitas_dense_per_channel", "gemm_alpha_beta_row_scale",
                        "identities_and_dead_code"},
}  # fmt: skip


def run_semantic(model, inputs):
    executor = Executor(model)
    outputs = executor.run(inputs)
    return [outputs[name] for name in executor.output_names]


def assert_bit_identical(before, after, what):
    assert len(before) == len(after)
    for index, (a, b) in enumerate(zip(before, after)):
        assert a.shape == b.shape, f"{what}: output {index} shape {a.shape} became {b.shape}"
        differs = a.view(np.uint32) != b.view(np.uint32)
        if differs.any():
            first = tuple(int(i) for i in np.argwhere(differs)[0])
            pytest.fail(f"{what}: output {index} differs first at {first}: {a[first]!r} -> {b[first]!r}")


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_pass_preserves_semantics(model_name, pipeline):
    model = MODELS[model_name]()
    inputs = draw_inputs(model, 256, seed=1)
    before = run_semantic(model, inputs)
    if model_name in EXPECTED_REFUSALS.get(pipeline, ()):
        with pytest.raises(UnsupportedModelError):
            PassManager.parse(pipeline).run(model)
        return
    PassManager.parse(pipeline, validate=64).run(model)
    if has_interfaces(model):
        # integer-requant took the model to integers: its exact meaning is kept (translation
        # validation checked it in exact mode), its float32 arithmetic is not.
        return
    assert_bit_identical(before, run_semantic(model, inputs), f"{pipeline} on {model_name}")


def test_gemm_to_matmul_rewrites_every_gemm_of_the_real_models():
    for name in ("bnn_model_fc_1layer.onnx", "three_layer_pytorch.onnx", "conv2d_small_keras.onnx"):
        model = load_onnx(data_model(name))
        PassManager.parse("gemm-to-matmul").run(model)
        assert not any(node.op_type == "Gemm" for node in model.graph), name


def test_gemm_transposed_input_matches_onnxruntime():
    # transA needs a Transpose node, which the semantic executor does not run yet: onnxruntime,
    # bit-identical on these standard ops, checks this rewrite instead.
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[3,1] x) => (float[1,2] y)
   <float[3,2] w = {1.5,2,-3,4,5.25,6}, float[2] c = {1, -1}>
{
   y = Gemm <transA: int = 1, alpha: float = 0.25, beta: float = 0.5> (x, w, c)
}"""
    model = load_onnx_text(text)
    x = np.random.default_rng(0).standard_normal((3, 1)).astype(np.float32)

    def run(m):
        session = ort.InferenceSession(to_proto(m).SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    before = run(model)
    PassManager.parse("gemm-to-matmul").run(model)
    assert [node.op_type for node in model.graph] == ["Transpose", "MatMul", "Mul", "Mul", "Add"]
    assert_bit_identical([before], [run(model)], "gemm-to-matmul transA")


def test_passes_report_no_change_on_a_clean_graph():
    model = load_onnx(JET_TAGGER)
    PassManager.parse("default").run(model)
    records = PassManager.parse("default").run(model)
    assert not any(record.changed for record in records), [r.name for r in records if r.changed]


def test_gemm_with_inexact_factors_is_left_alone():
    # alpha = 0.75 scales inexactly: MatMul then Mul would round twice where Gemm rounds once.
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3] x) => (float[1,2] y)
   <float[3,2] w = {1.5,2,-3,4,5.25,6}, float[2] c = {1, -1}>
{
   y = Gemm <alpha: float = 0.75> (x, w, c)
}"""
    model = load_onnx_text(text)
    (record,) = PassManager.parse("gemm-to-matmul").run(model)
    assert not record.changed and record.statistics["gemms-kept-inexact"] == 1
    assert [node.op_type for node in model.graph] == ["Gemm"]


def test_remove_dropout_matches_onnxruntime():
    # The semantic executor has no Dropout (the pass removes it before anything runs); onnxruntime
    # runs the graph before and after, with the Dropout in inference mode.
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y)
   <bool off = {0}, float ratio = {0.5}, float[4] b = {1, -2, 3, -4}>
{
   a = Dropout (x, ratio, off)
   s = Add (a, b)
   y = Dropout (s)
}"""
    model = load_onnx_text(text)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)

    def run(m):
        session = ort.InferenceSession(to_proto(m).SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": x})[0]

    before = run(model)
    (record,) = PassManager.parse("remove-dropout").run(model)
    assert record.statistics == {"dropouts-removed": 2}
    assert [node.op_type for node in model.graph] == ["Add"]
    assert_bit_identical([before], [run(model)], "remove-dropout")
