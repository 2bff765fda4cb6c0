"""The QONNX/FINN model-zoo layouts of `finn_models` (TFC w1a1/w1a2/w2a2, the KWS MLP w3a3, the
UNSW-NB15 MLP w2a2): valid ONNX, in the layout their docstrings describe, run by qonnx's
`execute_onnx`, and hawqc's semantic executor against it on 200 inputs per model.

hawqc's semantic executor cannot run `Shape` and `Gather` today, so it runs each model with the
same weights and a constant Reshape target (`computed_reshape=False`), checked equal to the computed
one under qonnx; qonnx always runs the layout of the zoo's file.

Where bit-for-bit holds and where it cannot (measured on these seeds, 200 inputs per model):
- every quantizer's scale 1.0, as in the zoo's TFC files: identical bits, also at batch 200;
- float (non-power-of-two) scales: every quantizer output (the activations) is identical; the
  float tails after the last quantizer (the last MatMul on scaled codes, TensorNorm, a float bias)
  differ in the last bits, because onnxruntime's MLAS and numpy sum a dot product of inexact
  float32 products in different orders (`hawqc/sim/ops.py`, "Linear algebra"). Per sample: all of
  TFC's and KWS's 200 samples differ somewhere, by at most 1e-6 (relative 2.2e-6 on TFC), and in
  6-8 of 200 TFC samples the top class changes: their two best logits are 1-2 ulp apart (low-bit
  dot products tie often). At batch 200, 8 of 200 samples differ (by at most 2.4e-7); qonnx at
  batch 1 and qonnx at batch 200 differ from each other in 199-200 of 200 samples. That is the float32 difference
  issue 14's contract declares, not a bug: we bound it here instead of asserting bits.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from finn_models import MODELS, KwsSpec, TfcSpec, UnswSpec, build, is_power_of_two, kws_mlp, tfc, tfc_inputs, unsw_nb15_mlp, write_all

import hawqc
from hawqc.ir.ops.quantizer import quantizer
from hawqc.sim import Executor
from hawqc.sim.qonnx_oracle import QonnxOracle

QUANTIZERS = {"Quant", "BipolarQuant"}


def qonnx_outputs(proto: onnx.ModelProto, x: np.ndarray, per_sample: bool = True) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QonnxOracle(proto).run(x, per_sample=per_sample)


def hawqc_loaded(proto: onnx.ModelProto, tmp_path: Path, stem: str) -> ir.Model:
    """The model as hawqc's loader gives it from a file (read, normalized, shapes inferred, verified)."""
    path = tmp_path / f"{stem}.onnx"
    onnx.save(proto, path)
    return hawqc.load(path)


def output_of(proto: onnx.ModelProto) -> str:
    return proto.graph.output[0].name


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bytes (so -0.0 differs from 0.0)."""
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    differ = got.reshape(-1).view(np.uint32) != want.reshape(-1).view(np.uint32)
    assert not differ.any(), f"{int(differ.sum())} of {got.size} elements differ, first at {int(np.flatnonzero(differ)[0])}"


def with_activations_as_outputs(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy whose graph also outputs every quantizer of data (not of a weight)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    constants = {t.name for t in out.graph.initializer}
    names = [n.output[0] for n in out.graph.node if n.op_type in QUANTIZERS and n.input[0] not in constants]
    outputs = {o.name for o in out.graph.output}
    out.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names if n not in outputs)
    return out, names


def zoo_scale_tfc(name: str, *, computed_reshape: bool = True) -> tuple[onnx.ModelProto, np.ndarray]:
    spec = TfcSpec(weight_bits=int(name[5]), act_bits=int(name[7]), zoo_scales=True, computed_reshape=computed_reshape)
    return tfc(spec), tfc_inputs(spec, 200)


# ---- the files themselves ------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_model_is_valid_onnx(name: str) -> None:
    for computed in (True, False):
        proto, x = build(name, 4, computed_reshape=computed)
        onnx.checker.check_model(proto, full_check=True)
        assert x.dtype == np.float32 and len(x) == 4


@pytest.mark.parametrize("name", [m for m in MODELS if m != "unsw_nb15_mlp_w2a2"])
def test_reshape_target_is_computed_in_the_graph(name: str) -> None:
    """`x.view(x.shape[0], -1)` as torch.onnx writes it, not a constant shape; its constants are
    initializers, as Brevitas' export leaves them."""
    proto, _ = build(name, 1)
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:5] == ["Shape", "Gather", "Unsqueeze", "Concat", "Reshape"] and "Constant" not in ops
    reshape = next(n for n in proto.graph.node if n.op_type == "Reshape")
    assert reshape.input[1] not in {t.name for t in proto.graph.initializer}


