"""Float parts (`--default-precision`, `--tolerance`): float models compile, the C simulation equals
hardware mode bit for bit, and verify reports (and with a tolerance accepts) the difference from
float semantics; quantized models are untouched by the option."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import JET_TAGGER, data_model

from hawqc.cli import main
from hawqc.errors import UserInputError
from hawqc.frontends.load import load_model
from hawqc.ir import default_precision
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import FixedType
from hawqc.passes.manager import PassManager
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

MLP = data_model("three_layer_pytorch.onnx")
KERAS_CNN = data_model("conv2d_small_keras.onnx")
LOGITS = "default,remove-output-softmax"
FIXED_16_6 = "fixed<16,6>"


def run_main(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors (a value that is not a number)
        code = exit.code
    out, err = capsys.readouterr()
    return code, out, err


def prepared(path: Path, spelling: str | None = FIXED_16_6):
    model = load_model(path, None)
    PassManager.parse(LOGITS).run(model)
    if spelling is not None:
        default_precision.attach(model, default_precision.parse_default_precision(spelling))
    return model


# ---- the option's spelling ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("fixed<16,6>", FixedType(16, 6, True, "RND_CONV", "SAT")),
        ("ap_fixed<16,6,AP_TRN,AP_WRAP>", FixedType(16, 6, True, "TRN", "WRAP")),
        ("ufixed<8,0,RND>", FixedType(8, 0, False, "RND", "SAT")),
        (" fixed< 12 , -2 , TRN_ZERO , SAT_SYM > ", FixedType(12, -2, True, "TRN_ZERO", "SAT_SYM")),
    ],
)
def test_spellings(text, expected):
    assert default_precision.parse_default_precision(text) == expected


@pytest.mark.parametrize("text", ["fixed<16>", "float", "fixed<1,1>", "fixed<40,6>", "fixed<16,6,ROUND>", "fixed<16,6,RND,CLAMP>"])
def test_bad_spellings_name_the_option(text):
    with pytest.raises(UserInputError, match="^default_precision"):
        default_precision.parse_default_precision(text)


@pytest.mark.parametrize(
    "args, option",
    [
        (["--default-precision", "fixed<16>"], "--default-precision"),
        (["--default-precision", "fixed<16,6,FLOOR>"], "--default-precision"),
        (["--tolerance", "-1"], "--tolerance"),
        (["--tolerance", "nan"], "--tolerance"),
        (["--tolerance", "two"], "--tolerance"),
    ],
)
def test_bad_option_values_exit_2_in_one_line(tmp_path, capsys, args, option):
    code, _, err = run_main(capsys, MLP, "-o", tmp_path / "proj", "-p", LOGITS, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hawqc: error: ") and option in lines[0]
    assert not (tmp_path / "proj").exists()


def test_a_float_model_without_the_option_is_refused_naming_its_input(tmp_path, capsys):
    code, _, err = run_main(capsys, MLP, "-o", tmp_path / "proj", "-p", LOGITS)
    assert code == 2 and "graph input '0' is used without a Quant" in err


# ---- precision inference --------------------------------------------------------------------------


def test_float_parts_of_the_mlp():
    model = prepared(MLP)
    precision = infer_types(model)
    parts = precision.float_parts
    fixed = FixedType(16, 6, True, "RND_CONV", "SAT")
    assert parts is not None and parts.fixed == fixed
    assert parts.inputs == ["0"] and precision.types["0"] == fixed
    # Four Dense results (after their bias) are cast; the dot products before the bias are not.
    assert len(parts.casts) == 4 and all(precision.types[name] == fixed for name in parts.casts)
    weights = {v.name: v for v in model.graph.initializers.values()}
    assert set(parts.constants) == set(weights)  # every weight and bias is float
    for name, facts in parts.constants.items():
        original = weights[name].const_value.numpy().astype(np.float64)
        rounded = precision.constants[name]
        # Round half to even at LSB 2**-10, then clamp: what a Quant would do.
        expected = np.clip(np.round(original * 1024), -(2**15), 2**15 - 1) / 1024
        np.testing.assert_array_equal(rounded, expected)
        assert facts.changed == int(np.count_nonzero(rounded != original))
        assert facts.max_error == pytest.approx(float(np.abs(rounded - original).max()))
        assert facts.max_error <= 2**-11
    # The accumulator of the first Dense is exact for the rounded weights and the input's range.
    first = weights["1_transposed"]
    w = precision.constants[first.name]
    bias = precision.constants["2"]
    reach = (np.abs(w).sum(axis=0) * 32 + np.abs(bias)).max()  # |x| <= 32
    accum = precision.accumulators["9"]
    assert accum.lsb_exponent == -20 and accum.holds(Fraction(-reach), Fraction(reach))
    assert not FixedType(accum.width - 1, accum.integer - 1, True).holds(Fraction(-reach), Fraction(reach))


def test_hardware_mode_is_the_float_model_in_the_default_precision():
    """An independent numpy computation of the MLP in fixed<16,6> (round half to even, saturate)."""
    model = prepared(MLP)
    precision = infer_types(model)

    def cast(x):
        return np.clip(np.round(x * 1024), -(2**15), 2**15 - 1) / 1024

    x = draw_inputs(model, 300, seed=3)["0"].astype(np.float64) * 16  # beyond the range, too
    values = cast(x)
    for weight, bias in (("1_transposed", "2"), ("3_transposed", "4"), ("5_transposed", "6"), ("7_transposed", "8")):
        values = cast(values @ precision.constants[weight] + precision.constants[bias])
        if weight != "7_transposed":
            values = np.maximum(values, 0)
    hardware = Executor(model, mode="hardware")
    np.testing.assert_array_equal(hardware.run({"0": x.astype(np.float32)})[hardware.output_names[0]], values)


def test_trn_wrap_casts_as_hls4ml_default():
    model = prepared(MLP, "fixed<8,2,TRN,WRAP>")  # narrow, so that sums wrap
    precision = infer_types(model)
    hardware = Executor(model, mode="hardware")
    x = np.linspace(-3, 3, 16 * 40, dtype=np.float32).reshape(40, 16)
    values = hardware.run({"0": x}, keep_intermediates=True)

    def wrap(v):
        codes = np.floor(v * 64)
        return ((codes + 128) % 256 - 128) / 64

    np.testing.assert_array_equal(values["0"], wrap(x.astype(np.float64)))
    exact = values["0"] @ precision.constants["1_transposed"] + precision.constants["2"]
    np.testing.assert_array_equal(values["9"], wrap(exact))
    assert np.any(wrap(exact) != np.floor(exact * 64) / 64)  # some did wrap


def test_a_quantized_model_has_no_float_parts():
    model = load_model(JET_TAGGER, None)
    PassManager.parse("default").run(model)
    before = infer_types(model)
    default_precision.attach(model, FixedType(16, 6, True))
    after = infer_types(model)
    assert after.float_parts is None
    assert after.types == before.types and after.accumulators == before.accumulators


# ---- compile, C simulation, verify ----------------------------------------------------------------


def compile_float(capsys, model, out, *args):
    code, text, err = run_main(capsys, model, "-o", out, "-p", LOGITS, "--default-precision", FIXED_16_6, "--force", *args)
    assert not err.strip() or "error" not in err, err
    return code, text, json.loads((out / "hawqc_report.json").read_text())


@pytest.mark.parametrize("backend", ["vitis", "vivado", "catapult"])
def test_mlp_verifies_within_its_measured_tolerance(tmp_path, capsys, backend):
    code, text, report = compile_float(capsys, MLP, tmp_path / "p", "--backend", backend, "--verify", "300")
    verify = report["verify"]
    modes = verify["hardware_vs_semantic"]
    assert verify["bit_exact"] and verify["mismatched_samples"] == 0  # C simulation == hardware mode
    assert modes["float_parts"] == "fixed<16,6,RND_CONV,SAT>" and modes["mismatch_rate"] > 0
    measured = modes["max_lsb_diff"]
    assert 0 < measured < 8
    assert code == 1 and "not bit-exact against float semantics" in text and f"{measured:g} output LSB" in text
    assert report["float_parts"]["weights_changed"] > 4000 and report["float_parts"]["inputs"] == ["0"]
    assert "float parts computed in fixed<16,6,RND_CONV,SAT>" in text
    tolerance = float(np.ceil(measured))
    code, text, report = compile_float(capsys, MLP, tmp_path / "p", "--backend", backend, "--verify", "300", "--tolerance", tolerance)
    assert code == 0 and f"within --tolerance {tolerance:g}" in text
    assert report["verify"]["hardware_vs_semantic"]["within_tolerance"] is True
    code, text, _ = compile_float(capsys, MLP, tmp_path / "p", "--backend", backend, "--verify", "300", "--tolerance", measured / 2)
    assert code == 1 and f"beyond --tolerance {measured / 2:g}" in text


def test_keras_cnn_verifies_within_its_measured_tolerance(tmp_path, capsys):
    code, text, report = compile_float(capsys, KERAS_CNN, tmp_path / "p", "--verify", "200")
    modes = report["verify"]["hardware_vs_semantic"]
    assert report["verify"]["bit_exact"] and code == 1
    assert report["float_parts"]["inputs"] == ["conv2d_1_input_0"] and len(report["float_parts"]["casts"]) == 2
    code, _, _ = compile_float(capsys, KERAS_CNN, tmp_path / "p", "--verify", "200", "--tolerance", np.ceil(modes["max_lsb_diff"]))
    assert code == 0


def _project_files(outdir: Path) -> dict[str, bytes]:
    """Every file but the report, hls4ml's random stamps masked (every write draws new ones)."""
    files = {}
    for path in sorted(outdir.rglob("*")):
        if path.is_file() and path.name != "hawqc_report.json":
            files[str(path.relative_to(outdir))] = re.sub(rb"(LIB_STAMP=|Stamp: )\w+", rb"\1*", path.read_bytes())
    return files


