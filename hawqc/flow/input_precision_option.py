"""`--input-precision` in the compile driver: checked before anything is written, applied right after
loading (by the pass `input-precision`, run as a step of the flow: `hawqc.flow.option_steps`), and
said back to the user.

It runs first, before `--hawq-export-semantics hawq`'s reading and the pipeline, so that they see the
input's range (a Quant on the input, as every quantized export has), and before `--default-precision`
(which runs after the pipeline): with both options the inputs take the input precision (they are
quantized when the default precision's step runs, so it finds no float input), and the default
precision is left for the float weights and activations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from hawqc.flow.option_steps import run_step
from hawqc.ir.input_precision import InputQuant, parse_input_precision
from hawqc.passes.base import PassRecord
from hawqc.passes.input_precision import InputPrecision, unquantized_inputs
from hawqc.passes.manager import PassManager


def check_input_precision(spelling: str | None) -> InputQuant | None:
    """The parsed input precision (None without the option); OptionError naming the option."""
    return None if spelling is None else parse_input_precision(spelling, option="input_precision")


@dataclass(frozen=True)
class InputPrecisionOutcome:
    quant: InputQuant
    inputs: tuple[str, ...]  # the graph inputs it quantized; empty: nothing changed

    def summary(self) -> str:
        fixed = self.quant.fixed
        if not self.inputs:
            return f"--input-precision {fixed}: every graph input is quantized already; nothing changed"
        names = ", ".join(repr(name) for name in self.inputs)
        return f"input {names} taken as {fixed}: {self.quant.describe()}"


def run_input_precision_step(
    model: ir.Model, quant: InputQuant, configure: Callable[[PassManager], None] | None = None
) -> tuple[InputPrecisionOutcome, list[PassRecord]]:
    """Run `input-precision{type=...}` over the model (its manager set up by `configure`); which
    inputs it quantized, and the pass's record. A model whose inputs are all quantized is not
    changed and leaves no record: the compile is the one without the option."""
    inputs = tuple(value.name for value in unquantized_inputs(model.graph))
    if not inputs:
        return InputPrecisionOutcome(quant, ()), []
    records = run_step(InputPrecision(type=str(quant.fixed)), model, configure)
    return InputPrecisionOutcome(quant, inputs), records
