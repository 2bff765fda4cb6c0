"""`integer-requant`: quantizers with any scales -> integer codes and proven dyadic requantizations.

A quantizer whose scale is not a power of two has no fixed-point type. This pass moves such scales
out of the data: every value downstream of one carries integers v, and its real value is
`scale * v + offset` (exact rationals per element, tracked here, not computed). Weights become
their integer codes, rescales by constants (Mul, Div, a BatchNormalization, a float bias) change
only the tracked scale and offset, and at the next quantizer the exact meaning

    code = R(clip(g(r * v + t)))        r = scale / s, t = offset / s, g a pending Relu or nothing

becomes a multiply-add `(v * m + c) / 2^e` whose codes are **proven** equal to the exact meaning's
for every v the interval analysis allows (`hawqc.ir.dyadic_requant`), with the fewest bits of m:

    Mul(v, m/2^e) [-> Add(c/2^e)] [-> Relu] -> Quant(scale 1, or s when s is a power of two)

What the pass keeps exact is the exact meaning (`hawqc.sim.exact`), not semantic mode's float32
arithmetic: float32 rounds some products and quotients of the original graph near a rounding
boundary, and the rewritten graph's products of m/2^e differently. Hardware mode of the result
computes the exact meaning; `--verify` reports the float32 difference.

Interfaces (`hawqc.ir.interfaces`): a graph input that reaches a non-power-of-two quantizer
through constant rescales (`Mul`, `Div`, `Add`, `Sub` by constants) becomes a port of that
quantizer's integer codes; the host computes them. A graph output reached with a scale or offset
that is not the identity is delivered as v, with its affine map recorded.

Refused, naming the node: a zero point other than 0, a quantizer reached with a pending Relu on a
negative scale, an op the pass has no rule for on a rescaled value (it could only compute it in
float), two rescaled values added with scales whose ratio is not dyadic, a requantization no dyadic
reproduces (naming the accumulator value and the tie), or integer codes beyond float32's 2^24.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.dyadic_requant import NoDyadic, Requantization, solve
from hawqc.ir.interfaces import InputCodes, OutputAffine, write_input, write_output
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import onnx_op, op_key
from hawqc.ir.ops.quantizer import INTEGER_QUANTIZERS, code_bounds, quantizer
from hawqc.ir.ops.window import Windows
from hawqc.ir.qtypes import power_of_two_exponent
from hawqc.passes.base import Pass, PassResult
from hawqc.sim import ops as sim_ops
from hawqc.sim.exact import Exact, ExactExecutor, conv_ints, matmul_ints

FLOAT32_EXACT_INT = 1 << 24
MULTIPLIER_BITS_KEY = "hawqc.requant.multiplier_bits"

COUNTERS = ("requantizations-made-dyadic", "input-code-ports", "output-affine-maps", "widest-multiplier-bits")

_frac = np.frompyfunc(lambda x: Fraction(float(x)) if not isinstance(x, Fraction) else x, 1, 1)


def _label(node: ir.Node) -> str:
    """A node's name, or its first output's where it has none (text IR leaves nodes unnamed)."""
    return node.name or node.outputs[0].name or node.op_type.lower()


def _objects(value, shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out[...] = value
    return out


def _fractions(array) -> np.ndarray:
    array = np.asarray(array)
    result = _frac(array)
    return result if isinstance(result, np.ndarray) else _objects(result, ())


def _is_power_of_two(values: np.ndarray) -> bool:
    return all(power_of_two_exponent(float(v)) is not None for v in np.asarray(values).reshape(-1))


def _is_dyadic(f: Fraction) -> bool:
    return f.denominator & (f.denominator - 1) == 0


def _float32_exact(values: np.ndarray) -> np.ndarray | None:
    """The Fractions as float32, or None where one is not a float32 exactly."""
    flat = [Fraction(v) for v in np.asarray(values, dtype=object).reshape(-1)]
    out = np.array([float(v) for v in flat], dtype=np.float32)
    if any(Fraction(float(o)) != v for o, v in zip(out, flat)):
        return None
    return out.reshape(np.shape(values))


@dataclass(frozen=True)
class Affine:
    """A rescaled value: real = relu?(scale * v + offset); v integers (times dyadics) in [lo, hi].
    Every array has the value's rank with a batch axis of size 1 and the per-sample dims."""

    scale: np.ndarray
    offset: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    relu: bool = False

    def full(self, dims: tuple[int, ...]) -> Affine:
        shape = (1, *dims)
        return Affine(*(np.broadcast_to(a, shape).copy() for a in (self.scale, self.offset, self.lo, self.hi)), self.relu)


