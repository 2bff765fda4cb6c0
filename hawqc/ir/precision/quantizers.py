"""Precision rules of the quantizers, and their parameters evaluated exactly.

- `Quant` on an activation (per-tensor scale) gives its own type; its interval is the quantized
  input interval (quantization is monotonic, so quantizing the two bounds is exact). On a constant
  it is evaluated (QONNX semantics, float32) and keeps the Quant's type.
- `BipolarQuant(x, s)` and qonnx's 1-bit signed `Quant` (its "bipolar" case) give `+s` where x >= 0
  (-0.0 included), else `-s`: codes -1/+1 at LSB s, only for one power-of-two s (any other scale is
  refused: the next layer's float32 products of it round). `MultiThreshold` gives
  `out_scale * count + out_bias`, the count per channel between the number of thresholds at or below
  the input's lower and upper bound (exact comparisons; the channel must be the last axis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.keys import qonnx_op
from hawqc.ir.ops.quantizer import code_bounds, quantizer
from hawqc.ir.ops.rounding import round_quotient
from hawqc.ir.precision.attributes import attr, constant
from hawqc.ir.precision.bounds import Bounds, exact_codes, finest_exponent, int_array, scalar
from hawqc.ir.qtypes import FixedType, power_of_two_exponent

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


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
        return code_bounds(self.bitwidth, self.signed, self.narrow)[0]

    @property
    def max_int(self) -> int:
        return code_bounds(self.bitwidth, self.signed, self.narrow)[1]


def quant_params(node: ir.Node) -> QuantParams:
    """Read and check a Quant node's parameters (constant, power-of-two scale, zero point 0)."""
    view = quantizer(node)
    assert view is not None and view.layout == "Quant", f"{describe(node)} is no Quant"
    if len(node.inputs) < view.expected_inputs:
        raise UnsupportedModelError(f"{describe(node)}: expects 4 inputs (x, scale, zeropt, bitwidth)")
    scale, zeropt, bitwidth = view.scale, view.zero_point, view.bit_width_tensor
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
        signed=view.signed,
        narrow=view.narrow,
        rounding_mode=view.rounding_mode,
    )


def union_of_types(bits: int, scales: np.ndarray, signed: bool, narrow: bool, mode: str, where: str) -> FixedType:
    """The narrowest type holding every per-channel quantizer's type."""
    types = [FixedType.from_quant(bits, float(s), signed, narrow, mode, where=where) for s in np.unique(scales)]
    result = types[0]
    for other in types[1:]:
        result = result.union(other)
    return result


def quant_type(node: ir.Node, params: QuantParams) -> FixedType:
    """The FixedType that performs this Quant; per-channel scales give the union of their types."""
    return union_of_types(
        params.bitwidth, params.scale, params.signed, params.narrow, params.rounding_mode, describe(node)
    )


def is_bipolar_quant(node: ir.Node) -> bool:
    """A BipolarQuant, or a Quant that qonnx computes as one (1 bit, signed: `x >= 0 ? +s : -s`)."""
    view = quantizer(node)
    return view is not None and view.is_bipolar


def bipolar_scale(node: ir.Node) -> np.ndarray:
    """The scale of a binary quantizer (`is_bipolar_quant`), checked: constant, positive, and for a
    1-bit Quant with zero point 0 (`x / s + z >= 0` is `x >= 0` only then)."""
    view = quantizer(node)
    assert view is not None and view.is_bipolar, f"{describe(node)} is no binary quantizer"
    scale = view.scale
    if scale is None:
        raise UnsupportedModelError(f"{describe(node)}: the scale is not a constant")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise UnsupportedModelError(f"{describe(node)}: binary quantizer scale {scale.reshape(-1).tolist()} is not positive")
    zeropt = view.zero_point
    if zeropt is None or np.any(zeropt != 0):
        raise UnsupportedModelError(f"{describe(node)}: 1-bit signed Quant with a non-zero zero point")
    return scale


def _round_fraction(x: Fraction, mode: str) -> int:
    """QONNX's rounding of one exact value (`hawqc.ir.ops.rounding`, shared with exact mode)."""
    return int(round_quotient(np.array([x.numerator], dtype=object), x.denominator, mode)[0])


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


# ---- the rules --------------------------------------------------------------------------------


