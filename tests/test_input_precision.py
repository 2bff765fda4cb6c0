"""`--input-precision fixed<W,I>`: a graph input without a quantizer is taken as that type (a Quant
on it, `hawqc.passes.input_precision`), compiles, and the C simulation equals hardware mode bit for
bit, ties and out-of-range values included; the refusal without it names it; wrong values are one
line naming the option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import JET_TAGGER, data_model, one_error_line, run_cli

from hawqc.cli import main
from hawqc.errors import UserInputError
from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir.input_precision import parse_input_precision
from hawqc.ir.io import write_model
from hawqc.ir.qtypes import FixedType
from hawqc.passes.manager import PassManager
from hawqc.sim import Executor

# A float-input MLP: x (no Quant) -> MatMul with quantized weights (+ a float bias on the weights'
# grid) -> Relu -> Quant -> MatMul -> Quant.
FLOAT_INPUT_MLP = """<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
mlp (float[1,4] x) => (float[1,3] y)
   <float[4,5] w1 = {0.5,-1,0.25,2,-0.75,1,0.5,-0.5,1.5,-2,0.25,0.75,-1.25,1,0.5,-1.5,2,0.125,-0.25,1},
    float[5] b1 = {0.5,-0.25,0,1,-1},
    float[5,3] w2 = {1,-0.5,0.25,0.75,1,-1,-0.25,0.5,1.5,1,-1,0.5,0.25,0.25,-0.75},
    float s1 = {0.125}, float sa = {0.25}, float so = {0.0625}, float z = {0}, float b6 = {6}, float b8 = {8}>
{
   w1q = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (w1, s1, z, b6)
   m1 = MatMul (x, w1q)
   a1 = Add (m1, b1)
   r1 = Relu (a1)
   q1 = qonnx.custom_op.general.Quant <signed: int = 0, narrow: int = 0, rounding_mode: string = "ROUND"> (r1, sa, z, b6)
   w2q = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (w2, s1, z, b6)
   m2 = MatMul (q1, w2q)
   y = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (m2, so, z, b8)
}"""
FLOAT_MODEL = data_model("three_layer_pytorch.onnx")  # float weights and a float input
LOGITS = "default,remove-output-softmax"


@pytest.fixture
def mlp_file(tmp_path) -> Path:
    path = tmp_path / "mlp.onnx"
    write_model(load_onnx_text(FLOAT_INPUT_MLP), path)
    return path


def ties_and_overflows(lsb: float, low: float, high: float) -> np.ndarray:
    """Every grid point and half-LSB tie from beyond `low` to beyond `high`, and far outside: where
    rounding modes differ and where saturation acts. Four features a sample."""
    values = [k * lsb / 2 for k in range(int(2 * (low - 4 * lsb) / lsb), int(2 * (high + 4 * lsb) / lsb))]
    values += [100.0, -100.0, 1e-9, -1e-9, 1.5 * lsb + 1e-7, -1.5 * lsb - 1e-7]
    values += [0.0] * (-len(values) % 4)
    return np.asarray(values, dtype=np.float32).reshape(-1, 4)


# ---- the option's spelling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, exponent, signed, narrow, rounding",
    [
        ("fixed<8,3>", -5, True, False, "ROUND"),
        ("ap_fixed<8,3,AP_RND_CONV,AP_SAT>", -5, True, False, "ROUND"),
        ("ufixed<8,0,TRN,SAT>", -8, False, False, "FLOOR"),
        ("fixed<6,8,TRN_ZERO,SAT_SYM>", 2, True, True, "DOWN"),
        ("fixed<10,2,RND_INF>", -8, True, False, "HALF_UP"),
        ("fixed<10,2,RND_ZERO>", -8, True, False, "HALF_DOWN"),
    ],
)
def test_the_type_is_a_quant(text, exponent, signed, narrow, rounding):
    quant = parse_input_precision(text)
    assert (quant.scale_exponent, quant.signed, quant.narrow, quant.rounding_mode) == (exponent, signed, narrow, rounding)
    # Precision inference reads the Quant back as the very type the user gave.
    assert FixedType.from_quant(quant.bit_width, 2.0**exponent, signed, narrow, rounding) == quant.fixed


@pytest.mark.parametrize(
    "text, why",
    [
        ("fixed<8>", "not a fixed-point type"),
        ("fixed<1,1>", "width must be"),
        ("fixed<8,3,TRN,WRAP>", "saturation mode WRAP"),
        ("fixed<8,3,TRN,SAT_ZERO>", "saturation mode SAT_ZERO"),
        ("ufixed<8,3,TRN,SAT_SYM>", "saturation mode SAT_SYM"),
        ("fixed<8,3,RND>", "rounding mode RND has no QONNX Quant equivalent"),
        ("fixed<8,3,RND_MIN_INF>", "rounding mode RND_MIN_INF"),
    ],
)
def test_bad_spellings_name_the_option(text, why):
    with pytest.raises(UserInputError, match=f"^input_precision '.*': .*{why}|^input_precision .*{why}"):
        parse_input_precision(text)


@pytest.mark.parametrize("value", ["fixed<8>", "fixed<8,3,TRN,WRAP>", "fixed<8,3,RND>", "float"])
def test_bad_option_values_exit_2_in_one_line(tmp_path, capsys, mlp_file, value):
    code, _, err = run_cli(capsys, main, mlp_file, "-o", tmp_path / "proj", "--input-precision", value)
    assert code == 2 and "--input-precision" in one_error_line(err)
    assert not (tmp_path / "proj").exists()


def test_an_unquantized_input_is_refused_naming_both_options(tmp_path, capsys, mlp_file):
    code, _, err = run_cli(capsys, main, mlp_file, "-o", tmp_path / "proj")
    line = one_error_line(err)
    assert code == 2 and "graph input 'x' is used without a Quant (its range is unbounded)" in line
    assert "--input-precision" in line and "--default-precision" in line
    assert not (tmp_path / "proj").exists()


# ---- the pass -------------------------------------------------------------------------------------


def test_hardware_mode_takes_the_input_as_the_type():
    """Round half to even at LSB 2**-5, clamp to [-128, 127] codes: an independent numpy
    computation of the input, in both executions."""
    model = load_onnx_text(FLOAT_INPUT_MLP)
    records = PassManager.parse("input-precision{type=fixed<8,3>}").run(model)
    assert records[0].changed and records[0].statistics == {"inputs-quantized": 1}
    x = ties_and_overflows(2**-5, -4, 4)
    expected = np.clip(np.round(x.astype(np.float64) * 32), -128, 127) / 32
    for mode in ("semantic", "hardware"):
        executor = Executor(model, mode=mode)
        values = executor.run({"x": x}, keep_intermediates=True)
        np.testing.assert_array_equal(values["x_quantized"], expected)
    # Run again, the pass finds no unquantized input: nothing changes.
    assert not PassManager.parse("input-precision{type=fixed<8,3>}").run(model)[0].changed


def test_the_pass_runs_under_translation_validation_and_keeps_quantized_readers():
    """It declares changes_meaning: validation takes the graph after it as the new reference. A
    reader that is a Quant keeps the raw input (no second rounding)."""
    model = load_onnx_text("""<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
