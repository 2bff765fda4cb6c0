"""Shared test fixtures: where the real models are, and small helpers to build graphs from text."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import onnx_ir as ir
import pytest

REPO = Path(__file__).resolve().parent.parent
# Third-party models the tests read (origins and licences: tests/data/README.md). In the repository,
# so that a clone with nothing beside it runs every test.
DATA = Path(__file__).resolve().parent / "data"
JET_TAGGER = REPO / "examples" / "jet_tagger" / "jet_tagger.onnx"


def data_model(name: str) -> Path:
    """tests/data/<name>; a missing file fails the test that asked for it, naming it."""
    path = DATA / name
    if not path.exists():
        pytest.fail(f"{path} is missing (tests/data/README.md lists the files the tests read)")
    return path


def load_example(path: Path, name: str) -> ModuleType:
    """An example script (examples/*/...py, not a package) imported as module `name`."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_cli(capsys, entry, *args) -> tuple[int, str, str]:
    """Run a CLI entry point (`hawqc.cli.main`, `opt_main`) in-process: (exit code, stdout, stderr)."""
    code = entry([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str, prog: str = "hawqc") -> str:
    """The one `prog: error: ...` line a user's mistake gets on stderr."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ")
    return lines[0]


def verify_on_vitis(graph: ir.Model, directory: Path, samples: int) -> None:
    """Write `graph` (a retrained example), compile it for Vitis with `samples` drawn inputs, and
    check C simulation == hardware mode == semantic mode on every one."""
    from hawqc.flow.driver import CompileOptions, compile_model
    from hawqc.ir.io import write_model

    path = directory / "retrained.onnx"
    write_model(graph, path)
    verify = compile_model(path, directory / "proj", CompileOptions(backend="vitis", verify_samples=samples)).verify
    assert verify.samples == samples
    assert verify.bit_exact and verify.modes.equal, verify.summary()
