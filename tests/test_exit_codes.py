"""Exit codes (hawqc.errors): 0 success, 1 a difference found, 2 the user's mistake, 3 a failing tool
or an internal error, each a single line that says which; `--help` and `--version`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import JET_TAGGER, run_cli

from hawqc.cli import main, opt_main
from hawqc.errors import EXIT_DIFFERENCE, EXIT_FAILURE, EXIT_USER_ERROR, BackendError, UserInputError
from hawqc.flow import driver

BIN = Path(sys.executable).parent


def _line(err: str, prog: str = "hawqc") -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: ")
    return lines[0]


def test_help_lists_every_command_and_the_exit_codes(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("hawqc report OUTDIR", "hawqc build OUTDIR", "hawqc-opt MODEL"):
        assert command in out
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {code}" in out


@pytest.mark.parametrize("argv, entry", [(["--version"], main), (["report", "--version"], main), (["build", "--version"], main), (["--version"], opt_main)])  # fmt: skip
def test_version(argv, entry, capsys) -> None:
    from hawqc import __version__

    with pytest.raises(SystemExit) as info:
        entry(argv)
    assert info.value.code == 0
    assert capsys.readouterr().out.strip().endswith(f" {__version__}")


def test_no_verify_ir_and_its_deprecated_spelling(tmp_path, capsys) -> None:
    # Out of topological order: the verifier refuses it, unless told not to verify.
    text = tmp_path / "unsorted.onnxtxt"
    text.write_text(
        '<ir_version: 8, opset_import: ["" : 13]>\nagraph (float[1,2] x) => (float[1,2] z) {\n'
        "  z = Relu(y)\n  y = Relu(x)\n}\n"
    )
    code, _, err = run_cli(capsys, opt_main, text, "-p", "topo-sort")
    assert code == EXIT_USER_ERROR and "not in topological order" in _line(err, "hawqc-opt")
    code, out, err = run_cli(capsys, opt_main, text, "-p", "topo-sort", "--no-verify-ir")
    assert code == 0 and err == "" and "y = Relu (x)" in out
    code, out, err = run_cli(capsys, opt_main, text, "-p", "topo-sort", "--no-verify")
    assert code == 0 and "y = Relu (x)" in out
    assert _line(err, "hawqc-opt") == "hawqc-opt: warning: --no-verify is deprecated; use --no-verify-ir"


def test_a_bug_in_hawqc_is_one_line_exit_3_with_the_traceback_in_a_file(tmp_path, capsys, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("an invariant hawqc forgot\nsecond line")

    monkeypatch.setattr(driver, "load_model", broken)
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--reproducer-dir", tmp_path / "r")
    line = _line(err)
    assert code == EXIT_FAILURE
    assert line.startswith("hawqc: internal error: RuntimeError: an invariant hawqc forgot (a bug in hawqc; traceback in ")
    (crash,) = (tmp_path / "r").glob("crash-*.txt")
    assert str(crash) in line
    assert "Traceback" in crash.read_text() and "in broken" in crash.read_text()
    assert not (tmp_path / "proj").exists()


def test_out_of_memory_is_one_line_exit_3(tmp_path, capsys, monkeypatch) -> None:
    def too_big(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(driver, "load_model", too_big)
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj")
    assert code == EXIT_FAILURE and "error: out of memory" in _line(err)


def test_a_crashing_pass_is_an_internal_error(tmp_path, capsys) -> None:
    plugin = tmp_path / "crash.py"
    plugin.write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\nimport hawqc\n\n"
        "@hawqc.register_pass\n@dataclass(frozen=True)\nclass Crash(hawqc.Pass):\n"
        "    name: ClassVar[str] = 'crash-on-purpose'\n"
        "    def run(self, model):\n"
        "        raise ValueError('boom')\n"
    )
    try:
        code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--load-pass-plugin", plugin,
                               "-p", "crash-on-purpose", "--reproducer-dir", tmp_path / "r")  # fmt: skip
    finally:
        from hawqc.passes.registry import default_registry

        default_registry().passes.pop("crash-on-purpose", None)
    line = _line(err)
    assert code == EXIT_FAILURE
    assert line.startswith("hawqc: internal error: pass 'crash-on-purpose' crashed: ValueError: boom")


def test_a_user_mistake_is_exit_2_and_a_found_difference_exit_1() -> None:
    # The classes carry the codes the README documents; the CLI only prints them.
    assert UserInputError("x").exit_code == EXIT_USER_ERROR == 2
    assert BackendError("x").exit_code == EXIT_FAILURE == 3
    from hawqc.passes.validation import TranslationValidationError

    assert TranslationValidationError("x").exit_code == EXIT_DIFFERENCE == 1


def _fake_compiler(bin_dir: Path) -> None:
    """A `g++` that answers the probes (version, flags) and is then killed, as the kernel's OOM
    killer kills a cc1plus that outgrew the machine."""
    bin_dir.mkdir()
    script = bin_dir / "g++"
    script.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--version*) echo "g++ (fake) 1.0"; exit 0;; *-fsyntax-only*) exit 0;; esac\n'
        "kill -9 $$\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_a_failing_compiler_is_one_line_exit_3_naming_its_log(tmp_path) -> None:
    _fake_compiler(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "HAWQC_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [str(BIN / "hawqc"), str(JET_TAGGER), "-o", str(tmp_path / "proj"), "--verify", "4"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    line = _line(done.stderr)
    assert done.returncode == EXIT_FAILURE, done.stderr
    assert "error: C simulation compilation failed (g++ exit -9): g++ was killed by signal 9 (out of memory?)" in line
    log = Path(line.rsplit("g++'s output is in ", 1)[1])
    assert log.is_file() and log.parent == tmp_path / "cache" / "logs" and "exit -9" in log.read_text()
    assert not (tmp_path / "proj").exists()

