"""`fold-quant`: fold quantizers of constants, drop redundant quantizers, merge float rescales.

Every rewrite keeps the semantic result bit for bit (float32 values and the sign of zero), for
every input, not only for typical ones; each says below why. What cannot be proven is left alone
and counted. Rewrites, with their statistics counters:

1. `quant-constants-folded`: `Quant` / `IntQuant` / `BipolarQuant` whose inputs are all constant
   becomes an initializer holding the quantizer's float32 output, computed by the semantic
   executor's own kernel (`hawqc.sim.quant`), so it is the same bits the Quant would give. The
   initializer takes the Quant's output name and a quantization annotation
   (`hawqc.ir.quant_annotation`: bits, signed, narrow, scale, zero point, rounding mode), so the
   integer grid stays known. Every reader of a shared Quant output reads the one initializer. A
   Quant whose output is a graph output stays (`quant-constants-kept-as-outputs`), as does one with a
   bit width that is not an integer (the annotation could not describe it).

2. Redundant quantizers are removed (`quants-merged`: the input comes straight from a quantizer;
   `quants-after-selection-removed`: through ops that only select or rearrange values;
   `range-checks-removed`: anything else, e.g. HAWQ's scale-1 Quant on an integer accumulator). A
   Quant Q is redundant when it maps every value that can reach it to itself. Two proofs:
   - By enumeration: when Q's input is a quantizer's output, possibly through Identity, Relu,
     Reshape, Flatten, Squeeze, Unsqueeze, Transpose, MaxPool, GlobalMaxPool, Resize (nearest),
     Concat, or Mul/Div/Add/Sub by a constant, the finite set of values that can reach Q is
     computed exactly (the upstream quantizer's whole integer range, -0.0 included where its
     rounding can produce it, carried through those ops with the executor's arithmetic, channel by
     channel), and Q is run on all of them: every result must equal its input bit for bit. Nothing
     is assumed about scales; at most `max-enumeration` values are tried (16-bit quantizers fit).
   - By ranges: Q has power-of-two scales and integer zero points, and an interval analysis proves
     that its input is a multiple of the largest scale and inside its clamp range (every value of
     a float32 computation is a multiple of a power of two that the analysis tracks: exact sums and
     products keep it, and a rounded result is still a multiple of it). Then `x / s + z` is an
     exact integer below 2^22, the clamp and every rounding mode leave its value alone, and
     `(q - z) * s` gives x back exactly, but for the sign of a zero (HALF_DOWN rounds +0.0 to -0.0):
     Q is run on the zeros that can reach it to see.
   Q may change the sign of a zero (`-0.0 / s + 0.0` is `+0.0`; HALF_DOWN's `ceil(+0.0 - 0.5)` is
   `-0.0`). It is then removed only if that sign cannot matter: every path from Q's output goes
   through ops that map inputs differing only in the sign of zeros to outputs differing only in the
   sign of zeros (Relu, pools, shape ops, Add, Sub, Mul, MatMul, Conv, Div...) and ends in one that
   forgets the sign (a quantizer, a MultiThreshold, an Add of a constant without -0.0...), never in
   a graph output: the zero-sign analysis of `hawqc.ir.ops.zero_sign`, shared with fuse-bn.
   Otherwise Q stays (`quants-kept-sign-of-zero`). NaN inputs: Q is also run on NaNs of both signs
   and two payloads, and must return them unchanged.

3. `divs-to-muls`: `Div(x, c)` with c a constant whose elements are all +-2^k with 1/c a float32
   becomes `Mul(x, 1/c)`: x / c and x * (1/c) are the same real number, and both ops round it once,
   so they agree for every x (zeros, infinities and NaNs included). Any other divisor stays.

4. `muls-merged`: `Mul(Mul(x, c1), c2)` -> `Mul(x, c1*c2)` when one constant is all powers of two,
   c1*c2 is exact in float32, and the range analysis of x proves there is no overflow and no
   underflow: if c1 = 2^k, x*2^k is exact (x is a multiple of a grid g with g*2^k >= 2^-149 and
   |x*2^k| <= FLT_MAX), so both forms round x*c1*c2 once; if c2 = 2^k, every nonzero |x*c1| and
   |x*c1*2^k| stays at or above 2^-126 and below FLT_MAX, where scaling by 2^k commutes with
   rounding. `Mul(Mul(x, 3), 0.1)` or an x of unknown range stays (`mul-merges-refused`): double
   rounding differs from single rounding for some x.

5. `bias-adds-moved-past-scales`: `Mul(Add(acc, b), k)` -> `Add(Mul(acc, k), b*k)` (the
   requantization form `acc -> Mul(k) -> Add(b) -> Quant` the hls4ml lowering reads) when k is a
   positive power of two (per tensor or per channel), b*k is exact, and the range analysis proves
   that acc, b and acc + b scaled by k stay clear of overflow and on a grid >= 2^-149; then
   fl(acc + b) * k is exact and equals fl(acc*k + b*k) (scaling by 2^k commutes with the rounding
   of the sum, and a subnormal result is exact on that grid). k must be positive: for k < 0 an
   exact zero sum takes different signs in the two forms. Other k stay (`bias-add-moves-refused`).

6. `scales-moved-past-matmuls` / `scales-moved-past-convs`: `MatMul(Mul(x, c), W)` ->
   `Mul(MatMul(x, W), c)`, and `Conv(Mul(x, c), W, b)` -> `Mul(Conv(x, W, b / c), c)` (standard or
   channels-last Conv), for a scalar c > 0 that is a power of two and constant W (and b), when the
   range analysis proves every product and partial sum exact in both forms (all are multiples of
   grid(x) * grid(W) (and grid(b)) and stay below 2^24 times it), b / c exact, and the final scaling
   exact: both forms then compute c * (the exact sum), whatever order the kernel sums in; c > 0
   keeps every term's sign, so even an all-zero sum gets the same sign from the same kernel. With 4
   and 5 this turns HAWQ's `Div(x, s) -> MatMul(W_int) -> Add(b_int) -> Mul(s')` (or `Conv(W_int,
   b_int) -> Mul(s')`) with power-of-two scales into `MatMul(x, W_int) -> Mul(s'/s) -> Add(b_int*s')`.

Refused on purpose: moving the power of two of `Mul(acc, 2^e) -> Quant(s)` into the Quant's scale
(`Quant(acc, s * 2^-e)` outputs q * s * 2^-e, not q * s: the Mul would have to come back after it,
so nothing is gained); merging rescales of which neither is a power of two; dividing by anything
but a power of two; any rewrite needing a range bound on an unquantized input. The analyses stop
at quantizers and constants (value sets also 64 ops up), and their results are cached for one
sweep; removing a quantizer drops only the results below it, so a sweep stays linear in the number
of nodes (a chain of 20,000 `Relu -> Quant` blocks: seconds, not hours).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.ir.constants import make_initializer
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN
from hawqc.ir.grid import finest_exponent
from hawqc.ir.ops.keys import op_key, op_types
from hawqc.ir.ops.quantizer import BIPOLAR_QUANTIZER, CODE_QUANTIZERS, INTEGER_QUANTIZERS, quantizer
from hawqc.ir.ops.traits import Trait, keys_with, ops_with
from hawqc.ir.ops.zero_sign import ZeroSignAnalysis
from hawqc.ir.quant_annotation import annotate
from hawqc.passes.base import FixpointNotReached, Pass, PassResult, option
from hawqc.passes.rewrite import (
    Match,
    Op,
    QonnxOp,
    Rewriter,
    RewriteRule,
    Var,
    apply_rules,
)
from hawqc.sim import ops as sim_ops
from hawqc.sim import quant

FLT_MAX = float(np.finfo(np.float32).max)
SMALLEST_NORMAL = 2.0**-126
SMALLEST_SUBNORMAL = 2.0**-149
# Every float32 value is a multiple of 2^-149; a tensor of zeros is a multiple of anything (this
# stands for "anything" and keeps products of grids finite in float64).
ANY_GRID = 2.0**127
# Integers below this survive every rounding mode unchanged (HALF_UP adds 0.5 in float32).
EXACT_INTEGER_LIMIT = 2.0**22
# NaNs a redundant quantizer must return unchanged (both signs, the default and another payload).
NAN_PROBES = np.array([0x7FC00000, 0xFFC00000, 0x7FC00123, 0xFFD00001], dtype=np.uint32).view(np.float32)

SHAPE_OPS = ops_with(Trait.REARRANGES)


# ---------------------------------------------------------------------------------------------------
# Small numeric helpers
# ---------------------------------------------------------------------------------------------------


# Pass-local caches in `meta` (onnx_ir's never-serialized store), dropped at the end of a run:
# reading a tensor out of its protobuf, or a Quant's parameters, costs more than the analyses.
_ARRAY_CACHE = "hawqc.fold_quant.array"
_PARAMETER_CACHE = "hawqc.fold_quant.parameters"


def _float32_constant(value: ir.Value | None) -> np.ndarray | None:
    """The data of a float32 constant (an initializer that is not an overridable graph input)."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    tensor = value.const_value
    cached = value.meta.get(_ARRAY_CACHE)
    if cached is None or cached[0] is not tensor:
        cached = (tensor, tensor.numpy())
        value.meta[_ARRAY_CACHE] = cached
    array = cached[1]
    return array if array.dtype == np.float32 else None


