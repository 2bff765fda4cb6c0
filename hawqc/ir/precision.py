"""Exact fixed-point types for every value of a quantized graph, from quant parameters and intervals.

The graphs are the ones the hls4ml lowering sees: channels-last (Conv, pools and BatchNormalization
in `CHANNELS_LAST_DOMAIN`), so the last axis of every activation is its channel (or feature) axis.
Each value gets an exact interval kept per feature along that last axis, as integers times one
power of two, so no rounding ever enters the analysis. The rules, one per op:

- `Quant` on an activation (per-tensor scale) gives its own type; its interval is the quantized
  input interval (quantization is monotonic, so quantizing the two bounds is exact). On a constant
  it is evaluated (QONNX semantics, float32) and keeps the Quant's type. A constant that `fold-quant`
  left annotated (`hawqc.ir.quant_annotation`) takes the type of the quantizer the annotation
  describes; any other constant the narrowest type that holds its exact (dyadic) values.
- `BipolarQuant(x, s)` and qonnx's 1-bit signed `Quant` (its "bipolar" case) give `+s` where x >= 0
  (-0.0 included), else `-s`: codes -1/+1 at LSB s, only for one power-of-two s (any other scale is
  refused: the next layer's float32 products of it round). `MultiThreshold` gives
  `out_scale * count + out_bias`, the count per channel between the number of thresholds at or below
  the input's lower and upper bound (exact comparisons; the channel must be the last axis).
- `MatMul(x, W)` with constant `W`: output column j lies in `sum_i [min, max](W_ij*lo_i, W_ij*hi_i)`,
  computed with the actual integer weights, at LSB = LSB(x) * LSB(W).
- channels-last `Conv(x, W[M, k..., C/group], b?)`: output channel m sums, over its group's input
  channels c and the kernel positions p, the product intervals of `W[m, p, c]` with channel c's
  interval. A kernel position that some window places on padding contributes the hull of its
  product interval and 0. The bias (input 2) is added like MatMul's bias `Add`.
- `Add` / `Sub` add (subtract) intervals at the finer of the two LSBs; that covers a bias and a
  residual join alike. `Mul` by a constant `k` (per tensor or per channel) multiplies intervals, at
  LSB(x) + LSB(k): a float32 constant is the exact dyadic number it is. `Div` by a constant power
  of two is a Mul by its exact reciprocal.
- `Relu` clamps at zero; `LeakyRelu(alpha)` scales the negative side by the exact alpha; `Clip`
  clamps at its constant bounds.
- `MaxPool` / `GlobalMaxPool`, `Resize` (nearest), `Identity` keep the per-channel interval; `Pad`
  adds its constant (0 by default) to it; `Concat` along the channel axis concatenates the
  per-channel intervals (along another axis, takes their hull); `Reshape` / `Flatten` / `Squeeze` /
  `Unsqueeze` tile the per-channel bounds onto the new last axis when that axis is a multiple of the
  old one (or merge them when it divides it), else collapse them to one interval, as `Transpose` does.
- `AveragePool` / `GlobalAveragePool` sum each window exactly (the accumulator) and divide by its
  size. When every size is a power of two the quotient is exact (the LSB moves right). Otherwise
  hls4ml's `nnet_pooling.h` (`avg`: `accum_t y = 0; y += x[i]; y /= length`) divides the sum in its
  own type: the quotient keeps the sum's LSB and is truncated toward zero (ap_fixed's `/` is an
  integer `sdiv` of the codes). That is the rule here, and the value is recorded in `inexact`.
- channels-last `BatchNormalization` (unfused) is `Mul(a)` then `Add(b)` with the per-channel
  float32 constants of `batch_norm_coefficients` (bit for bit what onnxruntime computes).
- Plain ONNX `Conv`, pools and BatchNormalization are channels-first: refused, naming the node
  ("run channels-last first"), since intervals are kept along the last axis.

The type of a value is the narrowest one holding its interval at its LSB: never narrower than
needed (no value can overflow it), never wider.

Accumulators are separate from results: hardware adds the products (and the bias) one by one in
some order, so the accumulator must hold every partial sum, not only the final one. For any order,
partial sums of column j lie in `[min(b_j,0) + sum_i min(tmin_ij, 0), max(b_j,0) + sum_i max(tmax_ij, 0)]`
where `[tmin_ij, tmax_ij]` is the interval of product i. When every product interval contains zero
(the usual case: quantized inputs include 0) this equals the result interval.

Where float32 (QONNX semantics) and exact arithmetic can part: float32 holds an integer exactly up to
2**24, so a value whose integer code exceeds that may be rounded by the reference but not by the
hardware. A value the graph declares DOUBLE (HAWQ's requantization, computed in double by a lifted
graph) holds 2**53; `Cast` keeps the interval and checks the target type's limit. Codes are counted per feature on the feature's own grid (a per-channel scale of 2**-7
does not make a channel with scale 2**-4 look wide), which is what `_Bounds.grid` keeps. Such values
are in `float_inexact`; `inexact` maps them, and every other value where the two can differ (an
average by a window size that is not a power of two), to the reason.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir import default_precision
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, is_qonnx_domain, is_quant
from hawqc.ir.op_arithmetic import auto_pads, batch_norm_coefficients, cast_target, window_count
from hawqc.ir.qtypes import FixedType, power_of_two_exponent
from hawqc.ir.quant_annotation import read_annotation

# float32 holds every integer up to 2**24 exactly; QONNX semantics run in float32, so a value whose
# integer code (in units of its LSB) exceeds this may be rounded by the reference but not by hardware.
# A value declared DOUBLE holds integers up to 2**53.
FLOAT32_EXACT_INT = 1 << 24
FLOAT64_EXACT_INT = 1 << 53


def _exact_int_limit(value: ir.Value) -> tuple[int, str]:
    """The largest integer code the value's float type holds exactly, and the type's name (a value
    of unknown type is float32, what QONNX computes in)."""
    if value.dtype == ir.DataType.DOUBLE:
        return FLOAT64_EXACT_INT, "double"
    return FLOAT32_EXACT_INT, "float32"

STANDARD_DOMAINS = ("", "ai.onnx")
# Standard ops whose meaning depends on where the channel axis is: hawqc takes them channels-last.
LAYOUT_OPS = frozenset(
    {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization"}
)


# ---- exact per-feature intervals --------------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    """Values in [lo * 2**exp, hi * 2**exp]; lo/hi are int arrays of shape () or (features,).

    `grid` (same shape, or None for "exp everywhere") is, per feature, an exponent g >= exp such that
    every value of that feature is a multiple of 2**g: what float32 exactness is judged on.
    """

    lo: np.ndarray
    hi: np.ndarray
    exp: int
    grid: np.ndarray | None = None

    def __post_init__(self) -> None:
        # numpy hands back bare Python ints from 0-d object arithmetic: keep everything arrays.
        object.__setattr__(self, "lo", np.asarray(self.lo, dtype=object))
        object.__setattr__(self, "hi", np.asarray(self.hi, dtype=object))
        if self.grid is not None:
            object.__setattr__(self, "grid", np.asarray(self.grid, dtype=object))

    def at(self, exp: int) -> _Bounds:
        """The same interval on a finer grid (exp <= self.exp)."""
        factor = 1 << (self.exp - exp)
        return _Bounds(self.lo * factor, self.hi * factor, exp, self.grids())

    def grids(self) -> np.ndarray:
        """`grid` with the shape of `lo` (the exponent everywhere when there is none)."""
        grid = self.grid if self.grid is not None else np.asarray(self.exp, dtype=object)
        return np.array(np.broadcast_to(grid, np.broadcast_shapes(np.shape(grid), np.shape(self.lo))), dtype=object)

    def fractions(self) -> tuple[Fraction, Fraction]:
        step = Fraction(2) ** self.exp
        return Fraction(int(np.min(self.lo))) * step, Fraction(int(np.max(self.hi))) * step

    def fixed_type(self) -> FixedType:
        lo, hi = self.fractions()
        return FixedType.covering(lo, hi, self.exp)

    def max_abs_code(self) -> int:
        return max(abs(int(np.min(self.lo))), abs(int(np.max(self.hi))))

    def max_grid_code(self) -> int:
        """The largest |code| of any value, each feature counted on its own grid."""
        lo, hi, grid = np.broadcast_arrays(self.lo, self.hi, self.grids())
        largest = 0
        for low, high, g in zip(lo.reshape(-1), hi.reshape(-1), grid.reshape(-1)):
            step = 1 << max(int(g) - self.exp, 0)
            largest = max(largest, -(-max(abs(int(low)), abs(int(high))) // step))
        return largest

    @property
    def features(self) -> int | None:
        return None if np.ndim(self.lo) == 0 else int(np.shape(self.lo)[0])

    def widened(self, features: int) -> _Bounds:
        """Per-feature arrays of length `features` (scalar bounds repeated)."""
        if self.features == features:
            return self
        if self.features is not None:
            raise ValueError(f"{self.features} features do not broadcast to {features}")
        full = np.full(features, None, dtype=object)
        lo, hi, grid = full.copy(), full.copy(), full.copy()
        lo[:], hi[:], grid[:] = int(self.lo), int(self.hi), int(self.grids())
        return _Bounds(lo, hi, self.exp, grid)

    def collapsed(self) -> _Bounds:
        """One interval for all features (a layout change lost track of which feature is which)."""
        lo = np.asarray(int(np.min(self.lo)), dtype=object)
        hi = np.asarray(int(np.max(self.hi)), dtype=object)
        return _Bounds(lo, hi, self.exp, np.asarray(int(np.min(self.grids())), dtype=object))

    def with_zero(self) -> _Bounds:
        zero = np.zeros_like(self.lo)
        return _Bounds(np.minimum(self.lo, zero), np.maximum(self.hi, zero), self.exp, self.grid)


def _int_array(values: np.ndarray) -> np.ndarray:
    """Python-int object array: exact for any width (int64 could overflow on wide accumulators)."""
    return np.asarray(values).astype(object)


def _scalar(value: int) -> np.ndarray:
    return np.asarray(int(value), dtype=object)


def _feature_bounds(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (last axis) min and max of an integer tensor; scalar if there is no feature axis."""
    codes = _int_array(codes)
    if codes.ndim == 0 or codes.shape[-1] == 1:
        return np.asarray(codes.min(), dtype=object), np.asarray(codes.max(), dtype=object)
    flat = codes.reshape(-1, codes.shape[-1])
    return flat.min(axis=0), flat.max(axis=0)


