"""The pass manager: runs a pipeline over a model, verifying, instrumenting and timing every pass.

Conventions follow MLIR's: the IR is verified before the first pass and after every pass (unless
turned off), so a broken invariant is blamed on the pass that broke it; failures name the pass and,
through the verifier, the node, and leave a reproducer behind. `fixpoint(...)` groups repeat until
an iteration changes nothing, up to a cap that is an error to hit. A pass that reports a change
invalidates the analyses cached on the model (`hawqc.ir.analysis_cache`: precision inference).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from hawqc.errors import HawqcError, UserInputError, VerificationError
from hawqc.ir import analysis_cache
from hawqc.ir.verifier import verify
from hawqc.passes.base import FixpointNotReached, Pass, PassRecord, PassResult
from hawqc.passes.instrumentation import Callbacks, PassInstrumentation
from hawqc.passes.pipeline import GROUP_OPTIONS, Element, GroupInvocation, format_pipeline, parse_pipeline
from hawqc.passes.registry import PassRegistry, default_registry
from hawqc.passes.reproducer import Snapshot, write_reproducer

# Named pipelines nest; this bounds a pipeline that (through a typo) names itself.
MAX_PIPELINE_DEPTH = 16


class PassFailed(HawqcError):
    """A pass raised something that is not a hawqc error: a bug in that pass."""


@dataclass
class ScheduledPass:
    instance: Pass
    pipeline: str | None


@dataclass
class FixpointGroup:
    body: list[ScheduledPass | FixpointGroup]
    max_iters: int
    text: str


Scheduled = ScheduledPass | FixpointGroup


@dataclass
class PassManager:
    """A tree of passes, how to run them, and what to run around them."""

    passes: list[Scheduled]
    text: str = ""  # the pipeline as text, named pipelines unexpanded
    verify_each: bool = True
    instrumentations: list[PassInstrumentation] = field(default_factory=list)
    # Where reproducers go when a pass fails; None: write none.
    reproducer_dir: Path | None = None
    # Flags the reproducer's re-run command needs besides the pipeline (e.g. plugins to load).
    reproducer_flags: list[str] = field(default_factory=list)

    @classmethod
    def parse(
        cls,
        text: str,
        *,
        registry: PassRegistry | None = None,
        verify_each: bool = True,
        validate: int = 0,
        reproducer_dir: Path | None = None,
    ) -> PassManager:
        """Build a manager from pipeline text such as `"cleanup,gemm-to-matmul"`.

        `validate=N` adds translation validation on N inputs (see `hawqc.passes.validation`).
        """
        registry = registry or default_registry()
        elements = parse_pipeline(text)
        manager = cls(
            _expand(elements, registry, parent=None, depth=0),
            text=format_pipeline(elements),
            verify_each=verify_each,
            reproducer_dir=reproducer_dir,
        )
        if validate:
            from hawqc.passes.validation import TranslationValidator

            manager.instrumentations.append(TranslationValidator(validate))
        return manager

    def __str__(self) -> str:
        return self.text

    def add_callbacks(
        self,
        before: Callable[[Pass, ir.Model], None] | None = None,
        after: Callable[[Pass, ir.Model, PassRecord], None] | None = None,
    ) -> None:
        """Call `before(pass, model)` / `after(pass, model, record)` around every pass."""
        self.instrumentations.append(Callbacks(before, after))

    def run(self, model: ir.Model) -> list[PassRecord]:
        if self.verify_each:
            try:
                verify(model)
            except VerificationError as err:
                raise VerificationError(f"input IR is invalid: {err}") from None
        run = _Run(self, Snapshot.of(model) if self.reproducer_dir is not None else None)
        for instrumentation in self.instrumentations:
            instrumentation.before_pipeline(model)
        run.items(self.passes, model, iteration=None)
        return run.records


@dataclass
class _Run:
    """The state of one `PassManager.run`: records so far, and what a reproducer needs."""

    manager: PassManager
    snapshot: Snapshot | None
    records: list[PassRecord] = field(default_factory=list)
    succeeded: list[Pass] = field(default_factory=list)

    def items(self, items: list[Scheduled], model: ir.Model, iteration: int | None) -> bool:
        changed = False
        for item in items:
            if isinstance(item, FixpointGroup):
                changed |= self.fixpoint(item, model)
            else:
                changed |= self.one(item, model, iteration)
        return changed

    def fixpoint(self, group: FixpointGroup, model: ir.Model) -> bool:
        changed_at_all = False
        for iteration in range(1, group.max_iters + 1):
            start = len(self.records)
            if not self.items(group.body, model, iteration):
                return changed_at_all
            changed_at_all = True
        changers = sorted({record.name for record in self.records[start:] if record.changed})
        raise FixpointNotReached(
            f"{group.text}: the IR still changed after {group.max_iters} iterations (the cap); "
            f"changed in the last one by: {', '.join(changers)}"
        )

    def one(self, scheduled: ScheduledPass, model: ir.Model, iteration: int | None) -> bool:
        instance = scheduled.instance
        label = instance.spelling()
        try:
            for instrumentation in self.manager.instrumentations:
                instrumentation.before_pass(instance, model)
            start = time.perf_counter()
            try:
                outcome = instance.run(model)
            except HawqcError as err:
                raise type(err)(f"pass '{label}': {err}") from err
            except Exception as err:
                raise PassFailed(f"pass '{label}' crashed: {type(err).__name__}: {err}") from err
            seconds = time.perf_counter() - start
            result = outcome if isinstance(outcome, PassResult) else PassResult(bool(outcome))
            if result.changed:
                analysis_cache.invalidate(model)
            if self.manager.verify_each:
                try:
                    verify(model)
                except VerificationError as err:
                    raise VerificationError(f"after pass '{label}': {err}") from None
            record = PassRecord(
                label, seconds, result.changed, dict(result.statistics), scheduled.pipeline, iteration
            )
            for instrumentation in self.manager.instrumentations:
                instrumentation.after_pass(instance, model, record)
        except HawqcError as err:
            if self.snapshot is None or isinstance(err, UserInputError):
                raise
            try:
                command = write_reproducer(
                    self.manager.reproducer_dir,
                    self.snapshot,
                    self.succeeded,
                    instance,
                    self.manager.text,
                    err,
                    self.manager.reproducer_flags,
                )
            except OSError as write_error:  # the pass's error matters more than the reproducer
                raise type(err)(
                    f"{err}; no reproducer: cannot write into {self.manager.reproducer_dir} "
                    f"({write_error.strerror or type(write_error).__name__})"
                ) from err
            raise type(err)(f"{err}; reproduce with: {command}") from err
        self.records.append(record)
        self.succeeded.append(instance)
        return result.changed


def _expand(elements: list[Element], registry: PassRegistry, parent: str | None, depth: int) -> list[Scheduled]:
    if depth > MAX_PIPELINE_DEPTH:
        raise UserInputError(f"pipeline '{parent}' nests deeper than {MAX_PIPELINE_DEPTH} levels")
    scheduled: list[Scheduled] = []
    for element in elements:
        if isinstance(element, GroupInvocation):
            options = {**GROUP_OPTIONS[element.kind], **{k: int(v) for k, v in element.options.items()}}
            body = _expand(element.body, registry, parent, depth + 1)
            scheduled.append(FixpointGroup(body, options["max-iters"], str(element)))
        elif registry.is_pipeline(element.name):
            if element.options:
                raise UserInputError(f"named pipeline '{element.name}' takes no options")
            inner = parse_pipeline(registry.pipelines[element.name])
            scheduled.extend(_expand(inner, registry, parent or element.name, depth + 1))
        else:
            pass_class = registry.lookup(element.name)
            scheduled.append(ScheduledPass(pass_class.from_options(element.options), parent))
    return scheduled
