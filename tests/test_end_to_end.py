"""`hawqc MODEL -o DIR --verify N`: the whole flow, on every backend, and what a mismatch looks like."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import JET_TAGGER

from hawqc.backends import csim
from hawqc.cli import main


@pytest.mark.parametrize("backend", ["vitis", "vivado", "catapult"])
def test_jet_tagger_is_bit_exact_on_every_backend(tmp_path, capsys, backend):
    proj = tmp_path / backend
    code = main([str(JET_TAGGER), "-o", str(proj), "--backend", backend, "--verify", "1000"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verify: 1000/1000 samples bit-exact (C simulation vs hardware mode)" in out
    assert "verify: hardware mode equals semantic mode on 1000/1000 samples" in out
    report = json.loads((proj / "hawqc_report.json").read_text())
    assert report["verify"]["samples"] == 1000
    assert report["verify"]["bit_exact"] is True and report["verify"]["max_abs_diff"] == 0.0
    assert report["backend"] == backend
    # Every type in the project is hawqc's: the report lists them, none is hls4ml's default.
    assert all("fixed<" in layer["precision"] for layer in report["layers"])
    assert {layer["op"] for layer in report["layers"]} >= {"Input", "Dense"}


def test_a_mismatch_exits_1_and_names_the_first_sample(tmp_path, capsys, monkeypatch):
    real_predict = csim.CSim.predict

    def off_by_one_lsb(self, x):
        out = real_predict(self, x)
        out[3, 0] += 2.0**-10
        return out

    monkeypatch.setattr(csim.CSim, "predict", off_by_one_lsb)
    proj = tmp_path / "proj"
    code = main([str(JET_TAGGER), "-o", str(proj), "--verify", "20"])
    out = capsys.readouterr().out
    assert code == 1
    assert (
        "19/20 samples bit-exact (C simulation vs hardware mode); 1 differ (first: sample 3, max abs diff 0.000976562)"
        in out
    )
    report = json.loads((proj / "hawqc_report.json").read_text())
    assert report["verify"]["bit_exact"] is False and report["verify"]["first_mismatch"] == 3


def _perturb_hardware_mode(monkeypatch, declared_inexact: set[str]):
    """Make hardware mode (and so the C simulation's reference) differ from semantic mode on sample 2."""
    from hawqc.sim import executor as executor_module

    real_run = executor_module.Executor.run
    real_compare = csim.CSim.predict

    def run(self, inputs, *args, **kwargs):
        out = real_run(self, inputs, *args, **kwargs)
        if self.mode == "hardware":
            for array in out.values():
                array[2, 0] += 2.0**-9
        return out

    def predict(self, x):
        out = real_compare(self, x)
        out[2, 0] += 2.0**-9  # the C simulation agrees with the perturbed hardware mode
        return out

    monkeypatch.setattr(executor_module.Executor, "run", run)
    monkeypatch.setattr(csim.CSim, "predict", predict)
    import hawqc.ir.precision.analysis as precision_module

    real_infer = precision_module.infer_types

    def infer(model):
        result = real_infer(model)
        result.float_inexact.update(declared_inexact)
        return result

    monkeypatch.setattr(precision_module, "infer_types", infer)


def test_hardware_differing_from_semantic_on_an_integer_only_graph_exits_1(tmp_path, capsys, monkeypatch):
    _perturb_hardware_mode(monkeypatch, set())
    code = main([str(JET_TAGGER), "-o", str(tmp_path / "p"), "--verify", "20"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "verify: 20/20 samples bit-exact (C simulation vs hardware mode)" in out
    assert "hardware mode differs from semantic mode on 1/20 samples, at most 1 output LSB" in out
    assert "integer-only: a hawqc bug" in out
    report = json.loads((tmp_path / "p" / "hawqc_report.json").read_text())
    modes = report["verify"]["hardware_vs_semantic"]
    assert modes["mismatched_samples"] == 1 and modes["max_lsb_diff"] == 1.0 and modes["declared_inexact"] == []


def test_declared_float_parts_are_reported_not_failed(tmp_path, capsys, monkeypatch):
    _perturb_hardware_mode(monkeypatch, {"some_float_rescale"})
    code = main([str(JET_TAGGER), "-o", str(tmp_path / "p"), "--verify", "20"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "hardware mode differs from semantic mode on 1/20 samples, at most 1 output LSB (float parts: some_float_rescale)" in out
    report = json.loads((tmp_path / "p" / "hawqc_report.json").read_text())
    assert report["verify"]["hardware_vs_semantic"]["mismatch_rate"] == 0.05


def test_verification_inputs_cover_the_input_range_and_ties():
    from hawqc.frontends.onnx import load_onnx
    from hawqc.sim.inputs import draw_inputs

    model = load_onnx(JET_TAGGER)
    (x,) = draw_inputs(model, 1000, seed=0).values()
    lsb = 2.0**-4  # the example's 8-bit input quantizer: [-8, 7.9375]
    assert x.min() == -8.0 and x.max() == 7.9375
    on_grid = np.mean(x / lsb == np.round(x / lsb))
    ties = np.mean((x / lsb) % 1 == 0.5)
    assert 0.2 < on_grid < 0.5 and 0.2 < ties < 0.5


def test_an_output_of_the_wrong_shape_is_a_backend_error_not_a_crash():
    from hawqc.errors import BackendError
    from hawqc.flow.verify import compare

    with pytest.raises(BackendError, match="output shapes differ"):
        compare(np.zeros((4, 5), np.float32), np.zeros((4, 6)))
    assert compare(np.ones((4, 5), np.float32), np.ones((4, 5))).bit_exact
