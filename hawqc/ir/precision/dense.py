"""Precision rules of dot products: dense layers and convolutions.

- `MatMul(x, W)` with constant `W`: output column j lies in `sum_i [min, max](W_ij*lo_i, W_ij*hi_i)`,
  computed with the actual integer weights, at LSB = LSB(x) * LSB(W).
- channels-last `Conv(x, W[M, k..., C/group], b?)`: output channel m sums, over its group's input
  channels c and the kernel positions p, the product intervals of `W[m, p, c]` with channel c's
  interval. A kernel position that some window places on padding contributes the hull of its
  product interval and 0. The bias (input 2) is added like MatMul's bias `Add`.

Accumulators are separate from results: hardware adds the products (and the bias) one by one in
some order, so the accumulator must hold every partial sum, not only the final one. For any order,
partial sums of column j lie in `[min(b_j,0) + sum_i min(tmin_ij, 0), max(b_j,0) + sum_i max(tmax_ij, 0)]`
where `[tmin_ij, tmax_ij]` is the interval of product i. When every product interval contains zero
(the usual case: quantized inputs include 0) this equals the result interval. A bias added by a
following `Add` extends the partial sums kept here (`elementwise.add_or_sub`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.ops.keys import onnx_op
from hawqc.ir.ops.window import Windows
from hawqc.ir.precision.bounds import Bounds, exact_codes, feature_grids
from hawqc.ir.precision.windows import WindowGeometry

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


def weights(analysis: Analysis, node: ir.Node, value: ir.Value | None, what: str) -> tuple[np.ndarray, Bounds]:
    """The exact integer codes of a constant weight operand, and its bounds."""
    if not analysis.is_constant(value):
        raise UnsupportedModelError(f"{describe(node)}: the {what} must be a constant (weights)")
    assert value is not None
    bounds = analysis.operand(node, value)
    return exact_codes(analysis.result.constants[value.name], bounds.exp), bounds


def matmul(analysis: Analysis, node: ir.Node) -> None:
    w_codes, w = weights(analysis, node, node.inputs[1], "right operand")
    a = analysis.operand(node, node.inputs[0])
    if w_codes.ndim != 2:
        raise UnsupportedModelError(f"{describe(node)}: weights must be 2-D, got shape {list(w_codes.shape)}")
    k = w_codes.shape[0]
    if a.features not in (None, k):
        raise UnsupportedModelError(f"{describe(node)}: {a.features} input features for {k} weight rows")
    a = a.widened(k)
    products_lo = w_codes * a.lo.reshape(k, 1)
    products_hi = w_codes * a.hi.reshape(k, 1)
    t_min = np.minimum(products_lo, products_hi)
    t_max = np.maximum(products_lo, products_hi)
    column_grids = feature_grids(analysis.result.constants[node.inputs[1].name], w.exp)
    grid = int(np.min(a.grids())) + column_grids
    dot_product(analysis, node, t_min, t_max, a.exp + w.exp, grid)


def dot_product(
    analysis: Analysis, node: ir.Node, t_min: np.ndarray, t_max: np.ndarray, exp: int, grid: np.ndarray
) -> None:
    """Record a sum of products whose intervals are `t_min/t_max` [terms, outputs] at `exp`."""
    out = node.outputs[0]
    zero = np.zeros_like(t_min)
    analysis.record(out, Bounds(t_min.sum(axis=0), t_max.sum(axis=0), exp, grid))
    partial = Bounds(np.minimum(t_min, zero).sum(axis=0), np.maximum(t_max, zero).sum(axis=0), exp, grid)
    analysis.partial[out.name] = partial
    analysis.note_accumulator(out, partial)


def conv(analysis: Analysis, node: ir.Node) -> None:
    w_value = node.inputs[1] if len(node.inputs) > 1 else None
    w_codes, w = weights(analysis, node, w_value, "weight (input 1)")
    x = analysis.operand(node, node.inputs[0])
    if w_codes.ndim < 3:
        raise UnsupportedModelError(f"{describe(node)}: weight of shape {list(w_codes.shape)} is no convolution kernel")
    out_channels, kernel, per_group = w_codes.shape[0], tuple(w_codes.shape[1:-1]), w_codes.shape[-1]
    view = Windows.read(node, kernel)
    group = view.group
    spatial = analysis.spatial(node.inputs[0])
    windows = WindowGeometry.from_view(view, kernel, spatial)
    channels = per_group * group
    if out_channels % group or x.features not in (None, channels):
        raise UnsupportedModelError(
            f"{describe(node)}: {x.features} input channels, weight {list(w_codes.shape)} and group {group} do not match"
        )
    x = x.widened(channels)
    # Input channel of each (output channel m, weight channel j): m's group * C/group + j.
    groups = np.arange(out_channels) // (out_channels // group)
    source = groups[:, None] * per_group + np.arange(per_group)[None, :]  # [M, C/group]
    shape = (out_channels,) + (1,) * len(kernel) + (per_group,)
    x_lo, x_hi = x.lo[source].reshape(shape), x.hi[source].reshape(shape)
    p1, p2 = w_codes * x_lo, w_codes * x_hi
    t_min, t_max = np.minimum(p1, p2), np.maximum(p1, p2)
    on_padding = windows.positions_on_padding(spatial)
    # A position some window reads on padding adds 0 there: its term's hull includes 0.
    mask = np.broadcast_to(on_padding[None, ..., None], t_min.shape)
    zero = np.zeros_like(t_min)
    t_min = np.where(mask, np.minimum(t_min, zero), t_min)
    t_max = np.where(mask, np.maximum(t_max, zero), t_max)
    # [terms, M] for dot_product.
    t_min = t_min.reshape(out_channels, -1).T
    t_max = t_max.reshape(out_channels, -1).T
    weight_data = analysis.result.constants[w_value.name]
    channel_grids = feature_grids(weight_data.reshape(out_channels, -1).T, w.exp)
    grid = int(np.min(x.grids())) + channel_grids
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    if bias_value is None:
        dot_product(analysis, node, t_min, t_max, x.exp + w.exp, grid)
        return
    # The bias starts the accumulator (hls4ml's conv kernels initialise it with the bias).
    if not analysis.is_constant(bias_value):
        raise UnsupportedModelError(f"{describe(node)}: the bias (input 2) must be a constant")
    bias = analysis.operand(node, bias_value)
    exp = min(x.exp + w.exp, bias.exp)
    products = Bounds(t_min.sum(axis=0), t_max.sum(axis=0), x.exp + w.exp, grid).at(exp)
    zero = np.zeros(out_channels, dtype=object)
    partial = Bounds(np.minimum(t_min, 0).sum(axis=0), np.maximum(t_max, 0).sum(axis=0), x.exp + w.exp, grid).at(exp)
    bias = bias.widened(out_channels).at(exp)
    grid = np.minimum(products.grids(), bias.grids())
    analysis.record(node.outputs[0], Bounds(products.lo + bias.lo, products.hi + bias.hi, exp, grid))
    hull = Bounds(partial.lo + np.minimum(bias.lo, zero), partial.hi + np.maximum(bias.hi, zero), exp, grid)
    analysis.note_accumulator(node.outputs[0], hull)


RULES = {
    onnx_op("MatMul"): matmul,
    (CHANNELS_LAST_DOMAIN, "Conv"): conv,
}
