"""What a `.pt` / `.pth` model needs besides the file (the `--model-factory`, `--input-shape` and
`--allow-pickle` flags): apart from the frontend that reads it (`hawqc.frontends.pytorch`, which
imports torch) and from the entry that dispatches on the file's kind (`hawqc.frontends.load`)."""

from __future__ import annotations

from dataclasses import dataclass

from hawqc.errors import OptionError


@dataclass(frozen=True)
class PyTorchOptions:
    """How to turn a `.pt` / `.pth` file into a model (`--model-factory`, `--input-shape`,
    `--allow-pickle`).

    Attributes:
        model_factory: builds the model the state_dict loads into: "package.module:function" or
            "path/to/file.py:function".
        input_shape: the example input's shape, e.g. (1, 16).
        allow_pickle: read a pickled whole module (this executes code from the file).
    """

    model_factory: str | None = None
    input_shape: tuple[int, ...] | None = None
    allow_pickle: bool = False


def parse_input_shape(text: str) -> tuple[int, ...]:
    """`"1,16"` -> `(1, 16)`; anything but comma-separated positive integers is the user's mistake."""
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise OptionError(f"{{}} {text!r}: expected comma-separated positive integers, e.g. 1,16", "input_shape")
    return dims
