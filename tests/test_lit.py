"""Run the lit + FileCheck suite from pytest, so that CI counts it (one test per lit file)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LIT_DIR = Path(__file__).resolve().parent.parent / "lit_tests"
LIT_FILES = sorted(
    path
    for suffix in ("*.onnxtxt", "*.test")
    for path in LIT_DIR.rglob(suffix)
    if "Inputs" not in path.parts and "Output" not in path.parts
)


def test_lit_suite_is_found():
    assert len(LIT_FILES) >= 8


@pytest.mark.parametrize("path", LIT_FILES, ids=lambda p: str(p.relative_to(LIT_DIR)))
def test_lit(path: Path):
    result = subprocess.run(
        [sys.executable, "-c", "from lit.main import main; main()", "-v", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
