"""integer-requant's rules for MatMul, Gemm and Conv: weights become integer codes, the scales move into what is tracked."""

from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.window import Windows
from hawqc.passes.integer_requant.tracking import FLOAT32_EXACT_INT, Affine, label, objects
from hawqc.sim.exact import Exact, conv_ints, matmul_ints

if TYPE_CHECKING:
    from hawqc.passes.integer_requant.rewriter import Rewriter


def matmul(self: Rewriter, node: ir.Node) -> None:
    x, w_value = node.inputs[0], node.inputs[1]
    if w_value in self.values or x not in self.values:
        raise UnsupportedModelError(f"{describe(node)}: a product of two computed values has no exact integer form here")
    w = self.constant(w_value)
    if w is None or w.ints.ndim != 2:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant matrix")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    check_no_relu(node, a)
    # W_eff[k, j] = scale[k] * W[k, j]: factor each column into integers times one scale.
    scale_k = a.scale.reshape(-1, dims[-1])[0] if len(dims) == 1 else None
    if scale_k is None:
        raise UnsupportedModelError(f"{describe(node)}: MatMul on a rank-{len(dims) + 1} rescaled value")
    weight = w.fractions() * scale_k[:, None]
    ints, column_scale = factor_columns(node, weight)
    offset = (a.offset.reshape(-1)[None, :] @ w.fractions()) if any(v != 0 for v in a.offset.reshape(-1)) else objects(Fraction(0), (1, ints.shape[1]))
    lo_k, hi_k = a.lo.reshape(1, -1), a.hi.reshape(1, -1)
    lo, hi = interval_matmul(lo_k, hi_k, ints)
    node.replace_input_with(1, self.integer_weight(ints, node))
    self.values[node.outputs[0]] = Affine(column_scale.reshape(1, -1), np.asarray(offset, dtype=object).reshape(1, -1), lo, hi, exp=a.exp)


def gemm(self: Rewriter, node: ir.Node) -> None:
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
    product = ir.node("MatMul", [node.inputs[0], self.initializer(np.zeros(weight.shape, np.float32), f"{label(node)}_weight")], name=self.names(f"{label(node)}_matmul"))
    product.outputs[0].name = self.names(f"{product.name}_out")
    product.outputs[0].shape = node.outputs[0].shape
    product.outputs[0].type = node.outputs[0].type
    self.graph.insert_before(node, product)
    self._exact[product.inputs[1]] = Exact(*as_exact_parts(weight))
    matmul(self, product)
    result = self.values[product.outputs[0]]
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = self.constant(node.inputs[2])
        if bias is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias must be a constant")
        beta = Fraction(float(attrs.get("beta", 1.0)))
        result = replace(result, offset=result.offset + np.broadcast_to(bias.fractions() * beta, result.offset.shape))
    self.values[node.outputs[0]] = result
    self.bypass(node, product.outputs[0])


def as_exact_parts(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    den = 1
    for v in weight.reshape(-1):
        den = den * v.denominator // math.gcd(den, v.denominator)
    ints = np.frompyfunc(lambda v: int(v * den), 1, 1)(weight)
    return ints, objects(Fraction(1, den), (1, 1))


def factor_columns(node: ir.Node, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight[k, j] = ints[k, j] * scale[j], scale[j] the largest rational that keeps ints integers."""
    ints = np.empty(weight.shape, dtype=object)
    scales = np.empty(weight.shape[1], dtype=object)
    for j in range(weight.shape[1]):
        column = [Fraction(v) for v in weight[:, j]]
        lcm = 1
        for d in (v.denominator for v in column):
            lcm = lcm * d // math.gcd(lcm, d)
        g = 0
        for v in column:
            g = math.gcd(g, int(v * lcm))
        g = g or 1
        scale = Fraction(g, lcm)
        scales[j] = scale
        ints[:, j] = [int(v / scale) for v in column]
    if max((abs(int(v)) for v in ints.reshape(-1)), default=0) >= FLOAT32_EXACT_INT:
        raise UnsupportedModelError(f"{describe(node)}: the integer weights exceed 2^24 (float32 would round them)")
    return ints.astype(np.int64), scales


def interval_matmul(lo: np.ndarray, hi: np.ndarray, ints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positive, negative = np.maximum(ints, 0), np.minimum(ints, 0)
    lo_i = np.asarray(lo, dtype=object)
    hi_i = np.asarray(hi, dtype=object)
    low = matmul_ints(lo_i, positive) + matmul_ints(hi_i, negative)
    high = matmul_ints(hi_i, positive) + matmul_ints(lo_i, negative)
    return np.asarray(low, dtype=object), np.asarray(high, dtype=object)


def check_no_relu(node: ir.Node, a: Affine) -> None:
    if a.relu:
        raise UnsupportedModelError(
            f"{describe(node)}: reads a Relu of a value whose float offset is no integer in its scale "
            "(a float bias before the Relu) without a quantizer in between"
        )


def conv(self: Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    if x not in self.values or any(v in self.values for v in node.inputs[1:] if v is not None):
        raise UnsupportedModelError(f"{describe(node)}: the weights must be constants")
    w = self.constant(node.inputs[1])
    if w is None:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    check_no_relu(node, a)
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
    ints, scales = factor_columns(node, flat)
    ints = ints.T.reshape(weight.shape)
    lo_c = np.asarray([min(row) for row in a.lo.reshape(channels, -1)], dtype=object)
    hi_c = np.asarray([max(row) for row in a.hi.reshape(channels, -1)], dtype=object)
    low, high = conv_ints(lo_c, hi_c, ints, group)
    pads = windows.pads_for(dims[1:])
    if any(pads):
        low, high = np.minimum(low, 0), np.maximum(high, 0)
    spatial = (1,) * (len(dims) - 1)
    offset = objects(Fraction(0), (1, out_channels) + spatial)
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = self.constant(node.inputs[2])
        if bias is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias must be a constant")
        offset = bias.fractions().reshape((1, out_channels) + spatial)
        node.resize_inputs(2) if hasattr(node, "resize_inputs") else node.replace_input_with(2, None)
    node.replace_input_with(1, self.integer_weight(ints, node))
    self.values[node.outputs[0]] = Affine(
        scales.reshape((1, out_channels) + spatial), offset,
        low.reshape((1, out_channels) + spatial), high.reshape((1, out_channels) + spatial), exp=a.exp,
    )  # fmt: skip
