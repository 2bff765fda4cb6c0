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
    assert "verify: 1000/1000 samples bit-exact" in out
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
    assert "19/20 samples bit-exact; 1 differ (first: sample 3, max abs diff 0.000976562)" in out
    report = json.loads((proj / "hawqc_report.json").read_text())
    assert report["verify"]["bit_exact"] is False and report["verify"]["first_mismatch"] == 3


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
    from hawqc.verify import compare

    with pytest.raises(BackendError, match="output shapes differ"):
        compare(np.zeros((4, 5), np.float32), np.zeros((4, 6)))
    assert compare(np.ones((4, 5), np.float32), np.ones((4, 5))).bit_exact
