"""Precision rules of elementwise arithmetic.

- `Add` / `Sub` add (subtract) intervals at the finer of the two LSBs; that covers a bias and a
  residual join alike. A constant added to a dot product is its bias: the accumulator's partial
  sums (`dense`) extend by it. `Mul` by a constant `k` (per tensor or per channel) multiplies
  intervals, at LSB(x) + LSB(k): a float32 constant is the exact dyadic number it is. `Div` by a
  constant power of two is a Mul by its exact reciprocal.
- `Relu` clamps at zero; `LeakyRelu(alpha)` scales the negative side by the exact alpha; `Clip`
  clamps at its constant bounds.
- channels-last `BatchNormalization` (unfused) is `Mul(a)` then `Add(b)` with the per-channel
  float32 constants of the BatchNorm view (`hawqc.ir.ops.batchnorm`: bit for bit what onnxruntime
  computes).
- `Cast` to a float type keeps the interval and checks the target type's limit: a value the graph
  declares DOUBLE (HAWQ's requantization, computed in double by a lifted graph) holds integer codes
  up to 2**53, float32 up to 2**24.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.op_arithmetic import cast_target
from hawqc.ir.ops.batchnorm import batch_norm as batch_norm_view
from hawqc.ir.ops.keys import onnx_op
from hawqc.ir.precision.attributes import attr
from hawqc.ir.precision.bounds import (
    Bounds,
    dyadic_bounds,
    exact_codes,
    feature_grids,
    finest_exponent,
    int_array,
    scaled,
)
from hawqc.ir.qtypes import power_of_two_exponent

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


def _record_scaled(analysis: Analysis, value: ir.Value, bounds: Bounds, what: str) -> None:
    analysis.record(value, bounds)
    analysis.may_round(value, bounds, what)


def add(analysis: Analysis, node: ir.Node) -> None:
    add_or_sub(analysis, node, subtract=False)


def sub(analysis: Analysis, node: ir.Node) -> None:
    add_or_sub(analysis, node, subtract=True)


def add_or_sub(analysis: Analysis, node: ir.Node, subtract: bool) -> None:
    a_value, b_value = node.inputs[0], node.inputs[1]
    a = analysis.operand(node, a_value)
    b = analysis.operand(node, b_value)
    if subtract:
        b = Bounds(-b.hi, -b.lo, b.exp, b.grid)
    exp = min(a.exp, b.exp)
    a, b = a.at(exp), b.at(exp)
    out = node.outputs[0]
    sum_bounds = Bounds(a.lo + b.lo, a.hi + b.hi, exp, np.minimum(a.grids(), b.grids()))
    analysis.record(out, sum_bounds)
    # A constant added to a dot product is its bias: the accumulator starts from it.
    for acc_value, bias_value, bias in ((a_value, b_value, b), (b_value, a_value, a)):
        if acc_value is None or bias_value is None or acc_value.name not in analysis.partial:
            continue
        if bias_value.name not in analysis.result.constants:
            continue
        partial = analysis.partial[acc_value.name].at(exp)
        zero = np.zeros_like(bias.lo)
        hull = Bounds(partial.lo + np.minimum(bias.lo, zero), partial.hi + np.maximum(bias.hi, zero), exp, sum_bounds.grid)
        analysis.note_accumulator(out, hull)
        break
    analysis.may_round(out, sum_bounds, "the sum")


def mul(analysis: Analysis, node: ir.Node) -> None:
    is_constant = [analysis.is_constant(v) for v in node.inputs[:2]]
    if is_constant.count(True) != 1:
        raise UnsupportedModelError(f"{describe(node)}: only a product of an activation and a constant is supported")
    x_value, k_value = (node.inputs[1], node.inputs[0]) if is_constant[0] else (node.inputs[0], node.inputs[1])
    x = analysis.operand(node, x_value)
    k = dyadic_bounds(analysis.constant_data(node, k_value, limit=None))
    _record_scaled(analysis, node.outputs[0], scaled(x, k), "the product")


def div(analysis: Analysis, node: ir.Node) -> None:
    d_value = node.inputs[1]
    if not analysis.is_constant(d_value) or analysis.is_constant(node.inputs[0]):
        raise UnsupportedModelError(f"{describe(node)}: only division of an activation by a constant is supported")
    data = analysis.constant_data(node, d_value, limit=None).astype(np.float64)
    if not all(power_of_two_exponent(abs(float(d))) is not None for d in np.unique(data)):
        raise UnsupportedModelError(f"{describe(node)}: division by a constant that is not a power of two")
    x = analysis.operand(node, node.inputs[0])
    reciprocal = 1.0 / data  # exact: every element is +-2**e
    _record_scaled(analysis, node.outputs[0], scaled(x, dyadic_bounds(reciprocal)), "the quotient")


def relu(analysis: Analysis, node: ir.Node) -> None:
    a = analysis.operand(node, node.inputs[0])
    zero = np.zeros_like(a.lo)
    analysis.record(node.outputs[0], Bounds(np.maximum(a.lo, zero), np.maximum(a.hi, zero), a.exp, a.grid))


def leaky_relu(analysis: Analysis, node: ir.Node) -> None:
    """x for x >= 0, alpha * x below: the interval's image, alpha the exact float32 number."""
    x = analysis.operand(node, node.inputs[0])
    alpha = np.float32(attr(node, "alpha", 0.01))
    a_exp = finest_exponent(np.asarray(alpha))
    a_code = int(exact_codes(np.asarray(alpha), a_exp))
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
    a_grid = int(feature_grids(np.asarray(alpha), a_exp))
    grid = np.minimum(x.grids(), x.grids() + a_grid)
    out = node.outputs[0]
    analysis.record(out, Bounds(lo, hi, exp, grid))
    negative = Bounds(negative_lo * a_code, negative_hi * a_code, x.exp + a_exp, x.grids() + a_grid)
    analysis.may_round(out, negative, "the negative side alpha * x")


