"""The errors hawqc raises, ordered by whose fault they are.

The command line turns every `HawqcError` into one line on stderr and an exit code; anything else
that escapes is a bug in hawqc and keeps its traceback.
"""

from __future__ import annotations


class HawqcError(Exception):
    """Base of every error hawqc raises on purpose."""

    exit_code = 1


class UserInputError(HawqcError):
    """The user's model, file or option is wrong or unreadable (exit code 2)."""

    exit_code = 2


class UnsupportedModelError(UserInputError):
    """A well-formed model uses something hawqc cannot compile yet; the message names the node."""


class VerificationError(HawqcError):
    """The IR broke an invariant (after a pass, or as loaded); the message names the node."""


class BackendError(HawqcError):
    """A backend step (writing the project, compiling the C simulation) failed."""
