"""Convolution, pooling and BatchNormalization: numeric kernels and the executor's builders.

The first half holds pure, dtype-generic functions: they compute in the dtype of their inputs
(float32 in semantic mode, float64 in hardware mode) and know nothing of graphs. The second half
holds the builders of semantic mode (see `hawqc.sim.ops`): they read a node's attributes once, at
planning, and return kernels that call the pure functions.

Geometry follows onnxruntime (qonnx's `execute_onnx` runs standard ops with it), measured on
onnxruntime 1.31:
- output size along a spatial axis of length L, kernel k, stride s, dilation d, pads (b, e):
  `span = L + b + e - ((k - 1) * d + 1)`; `out = span // s + 1`, or with `ceil_mode`
  `ceil(span / s) + 1`, minus one if that last window would start at or past `L + b` (it would
  hold padding only). A negative span (kernel larger than the padded input) is refused.
- `auto_pad` SAME_UPPER / SAME_LOWER: `out = ceil(L / s)`, total padding
  `(out - 1) * s + (k - 1) * d + 1 - L` (may be negative: the input's end is then not read), the
  odd pixel at the end (UPPER) or at the beginning (LOWER); VALID: no padding.
- pooling repeats onnxruntime's kernels exactly (MLAS or its own loop, see "Pooling" below): which
  of +0.0 / -0.0 a max keeps on a tie, the lowest float for windows without a value above -inf,
  the order of each window's sum, and a division (not a reciprocal multiply) for averages.

Exactness: every sum here is a plain float sum in some order. On quantized data (small integers
times powers of two) each partial sum is exact in float32, so any order gives onnxruntime's
result bit for bit. On arbitrary float data a convolution may differ from onnxruntime in the last
bit (onnxruntime's MLAS sums in its own order and fuses multiply-adds, as for MatMul in
`hawqc.sim.ops`; measured: a 3x3 depthwise convolution on float data differs in a third of its
outputs). Pooling sums in onnxruntime's order and matches it on float data as well.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from hawqc.ir.op_arithmetic import window_count
from hawqc.ir.ops.batchnorm import batch_norm as batch_norm_attributes
from hawqc.ir.ops.reading import (
    check_input_count,
    check_single_output,
    refusal,
    standard_opset,
)
from hawqc.ir.ops.window import Windows

if TYPE_CHECKING:  # hawqc.sim.ops imports this module to fill its op table
    from hawqc.sim.ops import Kernel, NodeSpec

# ---------------------------------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------------------------------


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """[N, C, spatial...] -> [N, spatial..., C] (a view)."""
    return np.moveaxis(x, 1, -1)


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """[N, spatial..., C] -> [N, C, spatial...] (a view)."""
    return np.moveaxis(x, -1, 1)


# ---------------------------------------------------------------------------------------------------
# Window geometry
# ---------------------------------------------------------------------------------------------------


def _tuple(values: Sequence[int] | None, rank: int, default: int) -> tuple[int, ...]:
    if values is None or len(values) == 0:
        return (default,) * rank
    if len(values) != rank:
        raise ValueError(f"expected {rank} values for {rank} spatial dims, got {list(values)}")
    return tuple(int(v) for v in values)


def _pads(pads: Sequence[int] | None, rank: int) -> tuple[tuple[int, int], ...]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] as ((b1, e1), (b2, e2), ...)."""
    if pads is None or len(pads) == 0:
        return ((0, 0),) * rank
    if len(pads) != 2 * rank:
        raise ValueError(f"expected {2 * rank} pads for {rank} spatial dims, got {list(pads)}")
    return tuple((int(pads[i]), int(pads[i + rank])) for i in range(rank))


def _windows_along(
    x: np.ndarray,
    axes: Sequence[int],
    kernel: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    ceil_mode: bool,
    fill: float,
) -> tuple[np.ndarray, tuple[int, ...]]:
    """`x` padded (with `fill`) or cropped along `axes` to exactly what the windows read.

    Returns the array and the window counts; windows of axis a start at multiples of its stride.
    """
    counts = tuple(
        window_count(x.shape[a], k, s, d, b, e, ceil_mode)
        for a, k, s, d, (b, e) in zip(axes, kernel, strides, dilations, pads)
    )
    widths = [(0, 0)] * x.ndim
    crops = [slice(None)] * x.ndim
    for a, k, s, d, (b, _), n in zip(axes, kernel, strides, dilations, pads, counts):
        end = (n - 1) * s + (k - 1) * d + 1 - b - x.shape[a]  # pad needed after the input
        crops[a] = slice(max(-b, 0), x.shape[a] + min(end, 0))
        widths[a] = (max(b, 0), max(end, 0))
    x = x[tuple(crops)]
    if any(w != (0, 0) for w in widths):
        x = np.pad(x, widths, mode="constant", constant_values=fill)
    return x, counts