def clip(analysis: Analysis, node: ir.Node) -> None:
    x = analysis.operand(node, node.inputs[0])
    limits: list[float | None] = []
    for index, attribute in ((1, "min"), (2, "max")):
        value = node.inputs[index] if len(node.inputs) > index else None
        if value is not None:
            if not analysis.is_constant(value):
                raise UnsupportedModelError(f"{describe(node)}: the {attribute} bound must be a constant")
            limits.append(float(np.asarray(analysis.constant_data(node, value, limit=None)).reshape(())))
        elif attribute in node.attributes:
            limits.append(float(np.float32(attr(node, attribute))))
        else:
            limits.append(None)
    limits = [v if v is not None and math.isfinite(v) else None for v in limits]
    exp = min([x.exp] + [finest_exponent(np.asarray(v)) for v in limits if v is not None])
    x = x.at(exp)
    lo, hi = x.lo, x.hi
    low, high = limits
    if low is not None:
        code = int(exact_codes(np.asarray(low), exp))
        lo, hi = np.maximum(lo, code), np.maximum(hi, code)
    if high is not None:
        code = int(exact_codes(np.asarray(high), exp))
        lo, hi = np.minimum(lo, code), np.minimum(hi, code)
    grid = x.grids()
    for v in limits:
        if v is not None and v != 0:
            grid = np.minimum(grid, max(finest_exponent(np.asarray(v)), exp))
    analysis.record(node.outputs[0], Bounds(int_array(lo), int_array(hi), exp, grid))


def batch_norm(analysis: Analysis, node: ir.Node) -> None:
    if len(node.inputs) < 5 or not all(analysis.is_constant(v) for v in node.inputs[1:5]):
        raise UnsupportedModelError(f"{describe(node)}: scale, bias, mean and variance must be constants")
    if len([v for v in node.outputs if v is not None and (v.uses() or v.is_graph_output())]) > 1:
        raise UnsupportedModelError(f"{describe(node)}: training-mode outputs are not supported")
    view = batch_norm_view(node)
    assert view is not None
    coefficients = view.coefficients()
    if coefficients is None:
        raise UnsupportedModelError(f"{describe(node)}: scale, bias, mean and variance must be initializers")
    a, b = coefficients
    x = analysis.operand(node, node.inputs[0])
    # Mul(a) then Add(b), as onnxruntime computes an unfused BatchNormalization: both steps round
    # in float32.
    product = scaled(x, dyadic_bounds(a))
    bias = dyadic_bounds(b)
    exp = min(product.exp, bias.exp)
    product, bias = product.at(exp), bias.at(exp)
    out = node.outputs[0]
    bounds = Bounds(product.lo + bias.lo, product.hi + bias.hi, exp, np.minimum(product.grids(), bias.grids()))
    analysis.record(out, bounds)
    # The product is computed before the offset is added: its type must hold it too.
    hull = Bounds(np.minimum(product.lo, bounds.lo), np.maximum(product.hi, bounds.hi), exp)
    analysis.result.accumulators[out.name] = hull.fixed_type()
    analysis.may_round(out, product, "x * scale")
    analysis.may_round(out, bounds, "x * scale + bias")


def cast(analysis: Analysis, node: ir.Node) -> None:
    """A float Cast keeps the exact value; casting to float32 may round what does not fit it."""
    cast_target(node)
    x = analysis.operand(node, node.inputs[0])
    _record_scaled(analysis, node.outputs[0], x, "the cast value")


RULES = {
    onnx_op("Add"): add,
    onnx_op("Sub"): sub,
    onnx_op("Mul"): mul,
    onnx_op("Div"): div,
    onnx_op("Relu"): relu,
    onnx_op("LeakyRelu"): leaky_relu,
    onnx_op("Clip"): clip,
    onnx_op("Cast"): cast,
    (CHANNELS_LAST_DOMAIN, "BatchNormalization"): batch_norm,
}
