"""Exact fixed-point types for every value of a quantized graph, from quant parameters and intervals.

Each value gets an exact interval, kept per feature (along the last axis) as integers times one
power of two, so no rounding ever enters the analysis:
- a `Quant` on an activation gives its own type; its interval is the quantized input interval
  (quantization is monotonic, so quantizing the two bounds is exact);
- a `Quant` on a constant is evaluated (QONNX semantics, float32) and keeps the Quant's type;
- `MatMul(x, W)` with constant `W`: output column j lies in `sum_i [min, max](W_ij*lo_i, W_ij*hi_i)`,
  computed with the actual integer weights, at LSB = LSB(x) * LSB(W);
- `Add` adds intervals (aligning LSBs), `Relu` clamps the low end at zero.
The type of a value is the narrowest one holding its interval at its LSB: never narrower than
needed (no value can overflow it), never wider.

Accumulators are separate from results: hardware adds the products (and the bias) one by one in
some order, so the accumulator must hold every partial sum, not only the final one. For any order,
partial sums of column j lie in `[min(b_j,0) + sum_i min(tmin_ij, 0), max(b_j,0) + sum_i max(tmax_ij, 0)]`
where `[tmin_ij, tmax_ij]` is the interval of product i. When every product interval contains zero
(the usual case: quantized inputs include 0) this equals the result interval.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import is_quant
from hawqc.ir.qtypes import FixedType, power_of_two_exponent

# float32 holds every integer up to 2**24 exactly; QONNX semantics run in float32, so a value whose
# integer code (in units of its LSB) exceeds this may be rounded by the reference but not by hardware.
FLOAT32_EXACT_INT = 1 << 24


# ---- exact per-feature intervals --------------------------------------------------------------


@dataclass(frozen=True)
class _Bounds:
    """Values in [lo * 2**exp, hi * 2**exp]; lo/hi are int arrays of shape () or (features,)."""

    lo: np.ndarray
    hi: np.ndarray
    exp: int

    def at(self, exp: int) -> _Bounds:
        """The same interval on a finer grid (exp <= self.exp)."""
        factor = 1 << (self.exp - exp)
        return _Bounds(self.lo * factor, self.hi * factor, exp)

    def fractions(self) -> tuple[Fraction, Fraction]:
        step = Fraction(2) ** self.exp
        return Fraction(int(np.min(self.lo))) * step, Fraction(int(np.max(self.hi))) * step

    def fixed_type(self) -> FixedType:
        lo, hi = self.fractions()
        return FixedType.covering(lo, hi, self.exp)

    def max_abs_code(self) -> int:
        return max(abs(int(np.min(self.lo))), abs(int(np.max(self.hi))))


def _int_array(values: np.ndarray) -> np.ndarray:
    """Python-int object array: exact for any width (int64 could overflow on wide accumulators)."""
    return np.asarray(values).astype(object)


def _feature_bounds(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (last axis) min and max of an integer tensor; scalar if there is no feature axis."""
    codes = _int_array(codes)
    if codes.ndim == 0 or codes.shape[-1] == 1:
        return np.asarray(codes.min(), dtype=object), np.asarray(codes.max(), dtype=object)
    flat = codes.reshape(-1, codes.shape[-1])
    return flat.min(axis=0), flat.max(axis=0)


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


def _attr(node: ir.Node, name: str, default: int | str | None = None) -> int | str:
    attr = node.attributes.get(name)
    if attr is None:
        if default is None:
            raise UnsupportedModelError(f"{describe(node)}: missing attribute {name!r}")
        return default
    return attr.value


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
        raise UnsupportedModelError(f"{describe(node)}: bit width must be one integer, got {bitwidth!r}")
    for s in np.unique(scale):
        if power_of_two_exponent(float(s)) is None:
            raise UnsupportedModelError(f"{describe(node)}: scale {float(s)!r} is not a power of two")
    return QuantParams(
        scale=scale,
        zeropt=zeropt,
        bitwidth=int(bitwidth.reshape(())),
        signed=bool(_attr(node, "signed")),
        narrow=bool(_attr(node, "narrow")),
        rounding_mode=str(_attr(node, "rounding_mode", "ROUND")).upper(),
    )


def quant_type(node: ir.Node, params: QuantParams) -> FixedType:
    """The FixedType that performs this Quant; per-channel scales give the union of their types."""
    where = describe(node)
    types = [
        FixedType.from_quant(params.bitwidth, float(s), params.signed, params.narrow, params.rounding_mode, where=where)
        for s in np.unique(params.scale)
    ]
    result = types[0]
    for other in types[1:]:
        result = result.union(other)
    return result


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
    return _int_array(scaled.astype(np.int64) if np.max(np.abs(scaled), initial=0) < 2**62 else scaled)


