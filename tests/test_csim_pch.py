"""Shared precompiled header and split translation units of the C simulation: bit-identical results
to the plain compile and to hardware mode, a cache key that knows how the library was built, and a
silent fall back to the plain compile when g++ refuses the precompiled header."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from hawqc.backends import csim_split
from hawqc.backends.base import get_backend
from hawqc.backends.csim import CACHE_ENV, cache_key, compile_csim, compiler_flags
from hawqc.backends.csim_pch import pch_root, plan_precompiled_header
from hawqc.backends.csim_units import PCH_ENV
from hawqc.frontends.onnx import load_onnx
from hawqc.passes.manager import PassManager
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

REPO = Path(__file__).resolve().parent.parent
JET = REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx"
CNN = REPO / "examples" / "digits_cnn" / "digits_cnn.onnx"
CASES = {
    "jet_vitis": (JET, "vitis", "io_parallel"),
    "cnn_vitis": (CNN, "vitis", "io_parallel"),
    "cnn_vivado_stream": (CNN, "vivado", "io_stream"),
    "cnn_catapult": (CNN, "catapult", "io_parallel"),
}


@dataclasses.dataclass(frozen=True)
class Case:
    project: object
    x: np.ndarray
    expected: np.ndarray


def _case(path: Path, backend: str, io_type: str, outdir: Path) -> Case:
    model = load_onnx(path)
    PassManager.parse("default").run(model)
    project = get_backend(backend).lower(model, outdir, io_type=io_type)
    hardware = Executor(model, mode="hardware")
    name = hardware.input_names[0]
    inside = draw_inputs(model, 150, seed=3)[name]
    x = np.concatenate([inside, 4 * inside])  # saturating inputs too
    return Case(project, x, hardware.run({name: x})[hardware.output_names[0]].reshape(len(x), -1))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory) -> Case:
    return _case(*CASES[request.param], tmp_path_factory.mktemp(request.param))


def _flat(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1)


def test_precompiled_and_split_equals_plain_and_hardware(case: Case, monkeypatch) -> None:
    fast = compile_csim(case.project)
    monkeypatch.setenv(PCH_ENV, "0")
    plain = compile_csim(case.project)
    if case.project.backend == "catapult":
        # Its units get a per-library -D WEIGHTS_DIR, used by nnet_helpers.h: no shared header,
        # the plain compile either way.
        assert fast.library == plain.library
    else:
        assert plain.library != fast.library  # the key says how the library was built
    for sim in (fast, plain):
        np.testing.assert_array_equal(_flat(sim.predict(case.x)), case.expected)


def test_fresh_cache_builds_then_reuses_the_header(tmp_path: Path, monkeypatch) -> None:
    """First compile builds the shared header; another project of the same layer kinds reuses it
    (a changed weight is another project); the split put the kernels in several units."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    first = _case(CNN, "vitis", "io_parallel", tmp_path / "a")
    sim = compile_csim(first.project)
    assert sim.compile_stats.precompiled_header == "built" and sim.compile_stats.units >= 4
    np.testing.assert_array_equal(_flat(sim.predict(first.x)), first.expected)
    assert len(list(pch_root(tmp_path / "cache" / "csim").glob("*/*.gch"))) == 1
    hawq = _case(REPO / "examples" / "digits_cnn" / "digits_cnn_hawq.onnx", "vitis", "io_parallel", tmp_path / "b")
    flags = compiler_flags(hawq.project.csim)
    from hawqc.backends.csim import _compiler_identity, cache_dir

    ours = plan_precompiled_header(first.project, flags, _compiler_identity("g++"), cache_dir())
    theirs = plan_precompiled_header(hawq.project, flags, _compiler_identity("g++"), cache_dir())
    assert theirs.key == ours.key  # same layer kinds, backend and flags: one header
    again = compile_csim(hawq.project)
    assert again.compile_stats.precompiled_header == "reused"
    np.testing.assert_array_equal(_flat(again.predict(hawq.x)), hawq.expected)


