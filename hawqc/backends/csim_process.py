"""Running g++ for a C simulation: children started with their stderr in a file, reaped one by one
with their own resource usage (wall time, CPU time, peak RSS), up to `jobs` at a time; stopped when
an interrupt ends the build; a failure said in one line, with the whole output in a log file."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hawqc.errors import BackendError


@dataclass(frozen=True)
class ChildResult:
    returncode: int
    cpu_seconds: float
    peak_rss_bytes: int
    stderr: str


def start_child(cmd: list[str], cwd: Path, stderr_path: Path) -> tuple[subprocess.Popen, Path]:
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
    return proc, stderr_path


def finish_child(proc: subprocess.Popen, stderr_path: Path) -> ChildResult:
    # wait4 on this child alone gives its own rusage (RUSAGE_CHILDREN of the whole process is a
    # high-water mark over every child ever reaped, so before/after differences can read zero).
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:
        # Someone reaped it first (seen once under a loaded test run): its status is in the Popen
        # if subprocess did it, and its resource usage is lost, not its result.
        returncode = proc.wait()
        return ChildResult(returncode, 0.0, 0, stderr_path.read_text(errors="replace"))
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildResult(
        returncode=proc.returncode,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,  # kilobytes on Linux
        stderr=stderr_path.read_text(errors="replace"),
    )


def run_parallel(commands: list[list[str]], cwd: Path, workdir: Path, jobs: int) -> list[ChildResult]:
    """Run up to `jobs` commands at a time; after the first failure, stop the others (their
    results are then failures too, and only the first is reported)."""
    results: list[ChildResult] = []
    running: list[tuple[subprocess.Popen, Path]] = []
    pending = list(enumerate(commands))
    failed = False
    try:
        while pending or running:
            while pending and len(running) < jobs and not failed:
                i, cmd = pending.pop(0)
                running.append(start_child(cmd, cwd, workdir / f"stderr{i}.txt"))
            if not running:
                break
            proc, err = running[0]
            result = finish_child(proc, err)
            running.pop(0)
            results.append(result)
            if result.returncode != 0 and not failed:
                failed = True
                for other, _ in running:
                    other.kill()
    except BaseException:
        stop_children(proc for proc, _ in running)
        raise
    return results


def stop_children(processes) -> None:
    """Kill and reap g++ children when an interrupt (Ctrl-C, SIGTERM) ends the build: they would
    go on writing into a build directory that is being removed."""
    for proc in processes:
        proc.kill()
        try:
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass


# g++'s own words when the machine ran out of memory (cc1plus killed by the kernel's OOM killer, or
# refused memory), so that the one line says so instead of "exit 1".
_OUT_OF_MEMORY = ("virtual memory exhausted", "out of memory", "cannot allocate memory", "Killed signal terminated program")


def compile_failure(what: str, cmd: list[str], result: ChildResult, logs: Path) -> BackendError:
    """One line: what failed, why in g++'s first error line, and where its whole output is (the
    command and every line g++ wrote, in a file under `logs`: ap_types emits pages of deprecation
    warnings under C++20 and later that would bury the error on a terminal)."""
    text = result.stderr.strip()
    errors = [line for line in text.splitlines() if " error: " in line or "error:" in line.split(" ")[0:2]]
    log = _write_failure_log(what, cmd, result, logs)
    if result.returncode < 0 or any(marker.lower() in text.lower() for marker in _OUT_OF_MEMORY):
        if result.returncode < 0:
            reason = f"g++ was killed by signal {-result.returncode} (out of memory?)"
        else:
            reason = "g++ ran out of memory"
    else:
        reason = errors[0].strip() if errors else (text.splitlines()[-1].strip() if text else "no message")
    return BackendError(f"C simulation {what} failed (g++ exit {result.returncode}): {reason}; g++'s output is in {log}")


def _write_failure_log(what: str, cmd: list[str], result: ChildResult, logs: Path) -> Path | str:
    """`logs/csim-<what>-<time>-<pid>.log`."""
    path = logs / f"csim-{what}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        path.write_text(f"$ {' '.join(cmd)}\nexit {result.returncode}\n{result.stderr}")
    except OSError as error:
        return f"nowhere ({error.strerror or error} writing {path})"
    return path
