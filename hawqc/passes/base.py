"""What a pass is: a frozen dataclass whose fields are its options, and a `run` method.

Options, defaults, help text and the pipeline spelling all come from the dataclass fields, so a
pass author declares each option once:

    @dataclass(frozen=True)
    class FoldScales(Pass):
        name: ClassVar[str] = "fold-scales"
        summary: ClassVar[str] = "Fold scalar Mul chains."
        max_chain: int = option(8, "longest chain to fold")

        def run(self, model: ir.Model) -> PassResult: ...

`run` mutates the model in place (no copies: a clone costs ~20x a protobuf copy) and says whether
it changed anything, as a bool or as a `PassResult` carrying named counters.

Every pass keeps the model's meaning (translation validation checks it), except one that says
`changes_meaning = True`: it changes the outputs on purpose and only when the user names it
(e.g. `remove-output-softmax`); validation then takes the model after it as the new reference.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import onnx_ir as ir

from hawqc.errors import HawqcError, UserInputError


class FixpointNotReached(HawqcError):
    """A loop run to a fixpoint (a `fixpoint(...)` group, a pass's own sweeps) still changed the IR
    when its iteration cap was reached."""


@dataclass(frozen=True)
class PassResult:
    """What one run of a pass did: whether the IR changed, and named counters for statistics."""

    changed: bool
    statistics: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PassRecord:
    """One executed pass: what the report, `--time-passes` and `--pass-statistics` show."""

    name: str  # the pass's spelling, options included
    seconds: float
    changed: bool
    statistics: dict[str, int]
    pipeline: str | None = None  # the named pipeline it was expanded from, if any
    iteration: int | None = None  # within the innermost fixpoint group, counting from 1


@dataclass(frozen=True)
class OptionSpec:
    """One option of a pass, as the pipeline parser and `--help` see it."""

    name: str  # as spelled in pipelines: dashes, e.g. "max-iters"
    attribute: str  # the dataclass field: underscores
    type: type
    default: Any
    help: str


def option(default: Any, help: str) -> Any:
    """Declare a pass option with its default and a one-line help text."""
    return field(default=default, metadata={"help": help})


# Types an option may have: what the textual pipeline can spell.
_PARSERS: dict[type, typing.Callable[[str], Any]] = {
    int: int,
    float: float,
    str: str,
    bool: lambda text: {"true": True, "1": True, "false": False, "0": False}[text.lower()],
}


class Pass:
    """Base of every pass. Subclasses are frozen dataclasses; see the module docstring."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    # True only for a pass that changes the outputs on purpose (see the module docstring).
    changes_meaning: ClassVar[bool] = False
    # What a pass keeps: "semantic" (float32 outputs bit for bit, what translation validation checks), or
    # "exact" (the exact meaning, hawqc.sim.exact: float32 may round differently; ports may carry
    # integer codes, hawqc.ir.interfaces).
    preserves: ClassVar[str] = "semantic"

    def run(self, model: ir.Model) -> PassResult | bool:
        raise NotImplementedError

    @classmethod
    def options(cls) -> tuple[OptionSpec, ...]:
        if not dataclasses.is_dataclass(cls):
            return ()
        specs = []
        for f in dataclasses.fields(cls):
            kind = f.type
            if isinstance(kind, str):
                # Postponed annotations (`from __future__ import annotations`): resolve them. Done
                # only then, because a class made in a REPL or exec() has no module to resolve in.
                kind = typing.get_type_hints(cls)[f.name]
            specs.append(
                OptionSpec(
                    name=f.name.replace("_", "-"),
                    attribute=f.name,
                    type=kind,
                    default=f.default,
                    help=f.metadata.get("help", ""),
                )
            )
        return tuple(specs)

    @classmethod
    def from_options(cls, options: dict[str, str]) -> Pass:
        """Build the pass from textual options (`{"max-iters": "8"}`), checking names and types."""
        specs = {spec.name: spec for spec in cls.options()}
        kwargs: dict[str, Any] = {}
        for key, text in options.items():
            spec = specs.get(key)
            if spec is None:
                known = ", ".join(sorted(specs)) or "none"
                raise UserInputError(f"pass '{cls.name}' has no option '{key}' (options: {known})")
            try:
                kwargs[spec.attribute] = _PARSERS[spec.type](text)
            except (KeyError, ValueError):
                raise UserInputError(
                    f"pass '{cls.name}': option '{key}' expects {spec.type.__name__}, got {text!r}"
                ) from None
        return cls(**kwargs)

    def spelling(self) -> str:
        """The pipeline text of this pass: its name, and the options that differ from defaults."""
        changed = [
            f"{spec.name}={_format(getattr(self, spec.attribute))}"
            for spec in self.options()
            if getattr(self, spec.attribute) != spec.default
        ]
        return f"{self.name}{{{','.join(changed)}}}" if changed else self.name


def _format(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
