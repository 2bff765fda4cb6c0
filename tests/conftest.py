"""Shared test fixtures: where the real models are, and small helpers to build graphs from text."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
# CI clones the repository with shared/ beside it; a developer's checkout sits in the same place.
SHARED_MODELS = REPO.parent / "shared" / "models"
JET_TAGGER = REPO / "examples" / "jet_tagger" / "jet_tagger.onnx"


def shared_model(name: str) -> Path:
    path = SHARED_MODELS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: the tests need ../shared/models beside the checkout")
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
