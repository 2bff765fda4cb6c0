"""integer-requant: float scales become integer codes and proven dyadic requantizations; hardware
mode of the lowered model equals the original model's exact meaning on every sample."""

from __future__ import annotations

import re
from dataclasses import replace
from fractions import Fraction

import float_scale_models as models
import numpy as np
import pytest
from conftest import one_error_line, run_cli

from hawqc.cli import main
from hawqc.errors import UnsupportedModelError
from hawqc.ir.dyadic_requant import Dyadic
from hawqc.ir.interfaces import input_codes, output_affines
from hawqc.ir.io import to_text, write_model
from hawqc.passes.integer_requant import REFUSAL_KEY
from hawqc.passes.manager import PassManager
from hawqc.passes.validation import TranslationValidationError

VARIANTS = {
    "mlp per-channel weights, float bias, relu": lambda: models.mlp(0),
    "mlp per-tensor weights, quantized output": lambda: models.mlp(1, per_channel=False, output_quant=True),
    "mlp signed activations, no relu, 8-bit": lambda: models.mlp(2, relu=False, act_bits=8, weight_bits=8),
    "mlp 2-bit": lambda: models.mlp(3, act_bits=2, weight_bits=2),
    "cnn conv, batchnorm, relu, maxpool, flatten": lambda: models.cnn(0),
    "cnn 8-bit": lambda: models.cnn(1, act_bits=8, weight_bits=8),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_translation_validation_keeps_the_exact_meaning(name):
    model = VARIANTS[name]()
    records = PassManager.parse("cleanup,integer-requant", validate=200).run(model)
    statistics = next(r.statistics for r in records if r.name == "integer-requant")
    assert statistics["requantizations-made-dyadic"] >= 1 and statistics["input-code-ports"] == 1


@pytest.mark.parametrize("name", VARIANTS)
def test_hardware_mode_of_the_lowered_model_equals_the_exact_meaning(name):
    meaning = models.hardware_against_exact(VARIANTS[name](), 300)
    assert meaning.comparison.samples == 300
    assert meaning.comparison.equal, meaning.comparison.summary()


def test_float32_semantics_differs_from_the_exact_meaning_and_is_only_reported():
    # The drawn inputs include host values on ties between codes: float32's x / s lands on either side.
    meaning = models.hardware_against_exact(models.mlp(1, per_channel=False, output_quant=True), 300)
    assert meaning.comparison.equal
    assert 0 < meaning.comparison.float32_mismatches < meaning.comparison.samples


def test_the_input_port_takes_codes_of_the_exact_quotient():
    model = models.mlp(0)
    scale = float(np.float32(next(v for v in model.graph.initializers.values() if v.name == "s1").const_value.numpy()))
    PassManager.parse("cleanup,integer-requant").run(model)
    codes = input_codes(model)["x"]
    assert codes.scale == Fraction(scale) and (codes.bits, codes.signed, codes.min_code, codes.max_code) == (8, True, -128, 127)
    k = np.arange(-130, 131)
    x = (k[:, None] * scale).astype(np.float32)  # within a float32 rounding of code k
    assert np.array_equal(codes.encode(x)[:, 0], np.clip(k, -128, 127).astype(np.float32))
    # On an exact tie (a multiple of scale / 2 that float32 holds), half to even.
    tie = np.array([Fraction(5, 2) * Fraction(scale)], dtype=object)
    if float(tie[0]) == Fraction(float(tie[0])) and Fraction(float(np.float32(float(tie[0])))) == tie[0]:
        assert codes.encode(np.array([float(tie[0])], dtype=np.float32))[0] == 2
    assert "round_half_even(x / scale)" in codes.describe()


def test_an_output_without_quantizer_carries_integers_and_its_affine_map():
    model = models.mlp(0)
    PassManager.parse("cleanup,integer-requant").run(model)
    (name, affine), = output_affines(model).items()
    assert affine.scale.shape == (1, 5) and all(s > 0 for s in affine.scale.reshape(-1))
    assert any(o != 0 for o in affine.offset.reshape(-1))  # the float bias


def test_multiplier_widths_are_recorded_on_the_requantization():
    model = models.cnn(0)
    records = PassManager.parse("cleanup,integer-requant").run(model)
    statistics = next(r.statistics for r in records if r.name == "integer-requant")
    bits = [int(n.metadata_props["hawqc.requant.multiplier_bits"]) for n in model.graph if "hawqc.requant.multiplier_bits" in n.metadata_props]
    assert bits and max(bits) == statistics["widest-multiplier-bits"] and max(bits) < 24


def test_a_multiplier_not_proven_fewest_is_said_so(tmp_path, capsys, monkeypatch):
    """`Dyadic.fewest` is False only on ranges too wide to rule out a smaller exponent (forced here):
    the compile says which requantizations, and the report marks them."""
    import json

    import hawqc.passes.integer_requant.rewriter as integer_requant

    real_solve = integer_requant.solve
    monkeypatch.setattr(integer_requant, "solve", lambda q: replace(real_solve(q), fewest=False))
    write_model(models.mlp(0), tmp_path / "m.onnx")
    code, out, _ = run_cli(capsys, main, tmp_path / "m.onnx", "-o", tmp_path / "proj")
    assert code == 0
    report = json.loads((tmp_path / "proj" / "hawqc_report.json").read_text())
    assert report["requantizations"] and not any(r["fewest_bits_proven"] for r in report["requantizations"])
    line = next(line for line in out.splitlines() if "not proven the fewest bits" in line)
    assert all(r["node"] in line for r in report["requantizations"])


def test_a_wrong_requantization_is_caught_by_translation_validation(monkeypatch):
    import hawqc.passes.integer_requant.rewriter as integer_requant

    real_solve = integer_requant.solve

    def off_by_one(q):
        d = real_solve(q)
        return Dyadic(d.m + 1, d.c, d.e)

    monkeypatch.setattr(integer_requant, "solve", off_by_one)
    with pytest.raises(TranslationValidationError, match="changed the exact meaning"):
        PassManager.parse("cleanup,integer-requant", validate=300).run(models.mlp(0, act_bits=8, weight_bits=8))


def _refused(builder_steps, match: str) -> None:
    model = builder_steps()
    with pytest.raises(UnsupportedModelError, match=match):
        PassManager.parse("cleanup,integer-requant{strict=true}").run(model)
    # Not strict: the model is left as it was, the reason recorded for the compile driver.
    model = builder_steps()
    PassManager.parse("cleanup").run(model)
    before = to_text(model)
    records = PassManager.parse("integer-requant").run(model)
    assert records[0].statistics["models-refused"] == 1
    assert re.search(match, model.metadata_props[REFUSAL_KEY])
    del model.metadata_props[REFUSAL_KEY]
    assert to_text(model) == before


def test_a_compile_reports_why_float_scales_were_left(tmp_path, capsys):
    b = models.FloatScaleBuilder(0)
    h = b.quant("x", b.scale(), 8)
    h = b.node("Sigmoid", [h])
    write_model(b.build((4,), h), tmp_path / "m.onnx")
    code, out, err = run_cli(capsys, main, tmp_path / "m.onnx", "-o", tmp_path / "proj")
    assert code == 2 and not (tmp_path / "proj").exists()
    line = one_error_line(err)
    assert "pass 'integer-requant'" in line and "(Sigmoid): its input" in line and "no exact integer form" in line


def test_a_nonzero_zero_point_is_refused_naming_the_node():
    def build():
        b = models.FloatScaleBuilder(0)
        h = b.quant("x", b.scale(), 8)
        args = [h, b.const(np.float32(0.07), "s"), b.const(np.float32(3), "z"), b.const(np.float32(4), "b")]
        h = b.node("Quant", args, "qonnx.custom_op.general", signed=1, narrow=0, rounding_mode="ROUND")
        return b.build((4,), h)

    _refused(build, r"node 'quant\d+' .*non-zero zero point")


@pytest.mark.parametrize("op,relu", [("Add", False), ("Sub", False), ("Add", True)])
def test_a_requantized_sum_of_two_scales_gets_one_multiplier_per_branch(op, relu):
    """A residual sum of values with different float scales, read by a quantizer (through a Relu or
    not): each branch multiplied by its own dyadic, proven on every pair of branch values
    (dyadic_requant.solve_sum); translation validation and hardware mode against the exact meaning."""
    model = models.residual(0, op, relu)
    records = PassManager.parse("cleanup,integer-requant{strict=true}", validate=300).run(model)
    assert records[-1].statistics["requantizations-made-dyadic"] == 3
    (add,) = [n for n in model.graph if n.op_type == "Add" and "hawqc.requant.multiplier_bits" in n.metadata_props]  # a Sub becomes an Add
    assert 1 <= int(add.metadata_props["hawqc.requant.multiplier_bits"]) <= 24
    assert all(v.producer().op_type == "Mul" for v in add.inputs)  # the two branch multipliers
    assert [n.op_type for n in model.graph].count("Relu") == relu
    meaning = models.hardware_against_exact(models.residual(0, op, relu), 300)
    assert meaning.comparison.equal, meaning.comparison.summary()


@pytest.mark.parametrize("op,relu", [("Add", True), ("Sub", False)])
def test_a_requantized_sum_compiles_bit_exact(op, relu, tmp_path):
    from hawqc.flow.driver import CompileOptions, compile_model

    write_model(models.residual(1, op, relu), tmp_path / "m.onnx")
    result = compile_model(tmp_path / "m.onnx", tmp_path / "proj", CompileOptions(backend="vitis", verify_samples=200))
    assert result.verify.bit_exact and result.verify.exact.equal and result.verify.passed, result.verify.summary()
    assert len(result.report.requantizations) == 3
    # The test bench holds what the port takes: the input quantizer's 8-bit codes, not host values.
    bench = np.loadtxt(tmp_path / "proj" / "tb_data" / "tb_input_features.dat", ndmin=2)
    assert np.all(bench == np.round(bench)) and bench.min() >= -128 and bench.max() <= 127 and np.any(bench != 0)


def test_adding_values_of_different_scales_is_refused():
    def build():
        b = models.FloatScaleBuilder(0)
        h = b.quant("x", b.scale(), 8)
        h2 = b.quant(h, np.float32(0.0517), 4)
        h = b.node("Add", [h, h2])
        return b.build((4,), h)

    _refused(build, r"\(Add\): adds values quantized with different scales")


def test_an_op_without_an_integer_form_is_refused_naming_it():
    def build():
        b = models.FloatScaleBuilder(0)
        h = b.quant("x", b.scale(), 8)
        h = b.node("Sigmoid", [h])
        return b.build((4,), h)

    _refused(build, r"\(Sigmoid\): its input .* not a power of two, and Sigmoid has no exact integer form")


def test_a_quantizer_of_a_value_computed_in_float_is_refused():
    def build():
        b = models.FloatScaleBuilder(0)
        h = b.node("Sigmoid", ["x"])
        h = b.quant(h, b.scale(), 8)
        return b.build((4,), h)

    _refused(build, r"quantizes .* which is computed in float, in a model with scales that are not powers of two")


def test_running_it_again_changes_nothing():
    model = models.cnn(0)
    PassManager.parse("cleanup,integer-requant").run(model)
    records = PassManager.parse("integer-requant").run(model)
    assert not records[0].changed and records[0].statistics["models-refused"] == 0


def test_an_output_on_a_finer_grid_is_mapped_back_exactly():
    # A power-of-two binary quantizer ends the graph: the port carries +-1/4, the map must not scale it twice.
    b = models.FloatScaleBuilder(4)
    h = b.quant("x", b.scale(), 8)
    h = b.dense(h, 6, 3, 4, per_channel=True)
    h = b.node("BipolarQuant", [h, b.const(np.float32(0.25), "s")], "qonnx.custom_op.general")
    meaning = models.hardware_against_exact(b.build((6,), h), 200)
    assert meaning.comparison.equal, meaning.comparison.summary()


def test_a_per_channel_requantization_then_a_flatten_keeps_the_exact_meaning():
    # Found by the property run (seed 4): exact mode kept the per-channel (all 1) scale's shape
    # through the Flatten of the unit-scale Quant, and translation validation crashed.
    text = """<ir_version: 7, opset_import: ["" : 11, "qonnx.custom_op.general" : 1]>
g (float[1,2,2] x) => (float[1,4] y)
   <float s1 = {2.6386063}, float z = {0}, float b1 = {1}, int64[3] shape = {1,2,2}, float[2] s2 = {0.6308501,0.20182535}>
{
   q1 = qonnx.custom_op.general.Quant <narrow: int = 0, rounding_mode: string = "ROUND", signed: int = 1> (x, s1, z, b1)
   f = Flatten (q1)
   r = Reshape (f, shape)
   q2 = qonnx.custom_op.general.Quant <narrow: int = 0, rounding_mode: string = "ROUND", signed: int = 0> (r, s2, z, b1)
   y = Flatten (q2)
}"""
    from hawqc.frontends.onnx import load_onnx_text

    model = load_onnx_text(text)
    records = PassManager.parse("default", validate=64).run(model)
    assert next(r for r in records if r.name == "integer-requant").changed


def test_per_channel_powers_of_two_at_a_requantization_carry_the_codes():
    # Found by the property run (seed 6): an output quantizer with per-channel scales {0.25, 2} (both
    # powers of two) kept its scale in the graph, but the value tracks one exponent (the first
    # channel's), so channel 1 was read 8x too large (2 -> 16). Unequal powers of two now give codes.
    text = """<ir_version: 7, opset_import: ["" : 11, "qonnx.custom_op.general" : 1]>
g (float[1,1,1,1] x) => (float[1,2,1,1] y)
   <float s1 = {2.6386063}, float z = {0}, float b1 = {1}, float[2,1,1,2] w = {-1.2617002,-2.2338445,-1.8925502,-1.9744693},
    float sw = {1.2617002}, float[2] bias = {-0.925,1.25}, float[1,2,1,1] s2 = {0.25,2}>
{
   q = qonnx.custom_op.general.Quant <narrow: int = 0, rounding_mode: string = "ROUND", signed: int = 1> (x, s1, z, b1)
   wq = qonnx.custom_op.general.Quant <narrow: int = 0, rounding_mode: string = "ROUND", signed: int = 1> (w, sw, z, b1)
   c = Conv <kernel_shape: ints = [1, 2], pads: ints = [0, 0, 0, 1]> (q, wq, bias)
   r = Relu (c)
   y = qonnx.custom_op.general.Quant <narrow: int = 0, rounding_mode: string = "ROUND", signed: int = 0> (r, s2, z, b1)
}"""
    from hawqc.frontends.onnx import load_onnx_text

    model = load_onnx_text(text)
    records = PassManager.parse("cleanup,integer-requant", validate=64).run(model)
    assert records[-1].changed
    (quant,) = [n for n in model.graph if n.outputs[0].name == "y"]
    assert np.all(quant.inputs[1].const_value.numpy() == 1)  # codes, mapped back by the output's affine map


def test_exact_mode_multiplies_padding_zeros_with_wide_integers():
    # Found by the property run (seed 6): a Conv with float weights on a BatchNorm's exact output has
    # integers beyond int64; the padding's zeros were numpy int64 scalars in the object array, and
    # numpy's matmul overflowed on their products with Python ints instead of growing.
    text = """<ir_version: 7, opset_import: ["" : 11, "qonnx.custom_op.general" : 1]>
g (float[1,1,1,1] x) => (float[1,1,1,1] y)
   <float s1 = {2.6386063}, float z = {0}, float b1 = {1}, float k = {0.54097354}, float[1] g1 = {-1.3132702},
    float[1] b = {0.82551116}, float[1] m = {0.21327156}, float[1] v = {0.1314025}, float[1,1,1,3] w = {1.0625,0.5625,0.2875},
    float[1] bias = {-0.925}>
{
   q = qonnx.custom_op.general.Quant <narrow: int = 0, rounding_mode: string = "ROUND", signed: int = 1> (x, s1, z, b1)
   h = Mul (k, q)
   n = BatchNormalization (h, g1, b, m, v)
   c = Conv <kernel_shape: ints = [1, 3], pads: ints = [0, 1, 0, 1]> (n, w, bias)
   y = Relu (c)
}"""
    from hawqc.frontends.onnx import load_onnx_text
    from hawqc.sim import Executor
    from hawqc.sim.exact import ExactExecutor

    model = load_onnx_text(text)
    out = ExactExecutor(model).run(np.array([[[[0.7]]]], dtype=np.float32))["y"]
    semantic = Executor(model).run(np.array([[[[0.7]]]], dtype=np.float32))["y"]
    assert abs(float(out.to_float64().reshape(-1)[0]) - float(semantic.reshape(-1)[0])) < 1e-5


def test_a_sum_read_by_a_binary_quantizer_is_a_threshold_on_both_branches():
    # A 1-bit signed Quant of a sum of two scales is a threshold (the bipolar rule), which needs the
    # sum's integers: the branches are aligned, not left waiting for a per-branch requantization.
    b = models.FloatScaleBuilder(3)
    x = b.quant("x", b.scale(), 8)
    h1 = b.quant(b.dense(x, 16, 12, 4, True), b.scale(), 6)
    h2 = b.quant(b.dense(x, 16, 12, 4, False), np.float32(0.0517), 5)
    model = b.build((16,), b.quant(b.node("Add", [h1, h2]), np.float32(0.5), 1))
    try:
        PassManager.parse("cleanup,integer-requant{strict=true}", validate=200).run(model)
    except UnsupportedModelError as refusal:  # an alignment too wide for float32 is refused, never wrong
        assert "common integer form outgrows" in str(refusal)