@pytest.mark.parametrize("name", MODELS)
def test_scales_are_not_powers_of_two(name: str) -> None:
    """Every quantizer of data and every weight quantizer of more than 1 bit has a float scale that
    is not a power of two (the UNSW output's BipolarQuant has Brevitas' constant 1.0)."""
    proto, _ = build(name, 1)
    model = ir.from_proto(proto)
    quantizers = [n for n in model.graph if n.op_type in QUANTIZERS]
    assert len(quantizers) >= 8
    for node in quantizers:
        if node.outputs[0].name == output_of(proto) and name == "unsw_nb15_mlp_w2a2":
            continue
        scale = quantizer(node).scale
        assert scale is not None and not any(is_power_of_two(s) for s in np.ravel(scale)), (node.name, scale)


def test_tfc_layout() -> None:
    """Preprocessing 2x - 1, an input quantizer, bias-free layers with BatchNorm, a TensorNorm
    whose Div is by a float (not a power of two); 1 bit is BipolarQuant, 2 bits a signed narrow Quant."""
    proto = tfc(TfcSpec(weight_bits=1, act_bits=2))
    ops = [n.op_type for n in proto.graph.node]
    assert ops[5:8] == ["Mul", "Sub", "Quant"]
    assert ops[-4:] == ["Sub", "Div", "Mul", "Add"]
    assert ops.count("MatMul") == 4 and ops.count("BatchNormalization") == 3 and ops.count("BipolarQuant") == 4
    assert ops.count("Transpose") == 4 and "Add" not in ops[:-1]  # QuantLinear(bias=False)
    quants = [n for n in proto.graph.node if n.op_type == "Quant"]
    assert all({a.name: a for a in n.attribute}["narrow"].i == 1 for n in quants)
    divisor = next(n for n in proto.graph.node if n.op_type == "Div").input[1]
    (std,) = [onnx.numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == divisor]
    assert not is_power_of_two(std.item())
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 8, 8]
    assert proto.opset_import[0].version == 9


def test_kws_layout() -> None:
    """The notebook's 8-bit input quantizer, per-channel weight scales but at the output, ReLU
    activations unsigned and not narrow, `QuantLinear`s with a float bias as `Gemm(transB=1)`."""
    proto = kws_mlp()
    model = ir.from_proto(proto)
    data_quants = [n for n in model.graph if n.op_type == "Quant" and n.inputs[0].const_value is None]
    first = quantizer(data_quants[0])
    assert first.bits == 8 and first.signed and first.narrow and float(first.scale) == np.float32(0.8298503756523132)
    assert all(quantizer(n).bits == 3 and not quantizer(n).signed and not quantizer(n).narrow for n in data_quants[1:])
    weight_scales = [np.shape(quantizer(n).scale) for n in model.graph if n.op_type == "Quant" and n.inputs[0].const_value is not None]
    assert weight_scales == [(24, 1), (24, 1), (24, 1), ()]
    gemms = [n for n in model.graph if n.op_type == "Gemm"]
    assert len(gemms) == 4 and all(n.attributes.get_int("transB", 0) == 1 for n in gemms)
    assert all(n.inputs[2].const_value is not None for n in gemms)  # the float bias
    assert "Transpose" not in [n.op_type for n in model.graph]


def test_unsw_input_has_no_quantizer() -> None:
    """The point of this model: `(x + 1) / 2` on the raw input, then a MatMul; no quantizer on the way."""
    proto = unsw_nb15_mlp()
    readers = [n for n in proto.graph.node if "global_in" in n.input]
    assert [n.op_type for n in readers] == ["Add"]
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:2] == ["Add", "Div"] and ops[-1] == "BipolarQuant"
    assert ops.count("BatchNormalization") == 3 and ops.count("Relu") == 3 and ops.count("Gemm") == 4


def test_sizes_are_configurable() -> None:
    """The zoo's real sizes build too (784 -> 64 -> 64 -> 64 -> 10, 490 -> ... -> 12, 600 -> ... -> 1)."""
    real_tfc = tfc(TfcSpec(image=(28, 28), hidden=(64, 64, 64)))
    assert [d.dim_value for d in real_tfc.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 28, 28]
    real_kws = kws_mlp(KwsSpec(mfcc=(10, 49), hidden=(64, 64, 64)))
    assert [d.dim_value for d in real_kws.graph.input[0].type.tensor_type.shape.dim] == [1, 1, 10, 49]
    real_unsw = unsw_nb15_mlp(UnswSpec(features=600, hidden=(64, 64, 64)))
    assert [d.dim_value for d in real_unsw.graph.input[0].type.tensor_type.shape.dim] == [1, 600]
    for proto in (real_tfc, real_kws, real_unsw):
        onnx.checker.check_model(proto, full_check=True)