class _Rewriter:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.names = FreshNames(self.graph)
        self.values: dict[ir.Value, Affine] = {}
        self.statistics: Counter = Counter()
        self.widths: list[int] = []
        self._exact = ExactExecutor.constants_of(model)

    # ---- helpers -------------------------------------------------------------------------------

    def constant(self, value: ir.Value | None) -> Exact | None:
        if value is None:
            return None
        known = self._exact.get(value)
        if known is None:
            return None
        return known if isinstance(known, Exact) else Exact.of_float(np.asarray(known))

    def dims(self, value: ir.Value, node: ir.Node) -> tuple[int, ...]:
        shape = value.shape
        if shape is None or any(not isinstance(d, int) for d in list(shape.dims)[1:]):
            raise UnsupportedModelError(f"{describe(node)}: the shape of {value.name!r} is unknown")
        return tuple(int(d) for d in list(shape.dims)[1:])

    def initializer(self, array: np.ndarray, name: str) -> ir.Value:
        value = make_initializer(np.asarray(array, dtype=np.float32), self.names(name))
        self.graph.register_initializer(value)
        return value

    def insert(self, before: ir.Node, op_type: str, inputs: list[ir.Value], name: str) -> ir.Value:
        node = ir.node(op_type, inputs, name=self.names(name))
        node.outputs[0].name = self.names(f"{node.name}_out")
        node.outputs[0].shape, node.outputs[0].type = inputs[0].shape, inputs[0].type
        self.graph.insert_before(before, node)
        return node.outputs[0]

    def bypass(self, node: ir.Node, source: ir.Value) -> None:
        """Replace a node that only rescaled by an Identity of `source`: its rescale is tracked, and
        the Identity's output carries the new tracking (`source` may have other readers)."""
        out = node.outputs[0]
        identity = ir.node("Identity", [source], name=self.names(f"{_label(node)}_rescaled"))
        result = identity.outputs[0]
        result.shape, result.type = out.shape, out.type
        self.graph.insert_before(node, identity)
        self.values[result] = self.values.pop(out)
        if out.is_graph_output():
            self.graph.outputs[self.graph.outputs.index(out)] = result
        ir.convenience.replace_all_uses_with(out, result)
        name = out.name
        out.name = self.names(f"{name}_rescaled_away")
        result.name = name
        self.graph.remove(node, safe=True)

    # ---- the walk -------------------------------------------------------------------------------

    def run(self) -> None:
        for node in list(self.graph):
            if node.graph is None:
                continue  # removed by an earlier rewrite
            if any(v in self.values for v in node.inputs if v is not None):
                self.rewrite(node)
            elif self.is_seed(node):
                self.seed(node)
        for value in list(self.graph.outputs):
            if value in self.values:
                self.finish_output(value)

    def is_seed(self, node: ir.Node) -> bool:
        """A quantizer of an activation whose scale is not a power of two."""
        if op_key(node) not in INTEGER_QUANTIZERS or not node.inputs or node.inputs[0] is None:
            return False
        view = quantizer(node)
        if view is None or view.is_bipolar or view.scale is None or self.constant(node.inputs[0]) is not None:
            return False
        return not _is_power_of_two(view.scale)

    def quant_parameters(self, node: ir.Node) -> tuple[np.ndarray, int, int, str]:
        view = quantizer(node)
        assert view is not None
        scale, zero, bits = view.scale, view.zero_point, view.bits
        if scale is None or zero is None or bits is None:
            raise UnsupportedModelError(f"{describe(node)}: scale, zero point and bit width must be constants")
        if np.any(zero != 0):
            raise UnsupportedModelError(f"{describe(node)}: a non-zero zero point is not supported")
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise UnsupportedModelError(f"{describe(node)}: scale {scale.reshape(-1).tolist()} is not positive")
        low, high = code_bounds(int(bits), view.signed, view.narrow)
        return scale, int(low), int(high), view.rounding_mode

    def seed(self, node: ir.Node) -> None:
        """A non-power-of-two quantizer of a float value: a graph input's becomes a port of codes."""
        scale, low, high, mode = self.quant_parameters(node)
        source, pre_scale, pre_offset, chain = self.input_chain(node.inputs[0])
        if source is None or scale.size != 1:
            raise UnsupportedModelError(
                f"{describe(node)}: scale {float(scale.reshape(-1)[0])!r} is not a power of two, and its input "
                f"{node.inputs[0].name!r} is computed in float (only a graph input, possibly rescaled by constants, "
                "can become a port of integer codes)"
            )
        view = quantizer(node)
        assert view is not None
        write_input(self.model, InputCodes(
            source.name, Fraction(float(scale.reshape(-1)[0])), int(view.bits), view.signed, view.narrow, mode,
            low, high, pre_scale, pre_offset,
        ))  # fmt: skip
        node.replace_input_with(0, source)
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{_label(node)}_unit_scale"))
        for removed in reversed(chain):
            if not any(True for _ in removed.outputs[0].uses()) and not removed.outputs[0].is_graph_output():
                self.graph.remove(removed, safe=True)
        dims = self.dims(node.outputs[0], node)
        s = _fractions(scale.astype(np.float64)).reshape((1,) * (len(dims) + 1))
        self.values[node.outputs[0]] = Affine(s, _objects(Fraction(0), s.shape), _objects(low, s.shape), _objects(high, s.shape))
        self.statistics["input-code-ports"] += 1

    def input_chain(self, value: ir.Value) -> tuple[ir.Value | None, Fraction, Fraction, list[ir.Node]]:
        """The graph input under a chain of scalar Mul/Div/Add/Sub by constants, with the chain's
        exact affine map x -> x * a + b, or None."""
        a, b, chain = Fraction(1), Fraction(0), []
        while not value.is_graph_input():
            producer = value.producer()
            if producer is None or op_key(producer) not in {onnx_op(o) for o in ("Mul", "Div", "Add", "Sub")}:
                return None, a, b, chain
            if len(list(value.uses())) != 1:
                return None, a, b, chain
            x, c = producer.inputs[0], producer.inputs[1]
            k = self.constant(c)
            if k is None and producer.op_type in ("Mul", "Add"):
                x, c = c, x
                k = self.constant(c)
            if k is None or x is None or k.ints.size != 1:
                return None, a, b, chain
            f = k.fractions().reshape(-1)[0]
            if producer.op_type == "Mul":
                a, b = a * f, b * f
            elif producer.op_type == "Div":
                if f == 0:
                    return None, a, b, chain
                a, b = a / f, b / f
            elif producer.op_type == "Add":
                b = b + f
            else:
                b = b - f
            chain.append(producer)
            value = x
        # The chain was walked from the quantizer up: compose it the other way round.
        a2, b2 = Fraction(1), Fraction(0)
        for producer in reversed(chain):
            k = self.constant(producer.inputs[1]) or self.constant(producer.inputs[0])
            f = k.fractions().reshape(-1)[0]
            a2, b2 = {"Mul": (a2 * f, b2 * f), "Div": (a2 / f, b2 / f), "Add": (a2, b2 + f), "Sub": (a2, b2 - f)}[producer.op_type]
        if len(list(value.uses())) != 1:
            return None, a, b, chain
        return value, a2, b2, chain

    # ---- rules ----------------------------------------------------------------------------------

    def rewrite(self, node: ir.Node) -> None:
        key = op_key(node)
        rule = RULES.get(key)
        if rule is None:
            which = next(v for v in node.inputs if v in self.values)
            raise UnsupportedModelError(
                f"{describe(node)}: its input {which.name!r} carries a quantization scale that is not a power of two, "
                f"and {node.op_type} has no exact integer form"
            )
        rule(self, node)

    def requantize(self, node: ir.Node) -> None:
        x = node.inputs[0]
        a = self.values[x]
        scale, low, high, mode = self.quant_parameters(node)
        dims = self.dims(x, node)
        a = a.full(dims)
        s = np.broadcast_to(_fractions(scale.astype(np.float64)).reshape((1,) * (len(dims) + 1 - scale.ndim) + scale.shape), a.scale.shape)
        r, t = a.scale / s, a.offset / s
        if a.relu and any(v < 0 for v in r.reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: a Relu before it acts on a negatively scaled value")
        solved: dict[tuple, tuple[int, int, int]] = {}
        m = np.empty(r.shape, dtype=object)
        c = np.empty(r.shape, dtype=object)
        for index in np.ndindex(r.shape):
            key = (r[index], t[index], int(a.lo[index]), int(a.hi[index]))
            if key not in solved:
                q = Requantization(key[0], key[1], key[2], key[3], low, high, mode, a.relu)
                try:
                    d = solve(q)
                except NoDyadic as refusal:
                    raise UnsupportedModelError(f"{describe(node)}: no dyadic requantization is exact: {refusal.reason}") from None
                solved[key] = d
                self.widths.append(d.mantissa_bits)
            d = solved[key]
            m[index], c[index] = d.multiplier, d.offset
        multiplier, offset = _float32_exact(m), _float32_exact(c)
        if multiplier is None or offset is None:
            raise UnsupportedModelError(f"{describe(node)}: the exact requantization needs a multiplier wider than float32's 24 bits")
        p2 = _is_power_of_two(scale)
        sigma = scale if p2 else np.ones_like(scale)
        sigma_full = np.broadcast_to(sigma.reshape((1,) * (len(dims) + 1 - sigma.ndim) + sigma.shape).astype(np.float32), multiplier.shape)
        multiplier = multiplier * sigma_full  # exact: sigma is a power of two
        offset = offset * sigma_full
        name = node.name or node.outputs[0].name
        value = self.insert(node, "Mul", [x, self.initializer(_compact(multiplier), f"{name}_dyadic_multiplier")], f"{name}_requant_mul")
        bits = max(solved_d.mantissa_bits for solved_d in solved.values())
        value.producer().metadata_props[MULTIPLIER_BITS_KEY] = str(bits)
        if np.any(offset != 0):
            value = self.insert(node, "Add", [value, self.initializer(_compact(offset), f"{name}_dyadic_offset")], f"{name}_requant_add")
        if a.relu:
            value = self.insert(node, "Relu", [value], f"{name}_relu")
        node.replace_input_with(0, value)
        node.replace_input_with(1, self.initializer(sigma, f"{name}_unit_scale" if not p2 else f"{name}_scale"))
        self.statistics["requantizations-made-dyadic"] += 1
        self.statistics["widest-multiplier-bits"] = max(self.statistics["widest-multiplier-bits"], bits)
        if not p2:
            out_dims = self.dims(node.outputs[0], node)
            shape = (1,) * (len(out_dims) + 1)
            lo, hi = _requantized_range(a, r, t, low, high, mode)
            self.values[node.outputs[0]] = Affine(
                _fractions(scale.astype(np.float64)).reshape((1,) * (len(out_dims) + 1 - scale.ndim) + scale.shape)
                if scale.size > 1 else _objects(Fraction(float(scale.reshape(-1)[0])), shape),
                _objects(Fraction(0), shape), lo, hi,
            )  # fmt: skip

    def finish_output(self, value: ir.Value) -> None:
        a = self.values[value]
        if a.relu:
            raise UnsupportedModelError(
                f"graph output {value.name!r}: a Relu of a rescaled value with a float offset ends the graph; "
                "add a quantizer before the output"
            )
        write_output(self.model, OutputAffine(value.name, a.scale, a.offset))
        self.statistics["output-affine-maps"] += 1


def _compact(array: np.ndarray) -> np.ndarray:
    """One number when all are equal, else the array reduced to size 1 along every axis it is
    constant along (a per-channel constant stays per channel)."""
    array = np.asarray(array, dtype=np.float32)
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0], dtype=np.float32)
    for axis in range(array.ndim):
        first = np.take(array, [0], axis=axis)
        if np.all(array == first):
            array = first
    return array