def _trunc_div(codes: np.ndarray, divisor: int) -> np.ndarray:
    """Integer division rounding toward zero (C's `/`, ap_fixed's `sdiv`), elementwise, exact."""
    return np.vectorize(lambda c: int(Fraction(int(c), divisor)), otypes=[object])(codes)


# ---- QONNX Quant, evaluated exactly -----------------------------------------------------------


@dataclass(frozen=True)
class QuantParams:
    scale: np.ndarray
    zeropt: np.ndarray
    bitwidth: int
    signed: bool
    narrow: bool
    rounding_mode: str

    @property
    def min_int(self) -> int:
        if self.signed:
            return -(1 << (self.bitwidth - 1)) + (1 if self.narrow else 0)
        return 0

    @property
    def max_int(self) -> int:
        if self.signed:
            return (1 << (self.bitwidth - 1)) - 1
        return (1 << self.bitwidth) - (2 if self.narrow else 1)


def _attr(node: ir.Node, name: str, default: str | float | None = None) -> int | str | float:
    attr = node.attributes.get(name)
    if attr is None:
        if default is None:
            raise UnsupportedModelError(f"{describe(node)}: missing attribute {name!r}")
        return default
    return attr.value


def _ints_attr(node: ir.Node, name: str) -> list[int] | None:
    attr = node.attributes.get(name)
    return None if attr is None else [int(v) for v in attr.value]


