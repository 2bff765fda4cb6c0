"""Steps of the compile flow that an option asks for and that change the graph (`read-as-hawq` for
`--hawq-export-semantics hawq`, `default-precision` for `--default-precision`): each is a pass, run
by a pass manager of its own at the point of the flow where the option applies, so it is verified,
timed, counted and reproduced like the passes of the pipeline, and `hawqc-opt -p` replays it.

The user asked for the step by an option, not by the pass's name: a mistake of theirs (a model the
step refuses) is said as the pass said it, naming the option or the node, without the manager's
`pass '...': ` in front (a bug in the pass still names it, and leaves its reproducer).
"""

from __future__ import annotations

from collections.abc import Callable

import onnx_ir as ir

from hawqc.errors import UserInputError
from hawqc.passes.base import Pass, PassRecord
from hawqc.passes.manager import PassManager, ScheduledPass


def run_step(step: Pass, model: ir.Model, configure: Callable[[PassManager], None] | None = None) -> list[PassRecord]:
    """Run the pass `step` over `model` in a manager of its own, set up by `configure` (the flags'
    instrumentation, validation and reproducers, as for the pipeline); its records."""
    manager = PassManager([ScheduledPass(step, None)], text=step.spelling())
    if configure is not None:
        configure(manager)
    try:
        return manager.run(model)
    except UserInputError as err:
        if isinstance(err.__cause__, UserInputError):
            raise err.__cause__ from None
        raise
