"""Run the property "every registered pass keeps the meaning" on many random graphs, and say how it went.

    .venv/bin/python benchmarks/property_run.py [--examples 2000] [--seed N] [--events]

Runs `tests/test_property_passes.py::test_every_pass_keeps_the_meaning` under pytest with
HAWQC_PROPERTY_EXAMPLES set (CI runs the same test with the "hawqc-property-ci" profile's 100), and
prints the number of graphs hypothesis generated and checked, the passes and pipelines each one went
through, the wall time and the result. `--events` also prints hypothesis's feature statistics (what
share of the graphs exercised each feature of the generator). Exits with pytest's status.
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
TEST = "tests/test_property_passes.py::test_every_pass_keeps_the_meaning"
_CASES = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid test cases")
_PHASES = re.compile(r"- during (\w+) phase(.*?)(?=- during |\Z)", re.DOTALL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="graphs to generate (default 2000)")
    parser.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    parser.add_argument("--events", action="store_true", help="print the feature statistics too")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from hawqc.passes.registry import default_registry

    names = default_registry().names()
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST,
        "--hypothesis-show-statistics",
    ]  # fmt: skip
    if args.seed is not None:
        command.append(f"--hypothesis-seed={args.seed}")
    env = dict(os.environ, HAWQC_PROPERTY_EXAMPLES=str(args.examples))
    print(f"python {platform.python_version()}, {os.cpu_count()} cores")
    print(f"{len(names)} passes and pipelines: {', '.join(names)}")
    print(f"running: HAWQC_PROPERTY_EXAMPLES={args.examples} {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start

    # Hypothesis reports test cases per phase; shrink and explain re-run variants of a failure.
    passing = failing = invalid = 0
    for phase, text in _PHASES.findall(result.stdout):
        match = _CASES.search(text)
        if match and phase in ("reuse", "generate"):
            passing += int(match.group(1))
            failing += int(match.group(2))
            invalid += int(match.group(3))
    checked = passing + failing
    if args.events or result.returncode != 0:
        print(result.stdout[-20000:])
        print(result.stderr[-5000:], file=sys.stderr)
    print(
        f"graphs checked: {checked} ({passing} passing, {failing} failing; "
        f"{invalid} draws rejected as too large), each through {len(names)} passes/pipelines + 1 random pipeline"
    )
    print(f"wall time: {seconds:.1f} s ({seconds / max(checked, 1) * 1000:.0f} ms per graph)")
    print(f"result: {'PASSED' if result.returncode == 0 else f'FAILED (pytest exit {result.returncode})'}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
