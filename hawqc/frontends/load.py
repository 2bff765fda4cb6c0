"""One entry for "load the model in this file", whatever its kind: ONNX (`.onnx`, `.onnxtxt`) or
PyTorch (`.pt`, `.pth`, lifted by the HAWQ frontend, see `hawqc.frontends.pytorch`). Both come out
normalized, shape-inferred and verified the same way, so `hawqc`, `hawqc-opt` and `hawqc.compile`
treat them alike. Nothing here imports torch (seconds): only a PyTorch model needs it."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from hawqc.errors import OptionError
from hawqc.frontends.pytorch_options import PyTorchOptions

PYTORCH_SUFFIXES = frozenset({".pt", ".pth"})


def is_pytorch_path(path: str | Path) -> bool:
    return Path(path).suffix in PYTORCH_SUFFIXES


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
