"""Exact mode: a quantized graph's exact meaning, computed in rational arithmetic.

The exact meaning of a quantized graph is the real-number arithmetic its quantizers define: every
float32 scale, zero point, weight and bias is the exact rational it is, sums and products are exact,
and a `Quant` rounds the exact quotient `x / s + z` (`hawqc.ir.ops.rounding`). Hardware mode must
compute it exactly (the lowered graph's requantizations are proven dyadic, see
`hawqc.passes.integer_requant`); semantic mode (float32, as qonnx) may differ from it where float32
rounds a product or a quotient near a rounding boundary. This executor is the reference both are
measured against, independent of the passes and of precision inference.

A tensor is `ints * scale`: an integer array (int64 while its values provably fit, Python ints
otherwise) and an array of positive `Fraction`s that broadcasts against it without its batch axis
(usually one number, or one per channel). Ops that only move or select elements run the semantic
executor's own kernel on the integers (as float64, exact below 2^53) and on element indices (which
carry each element's scale along). Ops with no exact meaning (Sigmoid, Softmax...) are refused,
naming the node; constants are folded as semantic mode folds them, except quantizers, which are
exact here too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir.diagnostics import describe
from hawqc.ir.grid import finest_exponent
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import onnx_op, op_key, qonnx_op
from hawqc.ir.ops.quantizer import code_bounds, quantizer
from hawqc.ir.ops.rounding import round_quotient
from hawqc.ir.ops.window import Windows
from hawqc.ir.rationals import exact_fractions
from hawqc.sim import ops
from hawqc.sim.executor import _topological_order

# Integers this far below 2^63 leave room for a sum of a few products without overflow checks.
INT64_SAFE = 1 << 62
FLOAT64_EXACT = 1 << 53

def _elementwise(fn, arity: int = 1):
    """numpy's frompyfunc, always returning an object array (a 0-d one for scalars)."""
    ufunc = np.frompyfunc(fn, arity, 1)

    def apply(*args):
        out = ufunc(*args)
        return out if isinstance(out, np.ndarray) else np.asarray(out, dtype=object).reshape(())

    return apply


_fraction = _elementwise(lambda x: Fraction(float(x)))
_numerator = _elementwise(lambda f: f.numerator)
_denominator = _elementwise(lambda f: f.denominator)


def _compact(ints: np.ndarray) -> np.ndarray:
    """int64 when every value fits comfortably, Python ints otherwise."""
    ints = np.asarray(ints) if not isinstance(ints, np.ndarray) else ints
    if ints.dtype == object:
        if ints.size == 0:
            return ints.astype(np.int64)
        big = max(abs(int(ints.max())), abs(int(ints.min())))
        return ints.astype(np.int64) if big < INT64_SAFE else ints
    return ints


_PYTHON_INT = np.frompyfunc(int, 1, 1)


def _wide(ints: np.ndarray) -> np.ndarray:
    """Python ints throughout: an object array may also hold numpy int64 scalars (a padding's zeros),
    whose products and sums with Python ints overflow instead of growing."""
    if ints.dtype != object:
        return ints.astype(object)  # Python ints already
    return np.asarray(_PYTHON_INT(ints), dtype=object).reshape(ints.shape)


def _bound(ints: np.ndarray) -> int:
    return 0 if ints.size == 0 else max(abs(int(ints.max())), abs(int(ints.min())))


def _rational_gcd(a, b):
    """The largest rational g with a/g and b/g integers (element-wise over Fraction arrays)."""

    def one(x: Fraction, y: Fraction) -> Fraction:
        return Fraction(math.gcd(x.numerator * y.denominator, y.numerator * x.denominator), x.denominator * y.denominator)

    return _elementwise(one, 2)(a, b)