g (float[1,2] x) => (float[1,2] y)
   <float[2,2] w = {0.5,-1,2,0.25}, float s = {0.25}, float z = {0}, float b = {4}>
{
   xq = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (x, s, z, b)
   m = MatMul (x, w)
   y = Add (m, xq)
}""")
    records = PassManager.parse("input-precision{type=fixed<8,3>}", validate=16).run(model)
    assert records[0].changed and records[0].name == "input-precision{type=fixed<8,3>}"
    inputs = {node.op_type: [v.name for v in node.inputs] for node in model.graph if node.name != "x_input_quant"}
    assert inputs["Quant"][0] == "x" and inputs["MatMul"][0] == "x_quantized"


# ---- compile, C simulation ------------------------------------------------------------------------


@pytest.mark.parametrize("spelling, lsb, low, high", [("fixed<8,3>", 2**-5, -4, 4), ("ufixed<6,2,TRN,SAT>", 2**-4, 0, 4)])
def test_float_input_mlp_compiles_bit_exact(tmp_path, capsys, mlp_file, spelling, lsb, low, high):
    out = tmp_path / "proj"
    code, text, err = run_cli(capsys, main, mlp_file, "-o", out, "--input-precision", spelling, "--verify", "200")
    assert code == 0, err
    report = json.loads((out / "hawqc_report.json").read_text())
    assert report["verify"]["bit_exact"] and report["verify"]["hardware_vs_semantic"]["equal"]
    assert "input 'x' taken as" in text
    assert any(p["name"].startswith("input-precision{type=") for p in report["passes"])
    # The input port is the type, with its rounding and saturation (what the C bridge converts into).
    fixed = parse_input_precision(spelling).fixed
    assert f"typedef {fixed.ap_cpp()} input_t;" in (out / "firmware" / "defines.h").read_text()
    # Ties and values beyond the range: the bridge's conversion rounds and saturates as hardware mode.
    inputs = tmp_path / "ties.npy"
    np.save(inputs, ties_and_overflows(lsb, low, high))
    code, text, err = run_cli(capsys, main, mlp_file, "-o", out, "--force", "--input-precision", spelling, "--inputs", inputs)
    assert code == 0, err
    report = json.loads((out / "hawqc_report.json").read_text())
    assert report["verify"]["bit_exact"] and report["verify"]["samples"] == len(np.load(inputs))


def test_with_default_precision_the_inputs_take_the_input_precision(tmp_path, capsys):
    out = tmp_path / "proj"
    code, text, err = run_cli(
        capsys, main, FLOAT_MODEL, "-o", out, "-p", LOGITS, "--input-precision", "fixed<10,5>", "--default-precision", "fixed<16,6>"
    )
    assert code == 0, err
    # The input is quantized before the default precision's step runs: it is no float input. The
    # float32 weights, read by quantized values only, have exact types of at most 32 bits, so
    # nothing is left for the default precision (hawqc.ir.default_precision's rule).
    assert "input '0' taken as fixed<10,5,RND_CONV,SAT>" in text
    assert "--default-precision fixed<16,6,RND_CONV,SAT>: the model has no float parts; nothing changed" in text
    assert "typedef ap_fixed<10,5,AP_RND_CONV,AP_SAT,0> input_t;" in (out / "firmware" / "defines.h").read_text()


def test_a_quantized_model_is_unchanged_by_the_option(tmp_path, capsys):
    code, text, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--input-precision", "fixed<8,3>")
    assert code == 0, err
    assert "--input-precision fixed<8,3,RND_CONV,SAT>: every graph input is quantized already; nothing changed" in text
    report = json.loads((tmp_path / "proj" / "hawqc_report.json").read_text())
    assert not any(p["name"].startswith("input-precision") for p in report["passes"])


def test_python_names_the_argument_and_the_command_line_the_flag(tmp_path, mlp_file):
    import hawqc

    with pytest.raises(UserInputError) as info:
        hawqc.compile(mlp_file, tmp_path / "p", hawqc.CompileOptions(input_precision="fixed<8,3,TRN,WRAP>"))
    assert str(info.value).startswith("input_precision 'fixed<8,3,TRN,WRAP>': saturation mode WRAP")
    with pytest.raises(UserInputError) as info:
        hawqc.compile(mlp_file, tmp_path / "p")
    assert "with input_precision (e.g. fixed<8,3>" in str(info.value) and "--" not in str(info.value)
    assert not (tmp_path / "p").exists()
