"""The graph input of a HAWQ export, as `read-as-hawq` reads it (`hawqc.passes.read_as_hawq`).

HAWQ's exporter writes the input in one of two layouts:

- with an input `QuantAct`: `Quant(x, s_in) -> Div(s_in)`, the codes `clamp(round(x / s_in))`;
- without one (HAWQ's jet-tagging scripts give the first QuantLinear / QuantConv2d its
  `prev_act_scaling_factor` by hand): `x -> Div(x, s_in)`, nothing on the input. Such a graph input
  has no fixed-point type; `--input-precision fixed<W,I>` gives it one (its pass runs first and puts
  `Quant(x, 2^-F)` on the input), so this reads `Quant(x, 2^-F) -> Div(s_in)` with a divisor that is
  not the Quant's scale as that layout. Without the option it is refused, naming the option. (With
  `s_in = 2^-F` the graph is the one an input QuantAct gives, and is read as one: the same codes.)

Without an input QuantAct, HAWQ's first layer computes (upstream `QuantLinear.forward`)
`ste_round(F.linear(x / s_in, W_int, b_int)) * s_w * s_in`, and the next QuantAct's
`round(z / (s_in * s_w))` gives that integer back: the layer's integer is the accumulator
`A = round(W_int . (x / s_in) + b_int)`, rounded half to even (`torch.round`). So:

- where every `x / s_in` is an integer (`s_in = 2^-j` with `j >= F`: the input's grid is a multiple
  of s_in) the sum is an integer and the rounding does nothing: the Div becomes `Mul(2^j)`, exact in
  float32 and in fixed point, and the codes flow on as after an input QuantAct;
- otherwise the Div stays (`x / s_in`, an exact rational in the exact meaning) and a quantizer of
  each first-layer accumulator `a` writes HAWQ's rounding in the graph (`round_accumulator`: a
  `Quant(scale 1, zero point 0, B bits signed, ROUND)`, or for a non-power-of-two s_in the same
  rounding spelled `Mul(s_in) -> Quant(scale s_in) -> Div(s_in)`), B wide enough never to clamp (the
  input's range times `sum |W_int|`, plus `|b_int|`). For a non-power-of-two s_in, `integer-requant`
  then takes `Quant(x, 2^-F) -> Div(s_in) -> MatMul / Conv(W_int) -> Add(b_int) -> (the rounding)`
  to integers and one requantization of the integer sum `W_int . n` (n the input codes, the bias an
  offset), proven equal to the exact rounding over the whole accumulator range.

What is kept is the exact sum, rounded once. Upstream HAWQ sums in float32, which can land on the
other side of a .5 than the exact sum when it is within float32's error of one (its result then
also depends on the summation order); hawqc's own CPU modules (`hawqc.frontends.hawq`) round each
`x / s_in` before summing (they assume codes enter every weighted layer), a different model for such
an input, which this does not follow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.ir.constants import make_initializer
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.quantizer import quantizer
from hawqc.passes.hawq_export_layers import constant, is_power_of_two, is_selection, single_use


@dataclass(frozen=True)
class HawqInput:
    """How the graph input reaches the first layers: the Quant on it (HAWQ's input QuantAct's, or
    the one `--input-precision` put there) and the Divs by HAWQ's `s_in` reading it. `by_hand`: no
    input QuantAct, the Divs divide by a scale of their own."""

    quant: ir.Node
    divs: list[ir.Node]
    scale: np.ndarray  # s_in, float32, one element
    by_hand: bool


def divided_graph_input(value: ir.Value) -> bool:
    """Whether `value` is the graph input, or a quantizer of it, divided by a constant scalar (through
    selection ops): what the first layer of a HAWQ export reads when the model has no input QuantAct
    (the input's Div by the scale given by hand)."""
    node = value.producer()
    while node is not None and is_selection(node) and node.outputs[0] is value:
        value = node.inputs[0]
        node = value.producer()
    if node is None or node.op_type != "Div" or node.domain != "":
        return False
    divisor = constant(node.inputs[1])
    if divisor is None or divisor.size != 1:
        return False
    source = node.inputs[0]
    quant = source.producer()
    if quant is not None and quantizer(quant) is not None and quant.inputs[0] is not None:
        source = quant.inputs[0]
    return source.is_graph_input()


def rounds_first_layers(hawq_input: HawqInput) -> bool:
    """Whether `x / s_in` can be other than an integer: s_in does not divide the input's grid."""
    if not hawq_input.by_hand:
        return False
    grid = float(quantizer(hawq_input.quant).scale.reshape(-1)[0])
    s_in = float(hawq_input.scale.reshape(-1)[0])
    return not (is_power_of_two(grid) and is_power_of_two(s_in) and s_in <= grid)


def first_layer_cores(hawq_input: HawqInput) -> list[ir.Node]:
    """The MatMul / Conv nodes that read the input's Divs (through selection ops)."""
    cores: list[ir.Node] = []
    pending = [div.outputs[0] for div in hawq_input.divs]
    while pending:
        value = pending.pop()
        for user, index in value.uses():
            if is_selection(user) and index == 0:
                pending.append(user.outputs[0])
            elif user.op_type in ("MatMul", "Conv") and user.domain == "" and index == 0 and user not in cores:
                cores.append(user)
    return cores


def round_accumulator(graph: ir.Graph, core: ir.Node, mul: ir.Node, hawq_input: HawqInput) -> ir.Node:
    """Put HAWQ's rounding of the accumulator that `mul` (the layer's `Mul(k)`) reads between
    `core -> Add(b)?` and it; the node whose output is the rounded accumulator.

    For a power-of-two `s_in`, `Quant(scale 1, B bits signed, ROUND)`: fixed point computes the Div
    and the rounding directly. Otherwise `Mul(s_in) -> Quant(scale s_in, B bits) -> Div(s_in)`, whose
    exact meaning is the same `round(a)` (`round(a * s_in / s_in) * s_in / s_in`, exact rationals):
    `integer-requant` takes a model to integers only where a quantizer's scale is not a power of two,
    and this quantizer is the one that makes it rewrite the input's `Div(s_in)` (precision inference
    refuses a Div by such a constant)."""
    index, accumulator = next((i, v) for i, v in enumerate(mul.inputs) if constant(v) is None)
    bits = _accumulator_bits(core, accumulator, hawq_input)
    names = FreshNames(graph, first_suffix=2)
    name = names(f"{core.name or accumulator.name}_hawq_round")
    s_in = hawq_input.scale.reshape(()).astype(np.float32)
    p2 = is_power_of_two(float(s_in))

    def initializer(role: str, number, dtype=np.float32) -> ir.Value:
        value = make_initializer(np.array(number, dtype=dtype), names(f"{name}_{role}"))
        graph.register_initializer(value)
        return value

    def node(op_type: str, inputs: list[ir.Value], domain: str = "", attributes: list[ir.Attr] = ()) -> ir.Node:
        made = ir.Node(domain, op_type, inputs, list(attributes), name=names(f"{name}_{op_type.lower()}"), num_outputs=1)
        made.outputs[0].name = names(f"{made.name}_out")
        return made

    new: list[ir.Node] = []
    value = accumulator
    if not p2:
        # In double: integer-requant's multiplier then has float64's 53 bits (a calibrated s_in needs
        # more than float32's 24 to round every accumulator as the exact sum does).
        new.append(node("Cast", [value], attributes=[ir.AttrInt64("to", int(ir.DataType.DOUBLE))]))
        new.append(node("Mul", [new[-1].outputs[0], initializer("scale_in", s_in, np.float64)]))
        value = new[-1].outputs[0]
    attributes = [ir.AttrInt64("signed", 1), ir.AttrInt64("narrow", 0), ir.AttrString("rounding_mode", "ROUND")]
    parameters = [initializer("scale", np.float32(1) if p2 else s_in), initializer("zeropt", 0.0), initializer("bitwidth", float(bits))]
    new.append(node("Quant", [value, *parameters], QONNX_DOMAIN, attributes))
    if not p2:
        new.append(node("Div", [new[-1].outputs[0], initializer("scale_out", s_in)]))
    graph.insert_after(accumulator.producer(), new)
    mul.replace_input_with(index, new[-1].outputs[0])
    return new[-1]


def _accumulator_bits(core: ir.Node, accumulator: ir.Value, hawq_input: HawqInput) -> int:
    """The signed width that holds every `round(W_int . (x / s_in) + b_int)` the input's range allows."""
    view = quantizer(hawq_input.quant)
    low, high = view.code_bounds
    largest = max(abs(low), abs(high)) * float(view.scale.reshape(-1)[0]) / float(hawq_input.scale.reshape(-1)[0])
    weight = np.abs(constant(core.inputs[1]).astype(np.float64))
    # Per output: MatMul's weight is [in, out], Conv's [out, in / group, kh, kw].
    weight_sums = weight.sum(axis=0) if core.op_type == "MatMul" else weight.reshape(weight.shape[0], -1).sum(axis=1)
    bias = np.zeros_like(weight_sums)
    for value in _biases(core, accumulator):
        bias = bias + np.abs(value.astype(np.float64)).reshape(-1)
    bound = float(np.max(weight_sums * largest + bias))
    # Float64 rounds the bound by far less than the one code of margin kept here.
    return (math.ceil(bound) + 1).bit_length() + 1


def _biases(core: ir.Node, accumulator: ir.Value) -> list[np.ndarray]:
    biases = []
    if core.op_type == "Conv" and len(core.inputs) > 2 and core.inputs[2] is not None:
        biases.append(constant(core.inputs[2]))
    add = accumulator.producer()
    if add is not None and add is not core and add.op_type == "Add" and single_use(core.outputs[0]) is add:
        biases.extend(array for value in add.inputs if (array := constant(value)) is not None)
    return [bias for bias in biases if bias is not None]