def quant(analysis: Analysis, node: ir.Node) -> None:
    if is_bipolar_quant(node):
        bipolar_quant(analysis, node)
        return
    params = quant_params(node)
    fixed = quant_type(node, params)
    out = node.outputs[0]
    x = node.inputs[0]
    data = constant(x) if x is not None and x.name not in analysis.bounds else None
    if data is not None:
        # Both modes use the constant as semantic mode computes it (the executor folds it).
        analysis.record_constant(out, quantize_constant(data, params), fixed)
        return
    if params.bitwidth > 24:
        # qonnx computes the clamp bounds 2**(b-1) in float32; above 24 bits they are rounded.
        analysis.result.float_inexact.add(out.name)
        analysis.result.inexact[out.name] = f"{params.bitwidth}-bit Quant: qonnx's float32 clamp bounds are rounded"
    if params.scale.size != 1:
        raise UnsupportedModelError(f"{describe(node)}: per-channel scales on activations are not supported")
    scale_exp = fixed.lsb_exponent
    if x is not None and x.is_graph_input() and x.name not in analysis.bounds:
        # An unbounded float input: the Quant's own range.
        analysis.record(out, Bounds(scalar(params.min_int), scalar(params.max_int), scale_exp), fixed)
        return
    src = analysis.operand(node, x)
    step = Fraction(2) ** src.exp
    lo = np.vectorize(lambda c: _quantize_code(Fraction(int(c)) * step, params, scale_exp), otypes=[object])(src.lo)
    hi = np.vectorize(lambda c: _quantize_code(Fraction(int(c)) * step, params, scale_exp), otypes=[object])(src.hi)
    analysis.record(out, Bounds(np.asarray(lo, dtype=object), np.asarray(hi, dtype=object), scale_exp), fixed)


def bipolar_quant(analysis: Analysis, node: ir.Node) -> None:
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
    exp = int(finest_exponent(np.array([value])))
    code = int(Fraction(value) / Fraction(2) ** exp)  # s = code * 2^exp, code odd
    fixed = FixedType.covering(-Fraction(value), Fraction(value), exp)
    data = constant(x) if x is not None and x.name not in analysis.bounds else None
    if data is not None:
        values = np.where(data.astype(np.float64) >= 0, 1.0, -1.0) * float(scale.reshape(-1)[0])
        analysis.record_constant(out, values, fixed)
        return
    if x is not None and x.is_graph_input() and x.name not in analysis.bounds:
        lo, hi = -code, code
    else:
        src = analysis.operand(node, x)
        # Codes per feature: -code if some value is negative, +code if some value is >= 0.
        lo = np.where(src.lo < 0, -code, code).astype(object)
        hi = np.where(src.hi >= 0, code, -code).astype(object)
    analysis.record(out, Bounds(np.asarray(lo, dtype=object), np.asarray(hi, dtype=object), exp), fixed)


def multithreshold(analysis: Analysis, node: ir.Node) -> None:
    """MultiThreshold(v, T): `out_scale * count + out_bias`, count the thresholds of the element's
    channel that v is >= (see `hawqc.sim.ops_threshold`). Intervals are kept along the last axis,
    so the thresholds' channel must be the last axis (`data_layout` ending in C, or a rank-2
    "NC" input; run channels-last first). Per channel, the count lies between the number of
    thresholds <= lo and the number <= hi (comparisons of exact numbers: both modes agree).
    The output is two float32 operations on the count, exact while the codes fit float32."""
    x = node.inputs[0]
    v = analysis.operand(node, x)
    thresholds = constant(node.inputs[1]) if len(node.inputs) > 1 else None
    if thresholds is None or thresholds.ndim != 2:
        raise UnsupportedModelError(f"{describe(node)}: thresholds must be a constant [C, T] tensor")
    dims = analysis.shape(x)
    rank = len(dims) if dims is not None else None
    if rank is None:
        raise UnsupportedModelError(f"{describe(node)}: the rank of the input is unknown")
    layout = str(attr(node, "data_layout", ""))
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
    out_scale = np.float32(attr(node, "out_scale", 1.0))
    out_bias = np.float32(attr(node, "out_bias", 0.0))
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
    s_exp, b_exp = finest_exponent(np.asarray(out_scale)), finest_exponent(np.asarray(out_bias))
    exp = min(s_exp, b_exp) if out_bias != 0 else s_exp
    s_code = int(exact_codes(np.asarray(out_scale), exp))
    b_code = int(exact_codes(np.asarray(out_bias), exp))
    ends = (c_lo * s_code + b_code, c_hi * s_code + b_code)
    bounds = Bounds(int_array(np.minimum(*ends)), int_array(np.maximum(*ends)), exp)
    out = node.outputs[0]
    analysis.record(out, bounds)
    analysis.may_round(out, Bounds(c_hi * abs(s_code), c_hi * abs(s_code), exp), "out_scale * count")
    analysis.may_round(out, bounds, "out_scale * count + out_bias")


RULES = {
    qonnx_op("Quant"): quant,
    qonnx_op("IntQuant"): quant,
    qonnx_op("BipolarQuant"): bipolar_quant,
    qonnx_op("MultiThreshold"): multithreshold,
}
