"""`hawqc model.pth --model-factory ... --input-shape ...`: a HAWQ PyTorch model through the CLI and
`hawqc.lift`, compiled and verified like an ONNX model; every user mistake one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, one_error_line, run_cli
from hawq_factories import calibrated_tiny_mlp

import hawqc
from hawqc.cli import main, opt_main

FACTORIES = Path(__file__).resolve().parent / "hawq_factories.py"


def factory(name: str) -> str:
    return f"{FACTORIES}:{name}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """The calibrated tiny MLP saved as a state_dict, as a HAWQ-style checkpoint, and pickled whole."""
    folder = tmp_path_factory.mktemp("hawq_models")
    model = calibrated_tiny_mlp()
    torch.save(model.state_dict(), folder / "model.pth")
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "best_acc1": 0.5}, folder / "checkpoint.pt")
    torch.save(model, folder / "whole.pth")
    return {"state_dict": folder / "model.pth", "checkpoint": folder / "checkpoint.pt", "whole": folder / "whole.pth"}






def test_state_dict_compiles_and_verifies_bit_exact(saved, tmp_path, capsys):
    out = tmp_path / "proj"
    code, stdout, err = run_cli(capsys, main, saved["state_dict"], "--model-factory", factory("tiny_mlp"),
                            "--input-shape", "1,16", "-o", out, "--verify", "100")  # fmt: skip
    assert code == 0, err
    assert "100/100 samples bit-exact" in stdout
    report = json.loads((out / "hawqc_report.json").read_text())
    assert report["verify"]["bit_exact"] and report["verify"]["samples"] == 100
    assert report["model"] == str(saved["state_dict"])


def test_hawqc_opt_lifts_the_file_like_hawqc_lift(saved, tmp_path, capsys):
    """The state_dict loaded into the factory's model lifts to the graph of the model it came from."""
    text = tmp_path / "from_cli.onnxtxt"
    code, _, err = run_cli(capsys, opt_main, saved["checkpoint"], "--model-factory", factory("tiny_mlp"),
                       "--input-shape", "1,16", "-o", text)  # fmt: skip
    assert code == 0, err
    lifted = hawqc.lift(calibrated_tiny_mlp(), torch.zeros(1, 16))
    hawqc.save(lifted, tmp_path / "from_api.onnxtxt")
    assert text.read_text() == (tmp_path / "from_api.onnxtxt").read_text()
    assert "Quant" in text.read_text()
    hawqc.PassManager.parse("default").run(hawqc.load(text))  # what the API saved loads and compiles


@pytest.mark.parametrize(
    "name, args, message",
    [
        ("missing factory", ["--input-shape", "1,16"], "model.pth: holds a state_dict; give the model that loads it with --model-factory"),
        ("missing shape", ["--model-factory", factory("tiny_mlp")], "model.pth: a PyTorch model needs --input-shape"),
        ("bad shape text", ["--model-factory", factory("tiny_mlp"), "--input-shape", "1,x"], "--input-shape '1,x': expected comma-separated positive integers"),
        ("wrong shape", ["--model-factory", factory("tiny_mlp"), "--input-shape", "1,17"], "model.pth: the model does not run on --input-shape 1,17 (RuntimeError"),
        ("factory raises", ["--model-factory", factory("failing_factory"), "--input-shape", "1,16"], "the factory raised ValueError: no weights for you"),
        ("not a module", ["--model-factory", factory("not_a_module"), "--input-shape", "1,16"], "the factory returned a dict, not a torch.nn.Module"),
        ("keys do not fit", ["--model-factory", factory("wider_mlp"), "--input-shape", "1,16"], "model.pth: does not fit the model of --model-factory"),
        ("no such function", ["--model-factory", factory("nope"), "--input-shape", "1,16"], "has no function 'nope'"),
        ("no such module", ["--model-factory", "no_such_package.models:net", "--input-shape", "1,16"], "cannot import no_such_package.models"),
        ("no colon", ["--model-factory", "tiny_mlp", "--input-shape", "1,16"], "--model-factory 'tiny_mlp': expected package.module:function"),
    ],
)
def test_mistakes_are_one_line_exit_2_and_write_nothing(saved, tmp_path, capsys, name, args, message):
    out = tmp_path / "proj"
    code, _, err = run_cli(capsys, main, saved["state_dict"], *args, "-o", out)
    assert code == 2 and message in one_error_line(err), name
    assert "Traceback" not in err
    assert not out.exists()


def test_key_mismatch_names_the_keys(tmp_path, capsys, saved):
    state = torch.load(saved["state_dict"], weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["fc2.bias"]
    torch.save(state, tmp_path / "renamed.pt")
    code, _, err = run_cli(capsys, main, tmp_path / "renamed.pt", "--model-factory", factory("tiny_mlp"),
                       "--input-shape", "1,16", "-o", tmp_path / "proj")  # fmt: skip
    line = one_error_line(err)
    assert code == 2 and "missing keys fc2.bias; unexpected keys extra.weight" in line


def test_pytorch_flags_on_an_onnx_model_are_refused(tmp_path, capsys):
    model = REPO / "examples" / "jet_tagger" / "jet_tagger.onnx"
    code, _, err = run_cli(capsys, main, model, "--input-shape", "1,16", "-o", tmp_path / "proj")
    assert code == 2 and "are for .pt / .pth models only" in one_error_line(err)


def test_pickled_module_is_refused_without_allow_pickle(saved, tmp_path, capsys):
    code, _, err = run_cli(capsys, main, saved["whole"], "--input-shape", "1,16", "-o", tmp_path / "proj")
    line = one_error_line(err)
    assert code == 2 and str(saved["whole"]) in line and "--allow-pickle" in line
    assert not (tmp_path / "proj").exists()


def test_allow_pickle_loads_the_module_and_warns(saved, tmp_path, capsys):
    text = tmp_path / "whole.onnxtxt"
    code, _, err = run_cli(capsys, opt_main, saved["whole"], "--allow-pickle", "--input-shape", "1,16", "-o", text)
    assert code == 0, err
    assert err.strip() == f"hawqc-opt: warning: pickle allowed: loading {saved['whole']} executes code from the file"
    expected = tmp_path / "expected.onnxtxt"
    hawqc.save(hawqc.lift(calibrated_tiny_mlp(), torch.zeros(1, 16)), expected)
    assert text.read_text() == expected.read_text()


def test_importing_hawqc_does_not_import_torch():
    probe = "import sys, hawqc; hawqc.CompileOptions; hawqc.load; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"


def test_allow_pickle_resolves_classes_from_the_factory_file(tmp_path):
    """A module pickled from a class in a factory file unpickles in a fresh process once
    --model-factory names that file (it is imported under its own name first)."""
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import hawq_factories as f; "
        "torch.save(f.calibrated_tiny_mlp(), sys.argv[2])"
    )
    whole = tmp_path / "whole.pt"
    subprocess.run([sys.executable, "-c", script, str(FACTORIES.parent), str(whole)], check=True, cwd=tmp_path)
    hawqc_opt = Path(sys.executable).parent / "hawqc-opt"
    args = [str(hawqc_opt), str(whole), "--allow-pickle", "--input-shape", "1,16", "-o", str(tmp_path / "m.onnxtxt")]
    without_factory = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path)
    assert without_factory.returncode == 2 and "cannot unpickle" in without_factory.stderr.splitlines()[-1]
    with_factory = subprocess.run([*args, "--model-factory", factory("tiny_mlp")], capture_output=True, text=True, cwd=tmp_path)
    assert with_factory.returncode == 0, with_factory.stderr
    assert "Quant" in (tmp_path / "m.onnxtxt").read_text()
