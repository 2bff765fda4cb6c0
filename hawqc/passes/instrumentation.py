"""Pass instrumentation: what runs around every pass without being a pass.

An instrumentation sees each pass before and after it runs (MLIR's PassInstrumentation). The
built-in ones print IR (`--print-ir-before/after[-all|-change]`); translation validation
(`--validate`) lives in `validation.py`; timing and statistics are kept in the pass records and
tabulated here. Tools that embed hawqc add their own, or plain callbacks via `Callbacks`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

import onnx_ir as ir

from hawqc.ir.io import to_text

if TYPE_CHECKING:
    from hawqc.passes.base import Pass, PassRecord


class PassInstrumentation:
    """Hooks called by the pass manager; every method is optional (the defaults do nothing)."""

    def before_pipeline(self, model: ir.Model) -> None:
        pass

    def before_pass(self, pass_: Pass, model: ir.Model) -> None:
        pass

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        pass


@dataclass
class Callbacks(PassInstrumentation):
    """Plain functions as instrumentation, for tools that embed hawqc."""

    before: Callable[[Pass, ir.Model], None] | None = None
    after: Callable[[Pass, ir.Model, PassRecord], None] | None = None

    def before_pass(self, pass_: Pass, model: ir.Model) -> None:
        if self.before is not None:
            self.before(pass_, model)

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        if self.after is not None:
            self.after(pass_, model, record)


@dataclass
class IRPrinter(PassInstrumentation):
    """Prints the IR as ONNX text around the passes asked for (by pass name) to `stream`."""

    before: frozenset[str] = frozenset()
    after: frozenset[str] = frozenset()
    after_all: bool = False
    after_change: bool = False  # only after passes that changed the IR
    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def before_pass(self, pass_: Pass, model: ir.Model) -> None:
        if pass_.name in self.before:
            self._print(f"before pass '{pass_.spelling()}'", model)

    def after_pass(self, pass_: Pass, model: ir.Model, record: PassRecord) -> None:
        wanted = self.after_all or pass_.name in self.after
        if self.after_change:
            wanted = (wanted or not (self.after_all or self.after)) and record.changed
        if wanted:
            self._print(f"after pass '{pass_.spelling()}'", model)

    def _print(self, when: str, model: ir.Model) -> None:
        # A comment line, so that the dump can be cut out and fed back to hawqc-opt as it is.
        self.stream.write(f"# -----// IR {when} //----- #\n{to_text(model)}\n")
        self.stream.flush()


def timing_rows(records: list[PassRecord]) -> list[tuple[str, float, int, int]]:
    """(pass, total seconds, runs, runs that changed the IR), in first-run order."""
    rows: dict[str, list] = {}
    for record in records:
        row = rows.setdefault(record.name, [record.name, 0.0, 0, 0])
        row[1] += record.seconds
        row[2] += 1
        row[3] += int(record.changed)
    return [tuple(row) for row in rows.values()]  # type: ignore[misc]


def statistics_rows(records: list[PassRecord]) -> list[tuple[str, str, int]]:
    """(pass, counter, total over every run of that pass), in first-run order."""
    totals: dict[tuple[str, str], int] = {}
    for record in records:
        for counter, value in record.statistics.items():
            totals[(record.name, counter)] = totals.get((record.name, counter), 0) + value
    return [(name, counter, value) for (name, counter), value in totals.items()]


def print_timing(records: list[PassRecord], stream: TextIO | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="pass timing", title_justify="left")
    for column, justify in (("pass", "left"), ("seconds", "right"), ("runs", "right"), ("changed", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    total = 0.0
    for name, seconds, runs, changed in timing_rows(records):
        total += seconds
        table.add_row(name, f"{seconds:.4f}", str(runs), str(changed))
    table.add_row("total", f"{total:.4f}", "", "")
    Console(file=stream or sys.stderr, width=120).print(table)


def print_statistics(records: list[PassRecord], stream: TextIO | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="pass statistics", title_justify="left")
    table.add_column("pass")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name, counter, value in statistics_rows(records):
        table.add_row(name, counter, str(value))
    Console(file=stream or sys.stderr, width=120).print(table)