def test_builders_are_deterministic() -> None:
    assert build("kws_mlp_w3a3", 3)[0].SerializeToString() == build("kws_mlp_w3a3", 3)[0].SerializeToString()


# ---- execution: qonnx, and hawqc's semantic executor against it ------------------------------------


@pytest.mark.parametrize("name", ["tfc_w2a2", "kws_mlp_w3a3"])
def test_constant_reshape_target_is_the_computed_one(name: str) -> None:
    """Under qonnx, the model with the computed Reshape and its constant-target twin give the same bits."""
    computed, x = build(name, 20)
    static, _ = build(name, 20, computed_reshape=False)
    assert_identical(qonnx_outputs(computed, x)[output_of(computed)], qonnx_outputs(static, x)[output_of(static)])


@pytest.mark.parametrize("name", ["tfc_w1a1", "tfc_w1a2", "tfc_w2a2"])
def test_tfc_with_the_zoo_scales_matches_qonnx_bit_for_bit(name: str, tmp_path: Path) -> None:
    """All quantizer scales 1.0 as in the zoo's files: every dot product is an exact integer sum,
    and the float BatchNorms and TensorNorm are elementwise, so hawqc's executor (on the model loaded
    by hawqc's loader) gives qonnx's bits, per sample and at batch 200."""
    computed, x = zoo_scale_tfc(name)
    static, _ = zoo_scale_tfc(name, computed_reshape=False)
    got = Executor(hawqc_loaded(static, tmp_path, name)).run(x)[output_of(static)]
    assert_identical(got, qonnx_outputs(computed, x)[output_of(computed)])
    assert_identical(got, qonnx_outputs(computed, x, per_sample=False)[output_of(computed)])
    assert len(np.unique(got.argmax(axis=1))) >= 5, "the model should not collapse to one class"


@pytest.mark.parametrize("name", ["tfc_w1a1", "tfc_w1a2", "tfc_w2a2", "kws_mlp_w3a3"])
def test_float_scales_activations_match_qonnx_bit_for_bit(name: str, tmp_path: Path) -> None:
    """Float scales: every activation quantizer's output is qonnx's, bit for bit, on 200 inputs;
    the float logits after the last quantizer agree to rounding (see the module docstring)."""
    computed, x = build(name)
    static, _ = build(name, computed_reshape=False)
    computed_probe, names = with_activations_as_outputs(computed)
    static_probe, static_names = with_activations_as_outputs(static)
    want = qonnx_outputs(computed_probe, x)
    got = Executor(hawqc_loaded(static_probe, tmp_path, name)).run(x)
    for ours, theirs in zip(static_names, names):
        assert_identical(got[ours], want[theirs])
        assert len(np.unique(got[ours])) > 1, f"activation {ours} is constant"
    logits, want_logits = got[output_of(static)], want[output_of(computed)]
    np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=2e-6)
    assert len(np.unique(logits, axis=0)) == len(x)


def test_unsw_matches_qonnx_bit_for_bit(tmp_path: Path) -> None:
    """No Reshape, so hawqc's loader takes the model as it is; its single binary output equals qonnx's
    on all 200 inputs (both classes occur)."""
    proto, x = build("unsw_nb15_mlp_w2a2")
    probe, names = with_activations_as_outputs(proto)
    got = Executor(hawqc_loaded(probe, tmp_path, "unsw")).run(x)
    want = qonnx_outputs(probe, x)
    for name in names:
        assert_identical(got[name], want[name])
    assert set(np.unique(got["global_out"])) == {-1.0, 1.0}


def test_zoo_scale_variant_only_changes_scales() -> None:
    """`zoo_scales` keeps the layout and the drawn weights (BatchNorm statistics are recalibrated); it sets every quantizer's scale to 1.0."""
    spec = TfcSpec(weight_bits=2, act_bits=2)
    ours, zoo = tfc(spec), tfc(dataclasses.replace(spec, zoo_scales=True))
    assert [n.op_type for n in ours.graph.node] == [n.op_type for n in zoo.graph.node]
    zoo_model = ir.from_proto(zoo)
    assert all(float(np.max(quantizer(n).scale)) == 1.0 for n in zoo_model.graph if n.op_type in QUANTIZERS)


def test_write_all_gives_the_files_to_try_hawqc_on(tmp_path: Path) -> None:
    """`python tests/finn_models.py DIR`: every model, its variants and its inputs, as the builders give them."""
    written = write_all(str(tmp_path))
    assert len(written) == 15 and len(list(tmp_path.glob("*_inputs.npy"))) == len(MODELS)
    assert (tmp_path / "kws_mlp_w3a3.onnx").read_bytes() == build("kws_mlp_w3a3", 1)[0].SerializeToString()
    for path in written:
        onnx.checker.check_model(onnx.load(path))
