"""Verification in bounded memory: the samples go through hardware mode, semantic mode and the C
simulation a slice at a time, whatever N and whatever the terminal.

A slice holds as many samples as keep its working set under `hawqc.sim.slicing.SLICE_BYTES`,
estimated from the shapes in the IR (`sample_bytes`), and at least one. The drawn inputs are made a slice at a time
too (`hawqc.sim.inputs.draw_input_slices`: bit for bit the samples `draw_inputs` gives for the same
seed and N, so a seed still reproduces a run and a mismatch's saved input is the same sample), and
only what the result needs outlives its slice: the counts and largest differences
(`hawqc.flow.verify.Differences`), the first differing sample's input (for the trace), and the first
samples, which go into the project's test bench (`hawqc.flow.user_data.bench_samples`). So
`--verify 1000000000` runs in the memory of one slice; it takes the time a billion samples take.
Streaming rather than refusing a large N: results do not depend on the slicing, so there is no
reason to make a user split a long run by hand.

The user's own data (`--inputs`) is in memory already; its slices bound the executors' and the C
simulation's working sets, and the C simulation's outputs are kept (every one goes into the test
bench and is compared with `--outputs`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hawqc.flow.exact_meaning import ExactMeaning
from hawqc.flow.progress import bar, slice_length
from hawqc.flow.user_data import bench_samples
from hawqc.flow.verify import Differences
from hawqc.sim.inputs import draw_input_slices
from hawqc.sim.slicing import slice_size


@dataclass
class SlicedRun:
    """What outlives the slices of one verification run."""

    csim_vs_hardware: Differences = field(default_factory=Differences)
    hardware_vs_semantic: Differences = field(default_factory=Differences)
    # The first sample where the C simulation and hardware mode differ, shape (1, ...), project layout.
    first_mismatch_input: np.ndarray | None = None
    # The test bench: the first samples' inputs and C simulation outputs (all of them for user data).
    bench_inputs: list[np.ndarray] = field(default_factory=list)
    bench_outputs: list[np.ndarray] = field(default_factory=list)
    slices: int = 0

    def bench(self) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate(self.bench_inputs), np.concatenate(self.bench_outputs)


def _slices(model: ir.Model, samples: int, seed: int, size: int, user_inputs: np.ndarray | None) -> Iterator[np.ndarray]:
    if user_inputs is None:
        yield from draw_input_slices(model, samples, seed, size)
        return
    for start in range(0, len(user_inputs), size):
        yield user_inputs[start : start + size]


def run_in_slices(
    model: ir.Model,
    hardware,
    semantic,
    csim,
    samples: int,
    seed: int,
    *,
    user_inputs: np.ndarray | None = None,
    slice_samples: int | None = None,
    meaning: ExactMeaning | None = None,
) -> SlicedRun:
    """Verify `samples` drawn inputs (or `user_inputs`): each slice through `hardware` and
    `semantic` (`hawqc.sim.Executor`s of `model`) and `csim.predict`. `slice_samples` overrides the
    size the model's shapes give (tests use it to force many slices). With `meaning` (a design with
    integer interfaces, `hawqc.flow.exact_meaning`), the drawn samples are host values: the design
    runs on their codes, and hardware mode is compared with the original model's exact meaning
    instead of the lowered model's semantic mode."""
    total = samples if user_inputs is None else len(user_inputs)
    size = slice_length(total, slice_samples or slice_size(model))
    name, output = hardware.input_names[0], hardware.output_names[0]
    run = SlicedRun()
    keep = total if user_inputs is not None else None
    with bar(total, "verifying") as advance:
        for x in _slices(model, samples, seed, size, user_inputs):
            if meaning is not None:
                host = meaning.host_values(x) if user_inputs is None else meaning.host_layout(x)
                x = meaning.design_inputs(host)
            expected = hardware.run({name: x})[output]
            simulated = csim.predict(x)
            first = run.csim_vs_hardware.add(expected, simulated)
            if meaning is None:
                run.hardware_vs_semantic.add(semantic.run({name: x})[output], expected, what="hardware mode")
            else:
                meaning.add(host, expected)
            if first is not None and run.first_mismatch_input is None:
                run.first_mismatch_input = np.array(x[first : first + 1])
            if keep is None:
                keep = bench_samples(math.prod(x.shape[1:]), total)
            kept = sum(len(part) for part in run.bench_inputs)
            if kept < keep:
                run.bench_inputs.append(np.array(x[: keep - kept]))
                run.bench_outputs.append(np.array(simulated[: keep - kept]))
            run.slices += 1
            advance(len(x))
    return run
