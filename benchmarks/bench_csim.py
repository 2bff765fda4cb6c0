"""hawqc's C simulation against hls4ml's own `compile()` and `predict()`, on the same project, in one run.

    .venv/bin/python benchmarks/bench_csim.py [--samples 20000] [--repeats 3] [--compile-repeats 3]

hawqc writes an hls4ml project from a `hls4ml.model.graph.ModelGraph` it builds (`from_layer_list`);
the benchmark keeps that very ModelGraph object and runs hls4ml's own methods on it, so both sides
simulate the same generated C++:

(a) throughput, jet tagger (`examples/jet_tagger/jet_tagger_hawq.onnx`, Vitis, io_parallel):
    hls4ml `ModelGraph.compile()` (writes the project again, runs its `build_lib.sh`: -O3, C++23)
    then `ModelGraph.predict(x)` (one ctypes call per sample, float64 inputs -> `myproject_double`),
    against hawqc's `compile_csim(project).predict(x)` (batched entry, default threads), with one
    thread, and hawqc's per-sample path `predict_each(x)`. Same inputs; every output is compared.
(b) compile time, small CNN (`examples/digits_cnn/digits_cnn.onnx`, Vitis, io_parallel): each
    measurement in a fresh child process (so that `getrusage(RUSAGE_CHILDREN)`, CPU time and peak
    RSS, covers that compile's g++ processes only), hls4ml `compile()` (= `write()` + `_compile()`,
    timed apart) against hawqc's `lower()` (plans, builds the ModelGraph, writes, checks) +
    `compile_csim()` into an empty library cache: "steady state" (the shared precompiled header
    of this header set already cached, as after any earlier compile of a project with the same
    layer kinds), "cold" (an empty cache: the precompiled header is built in this run and counted),
    "plain" (`HAWQC_CSIM_PCH=0`: no precompiled header, no split, the project's two units in
    parallel, as before), and the steady state with one job at a time (`jobs=1`); then the cache
    hit. The children's outputs are compared too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawqc.backends.base import get_backend
from hawqc.backends.csim import CACHE_ENV, cache_key, compile_csim, compiler_flags
from hawqc.frontends.onnx import load_onnx
from hawqc.passes.manager import PassManager
from hawqc.sim.inputs import draw_inputs

JET = ROOT / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx"
CNN = ROOT / "examples" / "digits_cnn" / "digits_cnn.onnx"
BACKEND = "vitis"


def _load(path: Path):
    model = load_onnx(path)
    PassManager.parse("default").run(model)
    return model


def lower_keeping_graph(model, outdir: Path):
    """hawqc's lowering, keeping the hls4ml ModelGraph it builds and writes."""
    from hls4ml.model.graph import ModelGraph

    original = ModelGraph.from_layer_list
    kept = []

    def keep(*args, **kwargs):
        graph = original(*args, **kwargs)
        kept.append(graph)
        return graph

    ModelGraph.from_layer_list = keep
    try:
        project = get_backend(BACKEND).lower(model, outdir)
    finally:
        ModelGraph.from_layer_list = original
    (graph,) = kept
    return project, graph


def _children_usage() -> tuple[float, int]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def child_compile(way: str, outdir: Path, x_path: Path) -> dict:
    """One compile of the CNN in this (fresh) process; the figures and the outputs on x."""
    model = _load(CNN)
    x = np.load(x_path)
    result: dict = {"way": way}
    if way == "hls4ml":
        project, graph = lower_keeping_graph(model, outdir)
        key_before = cache_key(project, compiler_flags(project.csim))
        cpu0, _ = _children_usage()
        start = time.perf_counter()
        _quiet(graph.write)
        written = time.perf_counter()
        # The project hls4ml wrote again is the one hawqc wrote (same content hash).
        result["same_project"] = cache_key(project, compiler_flags(project.csim)) == key_before
        start += time.perf_counter() - written
        written = time.perf_counter()
        _quiet(graph._compile)
        done = time.perf_counter()
        cpu1, rss = _children_usage()
        result.update(write_s=written - start, compile_s=done - written, total_s=done - start)
        y = graph.predict(np.ascontiguousarray(x.reshape(len(x), -1)))
    else:
        jobs = 1 if way == "hawqc-jobs1" else None
        if way == "hawqc-plain":
            os.environ["HAWQC_CSIM_PCH"] = "0"
        cpu0, _ = _children_usage()
        start = time.perf_counter()
        project = get_backend(BACKEND).lower(model, outdir)
        lowered = time.perf_counter()
        sim = compile_csim(project, jobs=jobs)
        done = time.perf_counter()
        cpu1, rss = _children_usage()
        assert not sim.compile_stats.cached
        hit_start = time.perf_counter()
        hit = compile_csim(project)
        result["cache_hit_s"] = time.perf_counter() - hit_start
        assert hit.compile_stats.cached
        result["pch"] = sim.compile_stats.precompiled_header
        result["units"] = sim.compile_stats.units
        result.update(write_s=lowered - start, compile_s=done - lowered, total_s=done - start)
        y = sim.predict(x)
    result.update(children_cpu_s=cpu1 - cpu0, children_peak_rss=rss, outputs=np.asarray(y).reshape(len(x), -1).tolist())
    return result


