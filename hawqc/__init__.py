"""hawqc: a compiler for quantized neural networks, from HAWQ / QONNX to bit-exact hls4ml projects.

The public API is a few names; everything else lives in the subpackages:

    model = hawqc.load("jet_tagger.onnx")
    model = hawqc.lift(hawq_model, torch.zeros(1, 16))      # a HAWQ PyTorch model, lifted
    hawqc.PassManager.parse("cleanup,gemm-to-matmul").run(model)
    result = hawqc.compile("jet_tagger.onnx", "proj", hawqc.CompileOptions(backend="vitis", verify_samples=1000))
    result.verify.passed

Paths may be `str` or `pathlib.Path` everywhere. A wrong argument raises `hawqc.UserInputError`
naming the argument; every error hawqc raises on purpose is a `hawqc.HawqcError`.
"""

from __future__ import annotations

from hawqc._version import __version__  # noqa: F401 (the package's version, as `hawqc.__version__`)

# Public name -> (module, attribute): imported on first use, because `import hawqc` must stay cheap
# (hls4ml and torch take seconds to import).
_PUBLIC = {
    "CompileOptions": ("hawqc.flow.driver", "CompileOptions"),
    "CompileResult": ("hawqc.flow.driver", "CompileResult"),
    "HawqcError": ("hawqc.errors", "HawqcError"),
    "HlsSettings": ("hawqc.backends.hls_settings", "HlsSettings"),
    "Pass": ("hawqc.passes.base", "Pass"),
    "PassManager": ("hawqc.passes.manager", "PassManager"),
    "PassResult": ("hawqc.passes.base", "PassResult"),
    "PyTorchOptions": ("hawqc.frontends.pytorch_options", "PyTorchOptions"),
    "UserInputError": ("hawqc.errors", "UserInputError"),
    "compile": ("hawqc.flow.driver", "compile_model"),
    "lift": ("hawqc.frontends.pytorch", "lift_model"),
    "load": ("hawqc.frontends.onnx", "load_onnx"),
    "option": ("hawqc.passes.base", "option"),
    "register_pass": ("hawqc.passes.registry", "register_pass"),
    "save": ("hawqc.ir.io", "write_model"),
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'hawqc' has no attribute {name!r}")
    import importlib

    module, attribute = _PUBLIC[name]
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    """The public names (what tab completion offers), not the subpackages' internals."""
    return sorted([*_PUBLIC, "__version__"])
