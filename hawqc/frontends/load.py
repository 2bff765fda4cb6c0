"""One entry for "load the model in this file", whatever its kind: ONNX (`.onnx`, `.onnxtxt`) or
PyTorch (`.pt`, `.pth`, lifted by the HAWQ frontend, see `hawqc.frontends.pytorch`). Both come out
normalized, shape-inferred and verified the same way, so `hawqc`, `hawqc-opt` and `hawqc.compile`
treat them alike. Nothing here imports torch (seconds): only a PyTorch model needs it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from hawqc.errors import OptionError

PYTORCH_SUFFIXES = frozenset({".pt", ".pth"})


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


def is_pytorch_path(path: str | Path) -> bool:
    return Path(path).suffix in PYTORCH_SUFFIXES


def parse_input_shape(text: str) -> tuple[int, ...]:
    """`"1,16"` -> `(1, 16)`; anything but comma-separated positive integers is the user's mistake."""
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise OptionError(f"{{}} {text!r}: expected comma-separated positive integers, e.g. 1,16", "input_shape")
    return dims


def load_model(path: str | Path, pytorch: PyTorchOptions | None = None, *, verify_ir: bool = True) -> ir.Model:
    """The model in `path`; `pytorch` says how to build and lift a PyTorch file and must be left
    empty for an ONNX one."""
    pytorch = pytorch or PyTorchOptions()
    if is_pytorch_path(path):
        from hawqc.frontends.pytorch import load_pytorch

        return load_pytorch(path, pytorch, verify_ir=verify_ir)
    if pytorch != PyTorchOptions():
        raise OptionError(f"{path}: {{}} are for .pt / .pth models only", "options.pytorch (model factory, input shape, pickle opt-in)")
    from hawqc.frontends.onnx import load_onnx

    return load_onnx(path, verify_ir=verify_ir)
