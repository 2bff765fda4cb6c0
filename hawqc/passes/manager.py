"""The pass manager: runs a pipeline over a model, verifying and timing every pass.

Conventions follow MLIR's: the IR is verified before the first pass and after every pass (unless
turned off), so a broken invariant is blamed on the pass that broke it; failures name the pass and,
through the verifier, the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_ir as ir

from hawqc.errors import HawqcError, UserInputError, VerificationError
from hawqc.ir.verifier import verify
from hawqc.passes.base import Pass, PassResult
from hawqc.passes.pipeline import PassInvocation, parse_pipeline
from hawqc.passes.registry import PassRegistry, default_registry

# Named pipelines nest; this bounds a pipeline that (through a typo) names itself.
MAX_PIPELINE_DEPTH = 16


class PassFailed(HawqcError):
    """A pass raised something that is not a hawqc error: a bug in that pass."""


@dataclass(frozen=True)
class PassRecord:
    """One executed pass: what the report and `--time-passes` show."""

    name: str  # the pass's spelling, options included
    seconds: float
    changed: bool
    statistics: dict[str, int]
    pipeline: str | None = None  # the named pipeline it was expanded from, if any


@dataclass
class ScheduledPass:
    instance: Pass
    pipeline: str | None


# Called after each pass with the pass, the model and its record: the hook tools embed with.
AfterPassHook = Callable[[Pass, ir.Model, PassRecord], None]


@dataclass
class PassManager:
    """An ordered list of passes and how to run them."""

    passes: list[ScheduledPass]
    text: str = ""
    verify_each: bool = True
    after_pass: list[AfterPassHook] = field(default_factory=list)

    @classmethod
    def parse(
        cls, text: str, *, registry: PassRegistry | None = None, verify_each: bool = True
    ) -> PassManager:
        """Build a manager from pipeline text such as `"cleanup,gemm-to-matmul"`."""
        registry = registry or default_registry()
        scheduled: list[ScheduledPass] = []
        _expand(parse_pipeline(text), registry, scheduled, parent=None, depth=0)
        return cls(scheduled, text=text, verify_each=verify_each)

    def run(self, model: ir.Model) -> list[PassRecord]:
        if self.verify_each:
            try:
                verify(model)
            except VerificationError as err:
                raise VerificationError(f"input IR is invalid: {err}") from None
        records = []
        for scheduled in self.passes:
            record = self._run_one(scheduled, model)
            records.append(record)
            for hook in self.after_pass:
                hook(scheduled.instance, model, record)
        return records

    def _run_one(self, scheduled: ScheduledPass, model: ir.Model) -> PassRecord:
        instance = scheduled.instance
        label = instance.spelling()
        start = time.perf_counter()
        try:
            outcome = instance.run(model)
        except HawqcError as err:
            raise type(err)(f"pass '{label}': {err}") from err
        except Exception as err:
            raise PassFailed(f"pass '{label}' crashed: {type(err).__name__}: {err}") from err
        seconds = time.perf_counter() - start
        result = outcome if isinstance(outcome, PassResult) else PassResult(bool(outcome))
        if self.verify_each:
            try:
                verify(model)
            except VerificationError as err:
                raise VerificationError(f"after pass '{label}': {err}") from None
        return PassRecord(label, seconds, result.changed, dict(result.statistics), scheduled.pipeline)


def _expand(
    elements: list[PassInvocation],
    registry: PassRegistry,
    out: list[ScheduledPass],
    parent: str | None,
    depth: int,
) -> None:
    if depth > MAX_PIPELINE_DEPTH:
        raise UserInputError(f"pipeline '{parent}' nests deeper than {MAX_PIPELINE_DEPTH} levels")
    for element in elements:
        if registry.is_pipeline(element.name):
            if element.options:
                raise UserInputError(f"named pipeline '{element.name}' takes no options")
            inner = parse_pipeline(registry.pipelines[element.name])
            _expand(inner, registry, out, parent or element.name, depth + 1)
        else:
            pass_class = registry.lookup(element.name)
            out.append(ScheduledPass(pass_class.from_options(element.options), parent))
