"""integer-requant's rules for quantizers of a value taken to integers: proven dyadic requantizations, binary thresholds and qonnx's Trunc."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.ops.quantizer import code_bounds, quantizer
from hawqc.ir.qtypes import power_of_two_exponent
from hawqc.passes.integer_requant.tracking import Affine, compact, float_exact, is_power_of_two, label, objects, requantized_range

if TYPE_CHECKING:
    from hawqc.passes.integer_requant.rewriter import Rewriter


def quant(self: Rewriter, node: ir.Node) -> None:
    if node.inputs[0] not in self.values or any(v in self.values for v in node.inputs[1:] if v is not None):
        raise UnsupportedModelError(f"{describe(node)}: its parameters must be constants")
    view = quantizer(node)
    assert view is not None
    if view.is_bipolar:
        bipolar(self, node)
    else:
        self.requantize(node)


def bipolar(self: Rewriter, node: ir.Node) -> None:
    """`+s` where relu?(scale * n + offset) >= 0, else `-s`: a threshold on the integers, per element
    (n >= ceil(-offset/scale) for a positive scale, n <= floor(-offset/scale) for a negative one),
    as `BipolarQuant(sign * n + shift)`, exact in the graph's integers."""
    view = quantizer(node)
    assert view is not None
    scale = view.scale
    if scale is None or scale.size != 1 or not float(scale.reshape(-1)[0]) > 0:
        raise UnsupportedModelError(f"{describe(node)}: a binary quantizer needs one positive scale")
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    sign = np.empty(a.scale.shape, dtype=object)
    shift = np.empty(a.scale.shape, dtype=object)
    for index in np.ndindex(a.scale.shape):
        k, o = a.scale[index], a.offset[index]
        if a.relu:  # relu(...) >= 0 always
            sign[index], shift[index] = 0, 1
        elif k == 0:
            sign[index], shift[index] = 0, (1 if o >= 0 else -1)
        elif k > 0:
            theta = -(o / k)
            sign[index], shift[index] = 1, -math.ceil(theta)
        else:
            phi = -(o / k)
            sign[index], shift[index] = -1, math.floor(phi)
    name = label(node)
    multiplier = float_exact(sign * Fraction(2) ** -a.exp)
    offset = float_exact(shift)
    if multiplier is None or offset is None:
        raise UnsupportedModelError(f"{describe(node)}: the threshold does not fit float32's 24 bits")
    value = self.insert(node, "Mul", [x, self.initializer(compact(multiplier), f"{name}_sign")], f"{name}_sign_mul")
    value = self.insert(node, "Add", [value, self.initializer(compact(offset), f"{name}_threshold")], f"{name}_threshold_add")
    node.replace_input_with(0, value)
    p2 = is_power_of_two(scale)
    if not p2:
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{name}_unit_scale"))
    s = Fraction(float(scale.reshape(-1)[0]))
    out_dims = self.dims(node.outputs[0], node)
    shape = (1,) * (len(out_dims) + 1)
    self.values[node.outputs[0]] = Affine(
        objects(s, shape), objects(Fraction(0), shape), objects(-1, shape), objects(1, shape),
        exp=power_of_two_exponent(float(s)) if p2 else 0,
    )  # fmt: skip




