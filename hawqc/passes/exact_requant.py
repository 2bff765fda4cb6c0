"""`exact-requant`: HAWQ-export requantization with arbitrary scales -> an exact dyadic multiply.

HAWQ's own exporter writes a layer and the next layer's input as float rescales (opset 11,
`hawq2qonnx`):

    Div(v, s_prev) -> MatMul(W_int) / Conv(W_int, b_int) -> Add(b_int)? -> Mul(k) -> Relu? -> Quant(s_a)
        -> (MaxPool / Flatten / Reshape / Transpose / ...)* -> Div(s_a) -> next layer

with `k = s_w * s_prev` and `s_a` arbitrary float32 scales. Precision inference needs power-of-two
quantizer scales, and `fold-quant` only rewrites power-of-two rescales. This pass proves, by
enumeration, that such a layer maps its integer accumulator `acc` to the next layer's integer code
as one dyadic multiply and a scale-1 quantizer would, and rewrites it so:

    ... -> Add(b_int)? -> Mul(D) -> Relu? -> Quant(scale 1) -> (selection ops)* -> next layer

`D = m * 2^-e` (fewest bits). Why it is exact, for every input:
- The codes `c` entering the layer are integers in a known range: the output of a scale-1 Quant
  (a layer this pass rewrote, or a lifted graph), or `Div(Quant(.., s_q), s_prev)` where every code q
  of that Quant is checked to come back from `(q * s_q) / s_prev` exactly, in float32.
- The weights (and biases) are integers (constants, or Quants of constants evaluated with the
  executor's kernel), and every partial sum of `acc` is bounded by `sum |W| * max|c| + |b| < 2^24`,
  so float32 computes `acc` exactly in any summation order. That bound gives an interval of `acc`
  (a superset of what can occur).
- The map `f(acc)` = what the original graph computes from `acc` up to each reading `Div(s_a)`
  (float32 Mul, Relu, the Quant's own kernel, float32 Div) is evaluated on every integer of that
  interval (and on -0.0). Every reading Div must give back an integer. Ops between the Quant and the
  Divs only select or move elements (MaxPool takes a maximum: `x -> x / s_a` is monotone, so
  the maximum of the quotients is the quotient of the maximum); they carry the codes unchanged.
- `D` is found from the steps of `f`: each (acc, code) pair allows an open interval of D
  (`code - 1/2 < acc * D < code + 1/2`, one-sided where the code is a clamp bound); the bounds are
  exact fractions taken at the ends of each step, and the dyadic with the smallest denominator
  strictly inside them is chosen, so no tie can decide a code.
- The rewrite is kept only if, on every acc of the interval, (1) the new graph in float32
  (`Quant1(Relu(fl32(acc * D)))`) equals `f(acc)` bit for bit, and (2) the exact product rounded half
  to even, relu'd and clamped (what the fixed-point hardware computes) equals it too.

Refused (counted; with `strict=true` an error naming the node): no dyadic D fits
(`requant-refused-no-dyadic`), an interval of acc larger than `max-enumeration`
(`requant-refused-too-large`), a reading Div that does not give back integers, or an accumulator
that float32 might round (`requant-refused-inexact`). A layer that does not have this shape (a
power-of-two Quant scale, which `fold-quant` handles; a Quant read by anything but selection ops
and Divs, e.g. a graph output) is left alone and not counted.

The last layer of a HAWQ export ends in `Mul(acc, s_w * s_prev)`, a float output: it stays as it is.
Its float32 product rounds where the fixed-point product is exact, so precision inference declares
it a float part (values whose codes exceed 2^24) and `--verify` reports it as such.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.names import FreshNames
from hawqc.passes.base import Pass, PassResult, option
from hawqc.passes.hawq_export_layers import (
    FLOAT32_EXACT_INT,
    Layer,
    constant,
    is_power_of_two,
    is_selection,
    match_layer,
    quant_params,
)

MAX_DENOMINATOR_BITS = 64

COUNTERS = (
    "requantizations-made-exact",
    "requant-refused-no-dyadic",
    "requant-refused-too-large",
    "requant-refused-inexact",
    "requant-refused-perturbed",
    "requant-refused-float-reader",
)


class Refusal(Exception):
    """A layer of the right shape that cannot be proven exact: (counter, reason)."""

    def __init__(self, counter: str, reason: str) -> None:
        super().__init__(reason)
        self.counter = counter




def _match(node: ir.Node, limit: int) -> Layer | None:
    """A layer with a non-power-of-two activation scale: a power-of-two one is fold-quant's."""
    params = quant_params(node)
    if params is None or is_power_of_two(float(params.scale.reshape(-1)[0])):
        return None
    return match_layer(node, limit)


