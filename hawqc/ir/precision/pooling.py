"""Precision rules of the channels-last pools.

- `MaxPool` / `GlobalMaxPool` keep the per-channel interval.
- `AveragePool` / `GlobalAveragePool` sum each window exactly (the accumulator) and divide by its
  size. When every size is a power of two the quotient is exact (the LSB moves right). Otherwise
  hls4ml's `nnet_pooling.h` (`avg`: `accum_t y = 0; y += x[i]; y /= length`) divides the sum in its
  own type: the quotient keeps the sum's LSB and is truncated toward zero (ap_fixed's `/` is an
  integer `sdiv` of the codes). That is the rule here, and the value is recorded in `inexact`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.ops.window import Windows
from hawqc.ir.precision.bounds import Bounds, int_array, trunc_div
from hawqc.ir.precision.windows import WindowGeometry
from hawqc.ir.qtypes import power_of_two_exponent

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


def max_pool(analysis: Analysis, node: ir.Node) -> None:
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise UnsupportedModelError(f"{describe(node)}: the Indices output is not supported")
    analysis.record(node.outputs[0], analysis.operand(node, node.inputs[0]))


def average_pool(analysis: Analysis, node: ir.Node) -> None:
    x = analysis.operand(node, node.inputs[0])
    spatial = analysis.spatial(node.inputs[0])
    if node.op_type == "GlobalAveragePool":
        if spatial is None:
            raise UnsupportedModelError(f"{describe(node)}: the input's spatial shape is unknown")
        sizes = {(math.prod(spatial), math.prod(spatial))}
    else:
        view = Windows.read(node)
        kernel = view.kernel
        if kernel is None:
            raise UnsupportedModelError(f"{describe(node)}: missing attribute 'kernel_shape'")
        windows = WindowGeometry.from_view(view, kernel, spatial)
        full = math.prod(kernel)
        if not windows.padded():
            sizes = {(full, full)}
        elif spatial is None or windows.pads is None:
            raise UnsupportedModelError(f"{describe(node)}: padded windows need the input's spatial shape")
        else:
            sizes = windows.averaging_sizes(spatial, windows.count_include_pad)
    divisors = sorted({c for _, c in sizes})
    if divisors[0] < 1:
        raise UnsupportedModelError(f"{describe(node)}: a window holds no position to average")
    most = max(n for n, _ in sizes)
    out = node.outputs[0]
    if all(power_of_two_exponent(c) is not None for c in divisors):
        # Exact: the quotient sits `shift` bits further right, and so does the accumulator.
        shift = max(power_of_two_exponent(c) for c in divisors)  # type: ignore[type-var]
        exp = x.exp - shift
        lo = [x.lo * n * (1 << shift) // c for n, c in sizes]
        hi = [x.hi * n * (1 << shift) // c for n, c in sizes]
        quotient_grid = x.grids() - shift
        analysis.may_round(out, Bounds(x.lo * most, x.hi * most, x.exp, x.grid), "the window sum")
    else:
        exp = x.exp
        lo = [trunc_div(x.lo * n, c) for n, c in sizes]
        hi = [trunc_div(x.hi * n, c) for n, c in sizes]
        quotient_grid = np.asarray(exp, dtype=object)
        analysis.result.inexact[out.name] = (
            f"average over windows of {', '.join(map(str, divisors))} positions (not all powers of two): "
            "hardware truncates the quotient toward zero at the sum's LSB (hls4ml's avg), float32 rounds it"
        )
    bounds = Bounds(int_array(np.minimum.reduce(lo)), int_array(np.maximum.reduce(hi)), exp, quotient_grid)
    analysis.record(out, bounds)
    # hls4ml sums the window (padding reads 0) in accum_t and divides in place: it holds both.
    zero = np.zeros_like(x.lo)
    sums = Bounds(np.minimum(x.lo, zero) * most, np.maximum(x.hi, zero) * most, x.exp).at(exp)
    hull = Bounds(np.minimum(sums.lo, bounds.lo), np.maximum(sums.hi, bounds.hi), exp)
    analysis.result.accumulators[out.name] = hull.fixed_type()


RULES = {
    (CHANNELS_LAST_DOMAIN, "MaxPool"): max_pool,
    (CHANNELS_LAST_DOMAIN, "GlobalMaxPool"): max_pool,
    (CHANNELS_LAST_DOMAIN, "AveragePool"): average_pool,
    (CHANNELS_LAST_DOMAIN, "GlobalAveragePool"): average_pool,
}
