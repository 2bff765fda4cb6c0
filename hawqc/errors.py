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
    """The user's model, file or option is wrong or unreadable (exit code 2)."""

    exit_code = EXIT_USER_ERROR
    label = "error"


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
