"""integer-requant's rules for rescales by constants, sums, BatchNorm and Relu: they change what is tracked, not the integers."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.dyadic_requant import MAX_CHECKED
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import onnx_op, op_key
from hawqc.ir.ops.quantizer import INTEGER_QUANTIZERS, quantizer
from hawqc.ir.rationals import exact_fractions
from hawqc.passes.integer_requant.tracking import Affine, PendingSum, compact, float_exact, label, objects
from hawqc.sim.exact import Exact

if TYPE_CHECKING:
    from hawqc.passes.integer_requant.rewriter import Rewriter


def data_and_constant(self: Rewriter, node: ir.Node) -> tuple[ir.Value, Affine, Exact | None, int]:
    first, second = node.inputs[0], node.inputs[1]
    if first in self.values:
        return first, self.values[first], self.constant(second), 1
    return second, self.values[second], self.constant(first), 0


def rescale(self: Rewriter, node: ir.Node) -> None:
    """Mul / Div / Add / Sub by a constant: only the tracked scale and offset change."""
    x, a, k, index = data_and_constant(self, node)
    if k is None:
        add_rescaled(self, node)
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
    self.values[node.outputs[0]] = Affine(*(np.broadcast_to(v, (1, *dims)).copy() for v in (new.scale, new.offset, new.lo, new.hi)), new.relu, new.exp)
    self.bypass(node, x)


def add_rescaled(self: Rewriter, node: ir.Node) -> None:
    """Add / Sub of two rescaled values: with equal scales the integers add; otherwise the sum is
    requantized with one multiplier per branch where a quantizer reads it alone and the pairs of
    values can be checked one by one, else the two are aligned on one scale by exact integer
    multipliers."""
    if node.op_type not in ("Add", "Sub") or any(v not in self.values for v in node.inputs):
        raise UnsupportedModelError(f"{describe(node)}: {node.op_type} of a rescaled value and a value computed in float")
    dims = self.dims(node.outputs[0], node)
    a, b = (self.values[v].full(dims) for v in node.inputs)
    if a.relu or b.relu:
        raise UnsupportedModelError(f"{describe(node)}: adds a Relu of a value with a float offset")
    if not np.all(a.scale == b.scale) or a.exp != b.exp:
        pairs = max(int(v) for v in ((a.hi - a.lo + 1) * (b.hi - b.lo + 1)).reshape(-1))
        if requantized_alone(node.outputs[0]) and pairs <= MAX_CHECKED:
            # Each branch gets its own dyadic multiplier when the sum is requantized (as HAWQ does):
            # the requantization of the pair is proven on every pair of values (`dyadic_sum`).
            self.sums[node.outputs[0]] = PendingSum(a, b, node)
            self.values[node.outputs[0]] = a  # stands for the sum until its quantizer reads it
            return
        a, b = aligned(self, node, a, b)
    if node.op_type == "Add":
        self.values[node.outputs[0]] = Affine(a.scale, a.offset + b.offset, a.lo + b.lo, a.hi + b.hi, exp=a.exp)
    else:
        self.values[node.outputs[0]] = Affine(a.scale, a.offset - b.offset, a.lo - b.hi, a.hi - b.lo, exp=a.exp)


def requantized_alone(value: ir.Value) -> bool:
    """Whether a value's only reader is an integer quantizer, perhaps through one Relu (and neither
    is a graph output)."""
    uses = list(value.uses())
    if value.is_graph_output() or len(uses) != 1 or uses[0][1] != 0:
        return False
    reader = uses[0][0]
    if op_key(reader) == onnx_op("Relu"):
        return requantized_alone(reader.outputs[0]) and op_key(next(iter(reader.outputs[0].uses()))[0]) != onnx_op("Relu")
    view = quantizer(reader)  # a 1-bit signed Quant is a threshold (`bipolar`), not a requantization
    return op_key(reader) in INTEGER_QUANTIZERS and view is not None and not view.is_bipolar


def aligned(self: Rewriter, node: ir.Node, a: Affine, b: Affine) -> tuple[Affine, Affine]:
    """Two rescaled values on one scale, exactly: with g the rational gcd of their scales (per element),
    each integer n becomes n * (scale / g), an integer product the graph computes exactly (a residual's
    two branches requantized by different dyadics, as HAWQ writes them). Refused where the product
    would outgrow the float type's integers."""
    g = np.frompyfunc(lambda x, y: Fraction(math.gcd(abs(x.numerator) * y.denominator, abs(y.numerator) * x.denominator), x.denominator * y.denominator) or Fraction(1), 2, 1)(a.scale, b.scale)
    limit = 1 << (53 if any(v.dtype == ir.DataType.DOUBLE for v in node.inputs) else 24)
    aligned = []
    for index, (value, tracked) in enumerate(zip(node.inputs, (a, b))):
        k = tracked.scale / g  # integers
        ends = [tracked.lo * k, tracked.hi * k]
        lo, hi = np.minimum(*ends), np.maximum(*ends)
        if max(abs(int(v)) for v in (*lo.reshape(-1), *hi.reshape(-1))) >= limit:
            raise UnsupportedModelError(
                f"{describe(node)}: adds values quantized with different scales ({float(a.scale.reshape(-1)[0]):.6g} and "
                f"{float(b.scale.reshape(-1)[0]):.6g}) whose common integer form outgrows the float type; requantize both to one scale first"
            )
        multiplier = float_exact(k * Fraction(2) ** -tracked.exp) if limit == 1 << 24 else np.frompyfunc(lambda v: float(v), 1, 1)(k * Fraction(2) ** -tracked.exp).astype(np.float64)
        if multiplier is None:
            raise UnsupportedModelError(f"{describe(node)}: the alignment of its inputs' scales does not fit float32")
        if not (np.all(multiplier == 1)):
            scaled = self.insert(node, "Mul", [value, self.initializer(compact(multiplier), f"{label(node)}_align{index}", like=value)], f"{label(node)}_align{index}")
            node.replace_input_with(index, scaled)
        aligned.append(Affine(g, tracked.offset, lo.astype(object), hi.astype(object), exp=0))
    return aligned[0], aligned[1]


