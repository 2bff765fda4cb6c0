"""Plugins: a package installed beside hawqc adds a pass and a backend through entry points."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import JET_TAGGER, REPO

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    """Install tests/plugin_package into a private directory (not the venv) and put it on the path."""
    target = tmp_path_factory.mktemp("plugin_site")
    # Built from a copy: setuptools leaves build/ and *.egg-info beside the sources it builds.
    source = tmp_path_factory.mktemp("plugin_src") / "plugin_package"
    shutil.copytree(REPO / "tests" / "plugin_package", source)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return {**os.environ, "PYTHONPATH": str(target)}


def run(env, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)


def test_plugin_pass_is_listed_and_runs_with_options(plugin_env):
    listing = run(plugin_env, BIN / "hawqc-opt", "--list-passes")
    assert listing.returncode == 0 and "demo-count-quants" in listing.stdout
    result = run(plugin_env, BIN / "hawqc-opt", JET_TAGGER, "-p", "cleanup,demo-count-quants{op=MatMul}", "--pass-statistics")
    assert result.returncode == 0, result.stderr
    assert "demo-count-quants{op=MatMul}" in result.stderr and "matmul-nodes" in result.stderr
    assert "4" in next(line for line in result.stderr.splitlines() if "matmul-nodes" in line)


def test_plugin_pass_is_unknown_without_the_plugin():
    result = run(dict(os.environ), BIN / "hawqc-opt", JET_TAGGER, "-p", "demo-count-quants")
    assert result.returncode == 2 and "unknown pass 'demo-count-quants'" in result.stderr


def test_plugin_backend_compiles(plugin_env, tmp_path):
    result = run(plugin_env, BIN / "hawqc", JET_TAGGER, "-o", tmp_path / "proj", "--backend", "demo")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "proj" / "hawqc_report.json").read_text())
    assert report["backend"] == "demo" and (tmp_path / "proj" / "myproject.onnxtxt").is_file()
    unknown = run(plugin_env, BIN / "hawqc", JET_TAGGER, "-o", tmp_path / "p2", "--backend", "nope")
    assert unknown.returncode == 2 and "demo" in unknown.stderr
