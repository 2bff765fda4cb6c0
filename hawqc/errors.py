"""The errors hawqc raises, ordered by whose fault they are, and the exit codes they end in.

The command line turns every `HawqcError` into one line on stderr and its class's exit code:

    0    success
    1    verification found a difference (`--verify`, `--outputs`, translation validation)
    2    the user's model, file or option is wrong (the line names it); nothing was written
    3    a tool failed (g++, a vendor tool, out of memory) or hawqc has a bug (an internal error)
    130  interrupted (Ctrl-C or SIGTERM); nothing was written

An exception that is not a `HawqcError` escaping to the command line is an internal error too:
one line, exit code 3, its traceback written to a file the line names.
"""

from __future__ import annotations

from collections.abc import Callable

EXIT_OK = 0
EXIT_DIFFERENCE = 1
EXIT_USER_ERROR = 2
EXIT_FAILURE = 3
EXIT_INTERRUPTED = 130


class HawqcError(Exception):
    """Base of every error hawqc raises on purpose; by default a failure of hawqc itself."""

    exit_code = EXIT_FAILURE
    # How the command line introduces the message: `hawqc: <label>: <message>`.
    label = "internal error"


class UserInputError(HawqcError):
    """The user's model, file or option is wrong or unreadable (exit code 2).

    A message about an argument of the Python API, which is a flag on the command line, names it as
    Python does (`verify_samples must be ...`), and the command line spells it as its flag instead
    (`--verify must be ...`, `hawqc.cli.run`): `message` holds `{}` where a name goes and `option` is
    the Python name (of `CompileOptions`, `HlsSettings`, `PyTorchOptions`...), or a tuple of them,
    one per `{}`."""

    exit_code = EXIT_USER_ERROR
    label = "error"

    def __init__(self, message: str, *, option: str | tuple[str, ...] | None = None) -> None:
        self.template = message
        self.options = () if option is None else (option,) if isinstance(option, str) else tuple(option)
        super().__init__(self.spelled(lambda name: name))

    @property
    def option(self) -> str | None:
        """The (first) option the message names, by its Python name."""
        return self.options[0] if self.options else None

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each option (in the order of the `{}`s) named `spell(python_name)`."""
        text = self.template
        for name in self.options:
            text = text.replace("{}", spell(name), 1)
        return text


class OptionError(UserInputError):
    """A wrong argument of the Python API (a flag on the command line): `OptionError(message, option)`,
    see `UserInputError`. Raised again with the message alone (as the pass manager does to add
    where it happened), it is a plain message."""

    def __init__(self, message: str, option: str | tuple[str, ...] | None = None) -> None:
        super().__init__(message, option=option)


class UnsupportedModelError(UserInputError):
    """A well-formed model uses something hawqc cannot compile yet; the message names the node."""


class DifferenceFound(HawqcError):
    """A verification found a difference: a pass changed what the graph computes (exit code 1)."""

    exit_code = EXIT_DIFFERENCE
    label = "error"


class VerificationError(HawqcError):
    """The IR broke an invariant (after a pass, or as loaded); the message names the node.

    As loaded, the frontends turn it into a `UserInputError`; after a pass it is that pass's bug."""


class BackendError(HawqcError):
    """A backend step (writing the project, compiling the C simulation, a vendor tool) failed; the
    message names the tool or the step (exit code 3)."""

    label = "error"
