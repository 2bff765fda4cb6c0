"""How a command of the command line runs: every error is one line on stderr and an exit code
(`hawqc.errors`), SIGTERM is Ctrl-C, a warning is one line, a bug in hawqc leaves its traceback in
a file, and an option named by its Python name is spelled as its flag. Shared by `hawqc` and
`hawqc-opt` (`hawqc.cli.compile`, `hawqc.cli.opt`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from hawqc.errors import EXIT_FAILURE, EXIT_INTERRUPTED, HawqcError, UserInputError


class OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; a compiler says one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def run_guarded(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv) -> int:
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(), _sigterm_interrupts():
            warnings.showwarning = _one_line_warning(parser.prog)
            return body(args)
    except HawqcError as err:
        print(f"{parser.prog}: {err.label}: {as_flags(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"{parser.prog}: error: out of memory (the machine could not hold what this step needs)", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # a bug in hawqc: one line, the traceback in a file for the report
        where = _write_crash_report(err, getattr(args, "reproducer_dir", None))
        print(f"{parser.prog}: internal error: {type(err).__name__}: {_first_line(err)} "
              f"(a bug in hawqc; traceback in {where})", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE


# The Python names of what the flags set (`CompileOptions`, `HlsSettings`, `PyTorchOptions`, the pass
# manager's validation), as a `UserInputError` names them, and the flags that spell them here.
_FLAGS = {
    "verify_samples": "--verify",
    "seed": "--seed",
    "io_type": "--io-type",
    "force=True": "--force",
    "inputs": "--inputs",
    "outputs": "--outputs",
    "tolerance": "--tolerance",
    "default_precision": "--default-precision",
    "input_precision": "--input-precision",
    "hawq_export_semantics": "--hawq-export-semantics",
    "project_name": "--project-name",
    "strategy": "--strategy",
    "reuse_factor": "--reuse-factor",
    "part": "--part",
    "clock_period": "--clock-period",
    "model_factory": "--model-factory",
    "input_shape": "--input-shape",
    "allow_pickle=True": "--allow-pickle",
    "options.pytorch (model factory, input shape, pickle opt-in)": "--model-factory, --input-shape and --allow-pickle",
    "validate": "--validate",
    "hawq_export_semantics='hawq'": "--hawq-export-semantics hawq",
}


def as_flags(err: HawqcError) -> str:
    """The message, an option named by its flag."""
    if isinstance(err, UserInputError):
        return err.spelled(lambda name: _FLAGS.get(name, name))
    return str(err)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _write_crash_report(err: BaseException, directory: Path | None) -> Path | str:
    """The traceback of an internal error, in the reproducer directory (default: the temp dir)."""
    import os
    import time
    import traceback

    from hawqc.passes.reproducer import default_reproducer_dir

    directory = directory or default_reproducer_dir()
    path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(err)))
    except OSError as write_error:
        return f"nowhere: {write_error.strerror or write_error} writing {path}"
    return path


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (kill, a batch system's time limit, a stopped container) is Ctrl-C: the same cleanup
    (the output directory is left as it was, temporaries are removed), one line, exit 130."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler; there SIGTERM keeps its default
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line_warning(prog: str):
    """Python's warning format is two lines (file, source line); a compiler's is one."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    return show


class DeprecatedAlias(argparse.Action):
    """A flag's old spelling: sets the new flag's value and says, in one line, what to write now."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = "--" + self.dest.replace("_", "-")
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, True)


def add_version(parser: argparse.ArgumentParser) -> None:
    from hawqc._version import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
