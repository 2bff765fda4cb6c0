"""Precision of a graph's float parts, in the model's default precision (`hawqc.ir.default_precision`).

Without a default precision a float part is refused (an unquantized graph input has no range). With
one: an unquantized graph input is cast into it, its whole range; a float weight or bias is rounded
into it; a value computed by arithmetic from a float part is cast into it, except a dot product
that continues into its bias (the accumulator is exact; the sum with the bias is cast) and a value
whose own Quant casts it. Each such value is recorded in `inexact`, and where the precision applied
in `PrecisionResult.float_parts`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.ir import default_precision
from hawqc.ir.ops.keys import STANDARD_DOMAINS
from hawqc.ir.ops.quantizer import is_integer_quantizer
from hawqc.ir.precision.bounds import Bounds, int_array, scalar

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis


def float_input(analysis: Analysis, value: ir.Value) -> Bounds:
    """An unquantized graph input: cast into the default precision, its whole range."""
    assert analysis.float_parts is not None
    fixed = analysis.float_parts.fixed
    analysis.record(value, Bounds(scalar(fixed.min_int), scalar(fixed.max_int), fixed.lsb_exponent), fixed)
    analysis.floating.add(value.name)
    analysis.float_parts.inputs.append(value.name)
    analysis.result.inexact[value.name] = f"unquantized input cast into the default precision {fixed}"
    return analysis.bounds[value.name]


def float_inputs(analysis: Analysis) -> None:
    """Every graph input read by something other than a Quant is a float input."""
    for value in analysis.graph.inputs:
        readers = list(value.consumers())
        if value.const_value is None and any(not is_integer_quantizer(r) for r in readers):
            float_input(analysis, value)


def float_constant(analysis: Analysis, value: ir.Value, data: np.ndarray) -> Bounds:
    """A float weight or bias with no exact type of at most 32 bits: rounded into the default precision."""
    assert analysis.float_parts is not None
    fixed = analysis.float_parts.fixed
    rounded, facts = default_precision.round_constant(value.name, data, fixed)
    analysis.record_constant(value, rounded, fixed)
    analysis.floating.add(value.name)
    analysis.float_parts.constants[value.name] = facts
    analysis.result.inexact[value.name] = f"float constant rounded into the default precision {fixed}"
    return analysis.bounds[value.name]


def float_outputs(analysis: Analysis, node: ir.Node) -> None:
    """Values computed from float parts are float too; arithmetic ones are cast into the
    default precision, except a dot product that continues into its bias (the accumulator is
    exact; the sum with the bias is cast) and a value whose own Quant casts it."""
    assert analysis.float_parts is not None
    if is_integer_quantizer(node):
        return
    if not any(v is not None and v.name in analysis.floating for v in node.inputs):
        return
    for out in node.outputs:
        if out is None or out.name not in analysis.bounds:
            continue
        analysis.floating.add(out.name)
        if node.op_type in default_precision.ARITHMETIC_OPS and not _cast_later(analysis, node, out):
            _cast_float(analysis, out)


def _cast_later(analysis: Analysis, node: ir.Node, out: ir.Value) -> bool:
    readers = list(out.consumers())
    if len(readers) != 1 or out.is_graph_output():
        return False
    reader = readers[0]
    if is_integer_quantizer(reader):
        return True
    dot_product = node.op_type == "MatMul" or (node.op_type == "Conv" and len(node.inputs) < 3)
    if not dot_product or reader.op_type != "Add" or reader.domain not in STANDARD_DOMAINS:
        return False
    other = reader.inputs[1] if reader.inputs[0] is out else reader.inputs[0]
    return analysis.is_constant(other)


def _cast_float(analysis: Analysis, value: ir.Value) -> None:
    assert analysis.float_parts is not None
    fixed = analysis.float_parts.fixed
    exact = analysis.bounds[value.name]

    def cast_bounds(lo: object, hi: object) -> tuple[int, int]:
        return default_precision.cast_code_bounds(int(lo), int(hi), exact.exp, fixed)

    pairs = np.vectorize(cast_bounds, otypes=[object, object])(exact.lo, exact.hi)
    analysis.record(value, Bounds(int_array(pairs[0]), int_array(pairs[1]), fixed.lsb_exponent), fixed)
    analysis.float_parts.casts.append(value.name)
    analysis.result.inexact[value.name] = f"float activation cast into the default precision {fixed}"