def _offset_slices(
    ndim: int,
    axes: Sequence[int],
    offset: tuple[int, ...],
    strides: tuple[int, ...],
    dilations: tuple[int, ...],
    counts: tuple[int, ...],
) -> tuple[slice, ...]:
    """The strided slice that picks kernel position `offset` of every window."""
    index = [slice(None)] * ndim
    for a, o, s, d, n in zip(axes, offset, strides, dilations, counts):
        start = o * d
        index[a] = slice(start, start + (n - 1) * s + 1, s)
    return tuple(index)


# ---------------------------------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------------------------------


def conv_channels_last(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
) -> np.ndarray:
    """ONNX Conv on x [N, spatial..., C] with weight [M, k..., C/group], bias [M]: [N, out..., M].

    Absent strides / pads / dilations are ONNX's defaults (1, 0, 1). Depthwise convolutions (one
    input and one output channel per group) accumulate kernel positions element-wise, 1x1
    convolutions are one matrix product on the input, everything else one matrix product per group
    over im2col patches.
    """
    rank = x.ndim - 2
    if rank < 1 or w.ndim != x.ndim:
        raise ValueError(f"input of rank {x.ndim} and weight of rank {w.ndim} do not make a convolution")
    kernel = tuple(w.shape[1:-1])
    strides_ = _tuple(strides, rank, 1)
    dilations_ = _tuple(dilations, rank, 1)
    channels, out_channels, per_group = x.shape[-1], w.shape[0], w.shape[-1]
    if group < 1 or channels != per_group * group or out_channels % group != 0:
        raise ValueError(
            f"{channels} input channels, weight of shape {list(w.shape)} and group {group} do not match"
        )
    if b is not None and b.shape != (out_channels,):
        raise ValueError(f"the bias has shape {list(b.shape)}, expected [{out_channels}]")
    axes = tuple(range(1, rank + 1))
    xp, counts = _windows_along(
        x, axes, kernel, strides_, dilations_, _pads(pads, rank), False, 0.0
    )
    out_per_group = out_channels // group
    if per_group == 1 and out_per_group == 1:
        # Depthwise: one multiply-accumulate pass per kernel position, into preallocated buffers.
        # (With several output channels per group a broadcast pass costs more than im2col.)
        acc = term = None
        for offset in itertools.product(*(range(k) for k in kernel)):
            view = xp[_offset_slices(xp.ndim, axes, offset, strides_, dilations_, counts)]
            taps = w[(slice(None), *offset, 0)]
            if acc is None:
                acc = view * taps
                np.add(acc, 0.0, out=acc)  # from +0.0, like onnxruntime
                term = np.empty_like(acc)
            else:
                np.multiply(view, taps, out=term)
                np.add(acc, term, out=acc)
        y = acc
    elif group == 1 and all(k == 1 for k in kernel):
        # Pointwise: one matrix product on the (strided) input itself, no patches to build.
        view = xp[_offset_slices(xp.ndim, axes, (0,) * rank, strides_, dilations_, counts)]
        y = np.matmul(c_ordered(view), c_ordered(w.reshape(out_channels, channels)).T)
        np.add(y, 0.0, out=y)
    else:
        extent = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations_))
        windows = sliding_window_view(xp, extent, axis=axes)  # [N, pos..., C, extent...]
        pick = (
            slice(None),
            *(slice(None, None, s) for s in strides_),
            slice(None),
            *(slice(None, None, d) for d in dilations_),
        )
        windows = windows[pick]  # [N, out..., C, k...]
        n = x.shape[0]
        positions = int(np.prod(counts, dtype=np.int64))
        size = int(np.prod(kernel, dtype=np.int64)) * per_group
        if group == 1:
            # -> [N, out..., k..., C], the order of the weight's trailing axes: one 2-D product.
            order = (0, *range(1, rank + 1), *range(rank + 2, 2 * rank + 2), rank + 1)
            patches = windows.transpose(order).reshape(n * positions, size)
            y = np.matmul(c_ordered(patches), c_ordered(w.reshape(out_channels, size)).T).reshape(n, *counts, out_channels)
        else:
            grouped = windows.reshape(n, *counts, group, per_group, *kernel)
            # -> [group, N, out..., k..., C/group].
            order = (rank + 1, 0, *range(1, rank + 1), *range(rank + 3, 2 * rank + 3), rank + 2)
            patches = grouped.transpose(order).reshape(group, n * positions, size)
            weights = c_ordered(w.reshape(group, out_per_group, size)).transpose(0, 2, 1)
            y = np.matmul(c_ordered(patches), weights)  # [group, N * positions, M / group]
            y = y.transpose(1, 0, 2).reshape(n, *counts, out_channels)
        # onnxruntime accumulates from +0.0, so a sum of -0.0 products is +0.0 there.
        np.add(y, 0.0, out=y)
    if b is not None:
        y = np.add(y, b, out=y) if y.flags.writeable and y.dtype == np.result_type(y, b) else y + b
    return y