def _requantized_range(a: Affine, r, t, low: int, high: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    los, his = np.empty(r.shape, dtype=object), np.empty(r.shape, dtype=object)
    for index in np.ndindex(r.shape):
        q = Requantization(r[index], t[index], int(a.lo[index]), int(a.hi[index]), low, high, mode, a.relu)
        ends = (q.exact_code(q.lo), q.exact_code(q.hi))
        los[index], his[index] = min(ends), max(ends)
    return los, his


# ---- per-op rules ------------------------------------------------------------------------------------


def _data_and_constant(self: _Rewriter, node: ir.Node) -> tuple[ir.Value, Affine, Exact | None, int]:
    first, second = node.inputs[0], node.inputs[1]
    if first in self.values:
        return first, self.values[first], self.constant(second), 1
    return second, self.values[second], self.constant(first), 0


def _rescale(self: _Rewriter, node: ir.Node) -> None:
    """Mul / Div / Add / Sub by a constant: only the tracked scale and offset change."""
    x, a, k, index = _data_and_constant(self, node)
    if k is None:
        _add_rescaled(self, node)
        return
    dims = self.dims(node.outputs[0], node)
    f = k.fractions()
    f = f.reshape((1,) * (len(dims) + 1 - f.ndim) + f.shape) if f.ndim <= len(dims) + 1 else f
    a = a.full(dims)
    if node.op_type == "Mul":
        if a.relu and any(v < 0 for v in np.asarray(f).reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: multiplies a Relu'd rescaled value by a negative constant")
        new = replace(a, scale=a.scale * f, offset=a.offset * f)
    elif node.op_type == "Div":
        if index == 0 or any(v == 0 for v in np.asarray(f).reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: divides by a rescaled value or by zero")
        if a.relu and any(v < 0 for v in np.asarray(f).reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: divides a Relu'd rescaled value by a negative constant")
        new = replace(a, scale=a.scale / f, offset=a.offset / f)
    else:
        if a.relu:
            raise UnsupportedModelError(f"{describe(node)}: adds to a Relu of a value with a float offset")
        sign = -1 if node.op_type == "Sub" else 1
        if node.op_type == "Sub" and index == 0:  # c - x
            new = replace(a, scale=-a.scale, offset=f - a.offset)
        else:
            new = replace(a, offset=a.offset + sign * f)
    self.values[node.outputs[0]] = Affine(*(np.broadcast_to(v, (1, *dims)).copy() for v in (new.scale, new.offset, new.lo, new.hi)), new.relu)
    self.bypass(node, x)


def _add_rescaled(self: _Rewriter, node: ir.Node) -> None:
    """Add / Sub of two rescaled values: their scales must be equal (then the integers add)."""
    if node.op_type not in ("Add", "Sub") or any(v not in self.values for v in node.inputs):
        raise UnsupportedModelError(f"{describe(node)}: {node.op_type} of a rescaled value and a value computed in float")
    dims = self.dims(node.outputs[0], node)
    a, b = (self.values[v].full(dims) for v in node.inputs)
    if a.relu or b.relu:
        raise UnsupportedModelError(f"{describe(node)}: adds a Relu of a value with a float offset")
    if not np.all(a.scale == b.scale):
        raise UnsupportedModelError(
            f"{describe(node)}: adds values quantized with different scales ({float(a.scale.reshape(-1)[0]):.6g} and "
            f"{float(b.scale.reshape(-1)[0]):.6g}): requantize both to one scale first"
        )
    if node.op_type == "Add":
        self.values[node.outputs[0]] = Affine(a.scale, a.offset + b.offset, a.lo + b.lo, a.hi + b.hi)
    else:
        self.values[node.outputs[0]] = Affine(a.scale, a.offset - b.offset, a.lo - b.hi, a.hi - b.lo)


def _batch_norm(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    view = batch_norm(node)
    coefficients = view.coefficients()
    if coefficients is None or not view.inference_mode or view.channels_last:
        raise UnsupportedModelError(f"{describe(node)}: needs an inference-mode BatchNormalization with constant parameters")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    if a.relu:
        raise UnsupportedModelError(f"{describe(node)}: normalizes a Relu of a value with a float offset")
    shape = (1, -1) + (1,) * (len(dims) - 1)
    ca = _fractions(np.asarray(coefficients[0], dtype=np.float64)).reshape(shape)
    cb = _fractions(np.asarray(coefficients[1], dtype=np.float64)).reshape(shape)
    self.values[node.outputs[0]] = Affine(a.scale * ca, a.offset * ca + cb, a.lo, a.hi)
    self.bypass(node, x)


def _relu(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    if any(v < 0 for v in a.scale.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: Relu of a negatively scaled value")
    if a.relu:
        self.values[node.outputs[0]] = a
        self.bypass(node, x)
        return
    shift = a.offset / np.where(a.scale == 0, Fraction(1), a.scale)
    if all(v == 0 for v in a.offset.reshape(-1)):
        self.values[node.outputs[0]] = replace(a, lo=np.maximum(a.lo, 0), hi=np.maximum(a.hi, 0))
        return
    if all(_is_dyadic(v) for v in shift.reshape(-1)) and _float32_exact(shift) is not None:
        # relu(s * v + o) = s * relu(v + o/s) for s > 0: the offset is exact in the integers.
        value = self.insert(node, "Add", [x, self.initializer(_compact(_float32_exact(shift)), f"{_label(node)}_offset")], f"{_label(node)}_offset_add")
        node.replace_input_with(0, value)
        lo = np.frompyfunc(lambda v, o: v + o, 2, 1)(a.lo, shift)
        hi = np.frompyfunc(lambda v, o: v + o, 2, 1)(a.hi, shift)
        if not all(Fraction(v).denominator == 1 for v in np.concatenate([lo.reshape(-1), hi.reshape(-1)])):
            raise UnsupportedModelError(f"{describe(node)}: the offset before the Relu is not an integer in the accumulator's units")
        self.values[node.outputs[0]] = Affine(a.scale, _objects(Fraction(0), a.scale.shape), np.maximum(lo, 0), np.maximum(hi, 0))
        return
    # The offset is no dyadic multiple of the scale: the Relu waits for the next quantizer.
    self.values[node.outputs[0]] = replace(a, relu=True)
    self.bypass(node, x)


def _matmul(self: _Rewriter, node: ir.Node) -> None:
    x, w_value = node.inputs[0], node.inputs[1]
    if w_value in self.values or x not in self.values:
        raise UnsupportedModelError(f"{describe(node)}: a product of two computed values has no exact integer form here")
    w = self.constant(w_value)
    if w is None or w.ints.ndim != 2:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant matrix")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    _check_no_relu(node, a)
    # W_eff[k, j] = scale[k] * W[k, j]: factor each column into integers times one scale.
    scale_k = a.scale.reshape(-1, dims[-1])[0] if len(dims) == 1 else None
    if scale_k is None:
        raise UnsupportedModelError(f"{describe(node)}: MatMul on a rank-{len(dims) + 1} rescaled value")
    weight = w.fractions() * scale_k[:, None]
    ints, column_scale = _factor_columns(node, weight)
    offset = (a.offset.reshape(-1)[None, :] @ w.fractions()) if any(v != 0 for v in a.offset.reshape(-1)) else _objects(Fraction(0), (1, ints.shape[1]))
    lo_k, hi_k = a.lo.reshape(1, -1), a.hi.reshape(1, -1)
    lo, hi = _interval_matmul(lo_k, hi_k, ints)
    node.replace_input_with(1, self.initializer(ints.astype(np.float32), f"{_label(node)}_integer_weight"))
    self.values[node.outputs[0]] = Affine(column_scale.reshape(1, -1), np.asarray(offset, dtype=object).reshape(1, -1), lo, hi)


def _gemm(self: _Rewriter, node: ir.Node) -> None:
    attrs = {k: v.value for k, v in node.attributes.items()}
    if attrs.get("transA", 0):
        raise UnsupportedModelError(f"{describe(node)}: Gemm with transA on a rescaled value")
    w = self.constant(node.inputs[1])
    if w is None:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant")
    weight = w.fractions()
    if attrs.get("transB", 0):
        weight = weight.T
    weight = weight * Fraction(float(attrs.get("alpha", 1.0)))
    matmul = ir.node("MatMul", [node.inputs[0], self.initializer(np.zeros(weight.shape, np.float32), f"{_label(node)}_weight")], name=self.names(f"{_label(node)}_matmul"))
    matmul.outputs[0].name = self.names(f"{matmul.name}_out")
    matmul.outputs[0].shape = node.outputs[0].shape
    matmul.outputs[0].type = node.outputs[0].type
    self.graph.insert_before(node, matmul)
    self._exact[matmul.inputs[1]] = Exact(*_as_exact_parts(weight))
    _matmul(self, matmul)
    result = self.values[matmul.outputs[0]]
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = self.constant(node.inputs[2])
        if bias is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias must be a constant")
        beta = Fraction(float(attrs.get("beta", 1.0)))
        result = replace(result, offset=result.offset + np.broadcast_to(bias.fractions() * beta, result.offset.shape))
    self.values[node.outputs[0]] = result
    self.bypass(node, matmul.outputs[0])


def _as_exact_parts(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    den = 1
    for v in weight.reshape(-1):
        den = den * v.denominator // math.gcd(den, v.denominator)
    ints = np.frompyfunc(lambda v: int(v * den), 1, 1)(weight)
    return ints, _objects(Fraction(1, den), (1, 1))


def _factor_columns(node: ir.Node, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight[k, j] = ints[k, j] * scale[j], scale[j] the largest rational that keeps ints integers."""
    ints = np.empty(weight.shape, dtype=object)
    scales = np.empty(weight.shape[1], dtype=object)
    for j in range(weight.shape[1]):
        column = [Fraction(v) for v in weight[:, j]]
        nums = [v.numerator for v in column]
        dens = [v.denominator for v in column]
        lcm = 1
        for d in dens:
            lcm = lcm * d // math.gcd(lcm, d)
        g = 0
        for v in column:
            g = math.gcd(g, int(v * lcm))
        g = g or 1
        scale = Fraction(g, lcm)
        scales[j] = scale
        ints[:, j] = [int(v / scale) for v in column]
        del nums
    if max((abs(int(v)) for v in ints.reshape(-1)), default=0) >= FLOAT32_EXACT_INT:
        raise UnsupportedModelError(f"{describe(node)}: the integer weights exceed 2^24 (float32 would round them)")
    return ints.astype(np.int64), scales


def _interval_matmul(lo: np.ndarray, hi: np.ndarray, ints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positive, negative = np.maximum(ints, 0), np.minimum(ints, 0)
    lo_i = np.asarray(lo, dtype=object)
    hi_i = np.asarray(hi, dtype=object)
    low = matmul_ints(lo_i, positive) + matmul_ints(hi_i, negative)
    high = matmul_ints(hi_i, positive) + matmul_ints(lo_i, negative)
    return np.asarray(low, dtype=object), np.asarray(high, dtype=object)


def _check_no_relu(node: ir.Node, a: Affine) -> None:
    if a.relu:
        raise UnsupportedModelError(
            f"{describe(node)}: reads a Relu of a value whose float offset is no integer in its scale "
            "(a float bias before the Relu) without a quantizer in between"
        )


def _conv(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    if x not in self.values or any(v in self.values for v in node.inputs[1:] if v is not None):
        raise UnsupportedModelError(f"{describe(node)}: the weights must be constants")
    w = self.constant(node.inputs[1])
    if w is None:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    _check_no_relu(node, a)
    channels = dims[0]
    per_channel = a.scale.reshape(channels, -1)
    offsets = a.offset.reshape(channels, -1)
    if any(len(set(row)) != 1 for row in per_channel) or any(len(set(row)) != 1 for row in offsets):
        raise UnsupportedModelError(f"{describe(node)}: the input's scale varies within a channel")
    if any(v != 0 for v in offsets.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: the input has a float offset (a float bias before this Conv)")
    windows = Windows.read(node, tuple(w.ints.shape[2:]))
    group = windows.group
    cg = channels // group
    weight = w.fractions()  # [M, C/g, k...]
    out_channels = weight.shape[0]
    # W_eff[o, c, ...] = scale[input channel of (o, c)] * W[o, c, ...]; factor per output channel.
    in_scale = per_channel[:, 0]
    effective = np.empty(weight.shape, dtype=object)
    for o in range(out_channels):
        g = o // (out_channels // group)
        effective[o] = weight[o] * in_scale[g * cg : (g + 1) * cg].reshape((cg,) + (1,) * (weight.ndim - 2))
    flat = effective.reshape(out_channels, -1).T
    ints, scales = _factor_columns(node, flat)
    ints = ints.T.reshape(weight.shape)
    lo_c = np.asarray([min(row) for row in a.lo.reshape(channels, -1)], dtype=object)
    hi_c = np.asarray([max(row) for row in a.hi.reshape(channels, -1)], dtype=object)
    low, high = conv_ints(lo_c, hi_c, ints, group)
    pads = windows.pads_for(dims[1:])
    if any(pads):
        low, high = np.minimum(low, 0), np.maximum(high, 0)
    spatial = (1,) * (len(dims) - 1)
    offset = _objects(Fraction(0), (1, out_channels) + spatial)
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = self.constant(node.inputs[2])
        if bias is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias must be a constant")
        offset = bias.fractions().reshape((1, out_channels) + spatial)
        node.resize_inputs(2) if hasattr(node, "resize_inputs") else node.replace_input_with(2, None)
    node.replace_input_with(1, self.initializer(ints.astype(np.float32), f"{_label(node)}_integer_weight"))
    self.values[node.outputs[0]] = Affine(
        scales.reshape((1, out_channels) + spatial), offset,
        low.reshape((1, out_channels) + spatial), high.reshape((1, out_channels) + spatial),
    )  # fmt: skip


def _pool_max(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    channels = dims[0]
    for arr in (a.scale, a.offset):
        if any(len(set(row)) != 1 for row in arr.reshape(channels, -1)):
            raise UnsupportedModelError(f"{describe(node)}: the scale varies within a channel")
    if any(v <= 0 for v in a.scale.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: a maximum of a non-positively scaled value")
    out_dims = self.dims(node.outputs[0], node)
    per = lambda arr, f: np.asarray([f(row) for row in arr.reshape(channels, -1)], dtype=object).reshape((1, channels) + (1,) * (len(out_dims) - 1))  # noqa: E731
    self.values[node.outputs[0]] = Affine(per(a.scale, lambda r: r[0]), per(a.offset, lambda r: r[0]), per(a.lo, min), per(a.hi, max), a.relu)


def _move(self: _Rewriter, node: ir.Node) -> None:
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
    self.values[node.outputs[0]] = Affine(pick(a.scale), pick(a.offset), pick(a.lo), pick(a.hi), a.relu)


def _concat(self: _Rewriter, node: ir.Node) -> None:
    if any(v is not None and v not in self.values for v in node.inputs):
        raise UnsupportedModelError(f"{describe(node)}: concatenates a rescaled value with a value computed in float")
    axis_attr = node.attributes.get("axis")
    parts = [self.values[v].full(self.dims(v, node)) for v in node.inputs]
    if len({p.relu for p in parts}) != 1:
        raise UnsupportedModelError(f"{describe(node)}: concatenates values with and without a pending Relu")
    rank = parts[0].scale.ndim
    axis = int(axis_attr.value) % rank if axis_attr is not None else 0
    if axis == 0:
        raise UnsupportedModelError(f"{describe(node)}: Concat along the batch axis")
    joined = [np.concatenate([getattr(p, f) for p in parts], axis=axis) for f in ("scale", "offset", "lo", "hi")]
    self.values[node.outputs[0]] = Affine(*joined, parts[0].relu)


def _identity(self: _Rewriter, node: ir.Node) -> None:
    self.values[node.outputs[0]] = self.values[node.inputs[0]]


def _quant(self: _Rewriter, node: ir.Node) -> None:
    if node.inputs[0] not in self.values or any(v in self.values for v in node.inputs[1:] if v is not None):
        raise UnsupportedModelError(f"{describe(node)}: its parameters must be constants")
    view = quantizer(node)
    if view is None or view.is_bipolar:
        raise UnsupportedModelError(f"{describe(node)}: a binary quantizer of a rescaled value is not supported yet")
    self.requantize(node)


RULES = {
    **{key: _quant for key in INTEGER_QUANTIZERS},
    onnx_op("Mul"): _rescale,
    onnx_op("Div"): _rescale,
    onnx_op("Add"): _rescale,
    onnx_op("Sub"): _rescale,
    onnx_op("BatchNormalization"): _batch_norm,
    onnx_op("Relu"): _relu,
    onnx_op("MatMul"): _matmul,
    onnx_op("Gemm"): _gemm,
    onnx_op("Conv"): _conv,
    onnx_op("MaxPool"): _pool_max,
    onnx_op("GlobalMaxPool"): _pool_max,
    onnx_op("Reshape"): _move,
    onnx_op("Flatten"): _move,
    onnx_op("Transpose"): _move,
    onnx_op("Squeeze"): _move,
    onnx_op("Unsqueeze"): _move,
    onnx_op("Concat"): _concat,
    onnx_op("Identity"): _identity,
    onnx_op("Dropout"): _identity,
}


@dataclass(frozen=True)
class IntegerRequant(Pass):
    name: ClassVar[str] = "integer-requant"
    summary: ClassVar[str] = (
        "Quantizers with scales that are not powers of two -> integer codes, ports of codes, and proven "
        "fewest-bit dyadic requantizations (the exact meaning, not float32's, is kept)."
    )
    preserves: ClassVar[str] = "exact"

    def run(self, model: ir.Model) -> PassResult:
        rewriter = _Rewriter(model)
        rewriter.run()
        statistics = {key: rewriter.statistics[key] for key in COUNTERS}
        changed = any(rewriter.statistics[key] for key in COUNTERS[:3])
        return PassResult(changed, statistics)