def batch_normalization(self: Rewriter, node: ir.Node) -> None:
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
    ca = exact_fractions(np.asarray(coefficients[0], dtype=np.float64)).reshape(shape)
    cb = exact_fractions(np.asarray(coefficients[1], dtype=np.float64)).reshape(shape)
    self.values[node.outputs[0]] = Affine(a.scale * ca, a.offset * ca + cb, a.lo, a.hi, exp=a.exp)
    self.bypass(node, x)


def relu(self: Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    if x in self.sums:  # a sum waiting for its quantizer: the Relu moves after the requantization's offset
        self.sums[x] = replace(self.sums[x], relu=True)
        ir.convenience.replace_all_uses_with(node.outputs[0], x)
        self.graph.remove(node, safe=True)
        return
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    if any(v < 0 for v in a.scale.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: Relu of a negatively scaled value")
    if a.relu:
        self.values[node.outputs[0]] = a
        self.bypass(node, x)
        return
    if all(v == 0 for v in a.offset.reshape(-1)):
        self.values[node.outputs[0]] = replace(a, lo=np.maximum(a.lo, 0), hi=np.maximum(a.hi, 0))
        return
    if all(v != 0 for v in a.scale.reshape(-1)):
        shift = a.offset / a.scale  # in the integers' units
        if all(Fraction(v).denominator == 1 for v in shift.reshape(-1)):
            constant = float_exact(shift * Fraction(2) ** a.exp)
            if constant is not None:
                # relu(s * n + o) = s * relu(n + o/s) for s > 0, o/s an integer: exact in the graph.
                value = self.insert(node, "Add", [x, self.initializer(compact(constant), f"{label(node)}_offset")], f"{label(node)}_offset_add")
                node.replace_input_with(0, value)
                lo = np.maximum(a.lo + shift, 0).astype(object)
                hi = np.maximum(a.hi + shift, 0).astype(object)
                self.values[node.outputs[0]] = Affine(a.scale, objects(Fraction(0), a.scale.shape), lo, hi, exp=a.exp)
                return
    # The offset is no dyadic multiple of the scale: the Relu waits for the next quantizer.
    self.values[node.outputs[0]] = replace(a, relu=True)
    self.bypass(node, x)