def _gcd_over(scale: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """The rational gcd of `scale` over `axes`, kept as size-1 axes."""
    out = scale
    for axis in axes:
        if out.shape[axis] <= 1:
            continue
        parts = np.split(out, out.shape[axis], axis=axis)
        acc = parts[0]
        for part in parts[1:]:
            acc = _rational_gcd(acc, part)
        out = acc
    return out


@dataclass(frozen=True)
class Exact:
    """`ints * scale`: see the module docstring. `scale` has the tensor's rank (batch axis of size 1)."""

    ints: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        # The scale always has the integers' rank (size-1 axes where it does not vary).
        scale = self.scale if isinstance(self.scale, np.ndarray) else np.asarray(self.scale, dtype=object).reshape(())
        ints = np.asarray(self.ints)
        if scale.ndim < ints.ndim:
            scale = scale.reshape((1,) * (ints.ndim - scale.ndim) + scale.shape)
        elif scale.ndim > ints.ndim:
            squeezable = scale.shape[: scale.ndim - ints.ndim]
            if any(d != 1 for d in squeezable):
                ints = np.broadcast_to(ints, np.broadcast_shapes(ints.shape, scale.shape)).copy()
            else:
                scale = scale.reshape(scale.shape[scale.ndim - ints.ndim :])
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "ints", ints)

    @staticmethod
    def of_float(array: np.ndarray) -> Exact:
        """A float tensor, exactly (each float32/float64 is an integer times a power of two)."""
        array = np.asarray(array)
        if not np.all(np.isfinite(array)):
            raise UnsupportedModelError("exact mode: a value is not finite")
        if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
            return Exact(_compact(array.astype(object)), _scale_array(Fraction(1), array.ndim))
        exp = int(finest_exponent(array)) if np.any(array != 0) else 0
        scaled = np.ldexp(array.astype(np.float64), -exp)
        if np.abs(scaled).max(initial=0) < FLOAT64_EXACT:
            ints = scaled.astype(np.int64)
        else:
            ints = np.frompyfunc(lambda v: int(Fraction(float(v))), 1, 1)(scaled)
        return Exact(_compact(np.asarray(ints)), _scale_array(Fraction(2) ** exp, array.ndim))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ints.shape

    def fractions(self) -> np.ndarray:
        """Every element as a Fraction (object array, 0-d for a scalar)."""
        out = _wide(self.ints) * self.scale
        return out if isinstance(out, np.ndarray) else np.asarray(out, dtype=object).reshape(())

    def to_float64(self) -> np.ndarray:
        """Nearest float64 of every element (exact where the value is a float64)."""
        return np.frompyfunc(float, 1, 1)(self.fractions()).astype(np.float64)

    def equals(self, other: np.ndarray) -> np.ndarray:
        """Per element: is the float array's value exactly this value?"""
        other = np.asarray(other, dtype=np.float64)
        exact = exact_fractions(other)
        return np.asarray(self.fractions() == exact, dtype=bool)

    def with_scale(self, scale: np.ndarray) -> Exact:
        """The same values over `scale`, which must divide every element's scale."""
        ratio = self.scale / scale
        if not all(r.denominator == 1 for r in np.asarray(ratio).reshape(-1)):
            raise AssertionError("scale does not divide")
        r_int = _numerator(ratio)
        if all(int(r) == 1 for r in np.asarray(r_int).reshape(-1)):
            return Exact(self.ints, np.broadcast_to(scale, self.scale.shape) if scale.shape != self.scale.shape else scale)
        return Exact(_compact(_wide(self.ints) * r_int), scale)

    def uniform_over(self, axes: tuple[int, ...]) -> Exact:
        """The same values with one scale along `axes` (the gcd of the scales there)."""
        axes = tuple(a % max(1, self.ints.ndim) for a in axes)
        if all(self.scale.shape[a] == 1 for a in axes):
            return self
        return self.with_scale(_gcd_over(self.scale, axes))


def _scale_array(value: Fraction, rank: int) -> np.ndarray:
    out = np.empty((1,) * rank, dtype=object)
    out[...] = value
    return out


