"""The output directory (`-o`): written beside it and moved into place at the end, one compile at a
time; its mistakes are one line, exit 2, nothing written; SIGTERM and SIGKILL leave it as it was."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import JET_TAGGER, one_error_line, run_cli

from hawqc.cli import main
from hawqc.flow import output_dir
from hawqc.flow.driver import CompileOptions, compile_model

HAWQC = Path(sys.executable).parent / "hawqc"


def make_old_project(directory: Path) -> dict[str, bytes]:
    """A directory that stands for a project written before; returns its snapshot."""
    (directory / "firmware").mkdir(parents=True)
    (directory / "firmware" / "myproject.cpp").write_text("// the old project\n")
    (directory / "hawqc_report.json").write_text('{"old": true}\n')
    (directory / "notes.txt").write_text("mine\n")
    return snapshot(directory)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file and directory under `directory`: relative path -> contents (b"<dir>" for a directory)."""
    return {
        p.relative_to(directory).as_posix(): b"<dir>" if p.is_dir() else p.read_bytes()
        for p in sorted(directory.rglob("*"))
    }


def leftovers(parent: Path) -> list[str]:
    """What hawqc may leave beside an output directory: temporaries, old copies, lock files."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and "hawqc" in p.name)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            pytest.fail(f"hawqc ended (exit {proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}")


def start_compile(outdir: Path, *args: str) -> subprocess.Popen:
    """`hawqc` in a process of its own, with enough verification to be still running when looked at."""
    command = [str(HAWQC), str(JET_TAGGER), "-o", str(outdir), "--verify", "300000", *args]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def half_written(parent: Path, name: str):
    """The temporary project of a compile into `parent/name`, once the backend has begun writing it."""
    return lambda: next(parent.glob(f".{name}.hawqc-tmp-*/firmware/myproject.cpp"), None)


# --- written beside, moved into place at the end ------------------------------------------------


def test_force_replaces_the_old_project_only_at_the_end(tmp_path, capsys, monkeypatch):
    proj = tmp_path / "proj"
    before = make_old_project(proj)
    seen = {}
    from hawqc.report.compile_report import CompileReport

    real_write = CompileReport.write

    def write(self, path):  # the last step before the project is moved into place
        seen["proj"], seen["beside"] = snapshot(proj), leftovers(tmp_path)
        real_write(self, path)

    monkeypatch.setattr(CompileReport, "write", write)
    code, out, _ = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force")
    assert code == 0 and f"wrote vitis project to {proj}" in out
    assert seen["proj"] == before  # untouched while the new project was being written
    assert any(name.startswith(".proj.hawqc-tmp-") for name in seen["beside"])
    assert not (proj / "notes.txt").exists() and (proj / "firmware" / "myproject.cpp").read_text() != "// the old project\n"
    assert json.loads((proj / "hawqc_report.json").read_text())["backend"] == "vitis"
    assert leftovers(tmp_path) == []


def test_replacing_keeps_the_directory_permissions(tmp_path, capsys):
    proj = tmp_path / "proj"
    make_old_project(proj)
    proj.chmod(0o750)
    assert run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force")[0] == 0
    assert proj.stat().st_mode & 0o777 == 0o750


def test_a_failed_compile_leaves_the_old_project_and_removes_the_parents_it_made(tmp_path, capsys):
    proj = tmp_path / "proj"
    before = make_old_project(proj)
    bad = tmp_path / "x.npy"
    np.save(bad, np.zeros((3, 7), np.float32))  # the jet tagger takes 16 features: refused after the model is read
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force", "--inputs", bad)
    assert code == 2 and "x.npy" in one_error_line(err)
    assert snapshot(proj) == before and leftovers(tmp_path) == []
    code, _, _ = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "a" / "b" / "proj", "--inputs", bad)
    assert code == 2 and not (tmp_path / "a").exists()


def test_paths_in_the_project_name_the_final_directory(tmp_path):
    """hls4ml writes its output directory into hls4ml_config.yml, and Catapult's bridge names its
    weights by absolute path: both must name -o, not the temporary the project was written in."""
    proj = tmp_path / "proj"
    result = compile_model(JET_TAGGER, proj, CompileOptions(backend="catapult"))
    final = proj.resolve()
    assert result.outdir == proj and result.project.outdir == final
    config = (proj / "hls4ml_config.yml").read_text()
    assert f"OutputDir: {final}\n" in config
    bridge = (proj / "myproject_bridge.cpp").read_text()
    assert f'"{final}/firmware/weights"' in bridge
    for path in proj.rglob("*"):
        if path.is_file():
            assert b"hawqc-tmp" not in path.read_bytes(), path
    assert not list(tmp_path.glob("*.tar.gz")) and leftovers(tmp_path) == []


def test_a_mismatch_trace_names_the_final_directory(tmp_path, capsys, monkeypatch):
    from hawqc.backends import csim

    real_predict = csim.CSim.predict

    def off_by_one_lsb(self, x, **kwargs):
        out = real_predict(self, x, **kwargs)
        out[3, 0] += 2.0**-10
        return out

    monkeypatch.setattr(csim.CSim, "predict", off_by_one_lsb)
    proj = tmp_path / "proj"
    code, out, _ = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--verify", "20")
    assert code == 1
    final = proj.resolve()
    trace = json.loads((proj / "hawqc_report.json").read_text())["verify"]["trace"]
    assert trace["directory"] == str(final / "mismatch")
    assert f"--inputs {final / 'mismatch' / 'input.npy'}" in trace["command"] and "hawqc-tmp" not in trace["command"]
    assert json.loads((proj / "mismatch" / "trace.json").read_text())["command"] == trace["command"]
    assert f"reproduce with: {trace['command']}" in out


def test_the_c_simulation_cache_hits_whatever_the_output_directory(tmp_path):
    first = compile_model(JET_TAGGER, tmp_path / "a", CompileOptions(verify_samples=4))
    second = compile_model(JET_TAGGER, tmp_path / "b", CompileOptions(verify_samples=4))
    assert second.report.csim["cached"] and second.report.csim["library"] == first.report.csim["library"]


def test_moving_into_place_is_one_atomic_exchange(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "in_a").touch(), (b / "in_b").touch()
    if not output_dir._exchange(a, b):
        pytest.skip("this file system cannot exchange two directories")
    assert [p.name for p in a.iterdir()] == ["in_b"] and [p.name for p in b.iterdir()] == ["in_a"]


def test_without_exchange_the_old_project_is_replaced_in_two_renames(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(output_dir, "_exchange", lambda a, b: False)  # as on a file system without it
    proj = tmp_path / "proj"
    make_old_project(proj)
    assert run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force")[0] == 0
    assert not (proj / "notes.txt").exists() and (proj / "hawqc_report.json").is_file()
    assert leftovers(tmp_path) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_project_renamed_aside_by_a_killed_compile_is_put_back(tmp_path, capsys):
    """Killed between the two renames (where the file system cannot exchange): -o is missing, the
    old project is aside, the new one in its temporary. The next compile puts the old one back."""
    pid = dead_pid()
    aside = tmp_path / f".proj.hawqc-old-{pid}-0123abcd"
    before = make_old_project(aside)
    staging = tmp_path / f".proj.hawqc-tmp-{pid}-4567abcd"
    make_old_project(staging)
    (tmp_path / ".proj.hawqc-lock").touch()
    # The staging of a compile into a directory that happens to be called proj.hawqc-old is not an aside.
    other = tmp_path / f".proj.hawqc-old.hawqc-tmp-{pid}-89abcdef"
    make_old_project(other)
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj")
    assert code == 2 and "not empty (use --force" in one_error_line(err)
    assert snapshot(tmp_path / "proj") == before and leftovers(tmp_path) == [other.name]


# --- interrupted, killed, concurrent --------------------------------------------------------------


def test_sigterm_is_an_interrupt_that_leaves_the_old_project(tmp_path):
    proj = tmp_path / "proj"
    before = make_old_project(proj)
    proc = start_compile(proj, "--force")
    wait_for(half_written(tmp_path, "proj"), proc, "the project is half written")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and err == "hawqc: interrupted\n"
    assert snapshot(proj) == before
    assert leftovers(tmp_path) == []  # its temporary and its lock went with it


def test_sigkill_leaves_the_old_project_and_the_next_compile_cleans_up(tmp_path, capsys):
    proj = tmp_path / "proj"
    before = make_old_project(proj)
    other = tmp_path / "other"
    proc = start_compile(proj, "--force")
    wait_for(half_written(tmp_path, "proj"), proc, "the project is half written")
    proc.kill()
    proc.wait(timeout=60)
    proc.stderr.close()
    assert snapshot(proj) == before
    left = leftovers(tmp_path)
    assert any(name.startswith(".proj.hawqc-tmp-") for name in left), left
    # A compile into another directory leaves them alone; the next one into proj removes them.
    assert run_cli(capsys, main, JET_TAGGER, "-o", other)[0] == 0
    assert leftovers(tmp_path) == left
    assert run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force")[0] == 0
    assert leftovers(tmp_path) == [] and not (proj / "notes.txt").exists()


def test_a_second_compile_into_the_same_directory_is_refused(tmp_path, capsys):
    proj = tmp_path / "proj"
    first = start_compile(proj)
    try:
        staging = wait_for(half_written(tmp_path, "proj"), first, "the first compile writes").parents[1]
        code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", proj, "--force")
        assert code == 2 and "another hawqc is writing this directory" in one_error_line(err)
        assert staging.is_dir()  # the refused compile touched nothing of the first one's
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 130 and not proj.exists() and leftovers(tmp_path) == []


# --- -o mistakes: one line, exit 2, nothing written ----------------------------------------------


def refused(capsys, *args) -> str:
    code, out, err = run_cli(capsys, main, JET_TAGGER, *args)
    assert code == 2 and "Traceback" not in err, err
    return one_error_line(err)


def test_a_path_under_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("a file\n")
    line = refused(capsys, "-o", tmp_path / "afile" / "sub")
    assert "afile" in line and "not a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "a file\n"


@pytest.mark.parametrize("spelling", [".", "..", "absolute"])
def test_the_current_directory_or_a_parent_is_refused(tmp_path, capsys, monkeypatch, spelling):
    proj = tmp_path / "proj"
    before = make_old_project(proj)
    monkeypatch.chdir(proj)
    line = refused(capsys, "-o", str(proj) if spelling == "absolute" else spelling, "--force")
    assert "is the current directory or contains it" in line
    assert snapshot(proj) == before and leftovers(tmp_path) == []


def test_a_directory_holding_what_the_compile_reads_is_refused(tmp_path, capsys):
    proj = tmp_path / "proj"
    make_old_project(proj)
    shutil.copy(JET_TAGGER, proj / "model.onnx")
    before = snapshot(proj)
    code, _, err = run_cli(capsys, main, proj / "model.onnx", "-o", proj, "--force")
    assert code == 2 and "model.onnx, which this compile reads" in one_error_line(err)
    np.save(proj / "x.npy", np.zeros((2, 16), np.float32))
    line = refused(capsys, "-o", proj, "--force", "--inputs", proj / "x.npy")
    assert "x.npy, which this compile reads" in line
    assert snapshot(proj) == {**before, "x.npy": (proj / "x.npy").read_bytes()}


def test_a_dangling_symlink_is_refused(tmp_path, capsys):
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    for target in ("link", "link/sub"):
        line = refused(capsys, "-o", tmp_path / target)
        assert "symbolic link" in line and "missing" in line and "does not exist" in line
    assert not (tmp_path / "missing").exists() and leftovers(tmp_path) == []


def test_a_symlink_to_a_directory_replaces_the_directory_it_points_to(tmp_path, capsys):
    real = tmp_path / "real"
    make_old_project(real)
    (tmp_path / "link").symlink_to(real)
    refused(capsys, "-o", tmp_path / "link")  # not empty, no --force
    code, out, _ = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "link", "--force")
    assert code == 0 and "wrote vitis project to" in out
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == real
    assert (real / "hawqc_report.json").is_file() and not (real / "notes.txt").exists()
    assert f"OutputDir: {real}\n" in (real / "hls4ml_config.yml").read_text()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.EROFS, errno.EPERM, errno.EACCES], ids=errno.errorcode.get)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_parent_that_cannot_be_written_is_refused(tmp_path, capsys, monkeypatch, code, existing):
    """Simulated: the os calls that create something in the parent fail as a read-only file system,
    an immutable directory or a missing permission makes them fail (the real ones are below)."""
    proj = tmp_path / "proj"
    before = make_old_project(proj) if existing else None
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path):
        if Path(path).parent == tmp_path:
            raise OSError(code, os.strerror(code), str(path))

    def fake_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT:
            refuse(path)
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        refuse(path)
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    line = refused(capsys, "-o", proj, *(["--force"] if existing else []))
    assert f"cannot write in {tmp_path} ({os.strerror(code)})" in line
    monkeypatch.undo()
    assert (snapshot(proj) == before) if existing else not proj.exists()
    assert leftovers(tmp_path) == []


def _run_or_skip(command: list[str], why: str) -> None:
    if os.geteuid() != 0 or shutil.which(command[0]) is None:
        pytest.skip(f"{why} needs root and {command[0]}")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"{why}: {' '.join(command)} failed here: {done.stderr.strip()}")


@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs at tmp_path/ro holding an old project in `existing`, then remounted read-only."""
    mount = tmp_path / "ro"
    mount.mkdir()
    _run_or_skip(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], "a read-only file system")
    try:
        before = make_old_project(mount / "existing")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount, before
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_file_system_is_refused(read_only_mount, capsys):
    mount, before = read_only_mount
    assert "(Read-only file system)" in refused(capsys, "-o", mount / "new")
    assert "(Read-only file system)" in refused(capsys, "-o", mount / "existing", "--force")
    assert "is a mount point" in refused(capsys, "-o", mount, "--force")
    assert sorted(p.name for p in mount.iterdir()) == ["existing"] and snapshot(mount / "existing") == before


def test_an_immutable_parent_is_refused(tmp_path, capsys):
    parent = tmp_path / "immutable"
    before = make_old_project(parent / "existing")
    _run_or_skip(["chattr", "+i", str(parent)], "an immutable directory")
    try:
        assert "(Operation not permitted)" in refused(capsys, "-o", parent / "new")
        assert "(Operation not permitted)" in refused(capsys, "-o", parent / "existing", "--force")
        assert sorted(p.name for p in parent.iterdir()) == ["existing"] and snapshot(parent / "existing") == before
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=True)
