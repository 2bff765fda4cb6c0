"""`--default-precision` and `--tolerance` in the compile driver: checked before anything is
written, applied to the model after the passes (by the pass `default-precision`, run as a step of
the flow: `hawqc.flow.option_steps`), and said back to the user.

The default precision is attached to the model only if precision inference applies it somewhere
(`hawqc.ir.default_precision`): a model without float parts compiles exactly as without the
option, and the user is told so.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx_ir as ir

from hawqc.errors import OptionError
from hawqc.flow.option_steps import run_step
from hawqc.ir import default_precision
from hawqc.ir.default_precision import FloatParts
from hawqc.ir.qtypes import FixedType
from hawqc.passes.base import PassRecord
from hawqc.passes.default_precision import DefaultPrecision
from hawqc.passes.manager import PassManager


def check_float_options(spelling: str | None, tolerance: float | None) -> FixedType | None:
    """The parsed default precision (None without the option); UserInputError naming the option."""
    if tolerance is not None and (not math.isfinite(tolerance) or tolerance < 0):
        raise OptionError(f"{{}} must be a non-negative number of output LSBs, got {tolerance!r}", "tolerance")
    if spelling is None:
        return None
    return default_precision.parse_default_precision(spelling, option="default_precision")


@dataclass(frozen=True)
class FloatPartsOutcome:
    fixed: FixedType
    parts: FloatParts | None  # None: the model has no float parts; nothing was changed

    def summary(self) -> str:
        if self.parts is None:
            return f"--default-precision {self.fixed}: the model has no float parts; nothing changed"
        return self.parts.summary()


def run_default_precision_step(
    model: ir.Model, fixed: FixedType, configure: Callable[[PassManager], None] | None = None
) -> tuple[FloatPartsOutcome, list[PassRecord]]:
    """Run `default-precision{type=fixed}` over the model (its manager set up by `configure`); where
    it applied the type, and the pass's record. On a model without float parts the pass changes
    nothing and leaves no record: the compile, report included, is the one without the option."""
    records = run_step(DefaultPrecision(type=str(fixed)), model, configure)
    if default_precision.read(model) is None:
        return FloatPartsOutcome(fixed, None), [record for record in records if record.changed]
    from hawqc.ir.precision import precision_of

    return FloatPartsOutcome(fixed, precision_of(model).float_parts), records
