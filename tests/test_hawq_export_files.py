"""HAWQ's own QONNX exports (`hawq2qonnx`, opset 11, Constant-node parameters, Div/Mul rescales with
non-power-of-two scales): accepted, normalized, made exact by `exact-requant`, compiled bit-exact.

The files come from `hawq_export_files` (made from hawqc's HAWQ modules in the exporter's layout).
Their float semantics is the specification: qonnx's executor agrees with semantic mode on them,
translation validation holds through `hls4ml-prepare`, the C simulation equals hardware mode, and
hardware mode equals semantic mode on every integer value; the last layer's float output
`Mul(acc, s_w * s_prev)` is a declared float part: semantic mode gives exactly the float32 rounding
of the exact product hardware mode computes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hawq_export_files import HAWQ_DOMAIN, export_cnn, export_mlp, round_trips, to_hawq_export

import hawqc
from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.flow.driver import CompileOptions, compile_model
from hawqc.sim.executor import Executor
from hawqc.sim.inputs import draw_inputs


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("hawq_exports")
    mlp, mlp_shape = export_mlp()
    cnn, cnn_shape = export_cnn()
    raw, _ = export_mlp(round_trip_scales=False)
    made = {
        "mlp": to_hawq_export(mlp, mlp_shape),
        "mlp-initializers": to_hawq_export(mlp, mlp_shape, constants="initializers"),
        "mlp-old-branch": to_hawq_export(mlp, mlp_shape, activation_quants=False),
        "mlp-hawq-scales": to_hawq_export(raw, mlp_shape),
        "cnn": to_hawq_export(cnn, cnn_shape),
        "cnn-old-conv": to_hawq_export(cnn, cnn_shape, conv_domain=HAWQ_DOMAIN),
    }
    paths = {}
    for name, proto in made.items():
        paths[name] = folder / f"{name}.onnx"
        onnx.save(proto, paths[name])
    return {"paths": paths, "protos": made, "models": {"mlp": mlp, "cnn": cnn}}


def inputs_for(model, n: int = 64) -> np.ndarray:
    return next(iter(draw_inputs(model, n, seed=3).values()))


def test_files_have_the_exporters_layout(files):
    proto = files["protos"]["mlp"]
    assert {(o.domain, o.version) for o in proto.opset_import} == {("", 11), (HAWQ_DOMAIN, 1)}
    assert not proto.graph.initializer
    ops = [n.op_type for n in proto.graph.node if n.op_type != "Constant"]
    assert ops[:8] == ["Quant", "Div", "Quant", "MatMul", "Quant", "Add", "Mul", "Relu"]
    assert {n.domain for n in proto.graph.node if n.op_type == "Quant"} == {HAWQ_DOMAIN}
    scales = [onnx.numpy_helper.to_array(n.attribute[0].t) for n in proto.graph.node if n.op_type == "Constant"]
    assert any(s.size == 1 and np.frexp(float(s.reshape(-1)[0]))[0] != 0.5 for s in scales)  # non-powers of two


@pytest.mark.parametrize("name", ["mlp", "mlp-initializers", "cnn", "cnn-old-conv"])
def test_load_normalizes_domains_and_constants(files, name):
    model = hawqc.load(files["paths"][name])
    assert all(node.op_type != "Constant" for node in model.graph)
    assert {node.domain for node in model.graph} <= {"", "qonnx.custom_op.general"}
    assert HAWQ_DOMAIN not in model.opset_imports
    if name == "cnn-old-conv":  # the older exporter's hawq2qonnx::Conv is the standard Conv
        assert [n.domain for n in model.graph if n.op_type == "Conv"] == [""]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_semantic_mode_equals_qonnx_on_the_loaded_file(files, name):
    # qonnx's own shape inference cannot read the raw file (hawq2qonnx ops, Constant parameters):
    # it runs the file as hawqc loads it (domains renamed, Constants made initializers, nothing else).
    from hawqc.sim.qonnx_oracle import QonnxOracle

    model = hawqc.load(files["paths"][name])
    x = inputs_for(model, 24)
    ours = next(iter(Executor(model).run({"input": x}).values()))
    theirs = next(iter(QonnxOracle(model).run(x).values()))
    assert np.array_equal(ours.view(np.uint32), theirs.astype(np.float32).view(np.uint32))


@pytest.fixture(scope="module")
def prepared(files) -> dict[str, tuple[object, dict]]:
    out = {}
    for name in ("mlp", "cnn"):
        model = hawqc.load(files["paths"][name])
        records = hawqc.PassManager.parse("hls4ml-prepare,infer-precision", validate=300).run(model)
        out[name] = (model, {k: v for r in records for k, v in r.statistics.items()})
    return out


def test_hls4ml_prepare_makes_every_requantization_exact_and_validates(prepared):
    # Without exact-requant, infer-precision refuses the first non-power-of-two activation Quant.
    assert prepared["mlp"][1]["requantizations-made-exact"] == 2
    assert prepared["cnn"][1]["requantizations-made-exact"] == 1
    for model, _ in prepared.values():
        assert not [n for n in model.graph if n.op_type == "Div"]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_hardware_equals_semantic_on_integer_parts(prepared, name):
    model, _ = prepared[name]
    x = inputs_for(model, 256)
    semantic = next(iter(Executor(model).run({"input": x}).values()))
    hardware = next(iter(Executor(model, mode="hardware").run({"input": x}).values()))
    # The float output is float32(acc * k) in semantic mode, the exact product in hardware mode.
    assert np.array_equal(np.asarray(hardware, dtype=np.float32).view(np.uint32), semantic.view(np.uint32))
    # Every integer value (the last accumulator, the codes before it) is equal bit for bit.
    last_mul = model.graph.outputs[0].producer()
    accumulator = last_mul.inputs[0]
    model.graph.outputs.append(accumulator)
    try:
        acc_semantic = Executor(model).run({"input": x})[accumulator.name]
        acc_hardware = Executor(model, mode="hardware").run({"input": x})[accumulator.name]
    finally:
        model.graph.outputs.pop()
    assert np.array_equal(np.asarray(acc_hardware, dtype=np.float64), acc_semantic.astype(np.float64))
    assert len(np.unique(acc_semantic)) > 20  # the inputs exercise the layers


@pytest.mark.parametrize(
    ("name", "backend"), [("mlp", "vitis"), ("mlp", "vivado"), ("mlp", "catapult"), ("cnn", "vitis")]
)
def test_compiles_bit_exact(files, tmp_path, name, backend):
    result = compile_model(files["paths"][name], tmp_path / "proj", CompileOptions(backend=backend, verify_samples=200))
    assert result.verify.bit_exact and result.verify.samples == 200
    # Hardware and semantic modes part only at declared float parts: the output Mul among them.
    assert result.verify.passed
    output_mul = hawqc.load(files["paths"][name]).graph.outputs[0].name
    assert output_mul in result.verify.modes.declared_inexact


def test_hawq_calibrated_scales_compile_to_the_exact_meaning(files):
    # The hidden scales as HAWQ computed them: the next layer reads some codes 1 ulp off after Div.
    scale = next(
        onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in files["protos"]["mlp-hawq-scales"].graph.node
        if n.op_type == "Constant" and n.output[0].startswith("/act1/")
    )
    assert not round_trips(float(scale.reshape(-1)[0]), 0, 255)
    model = hawqc.load(files["paths"]["mlp-hawq-scales"])
    hawqc.PassManager.parse("hls4ml-prepare", validate=100).run(model)  # refusals leave the graph exact
    with pytest.raises(UnsupportedModelError, match=r"node '/act\d/Quant_\d+' .*requantization not provably exact"):
        hawqc.PassManager.parse("cleanup,exact-requant{strict=true}").run(hawqc.load(files["paths"]["mlp-hawq-scales"]))
    # exact-requant cannot keep the file's float32 meaning; integer-requant keeps its exact meaning.
    result = compile_model(files["paths"]["mlp-hawq-scales"], files["paths"]["mlp"].parent / "exact", CompileOptions(verify_samples=100))
    assert result.verify.passed and result.verify.exact.equal, result.verify.summary()
    assert result.report.requantizations


def test_older_branch_without_activation_quants_is_refused(files, tmp_path):
    with pytest.raises((UnsupportedModelError, UserInputError), match="graph input 'input' is used without a Quant"):
        compile_model(files["paths"]["mlp-old-branch"], tmp_path / "proj", CompileOptions())
