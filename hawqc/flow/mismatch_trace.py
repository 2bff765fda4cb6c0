"""When verify finds the C simulation and hardware mode apart: which layer first computes something else.

The C simulation of a traced copy of the project (`hawqc.backends.csim_trace`) gives every hls4ml
layer's output for the first differing sample; hardware mode (`Executor(mode="hardware")` with
`keep_intermediates`) gives every graph value. The lowering's plan says which graph value each layer
computes, so the two are compared layer by layer, in the plan's (topological) order, and the first
layer whose output differs is named. Everything needed to look at it again is left in
`OUTDIR/mismatch/`: `input.npy` (the sample, in the layout of the model file the user compiled),
`layers.npz` (`<layer>.csim` and `<layer>.hardware`, flat, for every compared layer), `trace.json`
(the result) and the command that reproduces it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from hawqc.backends.csim_trace import layer_values, trace_layers
from hawqc.backends.project import LoweredProject
from hawqc.ir.layout import invert, layout_permutations

MISMATCH_DIR = "mismatch"
# Flags of the compile command that chose or checked the verification data; the reproducer replaces them.
_DATA_FLAGS = {"--verify": 1, "--seed": 1, "--inputs": 1, "--outputs": 1, "-o": 1, "--output": 1, "--force": 0}


@dataclass(frozen=True)
class LayerComparison:
    layer: str
    op: str
    value: str  # the graph value the layer computes
    differing_elements: int
    max_abs_diff: float


@dataclass(frozen=True)
class MismatchTrace:
    sample: int  # index of the traced sample among the verification inputs
    first_layer: str | None  # None: every layer agrees (the difference is in the output conversion)
    layers: tuple[LayerComparison, ...]
    directory: str
    command: str

    @property
    def first(self) -> LayerComparison | None:
        return next((c for c in self.layers if c.layer == self.first_layer), None)

    def as_dict(self) -> dict:
        return {
            "sample": self.sample,
            "first_layer": self.first_layer,
            "first_value": None if self.first is None else self.first.value,
            "directory": self.directory,
            "command": self.command,
            "layers": [asdict(c) for c in self.layers],
        }

    def summary(self) -> str:
        where = f"trace of sample {self.sample}: "
        if self.first is None:
            where += f"all {len(self.layers)} layers agree with hardware mode; the outputs differ after the last layer"
        else:
            first = self.first
            where += (
                f"first differing layer '{first.layer}' ({first.op}, graph value '{first.value}'): "
                f"{first.differing_elements} elements differ, max abs diff {first.max_abs_diff:g}"
            )
        return f"{where}\ninput and per-layer values saved in {self.directory}; reproduce with: {self.command}"


def _as_user_layout(model: ir.Model, name: str, array: np.ndarray) -> np.ndarray:
    """The model file's own layout (what `--inputs` reads), undoing a recorded layout change."""
    perm = layout_permutations(model).get(name)
    return array if not perm or len(perm) != array.ndim else array.transpose(invert(perm))


def reproduce_command(command: tuple[str, ...] | None, outdir: Path, input_file: Path) -> str:
    """`command` (the compile's own argv, program name first) with its data flags replaced by
    `--inputs input.npy`, writing a fresh project next to the saved input."""
    if command is None:
        return f"the same compile with --inputs {shlex.quote(str(input_file))}"
    kept: list[str] = []
    skip = 0
    for token in command:
        if skip:
            skip -= 1
            continue
        flag = token.split("=", 1)[0]
        if flag in _DATA_FLAGS:
            skip = _DATA_FLAGS[flag] if "=" not in token else 0
            continue
        kept.append(token)
    return shlex.join([*kept, "-o", str(outdir / "project"), "--force", "--inputs", str(input_file)])


def trace_mismatch(
    model: ir.Model,
    project: LoweredProject,
    x: np.ndarray,
    sample: int,
    command: tuple[str, ...] | None,
    *,
    shown_outdir: Path | None = None,
) -> MismatchTrace:
    """Trace `x`, sample `sample` of the verification inputs (shape (1, ...), project layout),
    through the C simulation and hardware mode; save it under `<project>/mismatch/` and say where
    they part. `shown_outdir`: where the project will be when the user reads this (the output
    directory, while the project is still written in its temporary sibling); the saved paths and
    the reproducer name it."""
    from hawqc.sim import Executor

    hardware = Executor(model, mode="hardware")
    x = np.asarray(x)
    values = hardware.run({hardware.input_names[0]: x}, keep_intermediates=True)
    traced = trace_layers(project, x)
    ops = {planned.name: planned.op for planned in project.plan.layers} if project.plan else {}

    comparisons, first = [], None
    saved: dict[str, np.ndarray] = {}
    for layer, value in layer_values(project).items():
        if value not in values:
            continue
        expected = np.asarray(values[value], dtype=np.float64).reshape(-1)
        simulated = traced[layer][0]
        if expected.shape != simulated.shape:
            continue  # not the same tensor (e.g. a layer hls4ml widened); nothing to compare element-wise
        differs = expected != simulated
        diff = float(np.abs(expected - simulated).max()) if expected.size else 0.0
        comparisons.append(LayerComparison(layer, ops.get(layer, "?"), value, int(differs.sum()), diff))
        saved[f"{layer}.csim"], saved[f"{layer}.hardware"] = simulated, expected
        if first is None and differs.any():
            first = layer

    directory = project.outdir / MISMATCH_DIR
    directory.mkdir(exist_ok=True)
    input_file = directory / "input.npy"
    np.save(input_file, _as_user_layout(model, hardware.input_names[0], x))
    np.savez(directory / "layers.npz", **saved)
    shown = (shown_outdir or project.outdir) / MISMATCH_DIR
    trace = MismatchTrace(
        sample=sample,
        first_layer=first,
        layers=tuple(comparisons),
        directory=str(shown),
        command=reproduce_command(command, shown, shown / input_file.name),
    )
    (directory / "trace.json").write_text(json.dumps(trace.as_dict(), indent=2) + "\n")
    return trace
