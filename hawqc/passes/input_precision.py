"""`input-precision{type=fixed<8,3>}`: take every unquantized graph input as a fixed-point type.

A graph input read by something other than a quantizer (`Quant`, `IntQuant`, `BipolarQuant`) gets a
Quant of its own, `hawqc.ir.input_precision.InputQuant` (scale 2**(I - W), zero point 0, W bits, the
type's signedness, rounding and saturation), and every such reader reads the Quant instead. From then on the graph is an
ordinary quantized graph: precision inference, semantic and hardware mode, verification's input
drawing and the hls4ml planner (the Quant on a graph input is the input layer, and the C bridge's
float -> `ap_fixed<W,I,AP_RND_CONV,AP_SAT>` conversion is that Quant) need nothing new.

Readers that already are quantizers keep the raw input (a Quant before them would round twice, and
before a `BipolarQuant` could turn a tiny negative number into 0, whose sign is +1). An input read
only by quantizers is quantized already and is left alone; a graph without unquantized inputs is
not changed.

It changes what the graph computes on purpose (inputs are rounded and clamped), so it declares
`changes_meaning`. `hawqc --input-precision T` runs it right after loading, before the HAWQ-export
reading and the pipeline (`hawqc.flow.input_precision_option`), so that they see the input's range; `hawqc-opt -p
'input-precision{type=T}'` replays it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.ir.constants import make_initializer
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.input_precision import InputQuant, parse_input_precision
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.quantizer import CODE_QUANTIZERS, is_quantizer
from hawqc.passes.base import Pass, PassResult, option

# How a wrong `type` is named: the pass and its option (the command line's `--input-precision` is
# checked, and named, before the pass is built).
TYPE_OPTION = "pass 'input-precision' option 'type'"


@dataclass(frozen=True)
class InputPrecision(Pass):
    name: ClassVar[str] = "input-precision"
    summary: ClassVar[str] = "Take every unquantized graph input as a fixed-point type: a Quant on it (changes the outputs)."
    changes_meaning: ClassVar[bool] = True

    type: str = option("fixed<16,6>", "the input's fixed-point type, e.g. fixed<8,3> or ufixed<8,0,TRN,SAT>")

    def __post_init__(self) -> None:
        self.quant()  # a wrong spelling is refused when the pipeline is parsed, before any model is read

    def quant(self) -> InputQuant:
        return parse_input_precision(self.type, option=TYPE_OPTION)

    def run(self, model: ir.Model) -> PassResult:
        quantized = quantize_inputs(model, self.quant())
        return PassResult(bool(quantized), {"inputs-quantized": len(quantized)})


def unquantized_inputs(graph: ir.Graph) -> list[ir.Value]:
    """Graph inputs read by something other than a quantizer of float values (`Quant`, `IntQuant`,
    `BipolarQuant`: what precision inference takes a graph input into directly)."""
    return [value for value in graph.inputs if value.const_value is None and any(not _quantizes(user) for user, _ in value.uses())]


def _quantizes(node: ir.Node) -> bool:
    return is_quantizer(node, CODE_QUANTIZERS)


def quantize_inputs(model: ir.Model, spec: InputQuant) -> list[str]:
    """Put a Quant of `spec` on every unquantized graph input; the names of those inputs."""
    graph = model.graph
    inputs = unquantized_inputs(graph)
    if not inputs:
        return []
    model.opset_imports.setdefault(QONNX_DOMAIN, 1)
    names = FreshNames(graph)
    first = next(iter(graph), None)
    for value in inputs:
        node = _input_quant(graph, value, spec, names)
        for user, index in list(value.uses()):
            if not _quantizes(user):
                user.replace_input_with(index, node.outputs[0])
        if first is None:
            graph.append(node)
        else:
            graph.insert_before(first, node)
    return [value.name for value in inputs]


def _input_quant(graph: ir.Graph, x: ir.Value, spec: InputQuant, names: FreshNames) -> ir.Node:
    parameters = []
    for role, number in (("scale", math.ldexp(1.0, spec.scale_exponent)), ("zeropt", 0.0), ("bitwidth", float(spec.bit_width))):
        constant = make_initializer(np.array(number, dtype=np.float32), names(f"{x.name}_input_{role}"))
        graph.register_initializer(constant)
        parameters.append(constant)
    attributes = [
        ir.AttrInt64("signed", int(spec.signed)),
        ir.AttrInt64("narrow", int(spec.narrow)),
        ir.AttrString("rounding_mode", spec.rounding_mode),
    ]
    node = ir.Node(QONNX_DOMAIN, "Quant", [x, *parameters], attributes, name=names(f"{x.name}_input_quant"), num_outputs=1)
    out = node.outputs[0]
    out.name = names(f"{x.name}_quantized")
    out.type = ir.TensorType(ir.DataType.FLOAT)
    out.shape = None if x.shape is None else ir.Shape(list(x.shape))
    return node