def _finest_exponent(values: np.ndarray) -> int:
    """The LSB exponent of the finest grid a float tensor lies on (0 for an all-zero tensor)."""
    nonzero = values[np.nonzero(values)].astype(np.float64)
    if nonzero.size == 0:
        return 0
    mantissa, exponent = np.frexp(nonzero)
    # |mantissa| * 2**53 is an integer; its lowest set bit says how coarse each value's grid is.
    ints = np.abs(mantissa * 2.0**53).astype(np.int64)
    lowest_bit = np.log2((ints & -ints).astype(np.float64)).astype(np.int64)
    return int(np.min(exponent - 53 + lowest_bit))


# ---- the analysis -----------------------------------------------------------------------------


@dataclass
class PrecisionResult:
    """Types and intervals of every value (by name), and what the backend lowering needs besides.

    - `types[name]`: the exact type of the value (a Quant's own type, or the narrowest type holding
      the value's interval);
    - `intervals[name]`: the exact [lo, hi] over all elements;
    - `accumulators[name]`: for the output of a MatMul, or of an Add of a constant to a MatMul
      (a bias), the type that holds every partial sum of that dot product;
    - `constants[name]`: the value of each quantized (or plain) constant operand, exact, float64;
    - `float32_inexact`: values whose integer code exceeds 2**24, where float32 QONNX semantics may
      round while the fixed-point hardware does not (the two then differ; a verifier reports it).
    """

    types: dict[str, FixedType] = field(default_factory=dict)
    intervals: dict[str, tuple[Fraction, Fraction]] = field(default_factory=dict)
    accumulators: dict[str, FixedType] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    float32_inexact: set[str] = field(default_factory=set)

    def __getitem__(self, name: str) -> FixedType:
        return self.types[name]

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __iter__(self) -> Iterator[str]:
        return iter(self.types)

    def __len__(self) -> int:
        return len(self.types)


