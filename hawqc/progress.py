"""Progress on the terminal for the slow steps: compiling a C simulation, running verification.

Shown only when stderr is a terminal (rich, transient: the bars vanish when done), so pipes, logs
and tests see nothing; `HAWQC_NO_PROGRESS=1` turns them off on a terminal too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

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


def in_steps(run: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, description: str) -> np.ndarray:
    """`run(samples)`, computed in slices along the first axis under a progress bar on a terminal
    (every function given here computes each sample on its own, so slicing changes no result)."""
    if not enabled() or len(samples) < 2:
        return run(samples)
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    size = max(1, -(-len(samples) // _STEPS))
    parts = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with _progress(*columns) as progress:
        task = progress.add_task(description, total=len(samples))
        for start in range(0, len(samples), size):
            parts.append(run(samples[start : start + size]))
            progress.advance(task, len(parts[-1]))
    return np.concatenate(parts)
