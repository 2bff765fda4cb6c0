"""The translation units of a C simulation, and compiling them on the available cores.

Fast path (when a shared precompiled header applies, `csim_pch.py`): every unit `-include`s the
precompiled header, and the top function's file is compiled as several units (`csim_split.py`),
one per core: the top unit with the weights and one group of layer kernels, and one unit per other
group. If the precompiled header does not exist yet it is built first (once per header set, for
every later project); meanwhile the other cores compile what does not need it (the batched entry,
the bridge without the header).

Plain path (no precompiled header applies, `HAWQC_CSIM_PCH=0`, or the fast path failed in any way:
g++ refused the precompiled header, a rewritten unit did not compile or link): the project's own
sources as they are, as hawqc compiled them before. Both paths compile the same kernels with the
same flags and arguments, so the library computes the same results either way.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hawqc.backends import csim_pch, csim_split
from hawqc.backends.csim_process import ChildResult, compile_failure, run_parallel, start_child, stop_children
from hawqc.backends.project import LoweredProject

PCH_ENV = "HAWQC_CSIM_PCH"
# Part of the library cache key with the precompiled header's key: bump when the split changes.
SPLIT_FORMAT = "split-1"
# Compile cost of the top unit's own code (weights, the top function), of the bridge and of the
# batched entry, in the units of `csim_split.KERNEL_COST` (for ordering and balancing).
TOP_COST = 0.3
BRIDGE_COST = 0.4
BATCH_COST = 0.05


def pch_enabled() -> bool:
    return os.environ.get(PCH_ENV, "1").strip() not in ("0", "no", "off", "false")


def plan_pch(project: LoweredProject, flags: list[str], compiler: str, csim_cache: Path) -> csim_pch.PrecompiledHeader | None:
    if not pch_enabled():
        return None
    return csim_pch.plan_precompiled_header(project, flags, compiler, csim_cache)


def build_identity(pch: csim_pch.PrecompiledHeader | None) -> str:
    """What the library cache key records about how the units are built."""
    return f"{pch.key} {SPLIT_FORMAT}" if pch is not None else "plain"


@dataclass(frozen=True)
class Task:
    name: str
    command: list[str]
    needs_pch: bool
    cost: float


@dataclass(frozen=True)
class UnitsResult:
    objects: list[Path]
    results: list  # csim.ChildResult of every g++ run, the precompiled header's build included
    pch: str  # "none" (none applies), "built" (in this compile), "reused", "fell back" (to the plain path)
    units: int


def _run(tasks: list[Task], pch_task: Task | None, pch_out: Path | None, pch: csim_pch.PrecompiledHeader | None,
         cwd: Path, workdir: Path, jobs: int) -> tuple[list, bool, str]:
    """Run the tasks, `jobs` at a time, those that need the precompiled header once it is there
    (after `pch_task`, if given, built and published). (results, all succeeded, stderr of a failure)."""

    pending = ([pch_task] if pch_task else []) + list(tasks)
    running: list[tuple[Task, subprocess.Popen, Path]] = []
    results: list[ChildResult] = []
    pch_ready = pch_task is None
    n = 0
    try:
        while pending or running:
            while len(running) < jobs:
                task = next((t for t in pending if pch_ready or not t.needs_pch), None)
                if task is None:
                    break
                pending.remove(task)
                proc, err = start_child(task.command, cwd, workdir / f"stderr-{n}.txt")
                n += 1
                running.append((task, proc, err))
            if not running:
                return results, False, "nothing left to run"
            done = None
            while done is None:
                for entry in running:
                    pid, status, usage = os.wait4(entry[1].pid, os.WNOHANG)
                    if pid:
                        done = (entry, status, usage)
                        break
                else:
                    time.sleep(0.005)
            (task, proc, err), status, usage = done
            running.remove((task, proc, err))
            proc.returncode = os.waitstatus_to_exitcode(status)
            result = ChildResult(
                returncode=proc.returncode,
                cpu_seconds=usage.ru_utime + usage.ru_stime,
                peak_rss_bytes=usage.ru_maxrss * 1024,
                stderr=err.read_text(errors="replace"),
            )
            results.append(result)
            if result.returncode != 0:
                for _, other, _ in running:
                    other.kill()
                    other.wait()
                return results, False, result.stderr
            if task is pch_task:
                csim_pch.publish(pch_out, pch)
                pch_ready = True
    except BaseException:
        stop_children(proc for _, proc, _ in running)
        raise
    return results, True, ""


def _fast_tasks(project: LoweredProject, pch: csim_pch.PrecompiledHeader, compile_cmd, batch: Path, workdir: Path,
                jobs: int) -> tuple[list[Task], list[Path]] | None:
    """The tasks of the fast path and their objects (the batched entry first), or None if the top
    function cannot be split (then only the precompiled header is used)."""
    recipe = project.csim
    outdir = project.outdir
    top_rel, bridge_rel = recipe.sources[0], recipe.sources[1:]
    firmware = outdir / top_rel
    parameters = firmware.parent / "parameters.h"
    sources: list[tuple[str, Path, float]] = []
    split = None
    if parameters.is_file() and len(recipe.sources) == 2:
        params_text = parameters.read_text()
        weights = [
            csim_split.weight_header(inc, (firmware.parent / inc).read_text())
            for inc in csim_split.weight_includes(params_text)
            if (firmware.parent / inc).is_file()
        ]
        if all(w is not None for w in weights):
            top_cost = TOP_COST + csim_split.weights_cost(weights)
            split = csim_split.split_top_function(
                firmware.read_text(), params_text, project.project_name, weights, jobs, top_cost + BRIDGE_COST
            )
    if split is not None:
        costs = [0.0] * (1 + len(split.groups))
        for callee, group in split.assignment:
            costs[group] += csim_split.call_cost(csim_split.LayerCall(0, "", callee, "", ""), params_text)
        top = workdir / "hawqc_top.cpp"
        top.write_text(split.top)
        sources.append(("top", top, top_cost + costs[0]))
        for i, text in enumerate(split.groups, start=1):
            unit = workdir / f"hawqc_group{i}.cpp"
            unit.write_text(text)
            sources.append((f"group{i}", unit, costs[i]))
    else:
        sources.append(("top", firmware, TOP_COST + 1.0))
    sources += [("bridge", outdir / rel, BRIDGE_COST) for rel in bridge_rel]
    # The units that include the top function's file from elsewhere find its headers as it does.
    extra = [f"-I{firmware.parent}"]
    tasks = [Task("batch", compile_cmd(batch, workdir / "batch.o", []), False, BATCH_COST)]
    objects = [workdir / "batch.o"]
    for name, src, cost in sources:
        obj = workdir / f"{name}.o"
        uses = pch.include_flags()
        if name == "bridge" and not pch.ready:
            # Built meanwhile on a core the precompiled header's build leaves free.
            tasks.append(Task(name, compile_cmd(src, obj, extra), False, cost))
        else:
            tasks.append(Task(name, compile_cmd(src, obj, uses + extra), True, cost))
        objects.append(obj)
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].cost)
    return [tasks[i] for i in order], objects


def build_library(
    project: LoweredProject,
    flags: list[str],
    includes: list[str],
    defines: list[str],
    workdir: Path,
    cxx: str,
    jobs: int,
    csim_cache: Path,
    compiler: str,
) -> tuple[Path, UnitsResult]:
    """Compile and link the library into `workdir` (fast path, else plain path); a failure of the
    plain path is reported with g++'s message."""
    from hawqc.backends.csim_batch import batch_source

    recipe = project.csim
    outdir = project.outdir
    batch = workdir / "hawqc_batch.cpp"
    batch.write_text(batch_source(recipe.entry))
    library = workdir / "lib.so"

    def compile_cmd(src: Path, obj: Path, extra: list[str]) -> list[str]:
        return [cxx, *flags, *extra, *includes, *defines, "-c", str(src), "-o", str(obj)]

    def link_cmd(objects: list[Path]) -> list[str]:
        return [cxx, *flags, "-shared", *map(str, objects), "-o", str(library)]

    spent: list = []
    pch = plan_pch(project, flags, compiler, csim_cache)
    refused = False
    if pch is not None:
        was_ready = pch.ready
        tasks, objects = _fast_tasks(project, pch, compile_cmd, batch, workdir, jobs)
        pch_task, pch_out = None, None
        if not was_ready:
            command, pch_out = csim_pch.build_command(pch, project, cxx, flags, workdir)
            pch_task = Task("pch", command, False, 10.0)
        results, ok, stderr = _run(tasks, pch_task, pch_out, pch, outdir, workdir, jobs)
        spent += results
        if ok:
            linked = run_parallel([link_cmd(objects)], outdir, workdir, 1)[0]
            spent.append(linked)
            if linked.returncode == 0 and library.is_file():
                return library, UnitsResult(objects, spent, "reused" if was_ready else "built", len(tasks))
        elif csim_pch.HEADER_NAME in stderr:
            csim_pch.discard(pch)  # refused (or unreadable): built again when next needed
        refused = True
        library.unlink(missing_ok=True)
    # First: it takes a fraction of a second, and the runner waits for commands in start order.
    sources = [batch] + [outdir / src for src in recipe.sources]
    objects = [workdir / f"unit{i}.o" for i in range(len(sources))]
    compiles = [compile_cmd(src, obj, []) for src, obj in zip(sources, objects, strict=True)]
    results = run_parallel(compiles, outdir, workdir, jobs)
    for cmd, result in zip(compiles, results):
        if result.returncode != 0:
            raise compile_failure("compilation", cmd, result, csim_cache.parent / "logs")
    link = link_cmd(objects)
    linked = run_parallel([link], outdir, workdir, 1)[0]
    if linked.returncode != 0 or not library.is_file():
        raise compile_failure("link", link, linked, csim_cache.parent / "logs")
    label = "fell back" if refused else "none"
    return library, UnitsResult(objects, spent + results + [linked], label, len(compiles))