def _without_times(report: dict) -> dict:
    report = dict(report, lowering_seconds=0, csim=None)
    report["passes"] = [dict(p, seconds=0) for p in report["passes"]]
    return report


def test_quantized_model_is_unchanged_by_the_option(tmp_path, capsys):
    out = tmp_path / "proj"
    code, _, _ = run_main(capsys, JET_TAGGER, "-o", out, "--verify", "50")
    assert code == 0
    files, report = _project_files(out), json.loads((out / "hawqc_report.json").read_text())
    code, text, _ = run_main(capsys, JET_TAGGER, "-o", out, "--verify", "50", "--force", "--default-precision", FIXED_16_6)
    assert code == 0
    assert "--default-precision fixed<16,6,RND_CONV,SAT>: the model has no float parts; nothing changed" in text
    assert _project_files(out) == files
    assert report["float_parts"] is None
    assert _without_times(json.loads((out / "hawqc_report.json").read_text())) == _without_times(report)


# ---- remove-output-softmax ------------------------------------------------------------------------


def test_remove_output_softmax_outputs_the_logits():
    with_softmax, logits = load_model(MLP, None), load_model(MLP, None)
    PassManager.parse("default").run(with_softmax)
    records = PassManager.parse(LOGITS).run(logits)
    assert records[-1].statistics == {"softmaxes-removed": 1}
    assert [n.op_type for n in logits.graph][-1] == "Add"
    x = draw_inputs(logits, 20)["0"]
    probabilities = Executor(with_softmax).run({"0": x})["16"]
    scores = Executor(logits).run({"0": x})[logits.graph.outputs[0].name]
    np.testing.assert_array_equal(np.argmax(scores, axis=1), np.argmax(probabilities, axis=1))