def _accumulator_range(layer: Layer) -> tuple[int, int, float]:
    """(lo, hi, error): a superset [lo, hi] of the exact integer accumulator's values, and a bound on
    how far float32 can put the accumulator from it when the incoming codes are perturbed (0 when
    they are exact integers: every partial sum is then an exact integer below 2^24). Refusal if
    float32 might round a partial sum of integers."""
    lo_code, hi_code = layer.codes
    weight = layer.weight.astype(np.float64)
    if not np.array_equal(weight, np.round(weight)) or any(not np.array_equal(b, np.round(b)) for b in layer.biases):
        raise Refusal("requant-refused-inexact", "weights or biases are not integers")
    # Per output: sum of each product's range, widened to include 0 (padding, or codes near 0).
    per_output = weight.reshape(weight.shape[0], -1) if layer.core.op_type == "Conv" else weight.T
    low = np.minimum(np.minimum(per_output * lo_code, per_output * hi_code), 0).sum(axis=1)
    high = np.maximum(np.maximum(per_output * lo_code, per_output * hi_code), 0).sum(axis=1)
    bias_low = sum(float(np.min(np.minimum(b, 0))) for b in layer.biases)
    bias_high = sum(float(np.max(np.maximum(b, 0))) for b in layer.biases)
    magnitude = float(np.max(np.maximum(-low, high))) + sum(float(np.max(np.abs(b))) for b in layer.biases)
    if magnitude >= FLOAT32_EXACT_INT:
        raise Refusal("requant-refused-inexact", f"partial sums may reach {magnitude:.0f} >= 2^24, where float32 rounds")
    error = 0.0
    if layer.perturbation > 0:
        # Inputs c' = c + d with |d| <= delta: the exact sum moves by at most delta * sum|w|, and each
        # of the n products and n + #biases additions rounds by at most 2^-24 of the largest
        # magnitude involved (float32, round to nearest), with 1% on top for second-order terms.
        delta = layer.perturbation
        row_l1 = np.abs(per_output).sum(axis=1)
        terms = per_output.shape[1] + 2 + len(layer.biases)
        largest = magnitude + delta * float(np.max(row_l1))
        error = float(np.max(delta * row_l1)) + 1.01 * terms * largest * 2.0**-24
    return int(np.min(low) + bias_low), int(np.max(high) + bias_high), error


def _original(layer: Layer, acc: np.ndarray) -> np.ndarray:
    """What the graph computes from `acc` up to the Quant's output `q * s_a` (the executor's arithmetic)."""
    y = np.multiply(acc, layer.k.reshape(()))
    if layer.relu:
        y = np.where(y < 0, y.dtype.type(0), y)
    return layer.quant.apply(y)


def _rewritten(layer: Layer, acc: np.ndarray, d: np.float32) -> np.ndarray:
    y = np.multiply(acc, d)
    if layer.relu:
        y = np.where(y < 0, y.dtype.type(0), y)
    return layer.quant.apply(y, np.ones_like(layer.quant.scale))


def _hardware(layer: Layer, acc: np.ndarray, m: int, e: int) -> np.ndarray:
    """Exact fixed point: round_half_even(acc * m / 2^e), Relu, clamp to the Quant's codes."""
    n = acc * m
    q = n >> e
    if e > 0:
        rest = n - (q << e)
        half = 1 << (e - 1)
        q = q + ((rest > half) | ((rest == half) & (q % 2 == 1)))
    if layer.relu:
        q = np.maximum(q, 0)
    lo, hi = layer.quant.code_range
    return np.clip(q, lo, hi)