def _constant(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def quant_params(node: ir.Node) -> QuantParams:
    """Read and check a Quant node's parameters (constant, power-of-two scale, zero point 0)."""
    if len(node.inputs) < 4:
        raise UnsupportedModelError(f"{describe(node)}: expects 4 inputs (x, scale, zeropt, bitwidth)")
    scale, zeropt, bitwidth = (_constant(v) for v in node.inputs[1:4])
    for label, array in (("scale", scale), ("zero point", zeropt), ("bit width", bitwidth)):
        if array is None:
            raise UnsupportedModelError(f"{describe(node)}: {label} is not a constant")
    assert scale is not None and zeropt is not None and bitwidth is not None
    if np.any(zeropt != 0):
        raise UnsupportedModelError(f"{describe(node)}: non-zero zero point is not supported")
    if bitwidth.size != 1 or float(bitwidth.reshape(())) != int(bitwidth.reshape(())):
        raise UnsupportedModelError(f"{describe(node)}: bit width must be one integer, got {bitwidth.reshape(-1).tolist()}")
    for s in np.unique(scale):
        if power_of_two_exponent(float(s)) is None:
            raise UnsupportedModelError(f"{describe(node)}: scale {float(s)!r} is not a power of two")
    return QuantParams(
        scale=scale,
        zeropt=zeropt,
        bitwidth=int(bitwidth.reshape(())),
        signed=bool(_attr(node, "signed", 1)),
        narrow=bool(_attr(node, "narrow", 0)),
        rounding_mode=str(_attr(node, "rounding_mode", "ROUND")).upper(),
    )


def _union_of_types(bits: int, scales: np.ndarray, signed: bool, narrow: bool, mode: str, where: str) -> FixedType:
    types = [FixedType.from_quant(bits, float(s), signed, narrow, mode, where=where) for s in np.unique(scales)]
    result = types[0]
    for other in types[1:]:
        result = result.union(other)
    return result


def quant_type(node: ir.Node, params: QuantParams) -> FixedType:
    """The FixedType that performs this Quant; per-channel scales give the union of their types."""
    return _union_of_types(
        params.bitwidth, params.scale, params.signed, params.narrow, params.rounding_mode, describe(node)
    )


def is_bipolar_quant(node: ir.Node) -> bool:
    """A BipolarQuant, or a Quant that qonnx computes as one (1 bit, signed: `x >= 0 ? +s : -s`)."""
    if not is_qonnx_domain(node.domain):
        return False
    if node.op_type == "BipolarQuant":
        return True
    if not is_quant(node.op_type, node.domain) or len(node.inputs) < 4:
        return False
    bitwidth = _constant(node.inputs[3])
    return bitwidth is not None and bitwidth.size == 1 and float(bitwidth.reshape(())) == 1 and bool(_attr(node, "signed", 1))


def bipolar_scale(node: ir.Node) -> np.ndarray:
    """The scale of a binary quantizer (`is_bipolar_quant`), checked: constant, positive, and for a
    1-bit Quant with zero point 0 (`x / s + z >= 0` is `x >= 0` only then)."""
    scale = _constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if scale is None:
        raise UnsupportedModelError(f"{describe(node)}: the scale is not a constant")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise UnsupportedModelError(f"{describe(node)}: binary quantizer scale {scale.reshape(-1).tolist()} is not positive")
    if node.op_type != "BipolarQuant":
        zeropt = _constant(node.inputs[2])
        if zeropt is None or np.any(zeropt != 0):
            raise UnsupportedModelError(f"{describe(node)}: 1-bit signed Quant with a non-zero zero point")
    return scale


def _round_fraction(x: Fraction, mode: str) -> int:
    floor = x.numerator // x.denominator
    frac = x - floor
    if mode in ("ROUND", "HALF_EVEN"):
        if frac != Fraction(1, 2):
            return floor + (1 if frac > Fraction(1, 2) else 0)
        return floor if floor % 2 == 0 else floor + 1
    if mode == "FLOOR":
        return floor
    if mode == "DOWN":
        return floor if x >= 0 or frac == 0 else floor + 1
    if mode in ("HALF_UP", "HALF_DOWN"):
        magnitude = abs(x)
        m_floor = magnitude.numerator // magnitude.denominator
        m_frac = magnitude - m_floor
        tie_up = mode == "HALF_UP"
        up = m_frac > Fraction(1, 2) or (m_frac == Fraction(1, 2) and tie_up)
        r = m_floor + (1 if up else 0)
        return r if x >= 0 else -r
    raise UnsupportedModelError(f"rounding mode {mode} is not supported")


def _quantize_code(x: Fraction, params: QuantParams, scale_exp: int) -> int:
    """QONNX Quant of one exact value, as an integer code at LSB 2**scale_exp (clamp, then round)."""
    q = x / Fraction(2) ** scale_exp
    q = min(max(q, Fraction(params.min_int)), Fraction(params.max_int))
    return _round_fraction(q, params.rounding_mode)


# qonnx 1.0.0's rounding functions (`resolve_rounding_mode`), repeated so that `ir` does not import `sim`.
_NUMPY_ROUNDING = {
    "ROUND": np.round,
    "HALF_EVEN": np.round,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": lambda x: np.sign(x) * np.ceil(np.abs(x)),
    "DOWN": np.fix,
    "HALF_UP": lambda x: np.sign(x) * np.floor(np.abs(x) + 0.5),
    "HALF_DOWN": lambda x: np.sign(x) * np.ceil(np.abs(x) - 0.5),
}


def quantize_constant(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """QONNX Quant of a constant tensor with qonnx's float32 numpy operations (exact for
    power-of-two scales and bit widths up to 24)."""
    rounding = _NUMPY_ROUNDING.get(params.rounding_mode)
    if rounding is None:
        raise UnsupportedModelError(f"unknown rounding mode {params.rounding_mode}")
    dtype = np.result_type(x.dtype, params.scale.dtype)
    y = x.astype(dtype) / params.scale.astype(dtype) + params.zeropt.astype(dtype)
    y = np.clip(y, params.min_int, params.max_int).astype(dtype)
    return ((rounding(y) - params.zeropt.astype(dtype)) * params.scale.astype(dtype)).astype(dtype)


def _exact_codes(values: np.ndarray, exp: int) -> np.ndarray:
    """values / 2**exp as exact integers (values are float32/float64 on that grid)."""
    scaled = np.ldexp(values.astype(np.float64), -exp)
    if not np.all(scaled == np.round(scaled)):
        raise ValueError(f"constant is not on the grid of 2**{exp}")
    if np.max(np.abs(scaled), initial=0) < 2**62:
        return _int_array(scaled.astype(np.int64))
    return np.vectorize(lambda v: int(v), otypes=[object])(scaled)


def _element_exponents(values: np.ndarray) -> np.ndarray:
    """Per element, the exponent of the coarsest power of two the value is a multiple of (zeros:
    a large sentinel, so that they never make a grid finer)."""
    values = np.asarray(values, dtype=np.float64)
    mantissa, exponent = np.frexp(values)
    # |mantissa| * 2**53 is an integer; its lowest set bit says how coarse each value's grid is.
    ints = np.abs(mantissa * 2.0**53).astype(np.int64)
    lowest = np.where(ints == 0, 1, ints & -ints)
    exps = exponent.astype(np.int64) - 53 + np.log2(lowest.astype(np.float64)).astype(np.int64)
    return np.where(values == 0, np.iinfo(np.int32).max, exps)


def _finest_exponent(values: np.ndarray) -> int:
    """The LSB exponent of the finest grid a float tensor lies on (0 for an all-zero tensor)."""
    values = np.asarray(values)
    if not np.any(values):
        return 0
    return int(np.min(_element_exponents(values)))


def _feature_grids(values: np.ndarray, exp: int) -> np.ndarray:
    """Per feature (last axis), the coarsest exponent all its values are multiples of (>= exp)."""
    exps = _element_exponents(values)
    if exps.ndim == 0 or exps.shape[-1] == 1:
        finest = int(exps.min()) if exps.size else exp
    else:
        finest = exps.reshape(-1, exps.shape[-1]).min(axis=0)
    clipped = np.maximum(np.asarray(finest, dtype=np.int64), exp)
    clipped = np.minimum(clipped, exp + 64)  # all-zero features: any grid will do
    return _int_array(clipped)


def _dyadic_bounds(data: np.ndarray) -> _Bounds:
    """Exact per-feature bounds of a constant factor (Mul's k, BatchNorm's a, a reciprocal)."""
    data = np.asarray(data)
    exp = _finest_exponent(data)
    lo, hi = _feature_bounds(_exact_codes(data, exp))
    return _Bounds(lo, hi, exp, _feature_grids(data, exp))


def _scaled(x: _Bounds, k: _Bounds) -> _Bounds:
    """x times a constant factor with per-feature bounds k: the interval product at LSB(x) + LSB(k)
    (exact when k is one number per feature, as a per-tensor or per-channel scale is)."""
    products = [x.lo * k.lo, x.lo * k.hi, x.hi * k.lo, x.hi * k.hi]
    lo = np.minimum(np.minimum(products[0], products[1]), np.minimum(products[2], products[3]))
    hi = np.maximum(np.maximum(products[0], products[1]), np.maximum(products[2], products[3]))
    return _Bounds(_int_array(lo), _int_array(hi), x.exp + k.exp, x.grids() + k.grids())


# ---- window geometry (onnxruntime's, as `hawqc.sim.ops_conv` computes it) ---------------------


@dataclass(frozen=True)
class _Windows:
    """The sliding-window attributes of a Conv or pool, absent ones at their ONNX defaults."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    # None: padding that depends on a shape we do not know (auto_pad SAME_* without a shape).
    pads: tuple[int, ...] | None
    ceil_mode: bool

    @classmethod
    def of(cls, node: ir.Node, kernel: Sequence[int], spatial: Sequence[int] | None) -> _Windows:
        rank = len(kernel)
        strides = tuple(_ints_attr(node, "strides") or [1] * rank)
        dilations = tuple(_ints_attr(node, "dilations") or [1] * rank)
        auto_pad = str(_attr(node, "auto_pad", "NOTSET"))
        pads: tuple[int, ...] | None
        if auto_pad in ("NOTSET", ""):
            pads = tuple(_ints_attr(node, "pads") or [0] * (2 * rank))
        elif auto_pad == "VALID":
            pads = (0,) * (2 * rank)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = None if spatial is None else tuple(auto_pads(auto_pad, spatial, kernel, strides, dilations))
        else:
            raise UnsupportedModelError(f"{describe(node)}: unknown auto_pad {auto_pad!r}")
        if len(strides) != rank or len(dilations) != rank or (pads is not None and len(pads) != 2 * rank):
            raise UnsupportedModelError(f"{describe(node)}: strides/dilations/pads do not match a {rank}-D kernel")
        return cls(tuple(kernel), strides, dilations, pads, bool(_attr(node, "ceil_mode", 0)))

    def padded(self) -> bool:
        return self.pads is None or any(p > 0 for p in self.pads) or self.ceil_mode

    def positions_on_padding(self, spatial: Sequence[int] | None) -> np.ndarray:
        """Bool array of shape `kernel`: True where some window reads padding at that position."""
        rank = len(self.kernel)
        if not self.padded():
            return np.zeros(self.kernel, dtype=bool)
        if spatial is None or self.pads is None:
            return np.ones(self.kernel, dtype=bool)
        on_padding = np.zeros(self.kernel, dtype=bool)
        for axis in range(rank):
            size, k, s, d = spatial[axis], self.kernel[axis], self.strides[axis], self.dilations[axis]
            begin, end = self.pads[axis], self.pads[axis + rank]
            count = window_count(size, k, s, d, begin, end, self.ceil_mode)
            starts = np.arange(count) * s - begin
            for position in range(k):
                taps = starts + position * d
                if np.any((taps < 0) | (taps >= size)):
                    index = [slice(None)] * rank
                    index[axis] = position
                    on_padding[tuple(index)] = True
        return on_padding

    def averaging_sizes(self, spatial: Sequence[int], count_include_pad: bool) -> set[tuple[int, int]]:
        """Every (input positions, divisor) pair some window of AveragePool has (onnxruntime's rule:
        padding counts with count_include_pad, positions past the end pad never do)."""
        assert self.pads is not None
        rank = len(self.kernel)
        per_axis = []
        for axis in range(rank):
            size, k, s, d = spatial[axis], self.kernel[axis], self.strides[axis], self.dilations[axis]
            begin, end = self.pads[axis], self.pads[axis + rank]
            count = window_count(size, k, s, d, begin, end, self.ceil_mode)
            starts = np.arange(count) * s - begin
            taps = starts[:, None] + np.arange(k)[None, :] * d
            real = ((taps >= 0) & (taps < size)).sum(axis=1)
            low, high = (-begin, size + end) if count_include_pad else (0, size)
            divisor = ((taps >= low) & (taps < high)).sum(axis=1)
            per_axis.append({(int(r), int(c)) for r, c in zip(real, divisor)})
        return {
            (math.prod(r for r, _ in combo), math.prod(c for _, c in combo)) for combo in itertools.product(*per_axis)
        }


# ---- the analysis -----------------------------------------------------------------------------


@dataclass
class PrecisionResult:
    """Types and intervals of every value (by name), and what the backend lowering needs besides.

    - `types[name]`: the exact type of the value (a Quant's own type, or the narrowest type holding
      the value's interval);
    - `intervals[name]`: the exact [lo, hi] over all elements;
    - `accumulators[name]`: for the output of a MatMul or Conv, or of an Add of a constant to one
      (a bias), the type that holds every partial sum of its dot products; for an AveragePool, the
      type the window sums are accumulated and divided in;
    - `constants[name]`: the value of each quantized (or plain) constant operand, exact, float64;
    - `float_inexact`: values whose integer code exceeds what their float type holds exactly (2**24
      for float32, 2**53 for double), where QONNX semantics may round while the fixed-point
      hardware does not (the two then differ; a verifier reports it);
    - `inexact[name]`: every value where the float semantics may differ from the exact hardware
      arithmetic (those of `float_inexact` and others, e.g. an average whose divisor is not a power
      of two), with the reason. Values computed from such a value are not listed again.
    """

    types: dict[str, FixedType] = field(default_factory=dict)
    intervals: dict[str, tuple[Fraction, Fraction]] = field(default_factory=dict)
    accumulators: dict[str, FixedType] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    float_inexact: set[str] = field(default_factory=set)
    inexact: dict[str, str] = field(default_factory=dict)
    # Where the model's default precision was applied (hawqc.ir.default_precision); None if nowhere.
    float_parts: default_precision.FloatParts | None = None

    def __getitem__(self, name: str) -> FixedType:
        return self.types[name]

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __iter__(self) -> Iterator[str]:
        return iter(self.types)

    def __len__(self) -> int:
        return len(self.types)


Rule = Callable[[ir.Node], None]


class _Analysis:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.result = PrecisionResult()
        self.bounds: dict[str, _Bounds] = {}
        # Per-column partial-sum hull of dot products, kept so that a following bias Add extends it.
        self.partial: dict[str, _Bounds] = {}
        self._shapes_inferred = False
        # The type of float parts (hawqc.ir.default_precision), and the values computed from them.
        default = default_precision.read(model)
        self.float_parts = None if default is None else default_precision.FloatParts(default)
        self.floating: set[str] = set()

    # ---- bookkeeping --------------------------------------------------------------------------
    def record(self, value: ir.Value, bounds: _Bounds, fixed: FixedType | None = None) -> None:
        name = value.name
        self.bounds[name] = bounds
        self.result.types[name] = fixed if fixed is not None else bounds.fixed_type()
        self.result.intervals[name] = bounds.fractions()

    def record_constant(self, value: ir.Value, data: np.ndarray, fixed: FixedType) -> None:
        codes = _exact_codes(data, fixed.lsb_exponent)
        lo, hi = _feature_bounds(codes)
        self.result.constants[value.name] = data.astype(np.float64)
        grid = _feature_grids(data, fixed.lsb_exponent)
        self.record(value, _Bounds(lo, hi, fixed.lsb_exponent, grid), fixed)

    def may_round(self, value: ir.Value, bounds: _Bounds, what: str) -> None:
        """Record `value` as float-inexact if some code of it (on its feature's grid) needs more bits
        than its float type holds (24 for float32, 53 for double)."""
        code = bounds.max_grid_code()
        limit, float_type = _exact_int_limit(value)
        if code > limit:
            self.result.float_inexact.add(value.name)
            self.result.inexact.setdefault(
                value.name,
                f"{what} needs {code.bit_length()} significant bits; {float_type} rounds beyond {limit.bit_length() - 1}",
            )

    def note_accumulator(self, value: ir.Value, hull: _Bounds) -> None:
        self.result.accumulators[value.name] = hull.fixed_type()
        self.may_round(value, hull, "a partial sum")

    # ---- operands ------------------------------------------------------------------------------
    def operand(self, node: ir.Node, value: ir.Value | None, limit: int | None = 32) -> _Bounds:
        """The bounds of an input. A constant is recorded on first use; `limit` caps the width an
        unquantized constant may need (weights and biases: 32 bits; a float32 scale factor that is
        used as the exact number it is: no cap)."""
        if value is None:
            raise UnsupportedModelError(f"{describe(node)}: missing input")
        if value.name in self.bounds:
            return self.bounds[value.name]
        data = _constant(value)
        if data is not None:
            return self.constant_operand(node, value, data, limit)
        if value.is_graph_input():
            if self.float_parts is not None:
                return self.float_input(value)
            raise UnsupportedModelError(
                f"{describe(node)}: graph input {value.name!r} is used without a Quant (its range is unbounded)"
            )
        raise UnsupportedModelError(f"{describe(node)}: input {value.name!r} has no precision (unsupported producer)")

    def is_constant(self, value: ir.Value | None) -> bool:
        return value is not None and (value.name in self.result.constants or _constant(value) is not None)

    def constant_data(self, node: ir.Node, value: ir.Value, limit: int | None = 32) -> np.ndarray:
        self.operand(node, value, limit)
        return self.result.constants[value.name]

    def constant_operand(self, node: ir.Node, value: ir.Value, data: np.ndarray, limit: int | None) -> _Bounds:
        if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
            raise UnsupportedModelError(f"{describe(node)}: constant {value.name!r} is not a finite number tensor")
        fixed = self.annotated_type(node, value, data)
        if fixed is None and self.float_parts is not None and limit is not None:
            # A weight or bias of a float layer, or one no exact type of `limit` bits holds.
            reads_float = any(v is not None and v.name in self.floating for v in node.inputs)
            if reads_float or self.plain_type(node, value, data, None).width > limit:
                return self.float_constant(value, data)
        if fixed is None:
            fixed = self.plain_type(node, value, data, limit)
        self.record_constant(value, data, fixed)
        return self.bounds[value.name]

    def annotated_type(self, node: ir.Node, value: ir.Value, data: np.ndarray) -> FixedType | None:
        """The type of the quantizer `fold-quant` folded into this constant, if it says so and its
        scales are powers of two (else the values are only known as exact floats)."""
        try:
            annotation = read_annotation(value)
        except UserInputError as err:
            raise UnsupportedModelError(f"{describe(node)}: {err}") from None
        if annotation is None:
            return None
        scales = annotation.scale_array()
        if np.any(annotation.zeropt_array() != 0) or any(power_of_two_exponent(float(s)) is None for s in np.unique(scales)):
            return None
        try:
            fixed = _union_of_types(
                annotation.bits, scales, annotation.signed, annotation.narrow, annotation.rounding_mode,
                f"{describe(node)}: constant {value.name!r}",
            )  # fmt: skip
        except UnsupportedModelError:
            # A quantizer with no fixed-point type (bipolar, CEIL...): the constant's values are
            # still known exactly, and a constant is never rounded by its type.
            return None
        codes = np.ldexp(data.astype(np.float64), -fixed.lsb_exponent)
        step = Fraction(2) ** fixed.lsb_exponent
        if not np.all(codes == np.round(codes)) or not fixed.holds(
            Fraction(float(data.min())), Fraction(float(data.max()))
        ):
            raise UnsupportedModelError(
                f"{describe(node)}: constant {value.name!r} holds values outside its annotation's type {fixed}"
                f" (LSB {step})"
            )
        return fixed

    def plain_type(self, node: ir.Node, value: ir.Value, data: np.ndarray, limit: int | None) -> FixedType:
        """An unquantized constant: exact if every element is a short dyadic number."""
        exp = _finest_exponent(data)
        codes = _exact_codes(data, exp)
        step = Fraction(2) ** exp
        fixed = FixedType.covering(Fraction(int(codes.min())) * step, Fraction(int(codes.max())) * step, exp)
        if limit is not None and fixed.width > limit:
            raise UnsupportedModelError(
                f"{describe(node)}: constant {value.name!r} is not quantized and needs {fixed.width} bits to be exact"
            )
        return fixed

    # ---- shapes --------------------------------------------------------------------------------
    def shape(self, value: ir.Value | None) -> tuple[int | None, ...] | None:
        """The value's dims (None where symbolic); shapes are inferred once if some are missing."""
        if value is None:
            return None
        if value.shape is None and not self._shapes_inferred:
            self._shapes_inferred = True
            from hawqc.ir.shape_inference import infer_shapes

            try:
                infer_shapes(self.model)
            except UserInputError:
                pass  # the rules that needed the shape take their safe fallback
        if value.shape is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in value.shape.dims)

    def spatial(self, value: ir.Value | None) -> tuple[int, ...] | None:
        """The spatial dims of a channels-last [N, spatial..., C] value, if all known."""
        dims = self.shape(value)
        if dims is None or len(dims) < 3 or any(d is None for d in dims[1:-1]):
            return None
        return tuple(int(d) for d in dims[1:-1])  # type: ignore[arg-type]

    # ---- driver --------------------------------------------------------------------------------
    def run(self) -> PrecisionResult:
        if self.float_parts is not None:
            for value in self.graph.inputs:
                readers = list(value.consumers())
                if value.const_value is None and any(not is_quant(r.op_type, r.domain) for r in readers):
                    self.float_input(value)
        for node in self.graph:
            self.rule(node)(node)
            if self.float_parts is not None:
                self.float_outputs(node)
        if self.float_parts is not None and self.float_parts.applied:
            self.result.float_parts = self.float_parts
        return self.result

    # ---- float parts (hawqc.ir.default_precision) ------------------------------------------------
    def float_input(self, value: ir.Value) -> _Bounds:
        """An unquantized graph input: cast into the default precision, its whole range."""
        assert self.float_parts is not None
        fixed = self.float_parts.fixed
        self.record(value, _Bounds(_scalar(fixed.min_int), _scalar(fixed.max_int), fixed.lsb_exponent), fixed)
        self.floating.add(value.name)
        self.float_parts.inputs.append(value.name)
        self.result.inexact[value.name] = f"unquantized input cast into the default precision {fixed}"
        return self.bounds[value.name]

    def float_constant(self, value: ir.Value, data: np.ndarray) -> _Bounds:
        """A float weight or bias with no exact type of at most 32 bits: rounded into the default precision."""
        assert self.float_parts is not None
        fixed = self.float_parts.fixed
        rounded, facts = default_precision.round_constant(value.name, data, fixed)
        self.record_constant(value, rounded, fixed)
        self.floating.add(value.name)
        self.float_parts.constants[value.name] = facts
        self.result.inexact[value.name] = f"float constant rounded into the default precision {fixed}"
        return self.bounds[value.name]

    def float_outputs(self, node: ir.Node) -> None:
        """Values computed from float parts are float too; arithmetic ones are cast into the
        default precision, except a dot product that continues into its bias (the accumulator is
        exact; the sum with the bias is cast) and a value whose own Quant casts it."""
        assert self.float_parts is not None
        if is_quant(node.op_type, node.domain):
            return
        if not any(v is not None and v.name in self.floating for v in node.inputs):
            return
        for out in node.outputs:
            if out is None or out.name not in self.bounds:
                continue
            self.floating.add(out.name)
            if node.op_type in default_precision.ARITHMETIC_OPS and not self.cast_later(node, out):
                self.cast_float(out)

    def cast_later(self, node: ir.Node, out: ir.Value) -> bool:
        readers = list(out.consumers())
        if len(readers) != 1 or out.is_graph_output():
            return False
        reader = readers[0]
        if is_quant(reader.op_type, reader.domain):
            return True
        dot_product = node.op_type == "MatMul" or (node.op_type == "Conv" and len(node.inputs) < 3)
        if not dot_product or reader.op_type != "Add" or reader.domain not in STANDARD_DOMAINS:
            return False
        other = reader.inputs[1] if reader.inputs[0] is out else reader.inputs[0]
        return self.is_constant(other)

    def cast_float(self, value: ir.Value) -> None:
        assert self.float_parts is not None
        fixed = self.float_parts.fixed
        exact = self.bounds[value.name]

        def cast_bounds(lo: object, hi: object) -> tuple[int, int]:
            return default_precision.cast_code_bounds(int(lo), int(hi), exact.exp, fixed)

        pairs = np.vectorize(cast_bounds, otypes=[object, object])(exact.lo, exact.hi)
        self.record(value, _Bounds(_int_array(pairs[0]), _int_array(pairs[1]), fixed.lsb_exponent), fixed)
        self.float_parts.casts.append(value.name)
        self.result.inexact[value.name] = f"float activation cast into the default precision {fixed}"

    def rule(self, node: ir.Node) -> Rule:
        if is_quant(node.op_type, node.domain):
            return self.quant
        if is_qonnx_domain(node.domain) and node.op_type in ("BipolarQuant", "MultiThreshold"):
            return self.bipolar_quant if node.op_type == "BipolarQuant" else self.multithreshold
        if node.domain == CHANNELS_LAST_DOMAIN:
            rule = {
                "Conv": self.conv,
                "MaxPool": self.max_pool,
                "GlobalMaxPool": self.max_pool,
                "AveragePool": self.average_pool,
                "GlobalAveragePool": self.average_pool,
                "BatchNormalization": self.batch_norm,
            }.get(node.op_type)
            if rule is not None:
                return rule
        if node.domain in STANDARD_DOMAINS:
            if node.op_type in LAYOUT_OPS:
                raise UnsupportedModelError(
                    f"{describe(node)}: channels-first {node.op_type} has no precision rule; run channels-last first"
                )
            rule = {
                "MatMul": self.matmul,
                "Add": self.add,
                "Sub": self.sub,
                "Mul": self.mul,
                "Div": self.div,
                "Relu": self.relu,
                "LeakyRelu": self.leaky_relu,
                "Clip": self.clip,
                "Concat": self.concat,
                "Resize": self.resize,
                "Pad": self.pad,
                "Identity": self.identity,
                "Cast": self.cast,
                "Reshape": self.reshape,
                "Flatten": self.reshape,
                "Squeeze": self.reshape,
                "Unsqueeze": self.reshape,
                "Transpose": self.transpose,
            }.get(node.op_type)
            if rule is not None:
                return rule
        raise UnsupportedModelError(f"{describe(node)}: no precision rule for this op")

    # ---- quantizers ---------------------------------------------------------------------------
    def quant(self, node: ir.Node) -> None:
        if is_bipolar_quant(node):
            self.bipolar_quant(node)
            return
        params = quant_params(node)
        fixed = quant_type(node, params)
        out = node.outputs[0]
        x = node.inputs[0]
        data = _constant(x) if x is not None and x.name not in self.bounds else None
        if data is not None:
            # Both modes use the constant as semantic mode computes it (the executor folds it).
            self.record_constant(out, quantize_constant(data, params), fixed)
            return
        if params.bitwidth > 24:
            # qonnx computes the clamp bounds 2**(b-1) in float32; above 24 bits they are rounded.
            self.result.float_inexact.add(out.name)
            self.result.inexact[out.name] = f"{params.bitwidth}-bit Quant: qonnx's float32 clamp bounds are rounded"
        if params.scale.size != 1:
            raise UnsupportedModelError(f"{describe(node)}: per-channel scales on activations are not supported")
        scale_exp = fixed.lsb_exponent
        if x is not None and x.is_graph_input() and x.name not in self.bounds:
            # An unbounded float input: the Quant's own range.
            self.record(out, _Bounds(_scalar(params.min_int), _scalar(params.max_int), scale_exp), fixed)
            return
        src = self.operand(node, x)
        step = Fraction(2) ** src.exp
        lo = np.vectorize(lambda c: _quantize_code(Fraction(int(c)) * step, params, scale_exp), otypes=[object])(src.lo)
        hi = np.vectorize(lambda c: _quantize_code(Fraction(int(c)) * step, params, scale_exp), otypes=[object])(src.hi)
        self.record(out, _Bounds(np.asarray(lo, dtype=object), np.asarray(hi, dtype=object), scale_exp), fixed)

    def bipolar_quant(self, node: ir.Node) -> None:
        """BipolarQuant(x, s), or qonnx's 1-bit signed Quant: `+s` where x >= 0 (also -0.0), else `-s`.

        The value is one of two numbers, so the rule is exact with any input interval: [-s, s] when
        the input can be on both sides of 0, one of them otherwise. The scale is one positive float32
        number `s = m * 2^e` (m odd): the codes are +-m at LSB 2^e, so a power of two gives codes
        +-1, any other scale a wider type. Fixed point then computes the next layer's products of
        `+-s` exactly; float32 may round them where their codes outgrow 24 bits, and `may_round`
        declares those values inexact, as for any other dyadic constant (the rule does not refuse
        them). A constant (a binary weight) is evaluated as semantic mode does.
        """
        scale = bipolar_scale(node)
        out, x = node.outputs[0], node.inputs[0]
        value = float(np.unique(scale)[0]) if np.unique(scale).size == 1 else None
        if value is None or not value > 0 or not math.isfinite(value):
            raise UnsupportedModelError(
                f"{describe(node)}: binary quantizer with scale {scale.reshape(-1).tolist()} (not one positive number)"
            )
        exp = int(_finest_exponent(np.array([value])))
        code = int(Fraction(value) / Fraction(2) ** exp)  # s = code * 2^exp, code odd
        fixed = FixedType.covering(-Fraction(value), Fraction(value), exp)
        data = _constant(x) if x is not None and x.name not in self.bounds else None
        if data is not None:
            values = np.where(data.astype(np.float64) >= 0, 1.0, -1.0) * float(scale.reshape(-1)[0])
            self.record_constant(out, values, fixed)
            return
        if x is not None and x.is_graph_input() and x.name not in self.bounds:
            lo, hi = -code, code
        else:
            src = self.operand(node, x)
            # Codes per feature: -code if some value is negative, +code if some value is >= 0.
            lo = np.where(src.lo < 0, -code, code).astype(object)
            hi = np.where(src.hi >= 0, code, -code).astype(object)
        self.record(out, _Bounds(np.asarray(lo, dtype=object), np.asarray(hi, dtype=object), exp), fixed)

    def multithreshold(self, node: ir.Node) -> None:
        """MultiThreshold(v, T): `out_scale * count + out_bias`, count the thresholds of the element's
        channel that v is >= (see `hawqc.sim.ops_threshold`). Intervals are kept along the last axis,
        so the thresholds' channel must be the last axis (`data_layout` ending in C, or a rank-2
        "NC" input; run channels-last first). Per channel, the count lies between the number of
        thresholds <= lo and the number <= hi (comparisons of exact numbers: both modes agree).
        The output is two float32 operations on the count, exact while the codes fit float32."""
        x = node.inputs[0]
        v = self.operand(node, x)
        thresholds = _constant(node.inputs[1]) if len(node.inputs) > 1 else None
        if thresholds is None or thresholds.ndim != 2:
            raise UnsupportedModelError(f"{describe(node)}: thresholds must be a constant [C, T] tensor")
        dims = self.shape(x)
        rank = len(dims) if dims is not None else None
        if rank is None:
            raise UnsupportedModelError(f"{describe(node)}: the rank of the input is unknown")
        layout = str(_attr(node, "data_layout", ""))
        from_rank = {2: "NC", 3: "NWC", 4: "NCHW"}.get(rank, "")
        axis = (layout or from_rank).find("C") if "C" in (layout or from_rank) else 1
        if axis != rank - 1:
            raise UnsupportedModelError(
                f"{describe(node)}: thresholds along axis {axis} of a rank-{rank} input (data_layout "
                f"{layout or from_rank!r}); precision needs the channels last (run channels-last first)"
            )
        channels = dims[-1]
        if thresholds.shape[0] not in (1, channels):
            raise UnsupportedModelError(f"{describe(node)}: thresholds {list(thresholds.shape)} for {channels} channels")
        out_scale = np.float32(_attr(node, "out_scale", 1.0))
        out_bias = np.float32(_attr(node, "out_bias", 0.0))
        features = channels if thresholds.shape[0] == channels else v.features
        if features is not None:
            v = v.widened(features)
        rows = np.broadcast_to(thresholds.astype(np.float64), (features or 1, thresholds.shape[1]))
        step = Fraction(2) ** v.exp

        def passed(code: object, row: np.ndarray) -> int:
            """How many thresholds of `row` the exact value `code * step` is >= (NaN: none)."""
            value = Fraction(int(code)) * step
            return sum(1 for t in row if t == -np.inf or (np.isfinite(t) and Fraction(float(t)) <= value))

        def counts(codes: np.ndarray) -> np.ndarray:
            flat = np.reshape(codes, -1)
            return np.asarray([passed(c, row) for c, row in zip(np.broadcast_to(flat, (rows.shape[0],)), rows)], dtype=object).reshape(np.shape(codes))

        c_lo, c_hi = counts(v.lo), counts(v.hi)
        s_exp, b_exp = _finest_exponent(np.asarray(out_scale)), _finest_exponent(np.asarray(out_bias))
        exp = min(s_exp, b_exp) if out_bias != 0 else s_exp
        s_code = int(_exact_codes(np.asarray(out_scale), exp))
        b_code = int(_exact_codes(np.asarray(out_bias), exp))
        ends = (c_lo * s_code + b_code, c_hi * s_code + b_code)
        bounds = _Bounds(_int_array(np.minimum(*ends)), _int_array(np.maximum(*ends)), exp)
        out = node.outputs[0]
        self.record(out, bounds)
        self.may_round(out, _Bounds(c_hi * abs(s_code), c_hi * abs(s_code), exp), "out_scale * count")
        self.may_round(out, bounds, "out_scale * count + out_bias")

    # ---- dot products ---------------------------------------------------------------------------
    def weights(self, node: ir.Node, value: ir.Value | None, what: str) -> tuple[np.ndarray, _Bounds]:
        """The exact integer codes of a constant weight operand, and its bounds."""
        if not self.is_constant(value):
            raise UnsupportedModelError(f"{describe(node)}: the {what} must be a constant (weights)")
        assert value is not None
        bounds = self.operand(node, value)
        return _exact_codes(self.result.constants[value.name], bounds.exp), bounds

    def matmul(self, node: ir.Node) -> None:
        w_codes, w = self.weights(node, node.inputs[1], "right operand")
        a = self.operand(node, node.inputs[0])
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
        column_grids = _feature_grids(self.result.constants[node.inputs[1].name], w.exp)
        grid = int(np.min(a.grids())) + column_grids
        self.dot_product(node, t_min, t_max, a.exp + w.exp, grid)

    def dot_product(self, node: ir.Node, t_min: np.ndarray, t_max: np.ndarray, exp: int, grid: np.ndarray) -> None:
        """Record a sum of products whose intervals are `t_min/t_max` [terms, outputs] at `exp`."""
        out = node.outputs[0]
        zero = np.zeros_like(t_min)
        self.record(out, _Bounds(t_min.sum(axis=0), t_max.sum(axis=0), exp, grid))
        partial = _Bounds(np.minimum(t_min, zero).sum(axis=0), np.maximum(t_max, zero).sum(axis=0), exp, grid)
        self.partial[out.name] = partial
        self.note_accumulator(out, partial)

    def conv(self, node: ir.Node) -> None:
        w_value = node.inputs[1] if len(node.inputs) > 1 else None
        w_codes, w = self.weights(node, w_value, "weight (input 1)")
        x = self.operand(node, node.inputs[0])
        if w_codes.ndim < 3:
            raise UnsupportedModelError(f"{describe(node)}: weight of shape {list(w_codes.shape)} is no convolution kernel")
        out_channels, kernel, per_group = w_codes.shape[0], tuple(w_codes.shape[1:-1]), w_codes.shape[-1]
        group = int(_attr(node, "group", 1))
        if group < 1:
            raise UnsupportedModelError(f"{describe(node)}: group {group} must be at least 1")
        declared = _ints_attr(node, "kernel_shape")
        if declared is not None and tuple(declared) != kernel:
            raise UnsupportedModelError(f"{describe(node)}: kernel_shape {declared} does not match the weight {list(w_codes.shape)}")
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
        windows = _Windows.of(node, kernel, self.spatial(node.inputs[0]))
        on_padding = windows.positions_on_padding(self.spatial(node.inputs[0]))
        # A position some window reads on padding adds 0 there: its term's hull includes 0.
        mask = np.broadcast_to(on_padding[None, ..., None], t_min.shape)
        zero = np.zeros_like(t_min)
        t_min = np.where(mask, np.minimum(t_min, zero), t_min)
        t_max = np.where(mask, np.maximum(t_max, zero), t_max)
        # [terms, M] for dot_product.
        t_min = t_min.reshape(out_channels, -1).T
        t_max = t_max.reshape(out_channels, -1).T
        weights = self.result.constants[w_value.name]
        channel_grids = _feature_grids(weights.reshape(out_channels, -1).T, w.exp)
        grid = int(np.min(x.grids())) + channel_grids
        bias_value = node.inputs[2] if len(node.inputs) > 2 else None
        if bias_value is None:
            self.dot_product(node, t_min, t_max, x.exp + w.exp, grid)
            return
        # The bias starts the accumulator (hls4ml's conv kernels initialise it with the bias).
        if not self.is_constant(bias_value):
            raise UnsupportedModelError(f"{describe(node)}: the bias (input 2) must be a constant")
        bias = self.operand(node, bias_value)
        exp = min(x.exp + w.exp, bias.exp)
        products = _Bounds(t_min.sum(axis=0), t_max.sum(axis=0), x.exp + w.exp, grid).at(exp)
        zero = np.zeros(out_channels, dtype=object)
        partial = _Bounds(
            np.minimum(t_min, 0).sum(axis=0), np.maximum(t_max, 0).sum(axis=0), x.exp + w.exp, grid
        ).at(exp)
        bias = bias.widened(out_channels).at(exp)
        grid = np.minimum(products.grids(), bias.grids())
        self.record(node.outputs[0], _Bounds(products.lo + bias.lo, products.hi + bias.hi, exp, grid))
        hull = _Bounds(partial.lo + np.minimum(bias.lo, zero), partial.hi + np.maximum(bias.hi, zero), exp, grid)
        self.note_accumulator(node.outputs[0], hull)

    # ---- element-wise --------------------------------------------------------------------------
    def add(self, node: ir.Node) -> None:
        self.add_or_sub(node, subtract=False)

    def sub(self, node: ir.Node) -> None:
        self.add_or_sub(node, subtract=True)

    def add_or_sub(self, node: ir.Node, subtract: bool) -> None:
        a_value, b_value = node.inputs[0], node.inputs[1]
        a = self.operand(node, a_value)
        b = self.operand(node, b_value)
        if subtract:
            b = _Bounds(-b.hi, -b.lo, b.exp, b.grid)
        exp = min(a.exp, b.exp)
        a, b = a.at(exp), b.at(exp)
        out = node.outputs[0]
        sum_bounds = _Bounds(a.lo + b.lo, a.hi + b.hi, exp, np.minimum(a.grids(), b.grids()))
        self.record(out, sum_bounds)
        # A constant added to a dot product is its bias: the accumulator starts from it.
        for acc_value, bias_value, bias in ((a_value, b_value, b), (b_value, a_value, a)):
            if acc_value is None or bias_value is None or acc_value.name not in self.partial:
                continue
            if bias_value.name not in self.result.constants:
                continue
            partial = self.partial[acc_value.name].at(exp)
            zero = np.zeros_like(bias.lo)
            hull = _Bounds(
                partial.lo + np.minimum(bias.lo, zero), partial.hi + np.maximum(bias.hi, zero), exp, sum_bounds.grid
            )
            self.note_accumulator(out, hull)
            break
        self.may_round(out, sum_bounds, "the sum")

    def mul(self, node: ir.Node) -> None:
        constant = [self.is_constant(v) for v in node.inputs[:2]]
        if constant.count(True) != 1:
            raise UnsupportedModelError(f"{describe(node)}: only a product of an activation and a constant is supported")
        x_value, k_value = (node.inputs[1], node.inputs[0]) if constant[0] else (node.inputs[0], node.inputs[1])
        x = self.operand(node, x_value)
        k = _dyadic_bounds(self.constant_data(node, k_value, limit=None))
        self.record_scaled(node.outputs[0], _scaled(x, k), "the product")

    def record_scaled(self, value: ir.Value, bounds: _Bounds, what: str) -> None:
        self.record(value, bounds)
        self.may_round(value, bounds, what)

    def div(self, node: ir.Node) -> None:
        d_value = node.inputs[1]
        if not self.is_constant(d_value) or self.is_constant(node.inputs[0]):
            raise UnsupportedModelError(f"{describe(node)}: only division of an activation by a constant is supported")
        data = self.constant_data(node, d_value, limit=None).astype(np.float64)
        if not all(power_of_two_exponent(abs(float(d))) is not None for d in np.unique(data)):
            raise UnsupportedModelError(f"{describe(node)}: division by a constant that is not a power of two")
        x = self.operand(node, node.inputs[0])
        reciprocal = 1.0 / data  # exact: every element is +-2**e
        self.record_scaled(node.outputs[0], _scaled(x, _dyadic_bounds(reciprocal)), "the quotient")

    def relu(self, node: ir.Node) -> None:
        a = self.operand(node, node.inputs[0])
        zero = np.zeros_like(a.lo)
        self.record(node.outputs[0], _Bounds(np.maximum(a.lo, zero), np.maximum(a.hi, zero), a.exp, a.grid))

    def leaky_relu(self, node: ir.Node) -> None:
        """x for x >= 0, alpha * x below: the interval's image, alpha the exact float32 number."""
        x = self.operand(node, node.inputs[0])
        alpha = np.float32(_attr(node, "alpha", 0.01))
        a_exp = _finest_exponent(np.asarray(alpha))
        a_code = int(_exact_codes(np.asarray(alpha), a_exp))
        exp = min(x.exp, x.exp + a_exp)
        shift_x, shift_neg = x.exp - exp, x.exp + a_exp - exp
        zero = np.zeros_like(x.lo)
        negative_lo, negative_hi = np.minimum(x.lo, zero), np.minimum(x.hi, zero)
        candidates = [
            np.maximum(x.lo, zero) * (1 << shift_x),
            np.maximum(x.hi, zero) * (1 << shift_x),
            negative_lo * a_code * (1 << shift_neg),
            negative_hi * a_code * (1 << shift_neg),
        ]
        lo = np.minimum(np.minimum(candidates[0], candidates[1]), np.minimum(candidates[2], candidates[3]))
        hi = np.maximum(np.maximum(candidates[0], candidates[1]), np.maximum(candidates[2], candidates[3]))
        a_grid = int(_feature_grids(np.asarray(alpha), a_exp))
        grid = np.minimum(x.grids(), x.grids() + a_grid)
        out = node.outputs[0]
        self.record(out, _Bounds(lo, hi, exp, grid))
        negative = _Bounds(negative_lo * a_code, negative_hi * a_code, x.exp + a_exp, x.grids() + a_grid)
        self.may_round(out, negative, "the negative side alpha * x")

    def clip(self, node: ir.Node) -> None:
        x = self.operand(node, node.inputs[0])
        limits: list[float | None] = []
        for index, attribute in ((1, "min"), (2, "max")):
            value = node.inputs[index] if len(node.inputs) > index else None
            if value is not None:
                if not self.is_constant(value):
                    raise UnsupportedModelError(f"{describe(node)}: the {attribute} bound must be a constant")
                limits.append(float(np.asarray(self.constant_data(node, value, limit=None)).reshape(())))
            elif attribute in node.attributes:
                limits.append(float(np.float32(_attr(node, attribute))))
            else:
                limits.append(None)
        limits = [v if v is not None and math.isfinite(v) else None for v in limits]
        exp = min([x.exp] + [_finest_exponent(np.asarray(v)) for v in limits if v is not None])
        x = x.at(exp)
        lo, hi = x.lo, x.hi
        low, high = limits
        if low is not None:
            code = int(_exact_codes(np.asarray(low), exp))
            lo, hi = np.maximum(lo, code), np.maximum(hi, code)
        if high is not None:
            code = int(_exact_codes(np.asarray(high), exp))
            lo, hi = np.minimum(lo, code), np.minimum(hi, code)
        grid = x.grids()
        for v in limits:
            if v is not None and v != 0:
                grid = np.minimum(grid, max(_finest_exponent(np.asarray(v)), exp))
        self.record(node.outputs[0], _Bounds(_int_array(lo), _int_array(hi), exp, grid))

    # ---- pooling and normalization ----------------------------------------------------------------
    def max_pool(self, node: ir.Node) -> None:
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            raise UnsupportedModelError(f"{describe(node)}: the Indices output is not supported")
        self.record(node.outputs[0], self.operand(node, node.inputs[0]))

    def average_pool(self, node: ir.Node) -> None:
        x = self.operand(node, node.inputs[0])
        spatial = self.spatial(node.inputs[0])
        if node.op_type == "GlobalAveragePool":
            if spatial is None:
                raise UnsupportedModelError(f"{describe(node)}: the input's spatial shape is unknown")
            sizes = {(math.prod(spatial), math.prod(spatial))}
        else:
            kernel = _ints_attr(node, "kernel_shape")
            if kernel is None:
                raise UnsupportedModelError(f"{describe(node)}: missing attribute 'kernel_shape'")
            windows = _Windows.of(node, kernel, spatial)
            full = math.prod(kernel)
            if not windows.padded():
                sizes = {(full, full)}
            elif spatial is None or windows.pads is None:
                raise UnsupportedModelError(f"{describe(node)}: padded windows need the input's spatial shape")
            else:
                sizes = windows.averaging_sizes(spatial, bool(_attr(node, "count_include_pad", 0)))
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
            self.may_round(out, _Bounds(x.lo * most, x.hi * most, x.exp, x.grid), "the window sum")
        else:
            exp = x.exp
            lo = [_trunc_div(x.lo * n, c) for n, c in sizes]
            hi = [_trunc_div(x.hi * n, c) for n, c in sizes]
            quotient_grid = np.asarray(exp, dtype=object)
            self.result.inexact[out.name] = (
                f"average over windows of {', '.join(map(str, divisors))} positions (not all powers of two): "
                "hardware truncates the quotient toward zero at the sum's LSB (hls4ml's avg), float32 rounds it"
            )
        bounds = _Bounds(_int_array(np.minimum.reduce(lo)), _int_array(np.maximum.reduce(hi)), exp, quotient_grid)
        self.record(out, bounds)
        # hls4ml sums the window (padding reads 0) in accum_t and divides in place: it holds both.
        zero = np.zeros_like(x.lo)
        sums = _Bounds(np.minimum(x.lo, zero) * most, np.maximum(x.hi, zero) * most, x.exp).at(exp)
        hull = _Bounds(np.minimum(sums.lo, bounds.lo), np.maximum(sums.hi, bounds.hi), exp)
        self.result.accumulators[out.name] = hull.fixed_type()

    def batch_norm(self, node: ir.Node) -> None:
        if len(node.inputs) < 5 or not all(self.is_constant(v) for v in node.inputs[1:5]):
            raise UnsupportedModelError(f"{describe(node)}: scale, bias, mean and variance must be constants")
        if len([v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]) > 1:
            raise UnsupportedModelError(f"{describe(node)}: training-mode outputs are not supported")
        params = [_constant(v) for v in node.inputs[1:5]]
        if any(p is None for p in params):
            raise UnsupportedModelError(f"{describe(node)}: scale, bias, mean and variance must be initializers")
        a, b = batch_norm_coefficients(*params, float(_attr(node, "epsilon", 1e-5)))  # type: ignore[misc]
        x = self.operand(node, node.inputs[0])
        # Mul(a) then Add(b), as onnxruntime computes it: both steps round in float32.
        product = _scaled(x, _dyadic_bounds(a))
        bias = _dyadic_bounds(b)
        exp = min(product.exp, bias.exp)
        product, bias = product.at(exp), bias.at(exp)
        out = node.outputs[0]
        bounds = _Bounds(product.lo + bias.lo, product.hi + bias.hi, exp, np.minimum(product.grids(), bias.grids()))
        self.record(out, bounds)
        # The product is computed before the offset is added: its type must hold it too.
        hull = _Bounds(np.minimum(product.lo, bounds.lo), np.maximum(product.hi, bounds.hi), exp)
        self.result.accumulators[out.name] = hull.fixed_type()
        self.may_round(out, product, "x * scale")
        self.may_round(out, bounds, "x * scale + bias")

    # ---- data movement -----------------------------------------------------------------------------
    def identity(self, node: ir.Node) -> None:
        self.record(node.outputs[0], self.operand(node, node.inputs[0]))

    def cast(self, node: ir.Node) -> None:
        """A float Cast keeps the exact value; casting to float32 may round what does not fit it."""
        cast_target(node)
        x = self.operand(node, node.inputs[0])
        self.record_scaled(node.outputs[0], x, "the cast value")

    def transpose(self, node: ir.Node) -> None:
        self.record(node.outputs[0], self.operand(node, node.inputs[0]).collapsed())

    def reshape(self, node: ir.Node) -> None:
        """Row-major reshapes keep channels-last order: flat index f holds feature f % F."""
        x = self.operand(node, node.inputs[0])
        out = node.outputs[0]
        features = x.features
        dims = self.shape(out)
        last = dims[-1] if dims else None
        if features is None or last is None:
            bounds = x if features is None else x.collapsed()
        elif last % features == 0:
            repeat = last // features
            bounds = _Bounds(np.tile(x.lo, repeat), np.tile(x.hi, repeat), x.exp, np.tile(x.grids(), repeat))
        elif last > 1 and features % last == 0:
            # Output feature j holds input features j, j + last, j + 2 * last, ...
            def merged(array: np.ndarray, reduce: Callable) -> np.ndarray:
                return _int_array(reduce(array.reshape(-1, last), axis=0))

            bounds = _Bounds(merged(x.lo, np.min), merged(x.hi, np.max), x.exp, merged(x.grids(), np.min))
        else:
            bounds = x.collapsed()
        self.record(out, bounds)

    def concat(self, node: ir.Node) -> None:
        parts = [self.operand(node, v) for v in node.inputs]
        exp = min(p.exp for p in parts)
        parts = [p.at(exp) for p in parts]
        axis = int(_attr(node, "axis"))
        rank = None
        for value in (*node.inputs, node.outputs[0]):
            dims = self.shape(value)
            if dims is not None:
                rank = len(dims)
                break
        if rank is None and axis != -1:
            raise UnsupportedModelError(f"{describe(node)}: the rank of the inputs is unknown")
        on_last_axis = axis == -1 or axis == (rank or 0) - 1
        if on_last_axis:
            widths = []
            for value, part in zip(node.inputs, parts):
                dims = self.shape(value)
                width = dims[-1] if dims else None
                if width is None:
                    width = part.features
                if width is None:
                    raise UnsupportedModelError(f"{describe(node)}: the channel count of {value.name!r} is unknown")
                widths.append(int(width))
            parts = [p.widened(w) for p, w in zip(parts, widths)]
            bounds = _Bounds(
                np.concatenate([p.lo for p in parts]),
                np.concatenate([p.hi for p in parts]),
                exp,
                np.concatenate([p.grids() for p in parts]),
            )
        else:
            lo, hi, grid = parts[0].lo, parts[0].hi, parts[0].grids()
            for p in parts[1:]:
                lo, hi, grid = np.minimum(lo, p.lo), np.maximum(hi, p.hi), np.minimum(grid, p.grids())
            bounds = _Bounds(_int_array(lo), _int_array(hi), exp, _int_array(grid))
        self.record(node.outputs[0], bounds)

    def resize(self, node: ir.Node) -> None:
        mode = str(_attr(node, "mode", "nearest"))
        if mode != "nearest":
            raise UnsupportedModelError(f"{describe(node)}: only mode 'nearest' has a precision rule, not {mode!r}")
        x = self.operand(node, node.inputs[0])
        in_dims, out_dims = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        channels_kept = (
            in_dims is not None and out_dims is not None and in_dims[-1] is not None and in_dims[-1] == out_dims[-1]
        )
        if not channels_kept:
            scales = _constant(node.inputs[2]) if len(node.inputs) > 2 else None
            channels_kept = scales is not None and scales.size > 0 and float(scales.reshape(-1)[-1]) == 1.0
        self.record(node.outputs[0], x if channels_kept else x.collapsed())

    def pad(self, node: ir.Node) -> None:
        x = self.operand(node, node.inputs[0])
        mode = str(_attr(node, "mode", "constant"))
        pads_value = node.inputs[1] if len(node.inputs) > 1 else None
        pads = _constant(pads_value) if pads_value is not None else np.asarray(_ints_attr(node, "pads") or [])
        if pads is None:
            raise UnsupportedModelError(f"{describe(node)}: the pads must be a constant")
        axes_value = node.inputs[3] if len(node.inputs) > 3 else None
        if axes_value is not None:
            raise UnsupportedModelError(f"{describe(node)}: Pad with an 'axes' input is not supported")
        pads = [int(p) for p in pads.reshape(-1)]
        rank = len(pads) // 2
        adds = any(p > 0 for p in pads)
        if mode != "constant" or not adds:
            self.record(node.outputs[0], x)  # edge / reflect / wrap repeat values that are there
            return
        value_input = node.inputs[2] if len(node.inputs) > 2 else None
        if value_input is not None and not self.is_constant(value_input):
            raise UnsupportedModelError(f"{describe(node)}: the pad value must be a constant")
        if value_input is not None:
            fill = np.asarray(self.constant_data(node, value_input, limit=None), dtype=np.float64).reshape(())
        else:
            fill = np.float64(np.float32(_attr(node, "value", 0.0)))
        fill_exp = _finest_exponent(np.asarray(fill))
        exp = min(x.exp, fill_exp) if fill != 0 else x.exp
        x = x.at(exp)
        code = int(_exact_codes(np.asarray(fill), exp))
        if pads[rank - 1] > 0 or pads[2 * rank - 1] > 0:
            x = x.collapsed()  # new channels hold only the pad value: which is which is lost
        grid = x.grids() if fill == 0 else np.minimum(x.grids(), max(fill_exp, exp))
        self.record(node.outputs[0], _Bounds(np.minimum(x.lo, code), np.maximum(x.hi, code), exp, grid))


def infer_types(model: ir.Model) -> PrecisionResult:
    """Exact types of every value of `model` (nodes in topological order; see the module doc).

    Raises UnsupportedModelError, naming the node, for ops without a rule, non-power-of-two scales,
    non-zero zero points, rounding modes without a fixed-point equivalent, and unquantized inputs.
    Shapes are inferred (annotated on the model) if a rule needs one that is missing.
    """
    return _Analysis(model).run()