def test_remove_output_softmax_keeps_an_inner_softmax():
    from hawqc.frontends.onnx import load_onnx_text
    from hawqc.passes.remove_output_softmax import RemoveOutputSoftmax

    model = load_onnx_text(
        """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y) {
   s = Softmax <axis: int = -1> (x)
   y = Relu (s)
}""",
        source="inner",
    )
    assert RemoveOutputSoftmax().run(model).changed is False
    assert [n.op_type for n in model.graph] == ["Softmax", "Relu"]


def test_translation_validation_takes_a_meaning_changing_pass_as_the_new_reference(monkeypatch):
    """`remove-output-softmax` changes the outputs on purpose (`Pass.changes_meaning`): validation
    accepts it and checks the passes after it against the logits; without the flag it would fail."""
    from hawqc.frontends.onnx import load_onnx_text
    from hawqc.passes.remove_output_softmax import RemoveOutputSoftmax
    from hawqc.passes.validation import TranslationValidationError

    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y) {
   a = Relu (x)
   b = Identity (a)
   y = Softmax <axis: int = -1> (b)
}"""
    model = load_onnx_text(text, source="softmax")
    PassManager.parse("remove-output-softmax,remove-identity", validate=16).run(model)
    assert [n.op_type for n in model.graph] == ["Relu"]
    monkeypatch.setattr(RemoveOutputSoftmax, "changes_meaning", False)
    with pytest.raises(TranslationValidationError, match="remove-output-softmax"):
        PassManager.parse("remove-output-softmax", validate=16).run(load_onnx_text(text, source="softmax"))
