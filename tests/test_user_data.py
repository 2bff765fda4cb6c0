"""`--inputs X.npy` / `--outputs Y.npy`: verify on the user's data, write the test bench from it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import JET_TAGGER, REPO, run_cli

from hawqc.cli import main

DIGITS_CNN = REPO / "examples" / "digits_cnn" / "digits_cnn.onnx"




def read_dat(path: Path) -> np.ndarray:
    lines = path.read_text().split("\n")
    assert lines[-1] == "" and all(line.endswith(" ") for line in lines[:-1])  # hls4ml's spelling
    return np.array([[float(v) for v in line.split()] for line in lines[:-1]])


@pytest.fixture(scope="module")
def jet_data(tmp_path_factory):
    """Inputs on and off the input grid, out of range too, and their hardware-mode outputs."""
    from hawqc.flow.driver import DEFAULT_PIPELINE
    from hawqc.frontends.load import load_model
    from hawqc.passes.manager import PassManager
    from hawqc.sim import Executor

    folder = tmp_path_factory.mktemp("data")
    x = np.random.default_rng(5).uniform(-6, 6, (25, 16)).astype(np.float32)
    model = load_model(JET_TAGGER)
    PassManager.parse(DEFAULT_PIPELINE).run(model)
    hardware = Executor(model, mode="hardware")
    y = hardware.run({hardware.input_names[0]: x})[hardware.output_names[0]]
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return folder, x, y


def test_inputs_and_expected_outputs_verify_and_fill_the_test_bench(jet_data, tmp_path, capsys):
    folder, x, y = jet_data
    proj = tmp_path / "proj"
    code, out, err = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--inputs", folder / "x.npy", "--outputs", folder / "y.npy")
    assert code == 0, out + err
    assert "verify: 25/25 samples bit-exact" in out and "25/25 samples equal the C simulation" in out
    np.testing.assert_array_equal(read_dat(proj / "tb_data" / "tb_input_features.dat"), x.astype(np.float64))
    np.testing.assert_array_equal(read_dat(proj / "tb_data" / "tb_output_predictions.dat"), y.reshape(25, -1))
    report = json.loads((proj / "hawqc_report.json").read_text())
    assert report["verify"]["samples"] == 25 and report["verify"]["expected_outputs"]["mismatched_samples"] == 0


def test_expected_outputs_that_differ_exit_1_with_the_count(jet_data, tmp_path, capsys):
    folder, x, y = jet_data
    wrong = y.copy()
    wrong[4, 1] += 1
    wrong[9, 0] -= 2
    np.save(tmp_path / "wrong.npy", wrong)
    code, out, _ = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--inputs", folder / "x.npy", "--outputs", tmp_path / "wrong.npy")
    assert code == 1
    assert "2/25 samples differ from the C simulation (first: sample 4, max abs diff 2)" in out


def test_without_outputs_the_predictions_are_the_c_simulation(jet_data, tmp_path, capsys):
    folder, x, y = jet_data
    code, _, _ = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--inputs", folder / "x.npy")
    assert code == 0
    np.testing.assert_array_equal(read_dat(tmp_path / "proj" / "tb_data" / "tb_output_predictions.dat"), y.reshape(25, -1))


def _bad_files(folder: Path) -> dict[str, tuple[list[str], str]]:
    np.save(folder / "shape.npy", np.zeros((3, 15), np.float32))
    np.save(folder / "flat.npy", np.zeros(16, np.float32))
    np.save(folder / "strings.npy", np.array([["a"] * 16]))
    np.save(folder / "complex.npy", np.zeros((2, 16), np.complex64))
    np.save(folder / "nan.npy", np.full((2, 16), np.nan, np.float32))
    np.savez(folder / "archive.npz", x=np.zeros((2, 16)))
    (folder / "archive.npz").rename(folder / "archive.npy")
    (folder / "text.npy").write_text("1 2 3\n")
    np.save(folder / "x.txt.npy", np.zeros((2, 16), np.float32))
    (folder / "x.csv").write_text("0\n")
    np.save(folder / "y_rows.npy", np.zeros((3, 5)))
    np.save(folder / "y_shape.npy", np.zeros((2, 4)))
    good = str(folder / "x.txt.npy")
    return {
        "wrong shape": (["--inputs", str(folder / "shape.npy")], "shape.npy: shape [3, 15] does not fit the model's input"),
        "no batch axis": (["--inputs", str(folder / "flat.npy")], "flat.npy: shape [16]"),
        "wrong dtype": (["--inputs", str(folder / "strings.npy")], "strings.npy: dtype <U1 is not a real number type"),
        "complex": (["--inputs", str(folder / "complex.npy")], "complex.npy: dtype complex64"),
        "nan": (["--inputs", str(folder / "nan.npy")], "nan.npy: contains NaN"),
        "npz": (["--inputs", str(folder / "archive.npy")], "archive.npy: not a .npy array"),
        "not npy content": (["--inputs", str(folder / "text.npy")], "text.npy: not a readable .npy array"),
        "not .npy": (["--inputs", str(folder / "x.csv")], "x.csv: not a .npy file"),
        "missing": (["--inputs", str(folder / "nope.npy")], "nope.npy: no such file"),
        "outputs alone": (["--outputs", good], "x.txt.npy: --outputs needs --inputs"),
        "output rows": (["--inputs", good, "--outputs", str(folder / "y_rows.npy")], "y_rows.npy: 3 samples, but"),
        "output shape": (["--inputs", good, "--outputs", str(folder / "y_shape.npy")], "y_shape.npy: shape [2, 4] does not fit the model's output"),
        "with --verify": (["--inputs", good, "--verify", "5"], "--inputs verifies every sample of its file"),
    }  # fmt: skip


CASE_IDS = [
    "wrong shape", "no batch axis", "wrong dtype", "complex", "nan", "npz", "not npy content", "not .npy",
    "missing", "outputs alone", "output rows", "output shape", "with --verify",
]  # fmt: skip


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_files_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, case):
    args, message = _bad_files(tmp_path)[case]
    proj = tmp_path / "proj"
    code, out, err = run_cli(capsys, main, JET_TAGGER, "-o", proj, *args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hawqc: error: ") and message in lines[0], err
    assert not proj.exists()


def test_a_bad_file_leaves_an_existing_project_as_it_was(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "keep.txt").write_text("old")
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    code, _, _ = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force", "--inputs", tmp_path / "bad.npy")
    assert code == 2 and [p.name for p in proj.iterdir()] == ["keep.txt"]


def test_a_channels_first_model_takes_its_own_layout_and_the_test_bench_is_channels_last(tmp_path, capsys):
    x = np.random.default_rng(2).uniform(0, 1, (6, 1, 8, 8)).astype(np.float32)  # NCHW, as the model file
    np.save(tmp_path / "x.npy", x)
    proj = tmp_path / "proj"
    code, out, err = run_cli(capsys, main, DIGITS_CNN, "-o", proj, "--inputs", tmp_path / "x.npy")
    assert code == 0, out + err
    assert "verify: 6/6 samples bit-exact" in out
    bench = read_dat(proj / "tb_data" / "tb_input_features.dat")
    np.testing.assert_array_equal(bench, x.transpose(0, 2, 3, 1).reshape(6, -1))
    np.save(tmp_path / "nhwc.npy", x.transpose(0, 2, 3, 1))  # the project's layout is not the model file's
    code, _, err = run_cli(capsys, main, DIGITS_CNN, "-o", tmp_path / "p2", "--inputs", tmp_path / "nhwc.npy")
    assert code == 2 and "expected (n, 1, 8, 8)" in err
