"""Peak memory of `--verify N` on a 256x256 image model: all samples at once (before) against the
slices of `hawqc.flow.verify_slices` (now), each in a fresh process, side by side.

    .venv/bin/python benchmarks/bench_verify_memory.py [--samples 100] [--side 256]

The model is built here (tests/cnn_models.py, seed 0): a U-Net-like block on a side x side x 3 image,
Quant -> Conv 3x3 (16) -> Relu -> Quant -> Conv 3x3 (16) -> Relu -> Quant -> Add (the first
block's output, a skip connection held across) -> Quant. The C simulation of such a model takes
long to compile with g++; it is stood in for by a second run of hardware mode, which holds the same
arrays (float64 outputs of the slice), so the figures are the verification's own memory, not the
C simulation's (whose per-sample buffers do not grow with N either way).

"before" is what the driver did off a terminal: draw all N inputs, run each executor on all of them
(the executor itself chunks by its largest value), then compare. "now" is `run_in_slices`.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def make_model(side: int):
    from cnn_models import CnnBuilder

    g = CnnBuilder((side, side, 3))
    x = g.quant("x", 8, -4)
    first = g.quant(g.node("Relu", [g.conv(x, 16, 3, (3, 3), pads=[1, 1, 1, 1])]), 8, -3, signed=False)
    second = g.quant(g.node("Relu", [g.conv(first, 16, 16, (3, 3), pads=[1, 1, 1, 1])]), 8, -3, signed=False)
    return g.build(g.quant(g.node("Add", [first, second]), 9, -3, signed=False))


class StandIn:
    """The C simulation's place: hardware mode's outputs, as float64 like the C simulation's."""

    def __init__(self, hardware) -> None:
        self.hardware = hardware

    def predict(self, x):
        return self.hardware.run({self.hardware.input_names[0]: x})[self.hardware.output_names[0]].astype("float64")


def run(variant: str, samples: int, side: int) -> None:
    from hawqc.flow.verify import compare, compare_modes
    from hawqc.flow.verify_slices import run_in_slices
    from hawqc.sim import Executor
    from hawqc.sim.inputs import draw_inputs
    from hawqc.sim.slicing import slice_size

    model = make_model(side)
    hardware, semantic = Executor(model, mode="hardware"), Executor(model)
    name, output = hardware.input_names[0], hardware.output_names[0]
    start = time.perf_counter()
    if variant == "before":
        x = draw_inputs(model, samples, 0)[name]
        expected = hardware.run({name: x})[output]
        meaning = semantic.run({name: x})[output]
        simulated = StandIn(hardware).predict(x)
        result = compare(expected, simulated, modes=compare_modes(meaning, expected, None, ()))
        mismatched, modes = result.mismatched_samples, result.modes.mismatched_samples
        size = samples
    else:
        sliced = run_in_slices(model, hardware, semantic, StandIn(hardware), samples, 0)
        mismatched, modes = sliced.csim_vs_hardware.mismatched_samples, sliced.hardware_vs_semantic.mismatched_samples
        size = slice_size(model)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{variant:6} {samples} samples, slice {size}: peak RSS {peak:,.0f} MB, {seconds:.1f} s, mismatched {mismatched}/{modes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--variant", choices=("before", "now"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run(args.variant, args.samples, args.side)
        return
    for variant in ("before", "now"):
        subprocess.run([sys.executable, __file__, "--variant", variant, "--samples", str(args.samples), "--side", str(args.side)], check=True)


if __name__ == "__main__":
    main()