def _feasible_interval(layer: Layer, acc: np.ndarray, codes: np.ndarray) -> tuple[Fraction, Fraction | None]:
    """Exact bounds L < D < U that every (acc, code) pair allows (U None: unbounded)."""
    lo, hi = layer.quant.code_range
    lower, upper = Fraction(0), None
    change = np.flatnonzero(np.diff(codes) != 0)
    starts = np.concatenate(([0], change + 1))
    ends = np.concatenate((change, [len(codes) - 1]))
    endpoints = {int(i) for i in np.concatenate((starts, ends))} | set(np.flatnonzero(acc == 0).tolist())
    for zero in np.flatnonzero(acc == 0):  # runs are split at 0: bounds are monotone on each side
        endpoints |= {int(zero) - 1, int(zero) + 1}
    for i in sorted(endpoints):
        if not 0 <= i < len(acc):
            continue
        a, t = int(acc[i]), int(codes[i])
        if a == 0 or (layer.relu and a < 0):
            continue  # 0 * D = 0, and Relu makes every negative product 0: checked, not constrained
        below = None if t == lo else Fraction(2 * t - 1, 2)
        above = None if t == hi else Fraction(2 * t + 1, 2)
        first, second = (below, above) if a > 0 else (above, below)
        if first is not None:
            lower = max(lower, first / a)
        if second is not None:
            upper = second / a if upper is None else min(upper, second / a)
    return lower, upper


def _fewest_bits(lower: Fraction, upper: Fraction | None) -> tuple[int, int] | None:
    """(m, e) with lower < m / 2^e < upper and e smallest, m a float32 significand."""
    for e in range(MAX_DENOMINATOR_BITS):
        m = math.floor(lower * 2**e) + 1
        if upper is None or Fraction(m, 2**e) < upper:
            return (m, e) if m < FLOAT32_EXACT_INT else None
    return None


def prove(layer: Layer, limit: int) -> tuple[int, int]:
    """(m, e) of a dyadic D that makes the layer exact, or Refusal."""
    lo, hi, error = _accumulator_range(layer)
    if hi - lo + 1 > limit:
        raise Refusal("requant-refused-too-large", f"{hi - lo + 1} accumulator values to try, more than max-enumeration={limit}")
    acc_int = np.arange(lo, hi + 1, dtype=np.int64)
    acc = np.concatenate((acc_int.astype(np.float32), np.array([-0.0], dtype=np.float32)))
    target = _original(layer, acc)
    scale = layer.quant.scale.reshape(())
    # The Quant's integer codes (q * s_a is float32-exact enough for q < 2^22 to divide back in float64).
    code_values = np.round(target.astype(np.float64) / float(scale)).astype(np.float32)
    if not np.array_equal(np.asarray(code_values * scale, dtype=np.float32).view(np.uint32), target.view(np.uint32)):
        raise Refusal("requant-refused-inexact", "the Quant's outputs are not its codes times its scale")
    codes = code_values[:-1].astype(np.int64)
    if error > 0:
        # f is monotone (Mul by k > 0, Relu, Quant, Div by s > 0 all are): codes equal at both ends of
        # [acc - error, acc + error] (float32 just outside it) are the codes of every value inside.
        below = np.nextafter(np.float32(acc_int - error), np.float32(-np.inf))
        above = np.nextafter(np.float32(acc_int + error), np.float32(np.inf))
        if not (np.array_equal(_original(layer, below), target[:-1]) and np.array_equal(_original(layer, above), target[:-1])):
            raise Refusal(
                "requant-refused-perturbed",
                f"its input codes come back from the previous Div up to {layer.perturbation:.3g} off, which moves the "
                f"accumulator by up to {error:.3g} and changes a code near a rounding boundary",
            )
    found = _fewest_bits(*_feasible_interval(layer, acc_int, codes))
    if found is None:
        raise Refusal("requant-refused-no-dyadic", "no dyadic multiplier gives the same codes on every accumulator value")
    m, e = found
    d = np.float32(math.ldexp(m, -e))
    semantic = _rewritten(layer, acc, d)
    same_float = np.array_equal(semantic.view(np.uint32), code_values.view(np.uint32))
    if not same_float or not np.array_equal(_hardware(layer, acc_int, m, e), codes):
        raise Refusal("requant-refused-no-dyadic", f"the multiplier {m}/2^{e} rounds differently in float32 or fixed point")
    return m, e


