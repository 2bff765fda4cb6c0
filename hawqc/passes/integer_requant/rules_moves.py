"""integer-requant's rules for ops that move, select or average integers (and Casts between float types)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.window import Windows
from hawqc.ir.qtypes import power_of_two_exponent
from hawqc.passes.integer_requant.tracking import Affine
from hawqc.sim import ops as sim_ops
from hawqc.sim.exact import Exact

if TYPE_CHECKING:
    from hawqc.passes.integer_requant.rewriter import Rewriter


def pool_max(self: Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    _check_one_scale_per_channel(node, a, dims[0])
    if any(v <= 0 for v in a.scale.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: a maximum of a non-positively scaled value")
    per = _per_channel(dims[0], len(self.dims(node.outputs[0], node)))
    self.values[node.outputs[0]] = Affine(per(a.scale, _first), per(a.offset, _first), per(a.lo, min), per(a.hi, max), a.relu, a.exp)


def _first(row):
    return row[0]


def _check_one_scale_per_channel(node: ir.Node, a: Affine, channels: int) -> None:
    """Pools combine elements of one channel: they must share its scale and offset."""
    for arr in (a.scale, a.offset):
        if any(len(set(row)) != 1 for row in arr.reshape(channels, -1)):
            raise UnsupportedModelError(f"{describe(node)}: the scale varies within a channel")


def _per_channel(channels: int, out_rank: int):
    """`per(arr, f)`: f over each channel's elements of a tracked array, shaped (1, C, 1, ...)."""

    def per(arr: np.ndarray, f) -> np.ndarray:
        values = np.asarray([f(row) for row in arr.reshape(channels, -1)], dtype=object)
        return values.reshape((1, channels) + (1,) * (out_rank - 1))

    return per


def move(self: Rewriter, node: ir.Node) -> None:
    """Ops that move elements: the tracked arrays move with them (the op's own kernel on indices)."""
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    constants = tuple(None if i == 0 else (None if v is None else self._exact.get(v)) for i, v in enumerate(node.inputs))
    plain = tuple(c if not isinstance(c, Exact) else c.to_float64() for c in constants)
    kernel = sim_ops.builder_for(node)(sim_ops.NodeSpec(node, plain, None))
    index = np.arange(int(np.prod(dims)), dtype=np.float64).reshape((1, *dims))
    moved = np.asarray(kernel([index, *plain[1:]])[0]).astype(np.int64)
    pick = lambda arr: arr.reshape(-1)[moved]  # noqa: E731
    self.values[node.outputs[0]] = Affine(pick(a.scale), pick(a.offset), pick(a.lo), pick(a.hi), a.relu, a.exp)


def concat(self: Rewriter, node: ir.Node) -> None:
    if any(v is not None and v not in self.values for v in node.inputs):
        raise UnsupportedModelError(f"{describe(node)}: concatenates a rescaled value with a value computed in float")
    axis_attr = node.attributes.get("axis")
    parts = [self.values[v].full(self.dims(v, node)) for v in node.inputs]
    if len({p.relu for p in parts}) != 1 or len({p.exp for p in parts}) != 1:
        raise UnsupportedModelError(f"{describe(node)}: concatenates values with and without a pending Relu")
    rank = parts[0].scale.ndim
    axis = int(axis_attr.value) % rank if axis_attr is not None else 0
    if axis == 0:
        raise UnsupportedModelError(f"{describe(node)}: Concat along the batch axis")
    joined = [np.concatenate([getattr(p, f) for p in parts], axis=axis) for f in ("scale", "offset", "lo", "hi")]
    self.values[node.outputs[0]] = Affine(*joined, parts[0].relu, parts[0].exp)


def identity(self: Rewriter, node: ir.Node) -> None:
    self.values[node.outputs[0]] = self.values[node.inputs[0]]


def cast(self: Rewriter, node: ir.Node) -> None:
    """A Cast between float types keeps the integers (HAWQ's lifted graphs requantize in double); the
    planner lowers it to nothing. float32 holds them: every rescaled value is an integer below 2^24
    times a power of two (checked where weights and requantizations are made)."""
    to = node.attributes.get("to")
    if to is None or int(to.value) not in (int(ir.DataType.FLOAT), int(ir.DataType.DOUBLE)):
        raise UnsupportedModelError(f"{describe(node)}: a Cast of a rescaled value to a type that is not float")
    identity(self, node)




def average_pool(self: Rewriter, node: ir.Node) -> None:
    """An average over 2^k elements is exact in the graph's integers: n sums, the grid gets finer."""
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    if a.relu:
        raise UnsupportedModelError(f"{describe(node)}: averages a Relu of a value with a float offset")
    _check_one_scale_per_channel(node, a, dims[0])
    if node.op_type == "GlobalAveragePool":
        count, padded = int(np.prod(dims[1:])), False
    else:
        kernel = node.attributes.get("kernel_shape")
        windows = Windows.read(node, tuple(kernel.value) if kernel is not None else ())
        count = int(np.prod(windows.kernel))
        padded = any(windows.pads_for(dims[1:]))
        if padded and not windows.count_include_pad:
            raise UnsupportedModelError(f"{describe(node)}: an average over padded windows of varying size")
        if padded and any(v != 0 for v in a.offset.reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: pads a value with a float offset")
    k = power_of_two_exponent(float(count))
    if k is None:
        raise UnsupportedModelError(
            f"{describe(node)}: an average over {count} elements of a value with a scale that is not a power of two "
            "(only averages over 2^k elements are exact in fixed point)"
        )
    per = _per_channel(dims[0], len(self.dims(node.outputs[0], node)))
    lo, hi = per(a.lo, min) * count, per(a.hi, max) * count
    if padded:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    scale = per(a.scale, _first) / count
    self.values[node.outputs[0]] = Affine(scale, per(a.offset, _first), lo, hi, exp=a.exp - k)