def c_ordered(a: np.ndarray) -> np.ndarray:
    """`a` in C order, for every matrix product of semantic mode. numpy's matmul hands operands to
    BLAS or to its own loop, and BLAS to different kernels, by how they are stored; the kernels sum
    float32 products in different orders (with fused multiply-adds on some CPUs). Without this the
    same convolution stored channels-first or channels-last gave different bits on some CPUs, and
    `Gemm(transB=1)` differed by an ulp from `MatMul` on the weight stored transposed. (Quantized
    sums are exact in any order; float ones are not.)"""
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------
# onnxruntime pools with MLAS (`MlasPool`) unless a dilation is set, or, for AveragePool, unless the
# opset is 19 or later or count_include_pad meets ceil_mode; those cases run onnxruntime's own loop.
# MLAS picks one of three kernels:
# - "global" when the kernel covers the whole input with strides 1 and no padding: four lanes take
#   every fourth element, the lanes are combined as (l0 . l2) . (l1 . l3), then the remaining
#   elements one by one;
# - "vector" for 2-D and 3-D pooling with a last stride <= 2 and kernels <= 32: reduce each window's
#   rows first (per input column), then along the row; columns in groups of four use SSE max
#   (`a > b ? a : b`), the last width % 4 columns and everything in the loop use std::max
#   (`a < b ? b : a`);
# - "generic" otherwise: each window in row-major order, from the initial value.
# For max the initial value is the lowest float (not -inf) and the two max flavours decide which of
# +0.0 / -0.0 survives a tie and what a NaN does; for sums they fix the summation order. We repeat
# all of it (measured identical on quantized and float data, with zeros of both signs, NaN and
# infinities, opsets 1 to 22); only NaN payloads of a GlobalAveragePool over +inf and -inf differ.

_MLAS_REDUCTION_BUFFER = 2048 - 3
_SPATIAL_RANKS = (1, 2, 3)


def _lowest(dtype: np.dtype) -> np.generic:
    return np.finfo(dtype).min


