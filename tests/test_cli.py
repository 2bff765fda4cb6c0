"""The command lines: exit codes, one-line errors, and the all-or-nothing output directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import JET_TAGGER, data_model, one_error_line, run_cli

from hawqc.cli import main, opt_main


def test_missing_model_exits_2_and_writes_nothing(tmp_path, capsys):
    code, _, err = run_cli(capsys, main, tmp_path / "nope.onnx", "-o", tmp_path / "proj")
    assert code == 2 and "nope.onnx: no such file" in one_error_line(err)
    assert not (tmp_path / "proj").exists()


def test_not_onnx_exits_2(tmp_path, capsys):
    bogus = tmp_path / "model.onnx"
    bogus.write_text("hello, not a model\n")
    code, _, err = run_cli(capsys, main, bogus, "-o", tmp_path / "proj")
    assert code == 2 and "not an ONNX model" in one_error_line(err)


def test_unknown_backend_lists_the_known_ones(tmp_path, capsys):
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--backend", "quartus")
    line = one_error_line(err)
    assert code == 2 and "quartus" in line and all(b in line for b in ("vitis", "vivado", "catapult"))
    assert not (tmp_path / "proj").exists()


@pytest.mark.parametrize("args, message", [(["--verify", "-3"], "--verify"), (["--io-type", "io_serial"], "--io-type"), (["-p", "dce,"], "pipeline")])
def test_bad_options_exit_2(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", *args)
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "proj").exists()


def test_argparse_errors_are_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["model.onnx"])  # no -o
    assert info.value.code == 2
    one_error_line(capsys.readouterr().err)


def test_non_empty_output_directory_is_refused_without_force(tmp_path, capsys):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", proj)
    assert code == 2 and "not empty (use --force" in one_error_line(err)
    assert [p.name for p in proj.iterdir()] == ["keep.txt"]


def test_unsupported_op_exits_2_and_leaves_the_old_directory(tmp_path, capsys):
    # The Keras CNN has Conv and Softmax, which the MLP lowering does not take: with --force the
    # directory that was there must come back untouched.
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "keep.txt").write_text("mine")
    code, _, err = run_cli(capsys, main, data_model("conv2d_small_keras.onnx"), "-o", proj, "--force")
    line = one_error_line(err)
    assert code == 2 and "node" in line and ("Conv" in line or "Transpose" in line), line
    assert [p.name for p in proj.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".proj*"))


def test_compile_without_verify_writes_project_and_report(tmp_path, capsys):
    proj = tmp_path / "proj"
    code, out, _ = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--backend", "vivado", "--time-passes")
    assert code == 0 and "wrote vivado project" in out
    report = json.loads((proj / "hawqc_report.json").read_text())
    assert report["backend"] == "vivado" and report["pipeline"] == "default"
    assert {"name", "seconds", "changed"} <= set(report["passes"][0])
    assert any(p["name"] == "gemm-to-matmul" for p in report["passes"])
    assert report["layers"] and all({"name", "op", "precision"} <= set(layer) for layer in report["layers"])
    assert report["verify"] is None
    assert (proj / "firmware").is_dir()


def test_opt_errors_exit_2(tmp_path, capsys):
    assert opt_main([str(tmp_path / "missing.onnxtxt")]) == 2
    one_error_line(capsys.readouterr().err, "hawqc-opt")
    assert opt_main([str(JET_TAGGER), "-p", "nope"]) == 2
    assert "unknown pass 'nope'" in one_error_line(capsys.readouterr().err, "hawqc-opt")


def test_opt_writes_binary_and_text(tmp_path, capsys):
    assert opt_main([str(JET_TAGGER), "-p", "default", "-o", str(tmp_path / "out.onnx")]) == 0
    assert opt_main([str(tmp_path / "out.onnx"), "-o", str(tmp_path / "out.onnxtxt")]) == 0
    assert "MatMul" in (tmp_path / "out.onnxtxt").read_text()


def test_console_scripts_are_installed(tmp_path):
    bindir = Path(sys.executable).parent
    for script in ("hawqc", "hawqc-opt"):
        assert shutil.which(script, path=str(bindir)), f"{script} is not installed next to {sys.executable}"
    result = subprocess.run(
        [str(bindir / "hawqc-opt"), str(JET_TAGGER), "-p", "cleanup"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "jet_tagger" in result.stdout
    result = subprocess.run([str(bindir / "hawqc"), str(tmp_path / "x.onnx"), "-o", str(tmp_path / "p")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_compile_takes_the_pass_manager_flags(tmp_path, capsys):
    code = main([str(JET_TAGGER), "-o", str(tmp_path / "proj"), "--print-ir-after=gemm-to-matmul",
                 "--validate", "32", "--pass-statistics", "--time-passes"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0, err
    assert "# -----// IR after pass 'gemm-to-matmul' //----- #" in err
    assert "pass statistics" in err and "pass timing" in err


def test_compile_validation_failure_is_reported(tmp_path, capsys):
    plugin = tmp_path / "flip.py"
    plugin.write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\nimport hawqc\n\n"
        "@hawqc.register_pass\n@dataclass(frozen=True)\nclass Flip(hawqc.Pass):\n"
        "    name: ClassVar[str] = 'flip-first-add'\n"
        "    def run(self, model):\n"
        "        next(n for n in model.graph if n.op_type == 'Add').op_type = 'Sub'\n"
        "        return True\n"
    )
    try:
        code = main([str(JET_TAGGER), "-o", str(tmp_path / "proj"), "--load-pass-plugin", str(plugin),
                     "-p", "default,flip-first-add", "--validate", "16", "--reproducer-dir", str(tmp_path / "r")])  # fmt: skip
    finally:
        from hawqc.passes.registry import default_registry

        default_registry().passes.pop("flip-first-add", None)
    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and "translation validation: pass 'flip-first-add' changed output 'global_out'" in line
    assert "reproduce with: hawqc-opt" in line and list((tmp_path / "r").glob("*.onnxtxt"))
    assert not (tmp_path / "proj").exists()