def _drop_caches(graph: ir.Graph) -> None:
    for value in graph.initializers.values():
        value.meta.pop(_ARRAY_CACHE, None)
    for node in graph:
        node.meta.pop(_PARAMETER_CACHE, None)


def _scalar(array) -> float:
    """A one-element array (qonnx's bounds keep the bit width's shape, e.g. [1]) as a float."""
    return float(np.asarray(array).reshape(-1)[0])


def _is_float32(value: ir.Value | None) -> bool:
    return value is not None and value.dtype == ir.DataType.FLOAT


def _static_shape(value: ir.Value) -> tuple[int, ...] | None:
    if value.shape is None or not all(isinstance(d, int) for d in value.shape.dims):
        return None
    return tuple(value.shape.dims)


def _rank(value: ir.Value) -> int | None:
    return None if value.shape is None else len(value.shape)


def powers_of_two(array: np.ndarray) -> bool:
    """Whether every element is +-2^k (subnormal powers of two included)."""
    array = np.asarray(array, dtype=np.float64)
    if array.size == 0 or not np.all(np.isfinite(array)) or np.any(array == 0):
        return False
    mantissa, _ = np.frexp(np.abs(array))
    return bool(np.all(mantissa == 0.5))


def grid_of(array: np.ndarray) -> float:
    """The largest power of two that every element of a float32 array is a multiple of (the array
    as float32: its grid, `hawqc.ir.grid`, as a number; ANY_GRID when no element is finite and non-zero)."""
    exponent = finest_exponent(np.asarray(array, dtype=np.float32))
    return ANY_GRID if exponent is None else math.ldexp(1.0, exponent)


def _is_negative_zero(array: np.ndarray) -> np.ndarray:
    return (array == 0) & np.signbit(array)


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def _padded(array: np.ndarray, rank: int) -> np.ndarray | None:
    """`array` with leading 1-dims up to `rank` (how numpy broadcasting aligns it), or None."""
    if array.ndim > rank:
        return None
    return array.reshape((1,) * (rank - array.ndim) + array.shape)


# ---------------------------------------------------------------------------------------------------
# Facts: what the range analysis knows of every value a tensor takes (NaN aside)
# ---------------------------------------------------------------------------------------------------


# Codes `x / s + z` near zero, where a rounding can give -0.0: ROUND, CEIL and DOWN of small
# negatives, HALF_DOWN (ceil(y - 0.5)) of anything in [0, 0.5], even of +0.0. (-0.0 itself is no
# code when z = +0.0: `x / s + 0.0` is never -0.0.)
_NEAR_ZERO = np.array([0.0, -1e-3, 1e-3, -0.25, 0.25, -0.5, 0.5, -0.75, 0.75], dtype=np.float32)


def _rounds_to_negative_zero(bounds: quant.QuantBounds, mode: str) -> bool:
    """Whether a quantizer with z = +0.0 can round a code to -0.0 (qonnx clamps, then rounds)."""
    y = np.where(_NEAR_ZERO > bounds.max_int, bounds.max_int, _NEAR_ZERO).astype(np.float32)
    y = np.where(y < bounds.min_int, bounds.min_int, y).astype(np.float32)
    return bool(_is_negative_zero(quant.rounding_function(mode)(y)).any())


