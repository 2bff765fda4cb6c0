"""hawqc: a compiler for quantized neural networks, from HAWQ / QONNX to bit-exact hls4ml projects.

The public API is a few names; everything else lives in the subpackages:

    model = hawqc.load("jet_tagger.onnx")
    model = hawqc.lift(hawq_model, torch.zeros(1, 16))      # a HAWQ PyTorch model, lifted
    hawqc.PassManager.parse("cleanup,gemm-to-matmul").run(model)
    hawqc.compile("jet_tagger.onnx", "proj", hawqc.CompileOptions(backend="vitis", verify_samples=1000))
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "CompileOptions",
    "Pass",
    "PassManager",
    "PassResult",
    "compile",
    "lift",
    "load",
    "option",
    "register_pass",
    "save",
]


def __getattr__(name: str):
    # Lazy: `import hawqc` must stay cheap (hls4ml and torch take seconds to import).
    if name == "load":
        from hawqc.frontends.onnx import load_onnx

        return load_onnx
    if name == "lift":
        from hawqc.frontends.pytorch import lift_model

        return lift_model
    if name == "save":
        from hawqc.ir.io import write_model

        return write_model
    if name in ("compile", "CompileOptions"):
        from hawqc import driver

        return driver.compile_model if name == "compile" else driver.CompileOptions
    if name in ("Pass", "PassResult", "option"):
        from hawqc.passes import base

        return getattr(base, name)
    if name == "PassManager":
        from hawqc.passes.manager import PassManager

        return PassManager
    if name == "register_pass":
        from hawqc.passes.registry import register_pass

        return register_pass
    raise AttributeError(f"module 'hawqc' has no attribute {name!r}")