def _common(a: Exact, b: Exact) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a and b over one scale (their element-wise rational gcd): (a ints, b ints, scale)."""
    rank = max(a.ints.ndim, b.ints.ndim)
    sa = a.scale.reshape((1,) * (rank - a.scale.ndim) + a.scale.shape)
    sb = b.scale.reshape((1,) * (rank - b.scale.ndim) + b.scale.shape)
    g = _rational_gcd(sa, sb)
    ia = _wide(a.ints) * _numerator(sa / g)
    ib = _wide(b.ints) * _numerator(sb / g)
    return ia, ib, g


def _positive(ints: np.ndarray, scale: np.ndarray) -> Exact:
    """Keep scales positive: a negative scale's sign moves into the integers."""
    sign = _elementwise(lambda f: -1 if f < 0 else 1)(scale)
    if all(s == 1 for s in np.asarray(sign).reshape(-1)):
        return Exact(_compact(ints), scale)
    return Exact(_compact(_wide(ints) * sign), _elementwise(abs)(scale))


# ---- kernels ------------------------------------------------------------------------------------


def _constant_exact(value) -> Exact:
    return value if isinstance(value, Exact) else Exact.of_float(np.asarray(value))


def _quant(node: ir.Node, args: list) -> Exact:
    view = quantizer(node)
    assert view is not None
    x = _constant_exact(args[0])
    if view.is_bipolar:
        scale = np.asarray(args[1], dtype=np.float64)
        sign = np.where(_sign_nonnegative(x), 1, -1)
        s = _fraction(scale)
        return Exact(sign.astype(np.int64), s.reshape((1,) * (x.ints.ndim - s.ndim) + s.shape))
    scale, zero = np.asarray(args[1]), np.asarray(args[2])
    bits = np.asarray(args[3])
    if bits.size != 1 or float(bits.reshape(-1)[0]) != int(bits.reshape(-1)[0]):
        raise UnsupportedModelError(f"{describe(node)}: exact mode needs one integer bit width")
    if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
        raise UnsupportedModelError(f"{describe(node)}: exact mode needs positive finite scales")
    low, high = code_bounds(int(bits.reshape(-1)[0]), view.signed, view.narrow)
    rank = x.ints.ndim
    s = _fraction(scale.astype(np.float64))
    s = s.reshape((1,) * (rank - s.ndim) + s.shape)
    z = _fraction(zero.astype(np.float64))
    z = z.reshape((1,) * (rank - z.ndim) + z.shape)
    # v = x / s + z = ints * (sigma / s) + z, over one denominator per element.
    ratio = x.scale / s
    rn, rd = _numerator(ratio), _denominator(ratio)
    zn, zd = _numerator(z), _denominator(z)
    num = _wide(x.ints) * rn * zd + zn * rd
    den = rd * zd
    num = np.maximum(np.minimum(num, den * high), den * low)
    codes = round_quotient(num, den, view.rounding_mode)
    # (code - z) * s = (code * zd - zn) * (s / zd)
    return _positive(codes * zd - zn, s / zd)


def _sign_nonnegative(x: Exact) -> np.ndarray:
    return np.asarray(x.ints >= 0, dtype=bool)


def _trunc(node: ir.Node, args: list) -> Exact:
    """qonnx's Trunc: round x / scale + z half to even (onto the input grid), divide by a power of two
    (v1: 2^(in - out bits); v2: the one nearest out_scale / scale, then clamp to the output bits),
    round with the node's mode, subtract the zero point over that power of two, rescale."""
    view = quantizer(node)
    assert view is not None
    x = _constant_exact(args[0])
    scale = np.asarray(args[1], dtype=np.float64)
    zero = np.asarray(args[2], dtype=np.float64)
    rank = x.ints.ndim
    s = _fraction(scale).reshape((1,) * (rank - scale.ndim) + scale.shape)
    z = _fraction(zero).reshape((1,) * (rank - zero.ndim) + zero.shape)
    ratio = x.scale / s
    rn, rd = _numerator(ratio), _denominator(ratio)
    zn, zd = _numerator(z), _denominator(z)
    first = round_quotient(_wide(x.ints) * rn * zd + zn * rd, rd * zd, "ROUND")  # onto the input grid
    if view.layout == "Trunc v2":
        out_scale = np.asarray(args[4], dtype=np.float64)
        shift = 2.0 ** np.round(np.log2(out_scale / scale))  # qonnx's power of two, computed as it does
        bits = int(np.asarray(args[5]).reshape(-1)[0])
        low, high = code_bounds(bits, view.signed, view.narrow)
        final = _fraction(out_scale).reshape((1,) * (rank - out_scale.ndim) + out_scale.shape)
    else:
        shift = 2.0 ** (np.asarray(args[3], dtype=np.float64) - np.asarray(args[4], dtype=np.float64))
        low = high = None
        final = s
    t = _fraction(shift).reshape((1,) * (rank - np.ndim(shift)) + np.shape(shift))
    tn, td = _numerator(t), _denominator(t)
    num, den = first * td, tn  # first / t
    if low is not None:
        num = np.maximum(np.minimum(num, den * high), den * low)
    second = round_quotient(num, den, view.rounding_mode)
    # (second - z / t) * final, over one denominator
    value_num = second * zd * tn - zn * td
    return _positive(value_num, final / (zd * tn))


