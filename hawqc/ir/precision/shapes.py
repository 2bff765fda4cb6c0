"""Precision rules of ops that move values without computing new ones.

- `Resize` (nearest) and `Identity` keep the per-channel interval; `Pad` adds its constant (0 by
  default) to it; `Concat` along the channel axis concatenates the per-channel intervals (along
  another axis, takes their hull); `Reshape` / `Flatten` / `Squeeze` / `Unsqueeze` tile the
  per-channel bounds onto the new last axis when that axis is a multiple of the old one (or merge
  them when it divides it), else collapse them to one interval, as `Transpose` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.keys import onnx_op
from hawqc.ir.precision.attributes import attr, constant, ints_attr
from hawqc.ir.precision.bounds import Bounds, exact_codes, finest_exponent, int_array

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


def identity(analysis: Analysis, node: ir.Node) -> None:
    analysis.record(node.outputs[0], analysis.operand(node, node.inputs[0]))


def transpose(analysis: Analysis, node: ir.Node) -> None:
    analysis.record(node.outputs[0], analysis.operand(node, node.inputs[0]).collapsed())


def reshape(analysis: Analysis, node: ir.Node) -> None:
    """Row-major reshapes keep channels-last order: flat index f holds feature f % F."""
    x = analysis.operand(node, node.inputs[0])
    out = node.outputs[0]
    features = x.features
    dims = analysis.shape(out)
    last = dims[-1] if dims else None
    if features is None or last is None:
        bounds = x if features is None else x.collapsed()
    elif last % features == 0:
        repeat = last // features
        bounds = Bounds(np.tile(x.lo, repeat), np.tile(x.hi, repeat), x.exp, np.tile(x.grids(), repeat))
    elif last > 1 and features % last == 0:
        # Output feature j holds input features j, j + last, j + 2 * last, ...
        def merged(array: np.ndarray, reduce: Callable) -> np.ndarray:
            return int_array(reduce(array.reshape(-1, last), axis=0))

        bounds = Bounds(merged(x.lo, np.min), merged(x.hi, np.max), x.exp, merged(x.grids(), np.min))
    else:
        bounds = x.collapsed()
    analysis.record(out, bounds)


def concat(analysis: Analysis, node: ir.Node) -> None:
    parts = [analysis.operand(node, v) for v in node.inputs]
    exp = min(p.exp for p in parts)
    parts = [p.at(exp) for p in parts]
    axis = int(attr(node, "axis"))
    rank = None
    for value in (*node.inputs, node.outputs[0]):
        dims = analysis.shape(value)
        if dims is not None:
            rank = len(dims)
            break
    if rank is None and axis != -1:
        raise UnsupportedModelError(f"{describe(node)}: the rank of the inputs is unknown")
    on_last_axis = axis == -1 or axis == (rank or 0) - 1
    if on_last_axis:
        widths = []
        for value, part in zip(node.inputs, parts):
            dims = analysis.shape(value)
            width = dims[-1] if dims else None
            if width is None:
                width = part.features
            if width is None:
                raise UnsupportedModelError(f"{describe(node)}: the channel count of {value.name!r} is unknown")
            widths.append(int(width))
        parts = [p.widened(w) for p, w in zip(parts, widths)]
        bounds = Bounds(
            np.concatenate([p.lo for p in parts]),
            np.concatenate([p.hi for p in parts]),
            exp,
            np.concatenate([p.grids() for p in parts]),
        )
    else:
        lo, hi, grid = parts[0].lo, parts[0].hi, parts[0].grids()
        for p in parts[1:]:
            lo, hi, grid = np.minimum(lo, p.lo), np.maximum(hi, p.hi), np.minimum(grid, p.grids())
        bounds = Bounds(int_array(lo), int_array(hi), exp, int_array(grid))
    analysis.record(node.outputs[0], bounds)


def resize(analysis: Analysis, node: ir.Node) -> None:
    mode = str(attr(node, "mode", "nearest"))
    if mode != "nearest":
        raise UnsupportedModelError(f"{describe(node)}: only mode 'nearest' has a precision rule, not {mode!r}")
    x = analysis.operand(node, node.inputs[0])
    in_dims, out_dims = analysis.shape(node.inputs[0]), analysis.shape(node.outputs[0])
    channels_kept = (
        in_dims is not None and out_dims is not None and in_dims[-1] is not None and in_dims[-1] == out_dims[-1]
    )
    if not channels_kept:
        scales = constant(node.inputs[2]) if len(node.inputs) > 2 else None
        channels_kept = scales is not None and scales.size > 0 and float(scales.reshape(-1)[-1]) == 1.0
    analysis.record(node.outputs[0], x if channels_kept else x.collapsed())


def pad(analysis: Analysis, node: ir.Node) -> None:
    x = analysis.operand(node, node.inputs[0])
    mode = str(attr(node, "mode", "constant"))
    pads_value = node.inputs[1] if len(node.inputs) > 1 else None
    pads = constant(pads_value) if pads_value is not None else np.asarray(ints_attr(node, "pads") or [])
    if pads is None:
        raise UnsupportedModelError(f"{describe(node)}: the pads must be a constant")
    axes_value = node.inputs[3] if len(node.inputs) > 3 else None
    if axes_value is not None:
        raise UnsupportedModelError(f"{describe(node)}: Pad with an 'axes' input is not supported")
    pads = [int(p) for p in pads.reshape(-1)]
    rank = len(pads) // 2
    adds = any(p > 0 for p in pads)
    if mode != "constant" or not adds:
        analysis.record(node.outputs[0], x)  # edge / reflect / wrap repeat values that are there
        return
    value_input = node.inputs[2] if len(node.inputs) > 2 else None
    if value_input is not None and not analysis.is_constant(value_input):
        raise UnsupportedModelError(f"{describe(node)}: the pad value must be a constant")
    if value_input is not None:
        fill = np.asarray(analysis.constant_data(node, value_input, limit=None), dtype=np.float64).reshape(())
    else:
        fill = np.float64(np.float32(attr(node, "value", 0.0)))
    fill_exp = finest_exponent(np.asarray(fill))
    exp = min(x.exp, fill_exp) if fill != 0 else x.exp
    x = x.at(exp)
    code = int(exact_codes(np.asarray(fill), exp))
    if pads[rank - 1] > 0 or pads[2 * rank - 1] > 0:
        x = x.collapsed()  # new channels hold only the pad value: which is which is lost
    grid = x.grids() if fill == 0 else np.minimum(x.grids(), max(fill_exp, exp))
    analysis.record(node.outputs[0], Bounds(np.minimum(x.lo, code), np.maximum(x.hi, code), exp, grid))


RULES = {
    onnx_op("Identity"): identity,
    onnx_op("Transpose"): transpose,
    onnx_op("Reshape"): reshape,
    onnx_op("Flatten"): reshape,
    onnx_op("Squeeze"): reshape,
    onnx_op("Unsqueeze"): reshape,
    onnx_op("Concat"): concat,
    onnx_op("Resize"): resize,
    onnx_op("Pad"): pad,
}
