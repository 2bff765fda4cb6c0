"""`--hawq-export-semantics hawq`: read a HAWQ export as the integer inference HAWQ itself runs, and
measure how often the file's own float32 arithmetic differs from it.

The reading is the pass `read-as-hawq` (`hawqc.passes.read_as_hawq`, which says what it rewrites
and why), run right after loading and before the pipeline, only when asked
(`hawqc --hawq-export-semantics hawq`, `CompileOptions(hawq_export_semantics="hawq")`, or
`read_as_hawq(model)` from Python). Asked for by the option, a file without the pattern is refused
naming the option and the file, before anything is rewritten (the pass alone leaves such a graph
unchanged). An export of a model without an input QuantAct needs `--input-precision` too (its
input has no type); without it, it is refused naming both options.

The measurement runs the file as loaded and the rewritten graph in semantic mode on sample inputs
and counts the samples where any requantized code differs, and where the output differs (the
file's float output against `fl32(accumulator * k)`); it is recorded with the reading
(`HawqExportReading.samples...`) in the model's metadata and in the compile report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import OptionError, UserInputError
from hawqc.flow.option_steps import run_step
from hawqc.ir.io import copy_model
from hawqc.passes.base import PassRecord
from hawqc.passes.manager import PassManager
from hawqc.passes.read_as_hawq import HawqExportReading, ReadAsHawq, find_hawq_export, record_reading, recorded_reading

SEMANTICS = ("file", "hawq")
# How the refusals name the option that asked for this reading (the command line: its flag).
OPTION = "hawq_export_semantics='hawq'"


def check_semantics(semantics: str) -> None:
    if semantics not in SEMANTICS:
        raise OptionError(f"{{}} must be one of {', '.join(SEMANTICS)}, got {semantics!r}", "hawq_export_semantics")


@dataclass(frozen=True)
class HawqExportStep:
    """What the step did: the measured reading, and the pass's record."""

    reading: HawqExportReading
    records: list[PassRecord]


def read_as_hawq(model: ir.Model, *, source: str = "the model", samples: int = 1000, seed: int = 0) -> HawqExportReading:
    """Rewrite `model` (a HAWQ export as loaded) in place into HAWQ's integer inference; measure
    on `samples` inputs (seed `seed`) how often the file's own float32 arithmetic differs from it."""
    return run_hawq_export_step(model, source=source, samples=samples, seed=seed).reading


def run_hawq_export_step(
    model: ir.Model,
    *,
    source: str = "the model",
    samples: int = 1000,
    seed: int = 0,
    configure: Callable[[PassManager], None] | None = None,
) -> HawqExportStep:
    """`read_as_hawq`, with the pass's manager set up by `configure`; the pass's record too."""
    if find_hawq_export(model, source=source, asker=OPTION) is None:
        raise UserInputError(
            f"{source}: {{}}: no HAWQ-export requantization (Mul(k) -> Relu? -> Quant(s_a) -> Div(s_a)) "
            f"found; compile this file without the option", option=OPTION
        )
    original = copy_model(model) if samples else None
    records = run_step(ReadAsHawq(), model, configure)
    reading = recorded_reading(model)
    if original is not None:
        reading = _measure(original, model, reading, samples, seed)
        record_reading(model, reading)
    return HawqExportStep(reading, records)


def _measure(original: ir.Model, normalized: ir.Model, reading: HawqExportReading, samples: int, seed: int) -> HawqExportReading:
    """Count the samples where the file's arithmetic gives other codes or outputs than HAWQ's, in
    slices (`hawqc.sim.slicing`): `--verify 1000000000` measures on that many samples in the memory
    of one slice. The samples are `draw_inputs(original, samples, seed)`, drawn a slice at a time."""
    from hawqc.sim.executor import Executor
    from hawqc.sim.inputs import draw_input_slices
    from hawqc.sim.slicing import slice_size

    name = original.graph.inputs[0].name
    file_run, hawq_run = Executor(original), Executor(normalized)
    other_codes = other_outputs = 0
    for x in draw_input_slices(original, samples, seed, slice_size(original)):
        file_values = file_run.run({name: x}, keep_intermediates=True)
        hawq_values = hawq_run.run({name: x}, keep_intermediates=True)
        codes_differ = np.zeros(len(x), dtype=bool)
        for requantization in reading.requantizations:
            codes = requantization.codes
            file_codes = np.rint(file_values[codes].astype(np.float64) / requantization.activation_scale)
            codes_differ |= (file_codes != hawq_values[codes]).reshape(len(x), -1).any(axis=1)
        output = original.graph.outputs[0].name
        hawq_output = hawq_values[normalized.graph.outputs[0].name].astype(np.float32) * np.float32(reading.output_scale)
        other_codes += int(codes_differ.sum())
        other_outputs += int((file_values[output] != hawq_output).reshape(len(x), -1).any(axis=1).sum())
    return dataclasses.replace(
        reading, samples=samples, samples_with_other_codes=other_codes, samples_with_other_outputs=other_outputs
    )