def _add(node: ir.Node, args: list, subtract: bool = False) -> Exact:
    a, b = _constant_exact(args[0]), _constant_exact(args[1])
    ia, ib, g = _common(a, b)
    return Exact(_compact(ia - ib if subtract else ia + ib), g)


def _mul(node: ir.Node, args: list) -> Exact:
    a, b = _constant_exact(args[0]), _constant_exact(args[1])
    rank = max(a.ints.ndim, b.ints.ndim)
    sa = a.scale.reshape((1,) * (rank - a.scale.ndim) + a.scale.shape)
    sb = b.scale.reshape((1,) * (rank - b.scale.ndim) + b.scale.shape)
    if max(_bound(a.ints), 1) * max(_bound(b.ints), 1) < INT64_SAFE and a.ints.dtype != object and b.ints.dtype != object:
        return Exact(a.ints * b.ints, sa * sb)
    return Exact(_compact(_wide(a.ints) * _wide(b.ints)), sa * sb)


def _div(node: ir.Node, args: list) -> Exact:
    if isinstance(args[1], Exact):
        raise UnsupportedModelError(f"{describe(node)}: exact mode divides only by constants")
    a = _constant_exact(args[0])
    c = np.asarray(args[1], dtype=np.float64)
    if np.any(c == 0):
        raise UnsupportedModelError(f"{describe(node)}: division by zero")
    rank = max(a.ints.ndim, c.ndim)
    fc = _fraction(c).reshape((1,) * (rank - c.ndim) + c.shape)
    sa = a.scale.reshape((1,) * (rank - a.scale.ndim) + a.scale.shape)
    return _positive(a.ints, sa / fc)


def _relu(node: ir.Node, args: list) -> Exact:
    x = args[0]
    return Exact(np.maximum(x.ints, 0), x.scale)


def _clip(node: ir.Node, args: list) -> Exact:
    x = args[0]
    lo = args[1] if len(args) > 1 else None
    hi = args[2] if len(args) > 2 else None
    out = x
    for bound, upper in ((lo, False), (hi, True)):
        if bound is None:
            continue
        b = Exact.of_float(np.asarray(bound, dtype=np.float64).reshape((1,) * x.ints.ndim))
        ix, ib, g = _common(out, b)
        ints = np.minimum(ix, ib) if upper else np.maximum(ix, ib)
        out = Exact(_compact(ints), g)
    return out