def _round_trip_delta(layer: Layer) -> float:
    """Largest |(q * s_a) / s - q| over the Quant's codes q (s: the reading Divs' divisor)."""
    lo, hi = layer.quant.code_range
    codes = np.arange(lo, hi + 1, dtype=np.float32)
    values = np.asarray((codes - layer.quant.zeropt.reshape(())) * layer.quant.scale.reshape(()), dtype=np.float32)
    back = np.divide(values, layer.divisor.reshape(()))
    return float(np.max(np.abs(back.astype(np.float64) - codes)))


def _feeds_proven_core(div: ir.Node, cores: dict[ir.Node, ir.Node]) -> bool:
    """Whether everything reading `div` (through selection ops) is the data input of a proven layer."""
    pending = [div.outputs[0]]
    while pending:
        value = pending.pop()
        if value.is_graph_output():
            return False
        for user, index in value.uses():
            if is_selection(user) and index == 0:
                pending.append(user.outputs[0])
            elif not (user in cores and index == 0):
                return False
    return True


def _rewrite(graph: ir.Graph, layer: Layer, m: int, e: int) -> None:
    node = layer.quant.node
    name = node.name or node.outputs[0].name
    d = make_initializer(np.full(layer.k.shape, math.ldexp(m, -e), dtype=np.float32), f"{name}_dyadic_multiplier")
    one = make_initializer(np.ones(layer.quant.scale.shape, dtype=np.float32), f"{name}_unit_scale")
    names = FreshNames(graph)
    for value in (d, one):
        value.name = names(value.name)
        value.const_value.name = value.name
        graph.register_initializer(value)
    k_index = 1 if constant(layer.mul.inputs[1]) is not None else 0
    layer.mul.replace_input_with(k_index, d)
    node.replace_input_with(1, one)
    for div in layer.readers:
        ir.convenience.replace_all_uses_with(div.outputs[0], div.inputs[0])
        graph.remove(div, safe=True)


@dataclass(frozen=True)
class ExactRequant(Pass):
    name: ClassVar[str] = "exact-requant"
    summary: ClassVar[str] = (
        "HAWQ-export requantization with non-power-of-two scales (Mul(k) -> Relu? -> Quant(s_a) -> "
        "Div(s_a)) -> Mul(dyadic D) -> Relu? -> Quant(scale 1), proven bit-exact by enumeration."
    )
    max_enumeration: int = option(1 << 22, "most accumulator values to try for one layer")
    strict: bool = option(False, "refuse (error naming the node) a layer that cannot be proven exact, instead of leaving it")

    def run(self, model: ir.Model) -> PassResult:
        graph = model.graph
        statistics: Counter = Counter()
        # Prove every layer on the graph as it is, then rewrite: removing a Div changes what the next
        # layer reads (exact codes instead of perturbed ones), which its own proof must have covered.
        proven: dict[ir.Node, tuple[Layer, int, int]] = {}
        refused: list[tuple[ir.Node, Refusal]] = []
        for node in graph:
            layer = _match(node, self.max_enumeration)
            if layer is None:
                continue
            try:
                proven[node] = (layer, *prove(layer, self.max_enumeration))
            except Refusal as refusal:
                refused.append((node, refusal))
        cores = {layer.core: node for node, (layer, _, _) in proven.items()}
        for node, (layer, m, e) in proven.items():
            if _round_trip_delta(layer) > 0 and not all(_feeds_proven_core(div, cores) for div in layer.readers):
                refused.append((node, Refusal(
                    "requant-refused-float-reader",
                    "its codes do not come back exactly from the Div after it, and a reader of that Div is not a "
                    "requantized layer that absorbs the difference (e.g. the last layer's float output)",
                )))  # fmt: skip
                continue
            _rewrite(graph, layer, m, e)
            statistics["requantizations-made-exact"] += 1
        for node, refusal in refused:
            statistics[refusal.counter] += 1
            if self.strict:
                raise UnsupportedModelError(f"{describe(node)}: requantization not provably exact: {refusal}")
        return PassResult(statistics["requantizations-made-exact"] > 0, {key: statistics[key] for key in COUNTERS})
