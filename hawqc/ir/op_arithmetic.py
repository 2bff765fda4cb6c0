"""Arithmetic facts about standard ONNX ops that several floors need, in one place.

`hawqc.sim` (the executor), `hawqc.ir.precision` (types), the passes and the backends all must agree
with onnxruntime on where a sliding window lies and on what a BatchNormalization multiplies by; a
second copy in any of them could drift, so they all import these.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe

# Cast: only the two float types graphs hawqc reads carry data in. Lifted HAWQ models requantize in
# double (`hawqc.frontends.hawq.lift`), everything else is float32. float32 -> float64 is exact;
# float64 -> float32 rounds to nearest even, overflowing to infinity, as onnxruntime's Cast and
# numpy's astype do.
CAST_TARGETS = {ir.DataType.FLOAT: np.dtype(np.float32), ir.DataType.DOUBLE: np.dtype(np.float64)}


def cast_target(node: ir.Node) -> np.dtype:
    """The numpy dtype a `Cast` converts to; UnsupportedModelError naming the node for another target."""
    attr = node.attributes.get("to")
    if attr is None:
        raise UnsupportedModelError(f"{describe(node)}: missing attribute 'to'")
    try:
        target = ir.DataType(attr.as_int())
    except ValueError:
        raise UnsupportedModelError(f"{describe(node)}: unknown target type {attr.as_int()}") from None
    if target not in CAST_TARGETS:
        raise UnsupportedModelError(f"{describe(node)}: casts to {target.name} are not supported (only FLOAT and DOUBLE)")
    return CAST_TARGETS[target]


def window_count(
    size: int, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int, ceil_mode: bool
) -> int:
    """Number of windows along one axis, as onnxruntime computes it (module docstring)."""
    extent = (kernel - 1) * dilation + 1
    span = size + pad_begin + pad_end - extent
    if span < 0:
        raise ValueError(
            f"the kernel (extent {extent}) is larger than the padded input ({size} + {pad_begin} + {pad_end})"
        )
    if stride < 1 or dilation < 1 or kernel < 1:
        raise ValueError(f"kernel {kernel}, stride {stride} and dilation {dilation} must be positive")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def auto_pads(
    auto_pad: str,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> tuple[int, ...]:
    """ONNX pads [b..., e...] that `auto_pad` SAME_UPPER / SAME_LOWER / VALID stands for.

    The end pad may be negative (a kernel smaller than the stride): the last input pixels are then
    not read, which is what onnxruntime does.
    """
    rank = len(spatial)
    if auto_pad == "VALID":
        return (0,) * (2 * rank)
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        out = -(-size // s)
        total = (out - 1) * s + (k - 1) * d + 1 - size
        # A negative total (kernel smaller than the stride) pads nothing at the beginning and
        # leaves the input's end unread, as onnxruntime does.
        head = 0 if total < 0 else (total + 1) // 2 if auto_pad == "SAME_LOWER" else total // 2
        begins.append(head)
        ends.append(total - head)
    return (*begins, *ends)


def batch_norm_coefficients(
    scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float
) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel multiplier and offset onnxruntime applies: `y = x * a + b`, two roundings.

    `a = (1 / sqrt(var + eps)) * scale`, `b = bias - mean * a`, each step rounded to the dtype of
    the parameters (float32): bit-identical to onnxruntime 1.31 on float data, opsets 7 to 17.
    """
    dtype = np.result_type(scale, bias, mean, var)
    one = dtype.type(1)
    a = (one / np.sqrt(var + dtype.type(epsilon))) * scale
    b = bias - mean * a
    return a.astype(dtype, copy=False), b.astype(dtype, copy=False)