def _run_child(way: str, scratch: Path, x_path: Path, repeat: int) -> dict:
    outdir = scratch / f"cnn-{way}-{repeat}"
    # The steady-state ways share one cache whose precompiled header the first cold run built;
    # their libraries are removed before each run, so that each compiles.
    steady = scratch / "cache-steady"
    cache = steady if way in ("hawqc", "hawqc-jobs1") or (way == "hawqc-cold" and repeat == 0) else scratch / f"cache-{way}-{repeat}"
    shutil.rmtree(cache / "csim", ignore_errors=True)
    env = {**os.environ, CACHE_ENV: str(cache)}
    cmd = [sys.executable, __file__, "--child", way, "--outdir", str(outdir), "--x", str(x_path)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {way} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _best_median(values: list[float], unit: str = "s", scale: float = 1.0, digits: int = 2) -> str:
    v = [x / scale for x in values]
    return f"{min(v):.{digits}f} / {statistics.median(v):.{digits}f} {unit}"


def _timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall and CPU seconds (of this process, all its threads) of each call, and the last result."""
    times, cpu, out = [], [], None
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return times, cpu, out


def bench_throughput(scratch: Path, samples: int, repeats: int) -> None:
    model = _load(JET)
    project, graph = lower_keeping_graph(model, scratch / "jet")
    x = np.ascontiguousarray(draw_inputs(model, samples, seed=0)[model.graph.inputs[0].name], dtype=np.float64)
    os.environ[CACHE_ENV] = str(scratch / "cache-jet")

    start = time.perf_counter()
    _quiet(graph.compile)
    hls_compile = time.perf_counter() - start
    start = time.perf_counter()
    sim = compile_csim(project)
    ours_compile = time.perf_counter() - start

    hls_times, hls_cpu, hls_y = _timed(lambda: graph.predict(x), repeats)
    each_times, each_cpu, each_y = _timed(lambda: sim.predict_each(x), repeats)
    one_times, one_cpu, one_y = _timed(lambda: sim.predict(x, threads=1), repeats)
    many_times, many_cpu, many_y = _timed(lambda: sim.predict(x), repeats)
    threads = sim._batched.threads_for(len(x), None)
    for name, y in [("predict_each", each_y), ("predict, 1 thread", one_y), ("predict", many_y)]:
        if not np.array_equal(np.asarray(y).reshape(len(x), -1), np.asarray(hls_y).reshape(len(x), -1)):
            raise SystemExit(f"hawqc {name} differs from hls4ml's predict()")
    distinct = len(np.unique(np.asarray(hls_y), axis=0))

    def rate(times: list[float], cpu: list[float]) -> str:
        best, med = min(times), statistics.median(times)
        return f"{best:.3f} / {med:.3f} s = {samples / best:,.0f} samples/s | {min(cpu) / samples * 1e6:.1f} us"

    hls_best = min(hls_times)
    print(f"\n(a) jet tagger throughput: {samples} samples, best / median of {repeats}; all outputs equal "
          f"({distinct} distinct output rows); compile: hls4ml compile() {hls_compile:.1f} s, hawqc {ours_compile:.1f} s")
    print("| way | wall time | CPU per sample (best) | speed-up vs hls4ml predict() (best wall) |")
    print("|---|---|---|---|")
    print(f"| hls4ml `ModelGraph.predict()` (per-sample ctypes loop, its -O3 library) | {rate(hls_times, hls_cpu)} | 1.0x |")
    print(f"| hawqc `predict_each()` (per-sample ctypes loop, hawqc's -O1 library) | {rate(each_times, each_cpu)} | {hls_best / min(each_times):.1f}x |")
    print(f"| hawqc `predict(threads=1)` (batched entry) | {rate(one_times, one_cpu)} | {hls_best / min(one_times):.1f}x |")
    print(f"| hawqc `predict()` (batched entry, {threads} threads) | {rate(many_times, many_cpu)} | {hls_best / min(many_times):.1f}x |")


def bench_compile(scratch: Path, repeats: int) -> None:
    model = _load(CNN)
    x = draw_inputs(model, 500, seed=0)[model.graph.inputs[0].name]
    x_path = scratch / "cnn_x.npy"
    np.save(x_path, x)
    ways = ["hawqc-cold", "hls4ml", "hawqc", "hawqc-plain", "hawqc-jobs1"]
    runs: dict[str, list[dict]] = {w: [] for w in ways}
    for repeat in range(repeats):
        for way in ways:
            runs[way].append(_run_child(way, scratch, x_path, repeat))
            r = runs[way][-1]
            print(f"  {way} #{repeat}: total {r['total_s']:.2f} s (write {r['write_s']:.2f}, compile {r['compile_s']:.2f}), "
                  f"g++ CPU {r['children_cpu_s']:.2f} s, peak RSS {r['children_peak_rss'] / 2**20:.0f} MiB, "
                  f"precompiled header {r.get('pch', '-')}, units {r.get('units', '-')}, load {os.getloadavg()[0]:.2f}", flush=True)
    reference = runs["hls4ml"][0]["outputs"]
    assert all(r["pch"] == "reused" for w in ("hawqc", "hawqc-jobs1") for r in runs[w])
    assert all(r["pch"] == "built" for r in runs["hawqc-cold"]) and all(r["pch"] == "none" for r in runs["hawqc-plain"])
    for way in ways:
        for r in runs[way]:
            if r["outputs"] != reference:
                raise SystemExit(f"{way}: outputs differ from hls4ml's predict()")
    assert all(r["same_project"] for r in runs["hls4ml"])

    def med(way: str, field: str) -> float:
        return statistics.median(r[field] for r in runs[way])

    print(f"\n(b) digits CNN compile: {repeats} repeats, best / median; the outputs of every library on "
          f"{len(x)} inputs are equal; hls4ml rewrote the same project (same content hash)")
    print("| way | write / lower | compile | total | g++ CPU (all children) | peak RSS (largest child) | total vs hls4ml compile() (median) | g++ CPU vs hls4ml (median) |")
    print("|---|---|---|---|---|---|---|---|")
    for way, label in [("hls4ml", "hls4ml `compile()` = `write()` + `_compile()` (build_lib.sh)"),
                       ("hawqc", "hawqc `lower()` + `compile_csim()`, steady state (precompiled header cached; split units, 2 jobs)"),
                       ("hawqc-cold", "hawqc `lower()` + `compile_csim()`, cold (precompiled header built in this run)"),
                       ("hawqc-plain", "hawqc `lower()` + `compile_csim()`, `HAWQC_CSIM_PCH=0` (plain: 2 units in parallel)"),
                       ("hawqc-jobs1", "hawqc `lower()` + `compile_csim(jobs=1)`, steady state")]:
        rs = runs[way]
        ratio = med("hls4ml", "total_s") / med(way, "total_s")
        print(f"| {label} | {_best_median([r['write_s'] for r in rs])} | {_best_median([r['compile_s'] for r in rs])} "
              f"| {_best_median([r['total_s'] for r in rs])} | {_best_median([r['children_cpu_s'] for r in rs])} "
              f"| {max(r['children_peak_rss'] for r in rs) / 2**20:.0f} MiB | {ratio:.2f}x "
              f"| {med('hls4ml', 'children_cpu_s') / med(way, 'children_cpu_s'):.2f}x |")
    hits = [r["cache_hit_s"] * 1000 for r in runs["hawqc"]]
    print(f"cache hit (compile_csim of the unchanged project): {min(hits):.1f} / {statistics.median(hits):.1f} ms; "
          f"compile step alone, median: hls4ml _compile() {med('hls4ml', 'compile_s'):.2f} s, "
          f"hawqc compile_csim() {med('hawqc', 'compile_s'):.2f} s = {med('hls4ml', 'compile_s') / med('hawqc', 'compile_s'):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-repeats", type=int, default=3)
    parser.add_argument("--only", choices=["throughput", "compile"], help="run one of the two parts")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--outdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--x", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_compile(args.child, args.outdir, args.x)))
        return

    import hls4ml

    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
          f"hls4ml {hls4ml.__version__}, numpy {np.__version__}, {gxx}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="hawqc-bench-csim-") as scratch:
        if args.only != "compile":
            bench_throughput(Path(scratch), args.samples, args.repeats)
            print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
        if args.only != "throughput":
            bench_compile(Path(scratch), args.compile_repeats)
    print(f"load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