class _Analysis:
    def __init__(self, model: ir.Model) -> None:
        self.graph = model.graph
        self.result = PrecisionResult()
        self.bounds: dict[str, _Bounds] = {}
        # Per-column partial-sum hull of dot products, kept so that a following bias Add extends it.
        self.partial: dict[str, _Bounds] = {}

    def record(self, value: ir.Value, bounds: _Bounds, fixed: FixedType | None = None) -> None:
        name = value.name
        self.bounds[name] = bounds
        self.result.types[name] = fixed if fixed is not None else bounds.fixed_type()
        self.result.intervals[name] = bounds.fractions()

    def record_constant(self, value: ir.Value, data: np.ndarray, fixed: FixedType) -> None:
        codes = _exact_codes(data, fixed.lsb_exponent)
        lo, hi = _feature_bounds(codes)
        self.result.constants[value.name] = data.astype(np.float64)
        self.record(value, _Bounds(lo, hi, fixed.lsb_exponent), fixed)

    def operand(self, node: ir.Node, value: ir.Value | None) -> _Bounds:
        if value is None:
            raise UnsupportedModelError(f"{describe(node)}: missing input")
        if value.name in self.bounds:
            return self.bounds[value.name]
        data = _constant(value)
        if data is not None:
            return self.plain_constant(node, value, data)
        if value.is_graph_input():
            raise UnsupportedModelError(
                f"{describe(node)}: graph input {value.name!r} is used without a Quant (its range is unbounded)"
            )
        raise UnsupportedModelError(f"{describe(node)}: input {value.name!r} has no precision (unsupported producer)")

    def plain_constant(self, node: ir.Node, value: ir.Value, data: np.ndarray) -> _Bounds:
        """An unquantized constant operand: exact if every element is a short dyadic number."""
        if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
            raise UnsupportedModelError(f"{describe(node)}: constant {value.name!r} is not a finite number tensor")
        exp = _finest_exponent(data)
        codes = _exact_codes(data, exp)
        step = Fraction(2) ** exp
        fixed = FixedType.covering(Fraction(int(codes.min())) * step, Fraction(int(codes.max())) * step, exp)
        if fixed.width > 32:
            raise UnsupportedModelError(
                f"{describe(node)}: constant {value.name!r} is not quantized and needs {fixed.width} bits to be exact"
            )
        self.record_constant(value, data, fixed)
        return self.bounds[value.name]

    def run(self) -> PrecisionResult:
        for node in self.graph:
            handler = self.handler(node)
            handler(node)
        return self.result

    def handler(self, node: ir.Node) -> Callable[[ir.Node], None]:
        if is_quant(node.op_type, node.domain):
            return self.quant
        if node.domain in ("", "ai.onnx"):
            rule = {"MatMul": self.matmul, "Add": self.add, "Relu": self.relu}.get(node.op_type)
            if rule is not None:
                return rule
        raise UnsupportedModelError(f"{describe(node)}: no precision rule for this op")

    # ---- rules ------------------------------------------------------------------------------
    def quant(self, node: ir.Node) -> None:
        params = quant_params(node)
        fixed = quant_type(node, params)
        out = node.outputs[0]
        if params.bitwidth > 24:
            # qonnx computes the clamp bounds 2**(b-1) in float32; above 24 bits they are rounded.
            self.result.float32_inexact.add(out.name)
        x = node.inputs[0]
        data = _constant(x) if x is not None and x.name not in self.bounds else None
        if data is not None:
            self.record_constant(out, quantize_constant(data, params), fixed)
            return
        if params.scale.size != 1:
            raise UnsupportedModelError(f"{describe(node)}: per-channel scales on activations are not supported")
        scale_exp = fixed.lsb_exponent
        if x is not None and x.is_graph_input() and x.name not in self.bounds:
            # An unbounded float input: the Quant's own range.
            lo, hi = params.min_int, params.max_int
            self.record(out, _Bounds(np.asarray(lo, dtype=object), np.asarray(hi, dtype=object), scale_exp), fixed)
            return
        src = self.operand(node, x)
        step = Fraction(2) ** src.exp
        lo = np.vectorize(lambda c: _quantize_code(Fraction(int(c)) * step, params, scale_exp), otypes=[object])(src.lo)
        hi = np.vectorize(lambda c: _quantize_code(Fraction(int(c)) * step, params, scale_exp), otypes=[object])(src.hi)
        self.record(out, _Bounds(np.asarray(lo, dtype=object), np.asarray(hi, dtype=object), scale_exp), fixed)

    def matmul(self, node: ir.Node) -> None:
        a_value, w_value = node.inputs[0], node.inputs[1]
        if w_value is None or (w_value.name not in self.result.constants and _constant(w_value) is None):
            raise UnsupportedModelError(f"{describe(node)}: the right operand must be a constant (weights)")
        a = self.operand(node, a_value)
        w = self.operand(node, w_value)
        weights = self.result.constants[w_value.name]
        if weights.ndim != 2:
            raise UnsupportedModelError(f"{describe(node)}: weights must be 2-D, got shape {list(weights.shape)}")
        k, n = weights.shape
        w_codes = _exact_codes(weights, w.exp)
        a_lo = np.broadcast_to(a.lo, (k,)).reshape(k, 1)
        a_hi = np.broadcast_to(a.hi, (k,)).reshape(k, 1)
        p1, p2 = w_codes * a_lo, w_codes * a_hi
        t_min = np.minimum(p1, p2)
        t_max = np.maximum(p1, p2)
        exp = a.exp + w.exp
        out = node.outputs[0]
        self.record(out, _Bounds(t_min.sum(axis=0), t_max.sum(axis=0), exp))
        zero = np.zeros_like(t_min)
        partial = _Bounds(np.minimum(t_min, zero).sum(axis=0), np.maximum(t_max, zero).sum(axis=0), exp)
        self.partial[out.name] = partial
        self.note_accumulator(out, partial)

    def add(self, node: ir.Node) -> None:
        a_value, b_value = node.inputs[0], node.inputs[1]
        a = self.operand(node, a_value)
        b = self.operand(node, b_value)
        exp = min(a.exp, b.exp)
        a, b = a.at(exp), b.at(exp)
        out = node.outputs[0]
        self.record(out, _Bounds(a.lo + b.lo, a.hi + b.hi, exp))
        # A constant added to a dot product is its bias: the accumulator starts from it.
        for acc_value, bias_value, bias in ((a_value, b_value, b), (b_value, a_value, a)):
            if acc_value is None or bias_value is None or acc_value.name not in self.partial:
                continue
            if bias_value.name not in self.result.constants:
                continue
            partial = self.partial[acc_value.name].at(exp)
            zero = np.zeros_like(bias.lo)
            hull = _Bounds(partial.lo + np.minimum(bias.lo, zero), partial.hi + np.maximum(bias.hi, zero), exp)
            self.note_accumulator(out, hull)
            break
        self.check_float32(out)

    def relu(self, node: ir.Node) -> None:
        a = self.operand(node, node.inputs[0])
        zero = np.zeros_like(a.lo)
        self.record(node.outputs[0], _Bounds(np.maximum(a.lo, zero), np.maximum(a.hi, zero), a.exp))

    def note_accumulator(self, value: ir.Value, hull: _Bounds) -> None:
        self.result.accumulators[value.name] = hull.fixed_type()
        if hull.max_abs_code() > FLOAT32_EXACT_INT:
            self.result.float32_inexact.add(value.name)

    def check_float32(self, value: ir.Value) -> None:
        if self.bounds[value.name].max_abs_code() > FLOAT32_EXACT_INT:
            self.result.float32_inexact.add(value.name)


def infer_types(model: ir.Model) -> PrecisionResult:
    """Exact types of every value of `model` (nodes in topological order; see the module doc).

    Raises UnsupportedModelError, naming the node, for ops without a rule, non-power-of-two scales,
    non-zero zero points, rounding modes without a fixed-point equivalent, and unquantized inputs.
    """
    return _Analysis(model).run()

