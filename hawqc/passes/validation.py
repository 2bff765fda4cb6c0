"""Translation validation (`--validate N`): every pass must keep the semantic results bit for bit.

The semantic executor runs the pipeline's input model once on N inputs drawn inside the input
quantizer's range, and again after every pass; the first pass after which any output element
differs (compared as raw bits, so -0.0 vs 0.0 and NaN payloads count) is named, with the element.
Comparing against the pipeline's input, not the previous pass, keeps the cost at one execution
per pass while still blaming the first pass that diverges.

A pass may change the layout of graph inputs and outputs (`channels-last`: NCHW -> NHWC), recording
it with `hawqc.ir.layout`. The validator then feeds the model the same inputs transposed the way the
records changed since the pipeline's input, and transposes the outputs back before comparing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import DifferenceFound, OptionError, UnsupportedModelError, UserInputError, VerificationError
from hawqc.ir.layout import Permutation, compose, invert, is_identity, layout_permutations
from hawqc.passes.instrumentation import PassInstrumentation

if TYPE_CHECKING:
    from hawqc.passes.base import Pass, PassRecord


class TranslationValidationError(DifferenceFound, VerificationError):
    """A pass changed what the model computes: verification found a difference (exit code 1)."""


@dataclass
class TranslationValidator(PassInstrumentation):
    samples: int
    seed: int = 0
    _inputs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _reference: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _layouts: dict[str, Permutation] = field(default_factory=dict, repr=False)
    # Before a pass that keeps the exact meaning (`preserves = "exact"`): the model's exact outputs.
    _exact_before: dict | None = field(default=None, repr=False)

    def before_pipeline(self, model: ir.Model) -> None:
        from hawqc.sim.inputs import draw_inputs

        _check_fits_in_memory(model, self.samples)
        try:
            self._inputs = draw_inputs(model, self.samples, self.seed)
        except MemoryError:
            raise OptionError(f"{{}} {self.samples}: not enough memory for that many inputs", "validate") from None
        self._layouts = layout_permutations(model)
        try:
            self._reference = self._run(model, self._inputs)
        except UnsupportedModelError as err:
            raise OptionError(f"{{}}: the semantic executor cannot run this model ({err})", "validate") from None

    def before_pass(self, pass_: Pass, model: ir.Model) -> None:
        self._exact_before = None
        if getattr(pass_, "preserves", "semantic") == "exact":
            from hawqc.sim.exact import ExactExecutor

            try:
                self._exact_before = ExactExecutor(model).run(self._inputs)
            except UnsupportedModelError as err:
                # Fine if the pass changes nothing (checked as any other pass); an error if it does.
                self._exact_before = {"": err}

    def _check_same_layouts(self, model: ir.Model, name: str) -> None:
        if layout_permutations(model) != self._layouts:
            raise TranslationValidationError(
                f"translation validation: pass '{name}' keeps the exact meaning; it must run before passes that change layouts"
            )

    def _after_exact_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        """The exact meaning must be kept: the new model on the inputs' codes, its outputs mapped to
        real units, equals the old one exactly. The new model's semantic outputs become the reference
        (float32 may round differently), and the codes the inputs (the ports may now take codes)."""
        from hawqc.ir.interfaces import input_codes, output_affines
        from hawqc.sim.exact import ExactExecutor

        assert self._exact_before is not None
        codes = input_codes(model)
        inputs = {name: codes[name].encode(array) if name in codes else array for name, array in self._inputs.items()}
        try:
            after = ExactExecutor(model).run(inputs)
        except UnsupportedModelError as err:
            raise TranslationValidationError(
                f"translation validation: after pass '{record.name}' exact mode cannot run the model ({err})"
            ) from None
        affines = output_affines(model)
        for name, before in self._exact_before.items():
            if name not in after:
                raise TranslationValidationError(f"translation validation: pass '{record.name}' removed graph output '{name}'")
            got = after[name].fractions()
            real = affines[name].decode(after[name].to_float64()) if name in affines else got
            if name in affines and not np.all(after[name].equals(after[name].to_float64())):
                raise TranslationValidationError(
                    f"translation validation: pass '{record.name}': output '{name}' carries values that are no float64"
                )
            differs = np.asarray(before.fractions() != real, dtype=bool)
            if differs.any():
                index = tuple(int(i) for i in np.argwhere(differs)[0])
                raise TranslationValidationError(
                    f"translation validation: pass '{record.name}' changed the exact meaning of output '{name}'"
                    f"{list(index)} (sample {index[0]}) from {before.fractions()[index]} to {real[index]}; "
                    f"{int(differs.sum())} of {differs.size} elements differ"
                )
        self._inputs = inputs
        self._reference = self._run(model, inputs)

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        exact_before, self._exact_before = self._exact_before, None
        if exact_before is not None and record.changed:
            if "" in exact_before:
                raise TranslationValidationError(
                    f"translation validation: before pass '{record.name}' exact mode cannot run the model ({exact_before['']})"
                )
            self._check_same_layouts(model, record.name)
            self._exact_before = exact_before
            self._after_exact_pass(pass_, model, record)
            self._exact_before = None
            return
        changes = self._layout_changes(model, record)
        inputs = {
            name: array.transpose(changes[name]) if name in changes else array
            for name, array in self._inputs.items()
        }
        try:
            outputs = self._run(model, inputs)
        except UnsupportedModelError as err:
            raise TranslationValidationError(
                f"translation validation: after pass '{record.name}' the model no longer runs ({err})"
            ) from None
        if pass_.changes_meaning:
            # Asked for by name to change the outputs: what it left is the new reference (in the
            # pipeline input's layouts, like the first one).
            self._reference = {
                name: array.transpose(invert(changes[name])) if name in changes else array
                for name, array in outputs.items()
            }
            return
        for name, before in self._reference.items():
            after = outputs.get(name)
            if after is None:
                raise TranslationValidationError(
                    f"translation validation: pass '{record.name}' removed graph output '{name}'"
                )
            if name in changes:
                after = after.transpose(invert(changes[name]))
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

    def _layout_changes(self, model: ir.Model, record: PassRecord) -> dict[str, Permutation]:
        """Input/output name -> how its layout changed since the pipeline's input: the transpose
        that turns an array in the old layout into one in the new."""
        now = layout_permutations(model)
        arrays = {**self._inputs, **self._reference}
        changes = {}
        for name in {*self._layouts, *now}:
            if name not in arrays:
                continue  # a layout record of a value that is no graph input or output any more
            rank = arrays[name].ndim
            before = self._layouts.get(name, tuple(range(rank)))
            after = now.get(name, tuple(range(rank)))
            if len(before) != rank or len(after) != rank:
                raise TranslationValidationError(
                    f"translation validation: after pass '{record.name}' the layout recorded for "
                    f"'{name}' has rank {len(after)}, the value rank {rank}"
                )
            change = compose(invert(before), after)
            if not is_identity(change):
                changes[name] = change
        return changes

    def _run(self, model: ir.Model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from hawqc.sim import Executor

        return Executor(model).run(inputs)


def _bits(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        return array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return array


def _check_fits_in_memory(model: ir.Model, samples: int) -> None:
    """N inputs are drawn and run at once (as float64 while drawn): a count whose inputs alone
    exceed the machine's memory is refused before anything runs."""
    elements = 0
    for value in model.graph.inputs:
        elements += int(np.prod([d if isinstance(d, int) else 1 for d in list(value.shape or ())[1:]], dtype=np.float64))
    needed = float(samples) * elements * 8
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: nothing to compare with
        return
    if needed > memory:
        raise UserInputError(
            f"--validate {samples}: the inputs alone need {needed / 2**30:,.1f} GiB, more than this "
            f"machine's {memory / 2**30:,.1f} GiB of memory"
        )
