"""The type of a constant operand (a weight, a bias, a scale factor), recorded on its first use.

A constant that `fold-quant` left annotated (`hawqc.ir.quant_annotation`) takes the type of the
quantizer the annotation describes; any other constant the narrowest type that holds its exact
(dyadic) values, within a width limit for weights and biases. With a default precision, a float
weight or bias is rounded into it instead (`float_parts`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir.diagnostics import describe
from hawqc.ir.precision.bounds import Bounds, exact_codes, finest_exponent
from hawqc.ir.precision.float_parts import float_constant
from hawqc.ir.precision.quantizers import union_of_types
from hawqc.ir.qtypes import FixedType, power_of_two_exponent
from hawqc.ir.quant_annotation import read_annotation

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


def constant_operand(analysis: Analysis, node: ir.Node, value: ir.Value, data: np.ndarray, limit: int | None) -> Bounds:
    """Record the constant `value` read by `node`, and return its bounds (`Analysis.operand`)."""
    if not np.issubdtype(data.dtype, np.number) or not np.all(np.isfinite(data)):
        raise UnsupportedModelError(f"{describe(node)}: constant {value.name!r} is not a finite number tensor")
    fixed = annotated_type(node, value, data)
    if fixed is None and analysis.float_parts is not None and limit is not None:
        # A weight or bias of a float layer, or one no exact type of `limit` bits holds.
        reads_float = any(v is not None and v.name in analysis.floating for v in node.inputs)
        if reads_float or plain_type(node, value, data, None).width > limit:
            return float_constant(analysis, value, data)
    if fixed is None:
        fixed = plain_type(node, value, data, limit)
    analysis.record_constant(value, data, fixed)
    return analysis.bounds[value.name]


def annotated_type(node: ir.Node, value: ir.Value, data: np.ndarray) -> FixedType | None:
    """The type of the quantizer `fold-quant` folded into this constant, if it says so and its
    scales are powers of two (else the values are only known as exact floats)."""
    try:
        annotation = read_annotation(value)
    except UserInputError as err:
        raise UnsupportedModelError(f"{describe(node)}: {err}") from None
    if annotation is None:
        return None
    scales = annotation.scale_array()
    if np.any(annotation.zeropt_array() != 0) or any(power_of_two_exponent(float(s)) is None for s in np.unique(scales)):
        return None
    try:
        fixed = union_of_types(
            annotation.bits, scales, annotation.signed, annotation.narrow, annotation.rounding_mode,
            f"{describe(node)}: constant {value.name!r}",
        )  # fmt: skip
    except UnsupportedModelError:
        # A quantizer with no fixed-point type (bipolar, CEIL...): the constant's values are
        # still known exactly, and a constant is never rounded by its type.
        return None
    codes = np.ldexp(data.astype(np.float64), -fixed.lsb_exponent)
    step = Fraction(2) ** fixed.lsb_exponent
    if not np.all(codes == np.round(codes)) or not fixed.holds(Fraction(float(data.min())), Fraction(float(data.max()))):
        raise UnsupportedModelError(
            f"{describe(node)}: constant {value.name!r} holds values outside its annotation's type {fixed}"
            f" (LSB {step})"
        )
    return fixed


def plain_type(node: ir.Node, value: ir.Value, data: np.ndarray, limit: int | None) -> FixedType:
    """An unquantized constant: exact if every element is a short dyadic number."""
    exp = finest_exponent(data)
    codes = exact_codes(data, exp)
    step = Fraction(2) ** exp
    fixed = FixedType.covering(Fraction(int(codes.min())) * step, Fraction(int(codes.max())) * step, exp)
    if limit is not None and fixed.width > limit:
        raise UnsupportedModelError(
            f"{describe(node)}: constant {value.name!r} is not quantized and needs {fixed.width} bits to be exact"
        )
    return fixed
