"""Fast C simulation: the batched entry, threads, the cache that never recompiles an unchanged
project, and the faster compile flags; all must leave the results bit-identical."""

from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from test_backend_models import Act, MlpSpec, build_mlp, reference, to_ir
from test_backend_models import draw_inputs as draw_mlp_inputs

from hawqc.backends import csim as csim_module
from hawqc.backends.base import get_backend
from hawqc.backends.csim import CACHE_ENV, compile_csim, compiler_flags
from hawqc.backends.csim_batch import (
    MIN_SAMPLES_PER_THREAD,
    THREADS_ENV,
    default_threads,
)
from hawqc.errors import UserInputError
from hawqc.frontends.onnx import load_onnx
from hawqc.passes.manager import PassManager
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

REPO = Path(__file__).resolve().parent.parent
MODELS = {
    # (model, backend, io_type): the MLP, and a CNN in io_stream, whose kernels keep static state.
    "jet_tagger": (REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx", "vitis", "io_parallel"),
    "digits_cnn_stream": (REPO / "examples" / "digits_cnn" / "digits_cnn.onnx", "vitis", "io_stream"),
}
SAMPLES = 4 * MIN_SAMPLES_PER_THREAD + 5  # enough for 4 threads, not a multiple of them


@dataclasses.dataclass(frozen=True)
class Case:
    project: object
    x: np.ndarray
    expected: np.ndarray  # hardware mode


@pytest.fixture(scope="module", params=sorted(MODELS))
def case(request, tmp_path_factory) -> Case:
    path, backend, io_type = MODELS[request.param]
    model = load_onnx(path)
    PassManager.parse("default").run(model)
    project = get_backend(backend).lower(model, tmp_path_factory.mktemp(request.param), io_type=io_type)
    hardware = Executor(model, mode="hardware")
    name = hardware.input_names[0]
    inside = draw_inputs(model, SAMPLES // 2, seed=1)[name]
    # Half of them four times wider: the input conversion saturates too.
    x = np.concatenate([inside, 4 * draw_inputs(model, SAMPLES - SAMPLES // 2, seed=2)[name]])
    expected = hardware.run({name: x})[hardware.output_names[0]]
    return Case(project, x, expected.reshape(len(x), -1))


def _flat(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1)


def test_batched_entry_equals_per_sample_path_and_hardware(case: Case) -> None:
    sim = compile_csim(case.project)
    batched = sim.predict(case.x, threads=1)
    np.testing.assert_array_equal(_flat(batched), _flat(sim.predict_each(case.x)))
    np.testing.assert_array_equal(_flat(batched), case.expected)
    assert len(np.unique(_flat(batched), axis=0)) > SAMPLES // 4  # not a constant output


def test_threads_give_the_results_of_one_thread(case: Case) -> None:
    sim = compile_csim(case.project)
    one = sim.predict(case.x, threads=1)
    for threads in (2, 4):
        assert sim._batched.threads_for(len(case.x), threads) == threads
        np.testing.assert_array_equal(sim.predict(case.x, threads=threads), one)
    # Each thread ran its own copy of the library.
    assert len(sim._batched._handles) == 4


def test_threads_on_catapult_each_load_their_weights(tmp_path: Path, monkeypatch) -> None:
    """Catapult's C simulation reads its weights from files on its first call, into static arrays:
    every copy of the library does so for itself."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    spec = MlpSpec(sizes=(6, 5, 3), w_exps=[-4, -5], bias=[True, True], relu=[True, False], acts=[Act(8, -3), None])
    proto = build_mlp(spec)
    sim = compile_csim(get_backend("catapult").lower(to_ir(proto), tmp_path / "prj"))
    x = draw_mlp_inputs(3 * MIN_SAMPLES_PER_THREAD, 6, 8, -4)
    expected = reference(proto, x).astype(np.float64)
    np.testing.assert_array_equal(sim.predict(x, threads=3), expected)
    np.testing.assert_array_equal(sim.predict(x, threads=1), expected)


def test_thread_count(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert default_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "0")
    with pytest.raises(UserInputError, match=THREADS_ENV):
        default_threads()
    monkeypatch.delenv(THREADS_ENV)
    assert default_threads() == len(os.sched_getaffinity(0))


def _logging_compiler(tmp_path: Path) -> tuple[str, Path]:
    """A g++ that records every command line it is given, then runs the real one."""
    log = tmp_path / "gxx.log"
    wrapper = tmp_path / "bin" / "g++"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec g++ "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper), log


def _compiles(log: Path) -> list[str]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if " -c " in f" {line} " or "-shared" in line.split()]


def test_unchanged_project_never_recompiles(tmp_path: Path, monkeypatch) -> None:
    """A second compile, as from a new process (the compiler probes are cached per process), of
    the same model written again elsewhere: no g++ compile or link. A changed weight: compiled."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cxx, log = _logging_compiler(tmp_path)
    spec = MlpSpec(sizes=(4, 3), w_exps=[-5], bias=[True], relu=[False], acts=[None])
    model = to_ir(build_mlp(spec))
    first = compile_csim(get_backend("vivado").lower(model, tmp_path / "a"), cxx=cxx)
    assert not first.compile_stats.cached and len(_compiles(log)) == 4  # batch entry, 2 units, link

    log.unlink()
    csim_module._compiler_identity.cache_clear()
    csim_module._accepts.cache_clear()
    project = get_backend("vivado").lower(model, tmp_path / "b")
    # What hls4ml's own compile() leaves in the project is no input of the library.
    (project.outdir / "firmware" / "myproject-0123abcd.so").write_bytes(b"\x7fELF")
    again = compile_csim(project, cxx=cxx)
    assert again.compile_stats.cached and again.library == first.library
    assert _compiles(log) == []
    x = draw_mlp_inputs(50, 4, 8, -4)
    np.testing.assert_array_equal(again.predict(x), first.predict(x))

    changed = to_ir(build_mlp(dataclasses.replace(spec, seed=spec.seed + 1)))
    other = compile_csim(get_backend("vivado").lower(changed, tmp_path / "c"), cxx=cxx)
    assert not other.compile_stats.cached and len(_compiles(log)) == 4


def test_fast_flags_give_the_results_of_build_lib_flags(case: Case) -> None:
    """hawqc's -O1 (and C++11) against the flags of the project's own build_lib.sh (-O3, C++23)."""
    recipe = case.project.csim
    build_lib = dataclasses.replace(
        recipe,
        std_candidates=("c++23", "c++11"),
        optional_flags=tuple(f for f in recipe.optional_flags if f != "-O1"),
    )
    fast_flags, slow_flags = compiler_flags(recipe), compiler_flags(build_lib)
    assert "-O1" in fast_flags and "-O1" not in slow_flags and "-O3" in slow_flags
    slow = compile_csim(dataclasses.replace(case.project, csim=build_lib))
    fast = compile_csim(case.project)
    assert slow.library != fast.library
    np.testing.assert_array_equal(_flat(fast.predict(case.x)), _flat(slow.predict(case.x)))
    np.testing.assert_array_equal(_flat(slow.predict(case.x)), case.expected)
