"""`--default-precision` and `--tolerance` in the compile driver: checked before anything is
written, applied to the model after the passes, and said back to the user.

The default precision is attached to the model only if precision inference applies it somewhere
(`hawqc.ir.default_precision`): a model without float parts compiles exactly as without the
option, and the user is told so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx_ir as ir

from hawqc.errors import OptionError
from hawqc.ir import default_precision
from hawqc.ir.default_precision import FloatParts
from hawqc.ir.qtypes import FixedType


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


def apply_default_precision(model: ir.Model, fixed: FixedType) -> FloatPartsOutcome:
    """Attach `fixed` to the model if it has float parts (see the module doc)."""
    from hawqc.ir.precision import precision_of

    default_precision.attach(model, fixed)
    try:
        parts = precision_of(model).float_parts
    finally:
        default_precision.detach(model)
    if parts is not None:
        default_precision.attach(model, fixed)
    return FloatPartsOutcome(fixed, parts)
