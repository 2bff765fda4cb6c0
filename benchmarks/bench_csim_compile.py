"""Cost of compiling the C simulation of a 16-64-32-32-5 MLP, per backend, in one run.

    .venv/bin/python benchmarks/bench_csim_compile.py [--model PATH] [--repeats 3] [--backends vivado,vitis,catapult]

For each backend the model is lowered once, then compiled `--repeats` times, each time into a fresh
empty cache, two ways:
- hawqc: `hawqc.backends.csim.compile_csim` (g++ with build_lib.sh's flags plus
  `FAST_COMPILE_FLAGS` (-Wno-free-nonheap-object, -O1; C++11 for Vivado/Vitis since branch
  fastcsim), the translation units in parallel on up to 2 cores);
- hls4ml: the project's own `build_lib.sh` (what `ModelGraph.compile()` runs: sequential, its flags).
Reported per way: wall seconds, CPU seconds (user + system of all g++ children) and the peak
resident set of the largest single g++ child (wait4 rusage of each child; for build_lib.sh, of the
shell, which is the maximum over the g++ processes it ran). Also the time of a cache hit. The model
defaults to the bundled jet tagger, loaded and run through hawqc's default pipeline.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hawqc.backends.base import get_backend  # noqa: E402
from hawqc.backends.csim import CACHE_ENV, compile_csim  # noqa: E402
from hawqc.frontends.onnx import load_onnx  # noqa: E402
from hawqc.passes.manager import PassManager  # noqa: E402

DEFAULT_MODEL = ROOT / "examples" / "jet_tagger" / "jet_tagger.onnx"


def _hls4ml_build(outdir: Path) -> tuple[float, float, int]:
    """Run the project's build_lib.sh; wall s, CPU s, peak RSS bytes of the largest child."""
    start = time.perf_counter()
    proc = subprocess.Popen(["bash", "build_lib.sh"], cwd=outdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    libraries = list((outdir / "firmware").glob("*.so"))
    if proc.returncode != 0 or not libraries:
        raise SystemExit(f"build_lib.sh failed in {outdir} (exit {proc.returncode}, libraries: {libraries})")
    for library in libraries:
        library.unlink()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def _fmt(values: list[float], unit: str, scale: float = 1.0, digits: int = 2) -> str:
    scaled = [v / scale for v in values]
    return f"{min(scaled):.{digits}f} / {statistics.median(scaled):.{digits}f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backends", default="vivado,vitis,catapult")
    args = parser.parse_args()

    model = load_onnx(args.model)
    PassManager.parse("default").run(model)
    print(f"model: {args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model}")
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    gxx = subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"compiler: {gxx}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="hawqc-bench-csim-") as scratch:
        for name in args.backends.split(","):
            project = get_backend(name).lower(model, Path(scratch) / name)
            ours_wall, ours_cpu, ours_rss, hls_wall, hls_cpu, hls_rss = [], [], [], [], [], []
            for repeat in range(args.repeats):
                os.environ[CACHE_ENV] = str(Path(scratch) / f"cache-{name}-{repeat}")
                sim = compile_csim(project)
                stats = sim.compile_stats
                assert not stats.cached
                ours_wall.append(stats.seconds)
                ours_cpu.append(stats.cpu_seconds)
                ours_rss.append(stats.peak_rss_bytes)
                wall, cpu, rss = _hls4ml_build(project.outdir)
                hls_wall.append(wall)
                hls_cpu.append(cpu)
                hls_rss.append(rss)
            start = time.perf_counter()
            hit = compile_csim(project)
            hit_ms = (time.perf_counter() - start) * 1000
            assert hit.compile_stats.cached
            ratio = statistics.median(hls_wall) / statistics.median(ours_wall)
            rows.append(
                f"| {name} | {_fmt(ours_wall, 's')} | {_fmt(ours_cpu, 's')} | {_fmt(ours_rss, 'MiB', 2**20, 0)} "
                f"| {_fmt(hls_wall, 's')} | {_fmt(hls_cpu, 's')} | {_fmt(hls_rss, 'MiB', 2**20, 0)} "
                f"| {ratio:.1f}x | {hit_ms:.0f} ms |"
            )
            print(rows[-1], flush=True)
    print()
    print("| backend | hawqc wall (best / median) | hawqc CPU | hawqc peak RSS (largest g++) "
          "| build_lib.sh wall | build_lib.sh CPU | build_lib.sh peak RSS | wall ratio | cache hit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
