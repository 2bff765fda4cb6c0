"""Compiling C simulations: the content-hash cache, compile errors, concurrent writers."""

from __future__ import annotations

import dataclasses
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_backend_models import MlpSpec, build_mlp, draw_inputs, reference, to_ir

from hawqc.backends.base import get_backend
from hawqc.backends.csim import CACHE_ENV, cache_dir, cache_key, compile_csim, compiler_flags
from hawqc.errors import BackendError

TINY = MlpSpec(sizes=(4, 3), w_exps=[-5], bias=[True], relu=[False], acts=[None])


def _key(project) -> str:
    return cache_key(project, compiler_flags(project.csim))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "csim"
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir() == Path.home() / ".cache" / "hawqc" / "csim"


@pytest.mark.parametrize("backend", ["vivado", "catapult"])
def test_cache_key_is_content_not_location(backend: str, tmp_path: Path) -> None:
    """Same model in two directories: one key (Catapult's bridge names its own directory, which is
    left out of the key). One weight changed: another key."""
    model = to_ir(build_mlp(TINY))
    a = get_backend(backend).lower(model, tmp_path / "a")
    b = get_backend(backend).lower(model, tmp_path / "b")
    assert _key(a) == _key(b)
    other = dataclasses.replace(TINY, seed=TINY.seed + 1)
    c = get_backend(backend).lower(to_ir(build_mlp(other)), tmp_path / "c")
    assert _key(c) != _key(a)


@pytest.mark.parametrize("backend", ["vivado", "catapult"])
def test_compile_error_carries_the_compiler_message(backend: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    project = get_backend(backend).lower(to_ir(build_mlp(TINY)), tmp_path / "prj")
    source = project.outdir / "firmware" / "myproject.cpp"
    # A fatal error, so that g++ stops at once (#error would let it compile the rest).
    source.write_text('#include "hawqc-test-broken-source.h"\n' + source.read_text())
    with pytest.raises(BackendError, match="(?s)compilation failed.*hawqc-test-broken-source"):
        compile_csim(project)
    # Nothing half-built is left in the cache.
    assert list((tmp_path / "cache" / "csim").iterdir()) == []


def test_missing_compiler_is_a_backend_error(tmp_path: Path) -> None:
    project = get_backend("vivado").lower(to_ir(build_mlp(TINY)), tmp_path / "prj")
    with pytest.raises(BackendError, match="not usable"):
        compile_csim(project, cxx="hawqc-no-such-compiler")


def test_concurrent_writers_publish_one_library(tmp_path: Path, monkeypatch) -> None:
    """Two compilations of one project at once: both succeed, one library, no temporary leftovers."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    proto = build_mlp(TINY)
    project = get_backend("catapult").lower(to_ir(proto), tmp_path / "prj")
    with ThreadPoolExecutor(2) as pool:
        sims = list(pool.map(lambda _: compile_csim(project, jobs=1), range(2)))
    files = sorted(p.name for p in (tmp_path / "cache" / "csim").iterdir())
    key = _key(project)
    assert files == [f"{key}.so", f"{key}.weights"]
    # The library does not need the project directory any more (Catapult reads weights at run time).
    shutil.rmtree(project.outdir)
    x = draw_inputs(200, 4, 8, -4)
    for sim in sims:
        assert not sim.compile_stats.cached
        assert sim.compile_stats.seconds > 0 and sim.compile_stats.peak_rss_bytes > 10_000_000
        np.testing.assert_array_equal(sim.predict(x), reference(proto, x).astype(np.float64))


def test_predict_checks_the_input_size(tmp_path: Path) -> None:
    project = get_backend("vivado").lower(to_ir(build_mlp(TINY)), tmp_path / "prj")
    sim = compile_csim(project)
    with pytest.raises(ValueError, match="takes 4 values per sample"):
        sim.predict(np.zeros((3, 5)))
    assert sim.predict(np.zeros((0, 4))).shape == (0, 3)
    # (N, 1, 4), the graph's own [1, 4] per sample, is accepted too.
    assert sim.predict(np.zeros((2, 1, 4))).shape == (2, 3)
    stats = sim.stats()
    assert set(stats) >= {"library", "seconds", "cpu_seconds", "peak_rss_bytes", "cached", "jobs"}


def test_a_compiler_child_reaped_elsewhere_does_not_crash_the_build(tmp_path):
    """wait4 raised ChildProcessError once under a loaded test run: someone had reaped g++ first."""
    import os
    import sys

    from hawqc.backends.csim_process import finish_child, start_child

    proc, err = start_child([sys.executable, "-c", "pass"], tmp_path, tmp_path / "stderr.txt")
    os.waitpid(proc.pid, 0)  # reaped behind the Popen's back
    result = finish_child(proc, err)
    assert result.returncode == 0 and result.stderr == ""
