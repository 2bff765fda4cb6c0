"""Run the property tests on many random graphs, and say how it went.

    .venv/bin/python benchmarks/property_run.py [--examples 2000] [--seed N] [--only passes|hardware]
                                                [--independent] [--events]

Runs, under pytest with the "hawqc-property-thorough" profile and HAWQC_PROPERTY_EXAMPLES set (CI
runs the same tests with the derandomized "hawqc-property-ci" profile's 100 graphs each), the two
properties of `tests/test_property_passes.py`:

- passes: every registered pass and named pipeline, and one random pipeline, keeps the semantic
  results of each random graph (MLP-like and convolutional) bit for bit;
- hardware: on integer-only graphs, hardware mode after `hls4ml-prepare` equals semantic mode.

`--independent` draws each graph's structure uniformly from a seed (HAWQC_PROPERTY_INDEPENDENT=1):
the graphs share nothing, where hypothesis's own examples repeat much of each other's structure,
but a failing graph is not shrunk. Prints, for each property, the number of graphs hypothesis
generated and checked, its time and the result, and the wall time. `--events` also prints
hypothesis's statistics: what share of the graphs exercised each feature of the generator, which
pipelines refused or skipped (known bugs) which graphs. Exits with pytest's status.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILE = "tests/test_property_passes.py"
TESTS = {
    "passes": "test_every_pass_keeps_the_meaning",
    "hardware": "test_hls4ml_prepare_then_hardware_mode_equals_semantic_mode",
}
_CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases")
_PHASES = re.compile(r"- during (\w+) phase \(([\d.]+) seconds\)(.*?)(?=- during |\Z)", re.DOTALL)


def statistics_by_test(stdout: str) -> dict[str, str]:
    """Hypothesis's statistics section of each test, by test function name."""
    parts = re.split(rf"^{re.escape(FILE)}::(\w+):\s*$", stdout, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="graphs per property (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--only", choices=sorted(TESTS), help="run one of the two properties")
    parser.add_argument("--independent", action="store_true", help="independent graphs, no shrinking")
    parser.add_argument("--events", action="store_true", help="print the feature statistics too")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from hawqc.passes.registry import default_registry

    names = default_registry().names()
    selected = [args.only] if args.only else list(TESTS)
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
        *(f"{FILE}::{TESTS[name]}" for name in selected), "--hypothesis-show-statistics",
    ]  # fmt: skip
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    # The thorough profile explores (from hypothesis's seed); CI's is derandomized: always the same graphs.
    env = dict(os.environ, HAWQC_PROPERTY_PROFILE="hawqc-property-thorough")
    env["HAWQC_PROPERTY_EXAMPLES"] = str(args.examples)
    if args.independent:
        env["HAWQC_PROPERTY_INDEPENDENT"] = "1"
    env.setdefault("HAWQC_CACHE_DIR", str(ROOT / ".hawqc-cache"))
    print(f"python {platform.python_version()}, {os.cpu_count()} cores")
    print(f"{len(names)} passes and pipelines: {', '.join(names)}")
    independent = " HAWQC_PROPERTY_INDEPENDENT=1" if args.independent else ""
    variables = f"HAWQC_PROPERTY_PROFILE=hawqc-property-thorough HAWQC_PROPERTY_EXAMPLES={args.examples}"
    print(f"running: {variables}{independent} {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start

    if args.events or result.returncode != 0:
        print(result.stdout if args.events else result.stdout[-60000:])
        print(result.stderr[-5000:], file=sys.stderr)
    sections = statistics_by_test(result.stdout)
    for name in selected:
        # Hypothesis reports test cases per phase; shrink and explain re-run variants of a failure.
        passing = failing = invalid = 0
        phase_seconds = 0.0
        for phase, phase_time, text in _PHASES.findall(sections.get(TESTS[name], "")):
            phase_seconds += float(phase_time)
            match = _CASES.search(text)
            if match and phase in ("reuse", "generate"):
                passing += int(match.group(1))
                failing += int(match.group(2))
                invalid += int(match.group(3))
        checked = passing + failing
        what = (
            f"each through {len(names)} passes/pipelines + 1 random pipeline"
            if name == "passes"
            else "each through hls4ml-prepare, then hardware mode against semantic mode"
        )
        print(
            f"{name}: graphs checked: {checked} ({passing} passing, {failing} failing; {invalid} draws "
            f"rejected as too large), {what}; {phase_seconds:.1f} s "
            f"({phase_seconds / max(checked, 1) * 1000:.0f} ms per graph)"
        )
    print(f"wall time: {seconds:.1f} s")
    print(f"result: {'PASSED' if result.returncode == 0 else f'FAILED (pytest exit {result.returncode})'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