def _sse_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x86 `maxps a, b`: a if a > b, else b (ties and NaN give b)."""
    return np.where(a > b, a, b)


def _std_max(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """C++ `std::max(a, b)`: b if a < b, else a (ties and a NaN b give a)."""
    return np.where(a < b, b, a)


@dataclass(frozen=True)
class _PoolGeometry:
    axes: tuple[int, ...]
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    ceil_mode: bool

    @classmethod
    def of(
        cls,
        x: np.ndarray,
        axes: tuple[int, ...],
        kernel: Sequence[int],
        strides: Sequence[int] | None,
        pads: Sequence[int] | None,
        dilations: Sequence[int] | None,
        ceil_mode: bool,
    ) -> _PoolGeometry:
        rank = len(axes)
        if rank not in _SPATIAL_RANKS:
            raise ValueError(f"pooling over {rank} spatial dims (onnxruntime pools over 1 to 3)")
        geometry = cls(
            axes,
            _tuple(kernel, rank, 1),
            _tuple(strides, rank, 1),
            _tuple(dilations, rank, 1),
            _pads(pads, rank),
            bool(ceil_mode),
        )
        if any(b < 0 or e < 0 for b, e in geometry.pads):
            raise ValueError(f"pooling pads must not be negative, got {list(pads or [])}")
        return geometry

    def mlas_kernel(self, x: np.ndarray) -> str:
        """Which MLAS kernel onnxruntime runs ("global", "vector", "generic"); no dilation assumed."""
        spatial = tuple(x.shape[a] for a in self.axes)
        if self.kernel == spatial and all(s == 1 for s in self.strides) and all(p == (0, 0) for p in self.pads):
            return "global"
        width = spatial[-1] + self.pads[-1][0] + self.pads[-1][1]
        if len(spatial) >= 2 and self.strides[-1] <= 2 and max(self.kernel) <= 32 and width <= _MLAS_REDUCTION_BUFFER:
            return "vector"
        return "generic"


def _pool_generic(x: np.ndarray, g: _PoolGeometry, kind: str) -> np.ndarray:
    """Each window in row-major order from the initial value, with std::max / plain addition."""
    spatial = tuple(x.shape[a] for a in g.axes)
    whole = all(
        k == n and (b, e) == (0, 0) and d == 1 for k, n, (b, e), d in zip(g.kernel, spatial, g.pads, g.dilations)
    ) and all(window_count(n, k, s, 1, 0, 0, g.ceil_mode) == 1 for n, k, s in zip(spatial, g.kernel, g.strides))
    if whole:
        # One window over everything (a large kernel): the same order, without a loop per element.
        flat = np.moveaxis(x, g.axes, range(x.ndim - len(g.axes), x.ndim)).reshape(
            *(x.shape[a] for a in range(x.ndim) if a not in g.axes), -1
        )
        if kind == "sum":
            reduced = np.cumsum(flat, axis=-1)[..., -1] + x.dtype.type(0)
        else:
            reduced = _first_maximum(flat)
        shape = list(x.shape)
        for a in g.axes:
            shape[a] = 1
        return reduced.reshape(shape)
    fill = -np.inf if kind == "max" else 0.0
    xp, counts = _windows_along(x, g.axes, g.kernel, g.strides, g.dilations, g.pads, g.ceil_mode, fill)
    dilated = any(d != 1 for d in g.dilations)
    acc = taken = None
    for offset in itertools.product(*(range(k) for k in g.kernel)):
        view = xp[_offset_slices(xp.ndim, g.axes, offset, g.strides, g.dilations, counts)]
        if acc is None:
            init = _lowest(x.dtype) if kind == "max" else x.dtype.type(0)
            acc = np.full(view.shape, init, dtype=x.dtype)
        if kind == "sum":
            np.add(acc, view, out=acc)
        elif not dilated:
            acc = _std_max(acc, view)
        else:
            # onnxruntime's own loop (MaxPool with dilations) takes a window's first input value
            # unconditionally (so a leading NaN stays), then any greater one.
            inside = _inside_input(x, g, offset, counts)
            take = inside if taken is None else inside & (~taken | (view > acc))
            acc = np.where(take, view, acc)
            taken = inside if taken is None else taken | inside
    return acc


def _inside_input(x: np.ndarray, g: _PoolGeometry, offset: tuple[int, ...], counts: tuple[int, ...]) -> np.ndarray:
    """Which windows read an input value (not padding) at kernel position `offset`."""
    inside = np.ones([1] * x.ndim, dtype=bool)
    for a, o, s, d, (b, _), n in zip(g.axes, offset, g.strides, g.dilations, g.pads, counts):
        positions = np.arange(n) * s - b + o * d
        shape = [1] * x.ndim
        shape[a] = n
        inside = inside & ((positions >= 0) & (positions < x.shape[a])).reshape(shape)
    return inside


def _first_maximum(flat: np.ndarray) -> np.ndarray:
    """std::max folded over the last axis from the lowest float: NaN is skipped, ties keep the first."""
    values = np.where(np.isnan(flat), -np.inf, flat)
    top = values.max(axis=-1, keepdims=True)
    first = np.take_along_axis(values, np.argmax(values == top, axis=-1)[..., None], axis=-1)[..., 0]
    low = _lowest(flat.dtype)
    return np.where(first >= low, first, low).astype(flat.dtype)


def _last_sse_maximum(lanes: np.ndarray, init: np.generic | None) -> np.ndarray:
    """SSE max folded over the last axis (from `init`, or from the first element when None)."""
    if np.isnan(lanes).any():
        acc = lanes[..., 0] if init is None else _sse_max(np.full(lanes.shape[:-1], init, lanes.dtype), lanes[..., 0])
        for i in range(1, lanes.shape[-1]):
            acc = _sse_max(acc, lanes[..., i])
        return acc
    # Without NaN the fold ends on the last element equal to the maximum (a tie takes the new one).
    top = lanes.max(axis=-1, keepdims=True)
    last = lanes.shape[-1] - 1 - np.argmax((lanes == top)[..., ::-1], axis=-1)
    result = np.take_along_axis(lanes, last[..., None], axis=-1)[..., 0]
    return result if init is None else np.where(init > result, init, result).astype(lanes.dtype)


def _pool_mlas_global(x: np.ndarray, g: _PoolGeometry, kind: str) -> np.ndarray:
    outer = [a for a in range(x.ndim) if a not in g.axes]
    flat = np.moveaxis(x, g.axes, range(len(outer), x.ndim)).reshape(*(x.shape[a] for a in outer), -1)
    size = flat.shape[-1]
    vectors = size // 4 * 4
    lanes = flat[..., :vectors].reshape(*flat.shape[:-1], vectors // 4, 4)
    if kind == "sum":
        zero = x.dtype.type(0)
        lane = np.cumsum(lanes, axis=-2)[..., -1, :] + zero if vectors else np.zeros((*flat.shape[:-1], 4), x.dtype)
        acc = (lane[..., 0] + lane[..., 2]) + (lane[..., 1] + lane[..., 3])
        for i in range(vectors, size):
            acc = acc + flat[..., i]
    else:
        low = _lowest(x.dtype)
        if vectors:
            lane = _last_sse_maximum(np.moveaxis(lanes, -1, -2), low)
        else:
            lane = np.full((*flat.shape[:-1], 4), low, x.dtype)
        acc = _sse_max(_sse_max(lane[..., 0], lane[..., 2]), _sse_max(lane[..., 1], lane[..., 3]))
        for i in range(vectors, size):
            acc = _std_max(acc, flat[..., i])
    shape = list(x.shape)
    for a in g.axes:
        shape[a] = 1
    return acc.reshape(shape)


def _pool_mlas_vector(x: np.ndarray, g: _PoolGeometry, kind: str) -> np.ndarray:
    """MLAS's 2-D / 3-D vector kernel: window rows first (per input column), then along the row."""
    *outer_axes, width_axis = g.axes
    width = x.shape[width_axis]
    vector_columns = width // 4 * 4
    low = _lowest(x.dtype)

    def fold_rows(acc: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if kind == "sum":
            return acc + rows
        head = [slice(None)] * x.ndim
        tail = [slice(None)] * x.ndim
        head[width_axis] = slice(None, vector_columns)
        tail[width_axis] = slice(vector_columns, None)
        return np.concatenate(
            [_sse_max(acc[tuple(head)], rows[tuple(head)]), _std_max(acc[tuple(tail)], rows[tuple(tail)])],
            axis=width_axis,
        )

    # Phase 1: for each output position along the outer axes, reduce the window's input rows in
    # order (planes outer, rows inner); rows outside the input are skipped, not padded.
    ranges = []
    for a, k, s, (b, e) in zip(outer_axes, g.kernel, g.strides, g.pads):
        n = window_count(x.shape[a], k, s, 1, b, e, g.ceil_mode)
        starts = np.arange(n) * s - b
        ranges.append((a, starts, k))
    acc = None
    if len(outer_axes) == 1:
        # 2-D: start from the first input row of each window.
        a, starts, k = ranges[0]
        first = np.clip(starts, 0, x.shape[a] - 1)
        acc = x.take(first, axis=a)
        for j in range(k):
            rows = starts + j
            use = (rows >= 0) & (rows < x.shape[a]) & (rows > first)
            if not use.any():
                continue
            taken = x.take(np.clip(rows, 0, x.shape[a] - 1), axis=a)
            shape = [1] * x.ndim
            shape[a] = len(rows)
            acc = np.where(use.reshape(shape), fold_rows(acc, taken), acc)
    else:
        # 3-D: start from the initial value.
        (a0, starts0, k0), (a1, starts1, k1) = ranges
        shape = list(x.shape)
        shape[a0], shape[a1] = len(starts0), len(starts1)
        acc = np.full(shape, low if kind == "max" else x.dtype.type(0), dtype=x.dtype)
        for j0 in range(k0):
            planes = starts0 + j0
            use0 = (planes >= 0) & (planes < x.shape[a0])
            if not use0.any():
                continue
            by_plane = x.take(np.clip(planes, 0, x.shape[a0] - 1), axis=a0)
            for j1 in range(k1):
                rows = starts1 + j1
                use1 = (rows >= 0) & (rows < x.shape[a1])
                if not use1.any():
                    continue
                taken = by_plane.take(np.clip(rows, 0, x.shape[a1] - 1), axis=a1)
                mask_shape0 = [1] * x.ndim
                mask_shape0[a0] = len(planes)
                mask_shape1 = [1] * x.ndim
                mask_shape1[a1] = len(rows)
                use = use0.reshape(mask_shape0) & use1.reshape(mask_shape1)
                acc = np.where(use, fold_rows(acc, taken), acc)
    # Phase 2: along the row, over a buffer padded with the initial value, from its first element.
    k, s, (b, e) = g.kernel[-1], g.strides[-1], g.pads[-1]
    n = window_count(width, k, s, 1, b, e, g.ceil_mode)
    right = max((n - 1) * s + k - b - width, 0)
    widths = [(0, 0)] * x.ndim
    widths[width_axis] = (b, right)
    fill = low if kind == "max" else 0.0
    buffer = np.pad(acc, widths, mode="constant", constant_values=fill) if (b or right) else acc
    out = None
    for j in range(k):
        index = [slice(None)] * x.ndim
        index[width_axis] = slice(j, j + (n - 1) * s + 1, s)
        column = buffer[tuple(index)]
        if out is None:
            out = column.copy()
        else:
            out = out + column if kind == "sum" else _sse_max(out, column)
    return out


def _pool(x: np.ndarray, g: _PoolGeometry, kind: str, mlas: bool) -> np.ndarray:
    if not mlas or any(d != 1 for d in g.dilations):
        return _pool_generic(x, g, kind)
    chosen = g.mlas_kernel(x)
    if chosen == "global":
        return _pool_mlas_global(x, g, kind)
    if chosen == "vector":
        return _pool_mlas_vector(x, g, kind)
    return _pool_generic(x, g, kind)


def max_pool_nchw(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    """ONNX MaxPool on [N, C, spatial...]: the maximum of each window, as onnxruntime computes it.

    Padding never wins; a window without any value above -inf gives the lowest float (onnxruntime's
    initial value). Which of +0.0 / -0.0 a tie keeps follows onnxruntime's kernels (see above).
    """
    g = _PoolGeometry.of(x, tuple(range(2, x.ndim)), kernel, strides, pads, dilations, ceil_mode)
    return _pool(x, g, "max", mlas=True)


def max_pool_channels_last(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    ceil_mode: bool = False,
) -> np.ndarray:
    """`max_pool_nchw` on [N, spatial..., C] (the same arithmetic, on the transposed layout)."""
    g = _PoolGeometry.of(x, tuple(range(1, x.ndim - 1)), kernel, strides, pads, dilations, ceil_mode)
    return _pool(x, g, "max", mlas=True)


def _window_sizes(
    size: int,
    count: int,
    kernel: int,
    stride: int,
    dilation: int,
    pad_begin: int,
    pad_end: int,
    count_include_pad: bool,
) -> np.ndarray:
    """How many positions of each window along one axis an average divides by."""
    starts = np.arange(count) * stride - pad_begin
    positions = starts[:, None] + np.arange(kernel)[None, :] * dilation
    low, high = (-pad_begin, size + pad_end) if count_include_pad else (0, size)
    return ((positions >= low) & (positions < high)).sum(axis=1)


def _sum_pool(x: np.ndarray, g: _PoolGeometry, count_include_pad: bool, mlas: bool) -> tuple[np.ndarray, np.ndarray]:
    sums = _pool(x, g, "sum", mlas)
    sizes = np.ones([1] * x.ndim, dtype=np.int64)
    for a, k, s, d, (b, e) in zip(g.axes, g.kernel, g.strides, g.dilations, g.pads):
        n = sums.shape[a]
        shape = [1] * x.ndim
        shape[a] = n
        sizes = sizes * _window_sizes(x.shape[a], n, k, s, d, b, e, count_include_pad).reshape(shape)
    return sums, sizes.astype(x.dtype)


def sum_pool_nchw(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    dilations: Sequence[int] | None = None,
    mlas: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Window sums of [N, C, spatial...] and what ONNX AveragePool divides each by.

    `counts` has x's dtype and broadcasts against `sums` ([1, 1, out...]): the number of input
    positions in the window, or with `count_include_pad` of input and pad positions (positions past
    the end pad that `ceil_mode` windows reach never count). `mlas` picks onnxruntime's summation
    order: that of MLAS (AveragePool before opset 19, unless count_include_pad meets ceil_mode) or
    of its own row-major loop; on quantized data every order gives the same sums.
    """
    g = _PoolGeometry.of(x, tuple(range(2, x.ndim)), kernel, strides, pads, dilations, ceil_mode)
    return _sum_pool(x, g, count_include_pad, mlas)


def sum_pool_channels_last(
    x: np.ndarray,
    *,
    kernel: Sequence[int],
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    dilations: Sequence[int] | None = None,
    mlas: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """`sum_pool_nchw` on [N, spatial..., C]; counts broadcast as [1, out..., 1]."""
    g = _PoolGeometry.of(x, tuple(range(1, x.ndim - 1)), kernel, strides, pads, dilations, ceil_mode)
    return _sum_pool(x, g, count_include_pad, mlas)


def global_pool_nchw(x: np.ndarray, kind: str) -> np.ndarray:
    """GlobalMaxPool (`kind="max"`) or GlobalAveragePool (`"average"`) of [N, C, spatial...]."""
    return _global_pool(x, tuple(range(2, x.ndim)), kind)


def global_pool_channels_last(x: np.ndarray, kind: str) -> np.ndarray:
    """`global_pool_nchw` on [N, spatial..., C]: [N, 1..., C]."""
    return _global_pool(x, tuple(range(1, x.ndim - 1)), kind)


def _global_pool(x: np.ndarray, axes: tuple[int, ...], kind: str) -> np.ndarray:
    spatial = [x.shape[a] for a in axes]
    g = _PoolGeometry.of(x, axes, spatial, None, None, None, False)
    if kind == "max":
        return _pool_mlas_global(x, g, "max")
    sums = _pool_mlas_global(x, g, "sum")
    return sums / x.dtype.type(int(np.prod(spatial, dtype=np.int64)))


# ---------------------------------------------------------------------------------------------------
# BatchNormalization (inference)
# ---------------------------------------------------------------------------------------------------


def batch_norm(x: np.ndarray, a: np.ndarray, b: np.ndarray, *, channel_axis: int) -> np.ndarray:
    """`x * a + b` with `a`, `b` of shape [C] applied along `channel_axis` (1, or -1 channels-last)."""
    shape = [1] * x.ndim
    shape[channel_axis] = -1
    return x * a.reshape(shape) + b.reshape(shape)


# ===================================================================================================
# Builders of semantic mode
# ===================================================================================================
# Standard ops take NCHW data; the ops of CHANNELS_LAST_DOMAIN take [N, spatial..., C] (and Conv a
# weight [M, k..., C/group]) and mean the standard op on the transposed tensors (qonnx's rule). qonnx
# 1.0.0 runs its channels-last Conv / MaxPool / BatchNormalization at ONNX opset 1, whatever the
# model imports, so it cannot run a MaxPool with `ceil_mode` (not in MaxPool-1) nor any BatchNorm;
# hawqc gives them the standard meaning. AveragePool, GlobalAveragePool and GlobalMaxPool in that
# domain are hawqc's extensions, with the model's ONNX opset.

def _constant(spec: NodeSpec, index: int) -> np.ndarray | None:
    return spec.constants[index] if index < len(spec.constants) else None


def _build_conv(spec: NodeSpec, channels_last: bool) -> Kernel:
    node = spec.node
    check_input_count(node, 2, 3)
    weights, bias = _constant(spec, 1), _constant(spec, 2)
    kernel = None
    if weights is not None:
        if weights.ndim < 3:
            raise refusal(node, f"the weight has shape {list(weights.shape)}, expected [M, C/group, k...]")
        kernel = weights.shape[1:-1] if channels_last else weights.shape[2:]
        # The channels-last weight, contiguous once: the kernel reshapes it on every run.
        weights = np.ascontiguousarray(weights if channels_last else to_channels_last(weights))
        if bias is not None and bias.shape != (weights.shape[0],):
            raise refusal(node, f"the bias has shape {list(bias.shape)}, expected [{weights.shape[0]}]")
    windows = Windows.read(node, kernel)
    group = windows.group

    def conv(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        w = weights
        if w is None:
            w = args[1] if channels_last else to_channels_last(args[1])
        b = bias if bias is not None else (args[2] if len(args) > 2 else None)
        x_last = x if channels_last else to_channels_last(x)
        pads = windows.pads_for(x_last.shape[1:-1], w.shape[1:-1])
        y = conv_channels_last(
            x_last, w, b, strides=windows.strides, pads=pads, dilations=windows.dilations, group=group
        )
        return (y if channels_last else np.ascontiguousarray(to_channels_first(y)),)

    return conv


def build_conv(spec: NodeSpec) -> Kernel:
    """`Conv` (X, W, B?) on NCHW data, every ONNX attribute with its default."""
    return _build_conv(spec, channels_last=False)


def build_conv_channels_last(spec: NodeSpec) -> Kernel:
    """Channels-last `Conv`: X [N, spatial..., C], W [M, k..., C/group]."""
    return _build_conv(spec, channels_last=True)


def _build_pool(spec: NodeSpec, channels_last: bool, kind: str) -> Kernel:
    """MaxPool (`kind="max"`) or AveragePool (`"average"`)."""
    node = spec.node
    check_input_count(node, 1, 1)
    check_single_output(node, "Indices" if kind == "max" else "unknown")
    windows = Windows.read(node, None)
    if windows.kernel is None:
        raise refusal(node, "has no kernel_shape attribute (required)")
    kernel = windows.kernel
    count_include_pad = windows.count_include_pad
    # onnxruntime's AveragePool sums with MLAS before opset 19, unless count_include_pad meets
    # ceil_mode (see "Pooling" above).
    mlas = standard_opset(node) < 19 and not (count_include_pad and windows.ceil_mode) if kind == "average" else True
    pool_max = max_pool_channels_last if channels_last else max_pool_nchw
    pool_sum = sum_pool_channels_last if channels_last else sum_pool_nchw

    def pool(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        spatial = x.shape[1:-1] if channels_last else x.shape[2:]
        pads = windows.pads_for(spatial, kernel)
        if kind == "max":
            y = pool_max(
                x, kernel=kernel, strides=windows.strides, pads=pads, dilations=windows.dilations,
                ceil_mode=windows.ceil_mode,
            )  # fmt: skip
            return (y,)
        sums, counts = pool_sum(
            x, kernel=kernel, strides=windows.strides, pads=pads, dilations=windows.dilations,
            ceil_mode=windows.ceil_mode, count_include_pad=count_include_pad, mlas=mlas,
        )  # fmt: skip
        return (sums / counts,)

    return pool


def build_max_pool(spec: NodeSpec) -> Kernel:
    """`MaxPool` (X), NCHW; the optional Indices output is refused."""
    return _build_pool(spec, channels_last=False, kind="max")


def build_max_pool_channels_last(spec: NodeSpec) -> Kernel:
    return _build_pool(spec, channels_last=True, kind="max")


def build_average_pool(spec: NodeSpec) -> Kernel:
    """`AveragePool` (X), NCHW, count_include_pad / ceil_mode / dilations (opset 19)."""
    return _build_pool(spec, channels_last=False, kind="average")


def build_average_pool_channels_last(spec: NodeSpec) -> Kernel:
    return _build_pool(spec, channels_last=True, kind="average")


def _build_global_pool(spec: NodeSpec, channels_last: bool, kind: str) -> Kernel:
    check_input_count(spec.node, 1, 1)
    pool = global_pool_channels_last if channels_last else global_pool_nchw

    def global_pool(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (pool(args[0], kind),)

    return global_pool


def build_global_average_pool(spec: NodeSpec) -> Kernel:
    return _build_global_pool(spec, channels_last=False, kind="average")


def build_global_average_pool_channels_last(spec: NodeSpec) -> Kernel:
    return _build_global_pool(spec, channels_last=True, kind="average")


def build_global_max_pool(spec: NodeSpec) -> Kernel:
    return _build_global_pool(spec, channels_last=False, kind="max")


def build_global_max_pool_channels_last(spec: NodeSpec) -> Kernel:
    return _build_global_pool(spec, channels_last=True, kind="max")


def _build_batch_norm(spec: NodeSpec, channels_last: bool) -> Kernel:
    node = spec.node
    check_input_count(node, 5, 5)
    view = batch_norm_attributes(node)
    assert view is not None, "the op table maps only BatchNormalization here"
    if view.training_mode:
        raise refusal(node, "training_mode=1 is not supported (inference only)")
    if not view.spatial:
        raise refusal(node, "spatial=0 (per-element statistics, opset < 9) is not supported")
    check_single_output(node, "running statistics, training only")
    channel_axis = -1 if channels_last else 1
    params = spec.constants[1:5]
    coefficients = None
    if all(p is not None for p in params):
        if any(p.ndim != 1 or p.shape != params[0].shape for p in params):
            shapes = ", ".join(str(list(p.shape)) for p in params)
            raise refusal(node, f"scale, B, mean and var must be vectors of one length, got {shapes}")
        coefficients = view.coefficients(tuple(params))

    def batch_normalization(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        a, b = coefficients if coefficients is not None else view.coefficients(tuple(args[1:5]))
        return (batch_norm(args[0], a, b, channel_axis=channel_axis),)

    return batch_normalization


def build_batch_norm(spec: NodeSpec) -> Kernel:
    """`BatchNormalization` in inference form, NCHW (channels on axis 1)."""
    return _build_batch_norm(spec, channels_last=False)


def build_batch_norm_channels_last(spec: NodeSpec) -> Kernel:
    return _build_batch_norm(spec, channels_last=True)
