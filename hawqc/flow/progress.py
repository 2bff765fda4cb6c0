"""Progress on the terminal for the slow steps: compiling a C simulation, running verification.

Verification runs in slices whatever the terminal (`hawqc.flow.verify_slices`); on a terminal the slices
are also small enough for a bar that moves.

Shown only when stderr is a terminal (rich, transient: the bars vanish when done), so pipes, logs
and tests see nothing; `HAWQC_NO_PROGRESS=1` turns them off on a terminal too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Enough steps for a smooth bar, few enough that a vectorized step stays large.
_STEPS = 50


def enabled() -> bool:
    return sys.stderr.isatty() and not os.environ.get("HAWQC_NO_PROGRESS")


def _progress(*columns):
    from rich.console import Console
    from rich.progress import Progress

    return Progress(*columns, console=Console(stderr=True), transient=True)


@contextmanager
def spinner(description: str) -> Iterator[None]:
    """A spinner with the elapsed time while a step whose length is unknown (a g++ build) runs."""
    if not enabled():
        yield
        return
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    with _progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn()) as progress:
        progress.add_task(description, total=None)
        yield


def slice_length(total: int, largest: int) -> int:
    """Samples per slice: at most `largest` (what memory allows), and on a terminal at most a
    fiftieth of the total, so that the bar moves."""
    if enabled():
        largest = min(largest, -(-total // _STEPS))
    return max(1, largest)


@contextmanager
def bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A bar over `total` samples on a terminal; yields `advance(done)` (a no-op elsewhere)."""
    if not enabled() or total < 2:
        yield lambda done: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _progress(*columns) as progress:
        task = progress.add_task(description, total=total)
        yield lambda done: progress.advance(task, done)