def matmul_ints(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    k = a.shape[-1]
    if a.dtype != object and b.dtype != object and _bound(a) * _bound(b) * max(k, 1) < INT64_SAFE:
        if _bound(a) * _bound(b) * max(k, 1) < FLOAT64_EXACT:
            # BLAS in float64 is exact here: every partial sum is an integer below 2^53.
            return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
        return np.matmul(a, b)
    return _compact(np.matmul(_wide(a), _wide(b)))


def _matmul(node: ir.Node, args: list) -> Exact:
    a, b = _constant_exact(args[0]), _constant_exact(args[1])
    a = a.uniform_over((-1,))
    b = b.uniform_over((-2,)) if b.ints.ndim >= 2 else b.uniform_over((0,))
    ints = matmul_ints(a.ints, b.ints)
    sa = a.scale[..., 0]  # drop the contracted axis
    sb = b.scale[..., 0, :] if b.scale.ndim >= 2 else b.scale[0]
    scale = sa[..., None] * sb if b.scale.ndim >= 2 else sa
    rank = ints.ndim
    scale = np.asarray(scale, dtype=object)
    scale = scale.reshape((1,) * (rank - scale.ndim) + scale.shape) if scale.ndim <= rank else scale
    return Exact(ints, scale)


def _gemm(node: ir.Node, args: list) -> Exact:
    def attr(name, default):
        a = node.attributes.get(name)
        return default if a is None else a.value

    a, b = _constant_exact(args[0]), _constant_exact(args[1])
    if attr("transA", 0):
        a = Exact(a.ints.T, a.scale.T)
    if attr("transB", 0):
        b = Exact(b.ints.T, b.scale.T)
    alpha, beta = float(attr("alpha", 1.0)), float(attr("beta", 1.0))
    y = _matmul(node, [a, b])
    if alpha != 1.0:
        y = _mul(node, [y, np.float64(alpha)])
    if len(args) > 2 and args[2] is not None:
        c = _constant_exact(args[2])
        if beta != 1.0:
            c = _mul(node, [c, np.float64(beta)])
        y = _add(node, [y, c])
    return y


def _conv(node: ir.Node, args: list) -> Exact:
    x, w = args[0], _constant_exact(args[1])
    spatial = x.ints.ndim - 2
    windows = Windows.read(node, tuple(w.ints.shape[2:]))
    x = x.uniform_over(tuple(range(1, x.ints.ndim)))
    w = w.uniform_over(tuple(range(1, w.ints.ndim)))  # one scale per output channel
    group = windows.group
    patches = _patches(x.ints, windows, spatial, 0)  # [N, C, k..., out...]
    n, c = x.ints.shape[:2]
    m = w.ints.shape[0]
    out_dims = patches.shape[2 + spatial :]
    cg, mg = c // group, m // group
    outs = []
    for g in range(group):
        p = patches[:, g * cg : (g + 1) * cg].reshape(n, cg * int(np.prod(w.ints.shape[2:])), -1)
        p = np.moveaxis(p, 1, 2)  # [N, positions, C*k]
        wg = w.ints[g * mg : (g + 1) * mg].reshape(mg, -1).T  # [C*k, M]
        outs.append(np.moveaxis(matmul_ints(p, wg), 2, 1))
    ints = outs[0] if group == 1 else np.concatenate(outs, axis=1)
    ints = ints.reshape((n, m, *out_dims))
    scale = x.scale.reshape(-1)[0] * np.broadcast_to(w.scale, (m,) + (1,) * (w.ints.ndim - 1)).reshape(m)
    y = Exact(_compact(ints), scale.reshape((1, m) + (1,) * spatial))
    if len(args) > 2 and args[2] is not None:
        b = _constant_exact(args[2])
        shape = (1, m) + (1,) * spatial
        b = Exact(b.ints.reshape(shape), b.scale.reshape((1,) * len(shape)) if b.scale.size == 1 else b.scale.reshape(shape))
        y = _add(node, [y, b])
    return y


def _patches(ints: np.ndarray, windows: Windows, spatial: int, pad_value: int) -> np.ndarray:
    """[N, C, *kernel, *out] windows of `ints`, padded with `pad_value` (exact integers)."""
    dims = ints.shape[2:]
    pads = windows.pads_for(dims)
    begin, end = pads[:spatial], pads[spatial:]
    padded = np.pad(ints, [(0, 0), (0, 0), *zip(begin, end)], constant_values=pad_value)
    kernel = windows.kernel
    strides, dilations = windows.strides_or_default(spatial), windows.dilations_or_default(spatial)
    if windows.ceil_mode:
        raise UnsupportedModelError("exact mode: ceil_mode windows are not supported")
    out = [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(spatial)]
    index = np.ix_(*[np.arange(k) for k in kernel], *[np.arange(o) for o in out])
    gathered = padded
    slices = []
    for i in range(spatial):
        pos = index[i] * dilations[i] + index[spatial + i] * strides[i]
        slices.append(pos)
    grids = np.broadcast_arrays(*slices)
    return gathered[(slice(None), slice(None), *grids)]


def conv_ints(lo: np.ndarray, hi: np.ndarray, weight: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of a convolution's sums per output channel, for inputs in [lo[c], hi[c]] per input
    channel (no padding counted: a padded zero lies inside any interval widened to 0)."""
    out_channels, in_per_group = weight.shape[:2]
    per_group = out_channels // group
    low = np.empty(out_channels, dtype=object)
    high = np.empty(out_channels, dtype=object)
    for o in range(out_channels):
        g = o // per_group
        w = weight[o].reshape(in_per_group, -1).astype(object)
        lo_c = np.asarray(lo[g * in_per_group : (g + 1) * in_per_group], dtype=object)[:, None]
        hi_c = np.asarray(hi[g * in_per_group : (g + 1) * in_per_group], dtype=object)[:, None]
        positive, negative = np.maximum(w, 0), np.minimum(w, 0)
        low[o] = int((positive * lo_c + negative * hi_c).sum())
        high[o] = int((positive * hi_c + negative * lo_c).sum())
    return low, high


def _average_pool(node: ir.Node, args: list, global_pool: bool) -> Exact:
    x = args[0]
    spatial = x.ints.ndim - 2
    x = x.uniform_over(tuple(range(2, x.ints.ndim)))
    if global_pool:
        count = int(np.prod(x.ints.shape[2:]))
        ints = _wide(x.ints).sum(axis=tuple(range(2, x.ints.ndim)), keepdims=True) if x.ints.dtype == object else x.ints.sum(axis=tuple(range(2, x.ints.ndim)), keepdims=True)
        return Exact(_compact(np.asarray(ints)), x.scale / count)
    kernel_attr = node.attributes.get("kernel_shape")
    windows = Windows.read(node, tuple(kernel_attr.value) if kernel_attr is not None else ())
    patches = _patches(x.ints, windows, spatial, 0)
    k_axes = tuple(range(2, 2 + spatial))
    sums = patches.sum(axis=k_axes)
    include_pad = bool(getattr(node.attributes.get("count_include_pad"), "value", 0))
    if include_pad or not any(windows.pads_for(x.ints.shape[2:])):
        count = int(np.prod(windows.kernel))
        return Exact(_compact(sums), x.scale / count)
    ones = _patches(np.ones((1, 1, *x.ints.shape[2:]), dtype=np.int64), windows, spatial, 0).sum(axis=k_axes)
    counts = np.frompyfunc(lambda v: Fraction(1, int(v)), 1, 1)(ones[0, 0])
    return Exact(_compact(sums), x.scale * counts.reshape((1, 1) + counts.shape))


def _max_pool(node: ir.Node, args: list, global_pool: bool) -> Exact:
    x = args[0].uniform_over(tuple(range(2, args[0].ints.ndim)))
    if global_pool:
        return Exact(x.ints.max(axis=tuple(range(2, x.ints.ndim)), keepdims=True), x.scale)
    return _moving(node, [x], selects=True)


def _batch_norm(node: ir.Node, args: list) -> Exact:
    x = args[0]
    view = batch_norm(node)
    coefficients = view.coefficients()
    if coefficients is None or not view.inference_mode:
        raise UnsupportedModelError(f"{describe(node)}: exact mode needs an inference-mode BatchNormalization with constants")
    a, b = coefficients
    shape = (1, -1) + (1,) * (x.ints.ndim - 2)
    y = _mul(node, [x, np.asarray(a, dtype=np.float64).reshape(shape)])
    y = _positive(y.ints, y.scale)
    return _add(node, [y, np.asarray(b, dtype=np.float64).reshape(shape)])


def _moving(node: ir.Node, args: list, selects: bool = False, kernel=None) -> Exact:
    """Ops that move or select elements: the semantic kernel on the integers, and on indices.
    `kernel`: the semantic kernel as the executor planned it (with the graph's declared batch, for
    a Reshape that spells the batch out)."""
    x = args[0]
    if _bound(x.ints) >= FLOAT64_EXACT:
        raise UnsupportedModelError(f"{describe(node)}: exact mode moves integers below 2^53 only")
    if kernel is None:
        constants = tuple(None if isinstance(a, Exact) else a for a in args)
        kernel = ops.builder_for(node)(ops.NodeSpec(node, constants, None))
    values = kernel([x.ints.astype(np.float64) if i == 0 else (None if isinstance(a, Exact) else a) for i, a in enumerate(args)])[0]
    ints = np.asarray(values).astype(np.int64)
    if all(s == x.scale.reshape(-1)[0] for s in x.scale.reshape(-1)):
        return Exact(ints, _scale_array(x.scale.reshape(-1)[0], ints.ndim))  # one scale: any move keeps it
    if selects:
        # a selection along spatial axes (MaxPool) keeps the per-channel scale
        return Exact(ints, x.scale)
    # Carry each element's scale: run the kernel on the element indices of one sample.
    one = np.arange(int(np.prod(x.ints.shape[1:])), dtype=np.float64).reshape((1,) + x.ints.shape[1:])
    moved = kernel([one if i == 0 else (None if isinstance(a, Exact) else a) for i, a in enumerate(args)])[0]
    full = np.broadcast_to(x.scale, (1,) + x.ints.shape[1:]).reshape(-1)
    scale = full[np.asarray(moved).astype(np.int64)]
    return Exact(ints, scale.reshape((1,) + ints.shape[1:]))


def _concat(node: ir.Node, args: list) -> Exact:
    axis_attr = node.attributes.get("axis")
    parts = [_constant_exact(a) for a in args]
    rank = parts[0].ints.ndim
    axis = int(axis_attr.value) % rank if axis_attr is not None else 0
    ints, scales = [], []
    for p in parts:
        full = np.broadcast_to(p.scale, (1,) + p.ints.shape[1:])
        ints.append(_wide(p.ints) if any(q.ints.dtype == object for q in parts) else p.ints)
        scales.append(full)
    return Exact(_compact(np.concatenate(ints, axis=axis)), np.concatenate(scales, axis=axis))


def _identity(node: ir.Node, args: list) -> Exact:
    return args[0]


KERNELS = {
    qonnx_op("Quant"): _quant,
    qonnx_op("IntQuant"): _quant,
    qonnx_op("BipolarQuant"): _quant,
    qonnx_op("Trunc"): _trunc,
    onnx_op("MatMul"): _matmul,
    onnx_op("Gemm"): _gemm,
    onnx_op("Conv"): _conv,
    onnx_op("Add"): _add,
    onnx_op("Sub"): lambda node, args: _add(node, args, subtract=True),
    onnx_op("Mul"): _mul,
    onnx_op("Div"): _div,
    onnx_op("Relu"): _relu,
    onnx_op("Clip"): _clip,
    onnx_op("BatchNormalization"): _batch_norm,
    onnx_op("AveragePool"): lambda node, args: _average_pool(node, args, False),
    onnx_op("GlobalAveragePool"): lambda node, args: _average_pool(node, args, True),
    onnx_op("MaxPool"): lambda node, args: _max_pool(node, args, False),
    onnx_op("GlobalMaxPool"): lambda node, args: _max_pool(node, args, True),
    onnx_op("Concat"): _concat,
    onnx_op("Identity"): _identity,
    onnx_op("Dropout"): _identity,
    onnx_op("Cast"): _identity,
    onnx_op("Reshape"): _moving,
    onnx_op("Flatten"): _moving,
    onnx_op("Transpose"): _moving,
    onnx_op("Squeeze"): _moving,
    onnx_op("Unsqueeze"): _moving,
}
# Constants of these are computed exactly too (a weight Quant's codes times its scale, exactly).
EXACT_WHEN_CONSTANT = frozenset({qonnx_op("Quant"), qonnx_op("IntQuant"), qonnx_op("BipolarQuant"), qonnx_op("Trunc")})


class ExactExecutor:
    """Runs a model's exact meaning on batches of float inputs (see the module docstring)."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        graph = model.graph
        self._constants: dict[ir.Value, object] = {}
        for value in graph.initializers.values():
            assert value.const_value is not None
            self._constants[value] = value.const_value.numpy()
        self.input_values = [v for v in graph.inputs if v not in self._constants]
        self._order = _topological_order(graph)
        self._runtime: list[ir.Node] = []
        dims = self.input_values[0].shape if self.input_values else None
        batch = dims[0] if dims is not None and len(dims) and isinstance(dims[0], int) else None
        self._movers: dict[ir.Node, object] = {}
        for node in self._order:
            if all(v is None or v in self._constants for v in node.inputs):
                try:
                    self._fold(node)
                except (ValueError, IndexError, TypeError, AttributeError) as err:
                    raise UnsupportedModelError(f"{describe(node)}: exact mode cannot compute it ({type(err).__name__}: {err})") from err
            elif op_key(node) not in KERNELS:
                raise UnsupportedModelError(f"{describe(node)}: exact mode has no rule for {node.op_type}")
            else:
                self._runtime.append(node)
                if KERNELS[op_key(node)] is _moving:
                    known = tuple(None if v is None else self._plain(self._constants.get(v)) for v in node.inputs)
                    self._movers[node] = ops.builder_for(node)(ops.NodeSpec(node, known, batch))

    @staticmethod
    def _plain(value):
        return value.to_float64() if isinstance(value, Exact) else value

    @staticmethod
    def constants_of(model: ir.Model) -> dict[ir.Value, object]:
        """Every value computable before any input is known: numpy arrays (folded as semantic mode
        folds them) or `Exact` (quantizers of constants, and what is computed from them)."""
        executor = ExactExecutor.__new__(ExactExecutor)
        executor._constants = {v: v.const_value.numpy() for v in model.graph.initializers.values() if v.const_value is not None}
        for node in _topological_order(model.graph):
            if node.inputs and all(v is None or v in executor._constants for v in node.inputs) or (
                not node.inputs and op_key(node) == onnx_op("Constant")
            ):
                try:
                    executor._fold(node)
                except (UnsupportedModelError, ValueError, IndexError, TypeError, AttributeError):
                    continue  # not a constant exact mode can compute: readers see no value
        return executor._constants

    def _fold(self, node: ir.Node) -> None:
        """Constants: quantizers and anything computed from an exact constant exactly, the rest as
        semantic mode folds it (float32 constants are their exact values)."""
        args = [None if v is None else self._constants[v] for v in node.inputs]
        if op_key(node) in EXACT_WHEN_CONSTANT or any(isinstance(a, Exact) for a in args):
            if op_key(node) not in KERNELS:
                raise UnsupportedModelError(f"{describe(node)}: exact mode has no rule for {node.op_type}")
            self._constants[node.outputs[0]] = KERNELS[op_key(node)](node, list(args))
            return
        kernel = ops.builder_for(node)(ops.NodeSpec(node, tuple(args), None))
        for out, array in zip(node.outputs, kernel(args)):
            self._constants[out] = array

    def run(self, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, Exact]:
        if not isinstance(inputs, Mapping):
            if len(self.input_values) != 1:
                raise UserInputError("pass a dict of arrays by name")
            inputs = {self.input_values[0].name: inputs}
        env: dict[ir.Value, object] = dict(self._constants)
        for value in self.input_values:
            env[value] = Exact.of_float(np.asarray(inputs[value.name], dtype=np.float32))
        for node in self._runtime:
            args = [None if v is None else env[v] for v in node.inputs]
            args = [_constant_exact(a) if i == 0 and a is not None and not isinstance(a, Exact) else a for i, a in enumerate(args)]
            try:
                if node in self._movers:
                    env[node.outputs[0]] = _moving(node, args, kernel=self._movers[node])
                else:
                    env[node.outputs[0]] = KERNELS[op_key(node)](node, args)
            except (ValueError, IndexError, TypeError, AttributeError) as err:
                # A layout the exact kernel was not written for: exact mode cannot run this model.
                raise UnsupportedModelError(f"{describe(node)}: exact mode cannot compute it ({type(err).__name__}: {err})") from err
        return {v.name: _constant_exact(env[v]) for v in self.model.graph.outputs}