@dataclass(frozen=True)
class Facts:
    """Every non-NaN value lies in [lo, hi] (finite), is an integer multiple of `grid` (a power of
    two), and is never -0.0 unless `negative_zero`."""

    lo: float
    hi: float
    grid: float
    negative_zero: bool

    @property
    def magnitude(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def may_be_zero(self) -> bool:
        return self.lo <= 0 <= self.hi

    @property
    def may_be_positive(self) -> bool:  # +0.0 counts: what matters is the sign bit
        return self.hi > 0 or self.may_be_zero

    @property
    def may_be_negative(self) -> bool:
        return self.lo < 0 or self.negative_zero

    @staticmethod
    def of_array(array: np.ndarray) -> Facts | None:
        values = np.asarray(array, dtype=np.float32)
        finite = values[~np.isnan(values)]
        if finite.size == 0:
            return None
        if not np.all(np.isfinite(finite)):
            return None
        return Facts(
            float(finite.min()),
            float(finite.max()),
            max(grid_of(finite), SMALLEST_SUBNORMAL),
            bool(_is_negative_zero(finite).any()),
        )


def _facts_after_rounding(lo: float, hi: float, grid: float, negative_zero: bool, roundings: int) -> Facts | None:
    """Facts of a result whose exact value lies in [lo, hi] on `grid`, rounded `roundings` times.

    Exact when the bound fits 24 bits of the grid; otherwise widened by the rounding error. The grid
    holds either way: a rounded multiple of a power of two is still one.
    """
    grid = max(grid, SMALLEST_SUBNORMAL)
    magnitude = max(abs(lo), abs(hi))
    if magnitude > 2.0**24 * grid:
        slack = magnitude * roundings * 2.0**-23
        lo, hi = lo - slack, hi + slack
    if max(abs(lo), abs(hi)) > FLT_MAX / 2:
        return None  # could overflow: nothing is known
    return Facts(lo, hi, grid, negative_zero)


def _product_negative_zero(a: Facts, b: Facts) -> bool:
    """Whether a product of a value of `a` and one of `b` can be -0.0 (sign = XOR of signs)."""
    a_zero_neg, a_zero_pos = a.negative_zero, a.may_be_zero
    b_zero_neg, b_zero_pos = b.negative_zero, b.may_be_zero
    return (
        (a_zero_neg and b.may_be_positive)
        or (a_zero_pos and b.may_be_negative)
        or (b_zero_neg and a.may_be_positive)
        or (b_zero_pos and a.may_be_negative)
    )


def _product_facts(a: Facts, b: Facts) -> Facts | None:
    corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
    return _facts_after_rounding(min(corners), max(corners), a.grid * b.grid, _product_negative_zero(a, b), 1)


# ---------------------------------------------------------------------------------------------------
# Enumerated value sets: every value that can reach a tensor, channel by channel
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValueSet:
    """`values[:, i...]` holds every value the tensor can take at positions that broadcast from
    index i... (shape [R, *dims], dims of the tensor's rank, 1 where all positions share a set)."""

    values: np.ndarray

    @property
    def per_tensor(self) -> bool:
        return all(d == 1 for d in self.values.shape[1:])

    def with_rank(self, rank: int) -> ValueSet | None:
        if not self.per_tensor:
            return None
        return ValueSet(self.values.reshape((self.values.shape[0],) + (1,) * rank))

    def deduplicated(self) -> ValueSet:
        rows = self.values.reshape(self.values.shape[0], -1)
        _, keep = np.unique(_bits(rows), axis=0, return_index=True)
        return ValueSet(self.values[np.sort(keep)])


def quantizer_values(node: ir.Node, rank: int, limit: int) -> ValueSet | None:
    """Every value a Quant / IntQuant / BipolarQuant of float32 data can output (a superset)."""
    if op_key(node) == BIPOLAR_QUANTIZER:
        scale = _float32_constant(node.inputs[1])
        if scale is None or (scale := _padded(scale, rank)) is None:
            return None
        signs = np.array([-1.0, 1.0], dtype=np.float32).reshape((2,) + (1,) * rank)
        return ValueSet(np.asarray(signs * scale[None]))
    parameters = _quant_parameters(node)
    if parameters is None:
        return None
    scale, zeropt, bounds, rounding_mode = parameters
    scale, zeropt = _padded(scale, rank), _padded(zeropt, rank)
    if scale is None or zeropt is None:
        return None
    if bounds.bipolar:
        integers = np.array([-1.0, 1.0], dtype=np.float32)
    else:
        low, high = math.ceil(_scalar(bounds.min_int)), math.floor(_scalar(bounds.max_int))
        try:
            cells = int(np.prod(np.broadcast_shapes(scale.shape, zeropt.shape)))
        except ValueError:
            return None
        if (high - low + 2) * cells > limit:
            return None
        integers = np.arange(low, high + 1, dtype=np.float64).astype(np.float32)
        # A code rounded to -0.0 (np.round(-0.3) is -0.0; HALF_DOWN rounds [0, 0.5] to -0.0 too).
        if _rounds_to_negative_zero(bounds, rounding_mode) or bool(_is_negative_zero(zeropt).any()):
            integers = np.append(integers, np.float32(-0.0))
    q = integers.reshape((-1,) + (1,) * rank)
    # The tail of qonnx's int_quant, in its order and dtypes: (q - zeropt) * scale, as float32.
    out = np.asarray((q - zeropt[None]) * scale[None], dtype=np.float32)
    return ValueSet(out)


def _elementwise_upstream(node: ir.Node) -> tuple[ir.Value, np.ndarray, bool] | None:
    """An Add/Sub/Mul/Div of one float32 constant: (the other input, the constant, whether the
    other input comes first), or None."""
    a, b = node.inputs
    constant_b, constant_a = _float32_constant(b), _float32_constant(a)
    if constant_b is not None and constant_a is None and a is not None:
        return a, constant_b, True
    if constant_a is not None and constant_b is None and b is not None:
        return b, constant_a, False
    return None


def _quant_parameters(node: ir.Node):
    """(scale, zeropt, bounds, rounding mode) of a Quant with float32 constant parameters."""
    key = tuple(None if v is None else v.const_value for v in node.inputs[1:])
    cached = node.meta.get(_PARAMETER_CACHE)
    if cached is not None and len(cached[0]) == len(key) and all(a is b for a, b in zip(cached[0], key)):
        return cached[1]
    parameters = _read_quant_parameters(node)
    node.meta[_PARAMETER_CACHE] = (key, parameters)
    return parameters


def _read_quant_parameters(node: ir.Node):
    view = quantizer(node)
    parameters = None if view is None else view.integer_parameters(_float32_constant)
    if parameters is None:
        return None
    scale, zeropt, bitwidth = parameters
    if not np.all(np.isfinite(scale)) or not np.all(np.isfinite(zeropt)):
        return None
    if quant.rounding_function(view.rounding_mode) is None:
        return None
    # qonnx's bounds in the bit width tensor's own dtype (`hawqc.sim.quant`), not from `view.bits`.
    return scale, zeropt, quant.quant_bounds(bitwidth, view.signed, view.narrow), view.rounding_mode


def _apply_quant(node: ir.Node, x: np.ndarray) -> np.ndarray:
    """The node's own quantizer (the executor's arithmetic) applied to `x`."""
    if op_key(node) == BIPOLAR_QUANTIZER:
        return quant.bipolar_quant(x, _float32_constant(node.inputs[1]))
    scale, zeropt, bounds, mode = _quant_parameters(node)
    return quant.int_quant(x, scale, zeropt, bounds, quant.rounding_function(mode))


# ---------------------------------------------------------------------------------------------------
# The analyses
# ---------------------------------------------------------------------------------------------------

def _bottom_up(value: ir.Value, cache: dict, inputs_of, compute):
    """`cache[value]`, computing first every uncached value it needs (`inputs_of`), each by
    `compute` once its inputs are cached: iterative, so a long chain of ops with no quantizer does
    not hit Python's recursion limit."""
    stack = [value]
    while stack:
        current = stack[-1]
        if current in cache:
            stack.pop()
            continue
        missing = [v for v in inputs_of(current) if v not in cache]
        if missing:
            stack.extend(missing)
            continue
        stack.pop()
        cache[current] = compute(current)
    return cache[value]


# A value set is enumerated through at most this many ops from the quantizers it starts at (the
# sets of a long chain of ops would all be held at once; beyond it the range facts take over).
MAX_SET_DEPTH = 64


@dataclass
class Analysis:
    """Range facts, value sets and sign-of-zero relevance (`hawqc.ir.ops.zero_sign`) of the values
    of one graph, computed on demand and cached.

    Facts, value sets and `from_quantizer` of a value depend only on the nodes above it, so a
    rewrite makes stale only the entries of the values below the outputs it replaces:
    `forget_below(value)` drops those (the cached ones, and their cached readers: every cached
    entry's inputs are cached, so the walk stops where nothing is), which keeps a sweep linear
    where dropping everything made it quadratic on long chains. Sign-of-zero relevance depends on
    the nodes below, so it is dropped whole; `forget()` drops everything (between sweeps). The
    rescale rules drop nothing within a sweep (as before): nodes are visited in topological order,
    so what a rewrite there could make stale is not asked again in that sweep.
    """

    graph: ir.Graph
    enumeration_limit: int
    _facts: dict[ir.Value, Facts | None] = field(default_factory=dict)
    _sets: dict[ir.Value, ValueSet | None] = field(default_factory=dict)
    # The most ops between a value and the quantizers its (non-None) value set starts at.
    _set_depths: dict[ir.Value, int] = field(default_factory=dict)
    _from_quantizer: dict[ir.Value, bool] = field(default_factory=dict)
    zero_sign: ZeroSignAnalysis = field(default_factory=ZeroSignAnalysis)

    def forget(self) -> None:
        self._facts.clear()
        self._sets.clear()
        self._set_depths.clear()
        self._from_quantizer.clear()
        self.zero_sign.forget()

    def forget_below(self, value: ir.Value) -> None:
        """Drop what a rewrite of `value`'s producer can change: the cached entries of `value` and
        of everything computed from it, and all sign-of-zero relevance."""
        self.zero_sign.forget()
        stack = [value]
        while stack:
            current = stack.pop()
            known = current in self._facts or current in self._sets or current in self._from_quantizer
            if not known and current is not value:
                continue
            for cache in (self._facts, self._sets, self._set_depths, self._from_quantizer):
                cache.pop(current, None)
            stack.extend(out for node, _ in current.uses() for out in node.outputs)

    # -- value sets ---------------------------------------------------------------------------

    def value_set(self, value: ir.Value) -> ValueSet | None:
        return _bottom_up(value, self._sets, self._set_inputs, self._compute_set)

    def _set_inputs(self, value: ir.Value) -> list[ir.Value]:
        """The values whose sets `_set_through(value)` reads."""
        node = value.producer()
        if node is None or _rank(value) is None or not _is_float32(value) or op_key(node) in CODE_QUANTIZERS:
            return []
        if node.domain == "" and node.op_type == "Concat":
            return [v for v in node.inputs if v is not None]
        if not node.inputs or node.inputs[0] is None:
            return []
        if node.domain == "" and node.op_type in ("Mul", "Div", "Add", "Sub") and len(node.inputs) == 2:
            upstream = _elementwise_upstream(node)
            return [] if upstream is None else [upstream[0]]
        return [node.inputs[0]]

    def _compute_set(self, value: ir.Value) -> ValueSet | None:
        node = value.producer()
        rank = _rank(value)
        if node is None or rank is None or not _is_float32(value):
            return None
        inputs = self._set_inputs(value)
        if any(self._sets[v] is None for v in inputs):
            return None
        depth = 1 + max((self._set_depths[v] for v in inputs), default=-1)
        if depth > MAX_SET_DEPTH:
            return None
        found = self._set_through(node, value, rank)
        if found is not None and found.values.size > self.enumeration_limit:
            found = None
        if found is not None and found.per_tensor:
            found = found.deduplicated()
        if found is not None:
            self._set_depths[value] = depth
        return found

    def _set_through(self, node: ir.Node, value: ir.Value, rank: int) -> ValueSet | None:
        """The set of `value` from the (computed) sets of its producer's inputs."""
        op, domain = node.op_type, node.domain
        if op_key(node) in CODE_QUANTIZERS:
            if _is_float32(node.inputs[0]):
                return quantizer_values(node, rank, self.enumeration_limit)
            return None
        if domain == "" and op == "Concat":
            parts = [self._sets[v] for v in node.inputs if v is not None]
            if len(parts) != len(node.inputs) or any(p is None or not p.per_tensor for p in parts):
                return None
            return ValueSet(np.concatenate([p.with_rank(rank).values for p in parts]))
        if not node.inputs or node.inputs[0] is None:
            return None
        source = node.inputs[0]
        if domain == "" and op in ("Mul", "Div", "Add", "Sub") and len(node.inputs) == 2:
            return self._set_elementwise(node, rank)
        upstream = self._sets[source]
        if upstream is None:
            return None
        if domain == "" and op == "Relu":
            v = upstream.values
            return ValueSet(np.where(v < 0, v.dtype.type(0), v))
        if domain == "" and op == "Identity":
            return upstream
        if domain == "" and op == "Transpose":
            perm = node.attributes.get_ints("perm", None)
            perm = list(reversed(range(rank))) if perm is None else list(perm)
            if len(perm) != rank or upstream.values.ndim != rank + 1:
                return None
            return ValueSet(upstream.values.transpose([0] + [p + 1 for p in perm]))
        if domain == "" and op in SHAPE_OPS:
            return upstream.with_rank(rank)
        if _selects_per_position(node, source, value, upstream):
            return upstream
        return None

    def _set_elementwise(self, node: ir.Node, rank: int) -> ValueSet | None:
        found = _elementwise_upstream(node)
        if found is None:
            return None
        source, constant, set_first = found
        upstream = self._sets[source]
        constant = _padded(constant, rank)
        if upstream is None or constant is None:
            return None
        function = {"Mul": np.multiply, "Div": np.divide, "Add": np.add, "Sub": np.subtract}[node.op_type]
        v, c = upstream.values, constant[None]
        if v.ndim - 1 < rank:  # the constant raised the rank: align the set's dims to the right
            v = v.reshape((v.shape[0],) + (1,) * (rank + 1 - v.ndim) + v.shape[1:])
        try:
            if np.prod(np.broadcast_shapes(v.shape, c.shape)) > self.enumeration_limit:
                return None
        except ValueError:
            return None  # shapes that do not broadcast: the executor would refuse the graph
        with np.errstate(all="ignore"):
            return ValueSet(np.asarray(function(v, c) if set_first else function(c, v), dtype=np.float32))

    # -- where a value comes from -------------------------------------------------------------

    def from_quantizer(self, value: ir.Value) -> bool:
        """Whether `value` is a quantizer's output, possibly through ops that only select or zero
        values (statistics only). Cached along the way, so a long chain is walked once."""
        path: list[ir.Value] = []
        current, answer = value, None
        while answer is None:
            if current in self._from_quantizer:
                answer = self._from_quantizer[current]
                continue
            path.append(current)
            producer = current.producer()
            if producer is not None and op_key(producer) in CODE_QUANTIZERS:
                answer = True
            elif producer is not None and op_key(producer) in _SELECTING and producer.inputs and producer.inputs[0] is not None:
                current = producer.inputs[0]
            else:
                answer = False
        for walked in path:
            self._from_quantizer[walked] = answer
        return answer

    # -- facts --------------------------------------------------------------------------------

    def facts(self, value: ir.Value | None) -> Facts | None:
        if value is None:
            return None
        return _bottom_up(value, self._facts, self._fact_inputs, self._compute_facts)

    def _fact_inputs(self, value: ir.Value) -> list[ir.Value]:
        """The values whose facts `_compute_facts(value)` reads."""
        if value.const_value is not None or not _is_float32(value):
            return []
        node = value.producer()
        if node is None or op_key(node) in CODE_QUANTIZERS:
            return []
        if self.value_set(value) is not None:
            return []
        return [v for v in node.inputs if v is not None and _is_float32(v)]

    def _compute_facts(self, value: ir.Value) -> Facts | None:
        if not _is_float32(value):
            return None
        constant = _float32_constant(value)
        if constant is not None:
            return Facts.of_array(constant)
        if value.const_value is not None:
            return None  # an overridable graph input
        node = value.producer()
        if node is None:
            return None  # a graph input: anything
        found = self.value_set(value)
        if found is not None:
            return Facts.of_array(found.values)
        if op_key(node) in INTEGER_QUANTIZERS:
            return self._quantizer_facts(node, value)
        return self._facts_through(node, value)

    def _quantizer_facts(self, node: ir.Node, value: ir.Value) -> Facts | None:
        """A wide quantizer (too many values to enumerate): its output range from the extremes."""
        parameters = _quant_parameters(node)
        if parameters is None or not _is_float32(node.inputs[0]):
            return None
        scale, zeropt, bounds, mode = parameters
        if bounds.bipolar:
            return None
        ends = np.array([_scalar(bounds.min_int), _scalar(bounds.max_int)], dtype=np.float32)
        shape = (2,) + (1,) * max(scale.ndim, zeropt.ndim)
        out = np.asarray((ends.reshape(shape) - zeropt[None]) * scale[None], dtype=np.float32)
        if not np.all(np.isfinite(out)):
            return None
        # q is an integer, q - z a multiple of min(1, grid(z)), times s a multiple of that * grid(s).
        grid = min(1.0, grid_of(zeropt)) * grid_of(scale)
        # -0.0 comes out of a negative scale, of a zero point of -0.0, or of a code q rounded to -0.0
        # where z = +0.0 (q - z keeps it).
        negative_zero = bool(np.any(scale < 0)) or bool(_is_negative_zero(zeropt).any())
        negative_zero = negative_zero or (bool(np.any(zeropt == 0)) and _rounds_to_negative_zero(bounds, mode))
        return Facts(float(out.min()), float(out.max()), max(grid, SMALLEST_SUBNORMAL), negative_zero)

    def _facts_through(self, node: ir.Node, value: ir.Value) -> Facts | None:
        op, domain = node.op_type, node.domain
        inputs = [self._facts.get(v) if v is not None else None for v in node.inputs]
        first = inputs[0] if inputs else None
        if domain == "" and op in SHAPE_OPS | {"MaxPool", "GlobalMaxPool"}:
            return first
        if domain == CHANNELS_LAST_DOMAIN and op in ("MaxPool", "GlobalMaxPool"):
            return first
        if domain == "" and op == "Resize":
            return first if _resize_selects(node) else None
        if domain == "" and op == "Relu" and first is not None:
            return Facts(max(first.lo, 0.0), max(first.hi, 0.0), first.grid, first.negative_zero)
        if domain == "" and op == "Concat":
            if any(f is None for f in inputs):
                return None
            return Facts(
                min(f.lo for f in inputs), max(f.hi for f in inputs), min(f.grid for f in inputs),
                any(f.negative_zero for f in inputs),
            )  # fmt: skip
        if domain == "" and op in ("Add", "Sub", "Mul", "Div") and len(inputs) == 2:
            return self._arithmetic_facts(node, inputs[0], inputs[1])
        if domain == "" and op == "MatMul" and len(inputs) == 2:
            return self._accumulation_facts(node, first, _float32_constant(node.inputs[1]), None, "MatMul")
        if domain in ("", CHANNELS_LAST_DOMAIN) and op == "Conv" and len(inputs) in (2, 3):
            bias = _float32_constant(node.inputs[2]) if len(inputs) == 3 else np.zeros(0, np.float32)
            return self._accumulation_facts(node, first, _float32_constant(node.inputs[1]), bias, "Conv")
        return None

    def _arithmetic_facts(self, node: ir.Node, a: Facts | None, b: Facts | None) -> Facts | None:
        op = node.op_type
        if op == "Div":
            divisor = _float32_constant(node.inputs[1])
            if a is None or divisor is None or not powers_of_two(divisor):
                return None
            reciprocal = Facts.of_array(np.float32(1) / divisor)
            return None if reciprocal is None else _product_facts(a, reciprocal)
        if a is None or b is None:
            return None
        if op == "Mul":
            return _product_facts(a, b)
        if op == "Add":
            return _facts_after_rounding(a.lo + b.lo, a.hi + b.hi, min(a.grid, b.grid),
                                         a.negative_zero and b.negative_zero, 1)  # fmt: skip
        # x - y is -0.0 only for x = -0.0 and y = +0.0.
        return _facts_after_rounding(a.lo - b.hi, a.hi - b.lo, min(a.grid, b.grid),
                                     a.negative_zero and b.may_be_zero, 1)  # fmt: skip

    def _accumulation_facts(
        self, node: ir.Node, x: Facts | None, weight: np.ndarray | None, bias: np.ndarray | None, kind: str
    ) -> Facts | None:
        """Facts of x @ W (W [K, N]) or Conv(x, W, b) (W [M, ...]: output channel first)."""
        if x is None or weight is None or bias is None and kind == "Conv":
            return None
        terms = _weights_per_output(weight, kind)
        if terms is None:
            return None
        # Each term w * x lies between w*lo and w*hi; a Conv's padding puts zeros in some terms.
        low = np.minimum(np.minimum(terms * x.lo, terms * x.hi), 0.0).sum(axis=1)
        high = np.maximum(np.maximum(terms * x.lo, terms * x.hi), 0.0).sum(axis=1)
        grid = x.grid * grid_of(weight)
        if bias is not None and bias.size:
            if bias.shape != (terms.shape[0],):
                return None
            low, high = low + bias, high + bias
            grid = min(grid, grid_of(bias))
        bound = _accumulation_bound(x, terms, bias)
        lo, hi = float(low.min(initial=0.0)), float(high.max(initial=0.0))
        grid = max(grid, SMALLEST_SUBNORMAL)
        if bound > 2.0**24 * grid:
            slack = bound * (terms.shape[1] + 2) * 2.0**-23
            lo, hi = lo - slack, hi + slack
        if max(abs(lo), abs(hi)) > FLT_MAX / 2:
            return None
        # A sum of zeros is -0.0 only if every term is; the kernel's order decides, so assume so.
        return Facts(lo, hi, grid, lo <= 0 <= hi)

    @staticmethod
    def exact_accumulation(x: Facts, weight: np.ndarray, bias: np.ndarray | None, kind: str, scale: float = 1.0) -> bool:
        """Whether every product and partial sum of MatMul/Conv(x * scale, W, b) is exact: all are
        multiples of one grid and stay below 2^24 times it (so no order of summation rounds)."""
        terms = _weights_per_output(weight, kind)
        if terms is None:
            return False
        grid = x.grid * grid_of(weight) * scale
        scaled = Facts(x.lo * scale, x.hi * scale, x.grid * scale, x.negative_zero)
        if bias is not None and bias.size:
            grid = min(grid, grid_of(bias))
        bound = _accumulation_bound(scaled, terms, bias)
        return grid >= SMALLEST_SUBNORMAL and bound <= 2.0**24 * grid and bound <= FLT_MAX / 2


def _resize_selects(node: ir.Node) -> bool:
    """Whether a Resize only copies input elements (nearest, and no extrapolated values)."""
    return (
        node.attributes.get_string("mode", "nearest") == "nearest"
        and node.attributes.get_string("coordinate_transformation_mode", "half_pixel") != "tf_crop_and_resize"
    )


def _weights_per_output(weight: np.ndarray, kind: str) -> np.ndarray | None:
    """The weights as [outputs, terms] (float64): MatMul's W [K, N] by column, a Conv's W by its
    first axis (the output channel, in both layouts)."""
    if kind == "MatMul":
        return weight.astype(np.float64).T if weight.ndim == 2 else None
    return weight.astype(np.float64).reshape(weight.shape[0], -1) if weight.ndim >= 3 else None


def _accumulation_bound(x: Facts, terms: np.ndarray, bias: np.ndarray | None) -> float:
    """The largest magnitude of any product or partial sum (bias included) of one output."""
    sums = np.abs(terms).sum(axis=1) * x.magnitude
    if bias is not None and bias.size:
        sums = sums + np.abs(bias.astype(np.float64))
    return float(sums.max(initial=0.0))


def _selects_per_position(node: ir.Node, source: ir.Value, value: ir.Value, upstream: ValueSet) -> bool:
    """Whether every output element of a pooling/resize node is one of its input elements at the
    same position along every axis where the value set varies (so the set carries over)."""
    op, domain = node.op_type, node.domain
    if domain == "" and op == "Resize":
        if not _resize_selects(node):
            return False
        pooled: set[int] = set()
    elif domain == "" and op in ("MaxPool", "GlobalMaxPool"):
        pooled = set(range(2, (_rank(value) or 0)))
    elif domain == CHANNELS_LAST_DOMAIN and op in ("MaxPool", "GlobalMaxPool"):
        pooled = set(range(1, (_rank(value) or 1) - 1))
    else:
        return False
    if upstream.per_tensor:
        return True
    shape_in, shape_out = _static_shape(source), _static_shape(value)
    if shape_in is None or shape_out is None or len(shape_in) != len(shape_out):
        return False
    for axis, extent in enumerate(upstream.values.shape[1:]):
        if extent != 1 and (axis in pooled or shape_in[axis] != shape_out[axis]):
            return False
    return True


# ---------------------------------------------------------------------------------------------------
# 1. Quantizers of constants
# ---------------------------------------------------------------------------------------------------


def fold_constant_quantizers(graph: ir.Graph, statistics: Counter) -> None:
    """Rewrite 1. One sweep in graph (topological) order folds chains of quantizers too."""
    for node in list(graph):
        if op_key(node) not in CODE_QUANTIZERS:
            continue
        view = quantizer(node)
        if any(v is None or v.const_value is None or v.is_graph_input() for v in node.inputs):
            continue
        output = node.outputs[0]
        if output.is_graph_output():
            statistics["quant-constants-kept-as-outputs"] += 1
            continue
        annotation = view.annotation()
        if annotation is None:
            continue
        constants = tuple(v.const_value.numpy() for v in node.inputs)
        builder = sim_ops.builder_for(node)
        with np.errstate(all="ignore"):
            (result,) = builder(sim_ops.NodeSpec(node, constants, declared_batch=None))(constants)
        result = np.asarray(result)
        if result.dtype != np.float32:
            continue  # BipolarQuant keeps numpy's promotion; the annotation speaks of float32 only
        initializer = make_initializer(result, output.name)
        annotate(initializer, annotation)
        ir.convenience.replace_all_uses_with(output, initializer)
        output.name = None  # the name moves to the initializer
        graph.register_initializer(initializer)
        graph.remove(node, safe=True)
        statistics["quant-constants-folded"] += 1


# ---------------------------------------------------------------------------------------------------
# 2. Redundant quantizers
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Whether a quantizer maps every value reaching it to itself: exactly, or but for zero signs."""

    identity: bool
    flips_zero_sign: bool = False


REFUSED = Verdict(False)


def _verdict(before: np.ndarray, after: np.ndarray) -> Verdict:
    before = np.broadcast_to(before, after.shape)
    differs = _bits(before) != _bits(after)
    if not differs.any():
        return Verdict(True)
    if np.all((before[differs] == 0) & (after[differs] == 0)):
        return Verdict(True, flips_zero_sign=True)
    return REFUSED


def _returns_unchanged(node: ir.Node, values: np.ndarray) -> bool:
    """Whether the quantizer returns each of `values` (a 1-D float32 array) bit for bit, in every
    channel of its parameters."""
    rank = max(np.ndim(v.const_value.numpy()) for v in node.inputs[1:] if v is not None and v.const_value is not None)
    probes = values.reshape((-1,) + (1,) * rank)
    with np.errstate(all="ignore"):
        out = _apply_quant(node, probes)
    return bool(np.all(_bits(out) == _bits(np.broadcast_to(probes, out.shape))))


def _keeps_nans(node: ir.Node) -> bool:
    """Whether the quantizer returns NaNs (both signs, two payloads) bit for bit."""
    return _returns_unchanged(node, NAN_PROBES)


def verdict_by_enumeration(node: ir.Node, found: ValueSet) -> Verdict:
    if _quant_parameters(node) is None:
        return REFUSED
    scale = _float32_constant(node.inputs[1])
    zeropt = _float32_constant(node.inputs[2])
    rank = found.values.ndim - 1
    if scale.ndim > rank or zeropt.ndim > rank:
        return REFUSED
    try:
        with np.errstate(all="ignore"):
            after = _apply_quant(node, found.values)
    except ValueError:
        return REFUSED  # parameters that do not broadcast against the values
    return _verdict(found.values, after)


def verdict_by_ranges(node: ir.Node, facts: Facts) -> Verdict:
    parameters = _quant_parameters(node)
    if parameters is None:
        return REFUSED
    scale, zeropt, bounds, _ = parameters
    if bounds.bipolar or not powers_of_two(scale) or np.any(scale < 0):
        return REFUSED
    if np.any(zeropt != np.round(zeropt)):
        return REFUSED
    s = scale.astype(np.float64)
    z = zeropt.astype(np.float64)
    if facts.grid < float(s.max()):
        return REFUSED  # some x / s would not be an integer
    low = np.broadcast_arrays(facts.lo / s + z)[0]
    high = np.broadcast_arrays(facts.hi / s + z)[0]
    if low.min() < _scalar(bounds.min_int) or high.max() > _scalar(bounds.max_int):
        return REFUSED
    if max(abs(float(low.min())), abs(float(high.max()))) >= EXACT_INTEGER_LIMIT:
        return REFUSED
    # Every value comes back, but a zero may change its sign: `-0.0 / s + 0.0` is +0.0, and HALF_DOWN
    # rounds +0.0 to ceil(-0.5) = -0.0, which `q - z` keeps when z = +0.0. The quantizer says which.
    return Verdict(True, flips_zero_sign=_changes_a_zero(node, facts))


def _changes_a_zero(node: ir.Node, facts: Facts) -> bool:
    """Whether the quantizer returns a zero that can reach it (+0.0, or -0.0) with the other sign."""
    zeros = [zero for zero, reaches in ((0.0, facts.may_be_zero), (-0.0, facts.negative_zero)) if reaches]
    return bool(zeros) and not _returns_unchanged(node, np.array(zeros, dtype=np.float32))


@dataclass
class RedundantQuantRule:
    """Rewrite 2 as a rewrite rule: the check proves redundancy and records which kind it was."""

    analysis: Analysis
    statistics: Counter

    def rule(self) -> RewriteRule:
        return RewriteRule("redundant-quant", QonnxOp(op_types(INTEGER_QUANTIZERS, QONNX_DOMAIN), name="quant"), self.replace)

    def replace(self, match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        node = match.root
        x, y = node.inputs[0], node.outputs[0]
        if x is None or not (_is_float32(x) and _is_float32(y)) or _quant_parameters(node) is None:
            return None
        shape_in, shape_out = _static_shape(x), _static_shape(y)
        if shape_in is None or shape_in != shape_out:
            return None  # parameters that broadcast the data to a larger shape
        if y.is_graph_output() and (x.is_graph_input() or x.is_initializer() or x.is_graph_output()):
            return None  # the interface needs both names
        verdict = REFUSED
        found = self.analysis.value_set(x)
        if found is not None:
            verdict = verdict_by_enumeration(node, found)
        if not verdict.identity:
            facts = self.analysis.facts(x)
            if facts is not None:
                verdict = verdict_by_ranges(node, facts)
        if not verdict.identity or not _keeps_nans(node):
            return None
        if verdict.flips_zero_sign and not self.analysis.zero_sign.unobservable(y):
            self.statistics["quants-kept-sign-of-zero"] += 1
            return None
        self.statistics[self._kind(x)] += 1
        self.analysis.forget_below(y)
        return [x]

    def _kind(self, x: ir.Value) -> str:
        producer = x.producer()
        if producer is not None and op_key(producer) in CODE_QUANTIZERS:
            return "quants-merged"
        if self.analysis.from_quantizer(x):
            return "quants-after-selection-removed"
        return "range-checks-removed"


# Ops through which a quantizer's values reach a redundant one unchanged or as zeros (statistics only).
_SELECTING = keys_with(Trait.SELECTS) | keys_with(Trait.SELECTS_OR_ZERO)


# ---------------------------------------------------------------------------------------------------
# 3-6. Rescales
# ---------------------------------------------------------------------------------------------------


def _exactly_scaled(facts: Facts, factor: np.ndarray) -> bool:
    """Whether x * factor is exact for every x of `facts` (factor: powers of two)."""
    f = np.abs(factor.astype(np.float64))
    return facts.grid * float(f.min()) >= SMALLEST_SUBNORMAL and facts.magnitude * float(f.max()) <= FLT_MAX / 2


def _exact_product(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """a * b in float32 if that is the exact product of every pair, else None."""
    with np.errstate(all="ignore"):
        product32 = np.asarray(a * b, dtype=np.float32)
    product64 = a.astype(np.float64) * b.astype(np.float64)
    if not np.all(np.isfinite(product32)) or not np.array_equal(product32.astype(np.float64), product64):
        return None
    return product32


@dataclass
class RescaleRules:
    analysis: Analysis
    statistics: Counter
    # Producers a rewrite bypassed (the inner Mul, the bias Add...): removed after the sweep if dead.
    bypassed: list[ir.Node] = field(default_factory=list)

    def remove_bypassed(self, graph: ir.Graph) -> None:
        for node in self.bypassed:
            if node.graph is graph and not any(out.uses() or out.is_graph_output() for out in node.outputs):
                graph.remove(node, safe=True)
        self.bypassed.clear()

    def rules(self) -> list[RewriteRule]:
        return [
            RewriteRule("divs-to-muls", Op("Div", inputs=(Var("x"), Var("c"))), self.div_to_mul),
            RewriteRule(
                "muls-merged",
                Op("Mul", inputs=(Op("Mul", inputs=(Var("x"), Var("c1")), name="inner"), Var("c2"))),
                self.merge_muls,
            ),
            RewriteRule(
                "bias-adds-moved-past-scales",
                Op("Mul", inputs=(Op("Add", inputs=(Var("acc"), Var("b")), name="add"), Var("k"))),
                self.move_bias_add,
            ),
            RewriteRule(
                "scales-moved-past-matmuls",
                Op("MatMul", inputs=(Op("Mul", inputs=(Var("x"), Var("c")), name="scale"), Var("w"))),
                self.move_scale_past_matmul,
            ),
            *(
                RewriteRule(
                    "scales-moved-past-convs",
                    Op("Conv", inputs=(Op("Mul", inputs=(Var("x"), Var("c")), name="scale"), Var("w")), domain=domain),
                    self.move_scale_past_conv,
                )
                for domain in ("", CHANNELS_LAST_DOMAIN)
            ),
        ]

    def div_to_mul(self, match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        x, c = match.value("x"), match.value("c")
        divisor = _float32_constant(c)
        if divisor is None or not _is_float32(x) or not powers_of_two(divisor):
            return None
        with np.errstate(all="ignore"):
            reciprocal = np.float32(1) / divisor
        if not np.all(np.isfinite(reciprocal)) or not np.array_equal(reciprocal.astype(np.float64) * divisor, np.ones(divisor.shape)):
            return None
        constant = rewriter.constant(np.asarray(reciprocal, dtype=np.float32), f"{c.name}_reciprocal")
        return [rewriter.op("Mul", [x, constant], name=_base_name(match.root))]

    def merge_muls(self, match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        x, inner = match.value("x"), match.node("inner")
        c1, c2 = _float32_constant(match.value("c1")), _float32_constant(match.value("c2"))
        if c1 is None or c2 is None or not _is_float32(x) or _has_other_readers(inner):
            return None
        if not (powers_of_two(c1) or powers_of_two(c2)):
            self.statistics["mul-merges-refused"] += 1
            return None
        combined = _exact_product(c1, c2)
        facts = self.analysis.facts(x)
        if combined is None or facts is None or not _merge_is_exact(facts, c1, c2):
            self.statistics["mul-merges-refused"] += 1
            return None
        constant = rewriter.constant(combined, f"{match.value('c2').name}_merged")
        self.bypassed.append(inner)
        return [rewriter.op("Mul", [x, constant], name=_base_name(match.root))]

    def move_bias_add(self, match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        acc, add = match.value("acc"), match.node("add")
        b, k = _float32_constant(match.value("b")), _float32_constant(match.value("k"))
        if b is None or k is None or _float32_constant(acc) is not None or _has_other_readers(add):
            return None
        if not _is_float32(acc) or _static_shape(add.outputs[0]) is None or _static_shape(acc) is None:
            return None
        if not powers_of_two(k) or np.any(k < 0):
            self.statistics["bias-add-moves-refused"] += 1
            return None
        facts, bias_facts = self.analysis.facts(acc), Facts.of_array(b)
        scaled_bias = _exact_product(b, k)
        if facts is None or bias_facts is None or scaled_bias is None or not self._bias_move_exact(facts, bias_facts, k):
            self.statistics["bias-add-moves-refused"] += 1
            return None
        base = _base_name(match.root)
        scaled = rewriter.op("Mul", [acc, match.value("k")], name=f"{base}_scale",
                             shape=_broadcast_ir_shape(acc, match.value("k")))  # fmt: skip
        bias = rewriter.constant(scaled_bias, f"{match.value('b').name}_scaled")
        self.bypassed.append(add)
        return [rewriter.op("Add", [scaled, bias], name=f"{base}_bias")]

    @staticmethod
    def _bias_move_exact(acc: Facts, bias: Facts, k: np.ndarray) -> bool:
        total = Facts(acc.lo + bias.lo, acc.hi + bias.hi, min(acc.grid, bias.grid), False)
        # The rounded sum may exceed the exact bound by one rounding.
        total = Facts(total.lo * (1 + 2.0**-22), total.hi * (1 + 2.0**-22), total.grid, False)
        return _exactly_scaled(acc, k) and _exactly_scaled(total, k)

    def move_scale_past_matmul(self, match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        return self._move_scale(match, rewriter, "MatMul")

    def move_scale_past_conv(self, match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        return self._move_scale(match, rewriter, "Conv")

    def _move_scale(self, match: Match, rewriter: Rewriter, kind: str) -> list[ir.Value] | None:
        """MatMul/Conv(Mul(x, c), W[, b]) -> Mul(MatMul/Conv(x, W[, b / c]), c) (rewrite 6)."""
        root = match.root
        x, scale_node, w = match.value("x"), match.node("scale"), match.value("w")
        c, weight = _float32_constant(match.value("c")), _float32_constant(w)
        bias_value = root.inputs[2] if kind == "Conv" and len(root.inputs) > 2 else None
        bias = _float32_constant(bias_value) if bias_value is not None else None
        if c is None or weight is None or _weights_per_output(weight, kind) is None or not _is_float32(x):
            return None
        if _has_other_readers(scale_node) or _float32_constant(x) is not None or (bias_value is not None and bias is None):
            return None
        if c.size != 1 or c.ndim > (_rank(x) or 0) or not powers_of_two(c) or float(c.reshape(())) < 0:
            self.statistics["scale-moves-refused"] += 1
            return None
        factor = float(c.reshape(()))
        facts = self.analysis.facts(x)
        moved_bias = None if bias is None else _exact_product(bias, np.float32(1.0 / factor))
        exact = (
            facts is not None
            and (bias is None or moved_bias is not None)
            and _exactly_scaled(facts, c)
            and self.analysis.exact_accumulation(facts, weight, bias, kind, factor)
            and self.analysis.exact_accumulation(facts, weight, moved_bias, kind)
            and _exactly_scaled(_scaled_sum_facts(facts, weight, moved_bias, kind), c)
        )
        if not exact:
            self.statistics["scale-moves-refused"] += 1
            return None
        base = _base_name(root)
        inputs = [x, w]
        if bias_value is not None:
            inputs.append(rewriter.constant(moved_bias, f"{bias_value.name}_unscaled"))
        attributes = {attr.name: attr for attr in root.attributes.values()}
        product = rewriter.op(kind, inputs, attributes, domain=root.domain, name=base)
        self.bypassed.append(scale_node)
        return [rewriter.op("Mul", [product, match.value("c")], name=f"{base}_scale")]


def _scaled_sum_facts(x: Facts, weight: np.ndarray, bias: np.ndarray | None, kind: str) -> Facts:
    """Grid and magnitude of an exact MatMul/Conv result (for checking that scaling it is exact)."""
    terms = _weights_per_output(weight, kind)
    bound = _accumulation_bound(x, terms, bias)
    grid = x.grid * grid_of(weight)
    if bias is not None and bias.size:
        grid = min(grid, grid_of(bias))
    return Facts(-bound, bound, max(grid, SMALLEST_SUBNORMAL), True)


def _merge_is_exact(x: Facts, c1: np.ndarray, c2: np.ndarray) -> bool:
    """Rewrite 4's condition (see the module docstring)."""
    if powers_of_two(c1) and _exactly_scaled(x, c1):
        return True
    if powers_of_two(c2):
        nonzero = np.abs(c1[c1 != 0].astype(np.float64))
        if nonzero.size == 0:
            return True  # x * 0 is a zero whose sign both forms compute alike
        p = np.abs(c2.astype(np.float64))
        smallest = x.grid * float(nonzero.min()) * min(1.0, float(p.min()))
        largest = x.magnitude * float(nonzero.max()) * max(1.0, float(p.max())) * (1 + 2.0**-22)
        return smallest >= SMALLEST_NORMAL and largest <= FLT_MAX / 2
    return False


def _base_name(node: ir.Node) -> str:
    """What new nodes replacing `node` are named after: its name, else its output's."""
    return node.name or node.outputs[0].name or node.op_type.lower()


def _has_other_readers(node: ir.Node) -> bool:
    output = node.outputs[0]
    return output.is_graph_output() or len(output.uses()) != 1


def _broadcast_ir_shape(a: ir.Value, b: ir.Value) -> ir.Shape | None:
    shape_a, shape_b = _static_shape(a), _static_shape(b)
    if shape_a is None or shape_b is None:
        return None
    try:
        return ir.Shape(list(np.broadcast_shapes(shape_a, shape_b)))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------------------

COUNTERS = (
    "quant-constants-folded",
    "quant-constants-kept-as-outputs",
    "quants-merged",
    "quants-after-selection-removed",
    "range-checks-removed",
    "quants-kept-sign-of-zero",
    "divs-to-muls",
    "muls-merged",
    "mul-merges-refused",
    "bias-adds-moved-past-scales",
    "bias-add-moves-refused",
    "scales-moved-past-matmuls",
    "scales-moved-past-convs",
    "scale-moves-refused",
)


@dataclass(frozen=True)
class FoldQuant(Pass):
    name: ClassVar[str] = "fold-quant"
    summary: ClassVar[str] = (
        "Fold quantizers of constants into annotated initializers, remove quantizers proven "
        "redundant, merge power-of-two rescales into the requantization form; exact rewrites only."
    )
    max_enumeration: int = option(1 << 20, "most values to try when proving a quantizer redundant by enumeration")
    max_sweeps: int = option(16, "most sweeps of the rescale and redundancy rules (an error to reach while rules still fire)")

    def run(self, model: ir.Model) -> PassResult:
        graph = model.graph
        statistics: Counter = Counter()
        fold_constant_quantizers(graph, statistics)
        analysis = Analysis(graph, self.max_enumeration)
        redundant = RedundantQuantRule(analysis, statistics)
        rescales = RescaleRules(analysis, statistics)
        rules = [redundant.rule(), *rescales.rules()]
        for _ in range(self.max_sweeps):
            # Refusal counters describe the final graph: count them on the last sweep only.
            refusals = {key: statistics[key] for key in _REFUSALS}
            fired = apply_rules(model, rules)
            rescales.remove_bypassed(graph)
            analysis.forget()
            for name, count in fired.items():
                if name in COUNTERS:  # (redundant quantizers count themselves, by kind)
                    statistics[name] += count
            if not any(fired.values()):
                break
            for key, count in refusals.items():
                statistics[key] = count
        else:
            _drop_caches(graph)
            changers = sorted(name for name, count in fired.items() if count)
            raise FixpointNotReached(
                f"the IR still changed after {self.max_sweeps} sweeps (the cap, option max-sweeps); "
                f"changed in the last one by: {', '.join(changers)}"
            )
        _drop_caches(graph)
        changed = any(statistics[key] for key in COUNTERS if key not in _REFUSALS and key != "quant-constants-kept-as-outputs")
        return PassResult(changed, {key: statistics[key] for key in COUNTERS})


_REFUSALS = frozenset(
    {"quants-kept-sign-of-zero", "mul-merges-refused", "bias-add-moves-refused", "scale-moves-refused"}
)

