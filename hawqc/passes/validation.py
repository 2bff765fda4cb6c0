"""Translation validation (`--validate N`): every pass must keep the semantic results bit for bit.

The semantic executor runs the pipeline's input model once on N inputs drawn inside the input
quantizer's range, and again after every pass; the first pass after which any output element
differs (compared as raw bits, so -0.0 vs 0.0 and NaN payloads count) is named, with the element.
Comparing against the pipeline's input, not the previous pass, keeps the cost at one execution
per pass while still blaming the first pass that diverges.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError, VerificationError
from hawqc.passes.instrumentation import PassInstrumentation

if TYPE_CHECKING:
    from hawqc.passes.base import Pass
    from hawqc.passes.manager import PassRecord


class TranslationValidationError(VerificationError):
    """A pass changed what the model computes."""


@dataclass
class TranslationValidator(PassInstrumentation):
    samples: int
    seed: int = 0
    _inputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _reference: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def before_pipeline(self, model: ir.Model) -> None:
        from hawqc.sim.inputs import draw_inputs

        self._inputs = draw_inputs(model, self.samples, self.seed)
        try:
            self._reference = self._run(model)
        except UnsupportedModelError as err:
            raise UserInputError(f"--validate: the semantic executor cannot run this model ({err})") from None

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        try:
            outputs = self._run(model)
        except UnsupportedModelError as err:
            raise TranslationValidationError(
                f"translation validation: after pass '{record.name}' the model no longer runs ({err})"
            ) from None
        for name, before in self._reference.items():
            after = outputs.get(name)
            if after is None:
                raise TranslationValidationError(
                    f"translation validation: pass '{record.name}' removed graph output '{name}'"
                )
            if after.shape != before.shape:
                raise TranslationValidationError(
                    f"translation validation: pass '{record.name}' changed the shape of output "
                    f"'{name}' from {before.shape} to {after.shape}"
                )
            differs = _bits(before) != _bits(after)
            if differs.any():
                index = tuple(int(i) for i in np.argwhere(differs)[0])
                raise TranslationValidationError(
                    f"translation validation: pass '{record.name}' changed output '{name}'"
                    f"{list(index)} (sample {index[0]}) from {before[index]!r} to {after[index]!r}; "
                    f"{int(differs.sum())} of {differs.size} elements differ"
                )

    def _run(self, model: ir.Model) -> dict[str, np.ndarray]:
        from hawqc.sim import Executor

        return Executor(model).run(self._inputs)


def _bits(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        return array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return array
