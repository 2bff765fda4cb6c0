"""Temporaries of killed runs are removed by later runs; those of running ones never are."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import JET_TAGGER

from hawqc import temporaries
from hawqc.temporaries import remove_abandoned, temporary_name

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def holder():
    """Start a process that holds the flock of a path (as a running hawqc holds its temporaries)."""
    started = []

    def hold(path: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "held\n"
        started.append(proc)
        return proc

    yield hold
    for proc in started:
        proc.kill()
        proc.wait()


def test_only_temporaries_whose_owner_is_gone_are_removed(tmp_path, holder):
    dead = dead_pid()
    abandoned = tmp_path / f".proj.hawqc-tmp-{dead}-00aa"
    abandoned.mkdir()
    (abandoned / "half.cpp").write_text("// half written\n")
    abandoned_file = tmp_path / f".out.onnx.hawqc-tmp-{dead}-00bb"
    abandoned_file.write_text("half")
    # Running: its pid is alive (this test's parent), or its lock is held (a process in another pid
    # namespace, whose pid means nothing here), or it is our own.
    alive_pid = tmp_path / f".proj.hawqc-tmp-{os.getppid()}-00cc"
    alive_pid.mkdir()
    locked = tmp_path / f".proj.hawqc-tmp-{dead}-00dd"
    locked.mkdir()
    holder(locked)
    ours = tmp_path / temporary_name("proj")
    ours.mkdir()
    # An old project renamed aside is not a temporary: it may have to be put back.
    aside = tmp_path / f".proj.hawqc-old-{dead}-00ff"
    unrelated = [tmp_path / ".proj.hawqc-lock", tmp_path / "proj", aside, tmp_path / f".other.hawqc-tmp-{dead}-00ee"]
    unrelated[0].touch(), unrelated[1].mkdir(), unrelated[2].mkdir(), unrelated[3].mkdir()

    assert remove_abandoned(tmp_path, "proj") == [abandoned]
    assert remove_abandoned(tmp_path, "out.onnx") == [abandoned_file]
    assert all(p.exists() for p in (alive_pid, locked, ours, *unrelated))
    assert remove_abandoned(tmp_path) == [unrelated[3]]  # any stem
    found = list(temporaries.abandoned(tmp_path, "proj", mark=temporaries.ASIDE))
    assert [path for path, _ in found] == [aside]
    for _, fd in found:
        os.close(fd)


def test_a_temporary_is_kept_while_its_owner_holds_it_and_removed_after(tmp_path, holder):
    temporary = tmp_path / f".proj.hawqc-tmp-{dead_pid()}-00aa"
    temporary.mkdir()
    proc = holder(temporary)
    assert remove_abandoned(tmp_path) == [] and temporary.is_dir()
    proc.kill()
    proc.wait()
    assert remove_abandoned(tmp_path) == [temporary] and not temporary.exists()


def test_owned_directory_holds_its_lock_and_is_removed(tmp_path):
    with temporaries.owned_directory(tmp_path, "work") as work:
        assert work.name.startswith(f".work.hawqc-tmp-{os.getpid()}-")
        # Another process cannot take its lock: it is in use.
        probe = "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)"
        assert subprocess.run([sys.executable, "-c", probe, str(work)], capture_output=True).returncode != 0
    assert not work.exists()


def test_write_model_removes_the_temporary_a_killed_write_left(tmp_path):
    from hawqc.frontends.onnx import load_onnx
    from hawqc.ir.io import write_model

    stale = tmp_path / f".out.onnx.hawqc-tmp-{dead_pid()}-00aa"
    stale.write_bytes(b"half a model")
    write_model(load_onnx(JET_TAGGER), tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]
    assert load_onnx(tmp_path / "out.onnx").graph.name


def test_a_c_simulation_build_removes_abandoned_build_directories(tmp_path, monkeypatch):
    """Of killed builds (named with their pid), and of the older naming (no pid) once a day old;
    the build itself works in a directory of its own, locked."""
    from hawqc.backends import csim, csim_units
    from hawqc.flow.driver import CompileOptions, compile_model

    project = compile_model(JET_TAGGER, tmp_path / "proj", CompileOptions()).project
    root = tmp_path / "cache" / "csim"
    root.mkdir(parents=True)
    killed = root / f".{'a' * 32}.hawqc-tmp-{dead_pid()}-00aa"
    old_style, recent_old_style = root / f".{'b' * 32}.k2j_x9zq", root / f".{'c' * 32}.p0p0p0p0"
    for directory in (killed, old_style, recent_old_style):
        directory.mkdir()
        (directory / "unit0.o").write_bytes(b"half an object")
    day_ago = time.time() - 2 * 24 * 3600
    os.utime(old_style, (day_ago, day_ago))
    seen = {}

    class Stop(Exception):
        pass

    def build_library(project, flags, includes, defines, workdir, *args):
        seen["left"] = sorted(p.name for p in root.iterdir())
        seen["workdir"] = workdir
        raise Stop

    monkeypatch.setenv(csim.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(csim_units, "build_library", build_library)
    with pytest.raises(Stop):
        csim.compile_csim(project)
    workdir = seen["workdir"]
    assert workdir.name.startswith(".") and f".hawqc-tmp-{os.getpid()}-" in workdir.name
    assert seen["left"] == sorted([recent_old_style.name, workdir.name])
    assert sorted(p.name for p in root.iterdir()) == [recent_old_style.name]  # its own is gone too