def test_refused_header_falls_back_to_the_plain_compile(tmp_path: Path, monkeypatch) -> None:
    """A precompiled header g++ cannot use (here: garbage in its place, as a flags mismatch or a
    truncated file would be): the library is compiled the plain way, correct, without an error,
    and the bad header is dropped so that the next compile builds it again."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    case = _case(JET, "vivado", "io_parallel", tmp_path / "prj")
    from hawqc.backends.csim import _compiler_identity, cache_dir

    pch = plan_precompiled_header(case.project, compiler_flags(case.project.csim), _compiler_identity("g++"), cache_dir())
    pch.gch.parent.mkdir(parents=True)
    pch.gch.write_bytes(b"gpch.not a precompiled header" * 100)
    sim = compile_csim(case.project)
    assert sim.compile_stats.precompiled_header == "fell back"
    assert not pch.gch.exists()
    np.testing.assert_array_equal(_flat(sim.predict(case.x)), case.expected)


def test_header_built_with_other_flags_is_refused(tmp_path: Path, monkeypatch) -> None:
    """A real precompiled header, built for other flags (-fno-PIC), at this key's place."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    case = _case(JET, "vitis", "io_parallel", tmp_path / "prj")
    from hawqc.backends import csim_pch
    from hawqc.backends.csim import _compiler_identity, cache_dir

    flags = compiler_flags(case.project.csim)
    pch = plan_precompiled_header(case.project, flags, _compiler_identity("g++"), cache_dir())
    other = [f for f in flags if f != "-fPIC"] + ["-fno-PIC", "-fno-exceptions"]
    import subprocess

    work = tmp_path / "work"
    work.mkdir()
    command, out = csim_pch.build_command(pch, case.project, "g++", other, work)
    subprocess.run(command, check=True, capture_output=True)
    csim_pch.publish(out, pch)
    sim = compile_csim(case.project)
    assert sim.compile_stats.precompiled_header == "fell back"
    np.testing.assert_array_equal(_flat(sim.predict(case.x)), case.expected)


def test_cache_key_names_the_build(tmp_path: Path, monkeypatch) -> None:
    case = _case(JET, "vitis", "io_parallel", tmp_path / "prj")
    flags = compiler_flags(case.project.csim)
    with_pch = cache_key(case.project, flags)
    monkeypatch.setenv(PCH_ENV, "0")
    assert cache_key(case.project, flags) != with_pch


def test_parse_call() -> None:
    line = "    nnet::conv_2d_cl<input_t, layer2_t, config2>(global_in, layer2_out, w2, b2); // conv1"
    assert csim_split.parse_call(line) == (
        "    ",
        "nnet::conv_2d_cl<input_t, layer2_t, config2>",
        "global_in, layer2_out, w2, b2",
        " // conv1",
    )
    assert csim_split.parse_call("    nnet::clone_stream<a_t, a_t, 128>(x, y, z);")[1] == "nnet::clone_stream<a_t, a_t, 128>"
    # Not a whole statement on one line, or something after it: left alone.
    assert csim_split.parse_call("    nnet::dense<a, b, c>(x,") is None
    assert csim_split.parse_call("    nnet::dense<a, b, c>(x, y); x = 1;") is None
    assert csim_split.parse_call("    layer2_t layer2_out[8];") is None


def test_split_needs_plain_weights() -> None:
    assert csim_split.weight_header("weights/w2.h", "#ifndef W2_H_\n#define W2_H_\nt_t w2[4] = {1, 2, 3, 4};\n#endif\n").declaration == "t_t w2[4]"
    assert csim_split.weight_header("weights/w2.h", "namespace n {\nt_t w2[4] = {1};\n}\n") is None
    assert csim_split.weight_header("weights/w2.h", "static t_t w2[4] = {1};\n") is None
