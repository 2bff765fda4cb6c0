"""The command line: `hawqc` (`compile.py`: compile a model; `report`, `build`) and `hawqc-opt`
(`opt.py`). How every command runs (one line per error, exit codes, SIGTERM) is `run.py`; the flags
both take are `shared_flags.py` and `hardware_flags.py`. Nothing else in hawqc imports this package."""

from hawqc.cli.compile import main
from hawqc.cli.opt import opt_main

__all__ = ["main", "opt_main"]