def trunc(self: Rewriter, node: ir.Node) -> None:
    """qonnx's Trunc: round(x / scale + z) onto the input grid (half to even, no clamp), divide by a power
    of two t, clamp (v2) and round with the node's mode. The first rounding is a proven dyadic
    requantization; the second is exact: Mul(1/t) -> Quant(scale 1)."""
    view = quantizer(node)
    assert view is not None
    x = node.inputs[0]
    scale, zero = view.scale, view.zero_point
    if scale is None or zero is None or np.any(zero != 0) or scale.size != 1:
        raise UnsupportedModelError(f"{describe(node)}: Trunc needs one constant scale and a zero point of 0")
    in_bits = view.constant("in_bit_width")
    out_bits = view.bits
    if in_bits is None or out_bits is None:
        raise UnsupportedModelError(f"{describe(node)}: Trunc's bit widths must be constants")
    a = self.values[x].full(self.dims(x, node))
    # The first rounding's codes: wide enough that no clamp binds.
    ends = [Fraction(v) * k / Fraction(float(scale.reshape(-1)[0])) + o / Fraction(float(scale.reshape(-1)[0]))
            for v in (*a.lo.reshape(-1), *a.hi.reshape(-1)) for k, o in ((a.scale.reshape(-1)[0], a.offset.reshape(-1)[0]),)]  # fmt: skip
    reach = max(abs(math.floor(e)) + 2 for e in ends)
    width = max(2, reach.bit_length() + 1)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    first, sigma = self.dyadic(node, x, scale, low, high, "ROUND")
    first_quant = ir.node(
        "Quant", [first, self.initializer(np.float32(1), f"{label(node)}_grid_scale"),
                  self.initializer(np.float32(0), f"{label(node)}_grid_zero"), self.initializer(np.float32(width), f"{label(node)}_grid_bits")],
        attributes={"signed": 1, "narrow": 0, "rounding_mode": "ROUND"}, domain=QONNX_DOMAIN, name=self.names(f"{label(node)}_grid"),
    )  # fmt: skip
    first_quant.outputs[0].name = self.names(f"{first_quant.name}_out")
    first_quant.outputs[0].shape, first_quant.outputs[0].type = x.shape, x.type
    self.graph.insert_before(node, first_quant)
    if view.layout == "Trunc v2":
        out_scale = view.constant("out_scale")
        shift = float(2.0 ** np.round(np.log2(np.asarray(out_scale, dtype=np.float64) / scale.astype(np.float64))).reshape(-1)[0])
        signed, narrow = view.signed, view.narrow
        low2, high2 = code_bounds(int(out_bits), signed, narrow)
        final = Fraction(float(np.asarray(out_scale).reshape(-1)[0]))
    else:
        shift = float(2.0 ** (float(np.asarray(in_bits).reshape(-1)[0]) - float(out_bits)))
        low2, high2 = -(1 << 62), 1 << 62
        signed, narrow = True, False
        final = Fraction(float(scale.reshape(-1)[0]))
    divided = self.insert(node, "Mul", [first_quant.outputs[0], self.initializer(np.float32(1.0 / shift), f"{label(node)}_shift")], f"{label(node)}_shift_mul")
    bits2 = out_bits if view.layout == "Trunc v2" else width
    second = ir.node(
        "Quant", [divided, self.initializer(np.float32(1), f"{label(node)}_unit_scale"),
                  self.initializer(np.float32(0), f"{label(node)}_zero"), self.initializer(np.float32(bits2), f"{label(node)}_bits")],
        attributes={"signed": int(signed), "narrow": int(narrow), "rounding_mode": view.rounding_mode},
        domain=QONNX_DOMAIN, name=self.names(f"{label(node)}_truncated"),
    )  # fmt: skip
    second.outputs[0].name = self.names(f"{second.name}_out")
    second.outputs[0].shape, second.outputs[0].type = node.outputs[0].shape, node.outputs[0].type
    self.graph.insert_before(node, second)
    a0, r, t, _, _, _ = self._last
    lo1, hi1 = requantized_range(a0, r, t, low, high, "ROUND")
    lo2 = np.frompyfunc(lambda v: max(low2, min(high2, math.floor(Fraction(v) / Fraction(shift)) - 1)), 1, 1)(lo1)
    hi2 = np.frompyfunc(lambda v: max(low2, min(high2, math.ceil(Fraction(v) / Fraction(shift)) + 1)), 1, 1)(hi1)
    shape = (1,) * len(lo1.shape)
    self.values[node.outputs[0]] = Affine(objects(final, shape), objects(Fraction(0), shape), lo2, hi2)
    self.bypass(node, second.outputs[0])
