"""The layers of HAWQ's own QONNX exports, as a graph pattern (shared by `exact-requant` and the
`read-as-hawq` pass that `--hawq-export-semantics hawq` runs, `hawqc.passes.read_as_hawq`).

HAWQ's exporter writes a requantized layer and the next layer's input as float rescales:

    Div(v, s_prev) -> MatMul(W_int) / Conv(W_int, b_int) -> Add(b_int)? -> Mul(k) -> Relu? -> Quant(s_a)
        -> (MaxPool / Flatten / Reshape / Transpose / ...)* -> Div(s_a) -> next layer

`match_layer(quant_node, limit)` recognizes one such layer from its Quant and returns its pieces
(`Layer`); `codes_of` says what may enter it (by default `incoming_codes`: the integer codes of an
earlier activation; `read-as-hawq` also accepts the graph input divided by a scale given by hand, the
first layer of a model without an input QuantAct). It says nothing about whether the layer can be made exact (exact-requant proves that)
or what it means (the normalization reads it as HAWQ's integer requantization).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.keys import op_key
from hawqc.ir.ops.quantizer import quantizer
from hawqc.ir.ops.traits import Trait, keys_with
from hawqc.sim import quant

# Ops that carry each element of their first input to the output unchanged (the rearrangements), or
# pick one of several (the max pools, in either layout): they commute with any monotone element-wise
# map such as x -> x / s.
SELECTION_OPS = (
    keys_with(Trait.REARRANGES)
    | keys_with(Trait.SELECTS | Trait.CHANNELS_FIRST)
    | keys_with(Trait.SELECTS | Trait.CHANNELS_LAST)
)
FLOAT32_EXACT_INT = 1 << 24
ROUND_HALF_EVEN = ("ROUND", "HALF_EVEN")


@dataclass(frozen=True)
class QuantParams:
    scale: np.ndarray
    zeropt: np.ndarray
    bounds: quant.QuantBounds
    node: ir.Node

    @property
    def code_range(self) -> tuple[int, int]:
        return int(self.bounds.min_int), int(self.bounds.max_int)

    def apply(self, x: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        return quant.int_quant(x, self.scale if scale is None else scale, self.zeropt, self.bounds, np.round)


def constant(value: ir.Value | None) -> np.ndarray | None:
    """A float32 constant: an initializer (not an overridable input), or a Quant of constants."""
    if value is None or value.is_graph_input():
        return None
    if value.const_value is not None:
        array = value.const_value.numpy()
        return array if array.dtype == np.float32 else None
    node = value.producer()
    params = quant_params(node) if node is not None else None
    if params is None:
        return None
    x = constant(node.inputs[0])
    return None if x is None else params.apply(x)


def quant_params(node: ir.Node) -> QuantParams | None:
    """Per-tensor, zero point 0, round half to even Quant with constant parameters, else None."""
    view = quantizer(node)
    parameters = None if view is None else view.integer_parameters(constant)
    if parameters is None or view.bits is None or view.is_bipolar:
        return None
    scale, zeropt, bits = parameters
    if scale.size != 1 or zeropt.size != 1:
        return None
    if not (np.isfinite(scale).all() and float(scale.reshape(-1)[0]) > 0 and float(zeropt.reshape(-1)[0]) == 0):
        return None
    if view.rounding_mode not in ROUND_HALF_EVEN:
        return None
    # qonnx's bounds in the bit width tensor's own dtype, as the executor evaluates them.
    return QuantParams(scale, zeropt, quant.quant_bounds(bits, view.signed, view.narrow), node)


def is_power_of_two(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def single_use(value: ir.Value) -> ir.Node | None:
    uses = value.uses()
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0][0]


def is_selection(node: ir.Node) -> bool:
    return op_key(node) in SELECTION_OPS


def selection_source(value: ir.Value) -> ir.Value:
    """The value `value` selects from, through selection ops (their first input)."""
    node = value.producer()
    while node is not None and is_selection(node) and len(node.outputs) >= 1 and node.outputs[0] is value:
        value = node.inputs[0]
        node = value.producer()
    return value


def scalar_operand(node: ir.Node) -> tuple[ir.Value, np.ndarray] | None:
    """(other input, constant) of a binary op with one one-element float32 constant operand."""
    if len(node.inputs) != 2:
        return None
    for data, const in ((0, 1), (1, 0)):
        array = constant(node.inputs[const])
        if array is not None and array.size == 1 and constant(node.inputs[data]) is None:
            return node.inputs[data], array
    return None


@dataclass
class Layer:
    """The matched pieces of one requantized layer."""

    core: ir.Node  # MatMul or Conv
    codes: tuple[int, int]  # range of the integer codes entering it
    perturbation: float  # largest |c' - c| of the values entering it (float32 Div round trips)
    weight: np.ndarray
    biases: list[np.ndarray]
    mul: ir.Node
    k: np.ndarray
    relu: bool
    quant: QuantParams
    readers: list[ir.Node]  # the Divs that turn the Quant's output back into codes
    divisor: np.ndarray


def incoming_codes(value: ir.Value, limit: int) -> tuple[int, int, float] | None:
    """(lo, hi, delta): `value` holds integer codes in [lo, hi], each off by at most delta.

    delta > 0 when `value` is `Div(Quant(.., s_q) output, s)` and `(q * s_q) / s` does not give every
    code q back exactly in float32 (the usual case for arbitrary scales: about 15% of 8-bit codes
    come back one float32 ulp away)."""
    source = selection_source(value)
    node = source.producer()
    if node is None:
        return None
    params = quant_params(node)
    if params is not None:
        return (*params.code_range, 0.0) if float(params.scale.reshape(-1)[0]) == 1.0 else None
    if node.op_type != "Div" or node.domain != "" or constant(node.inputs[1]) is None:
        return None
    divisor = constant(node.inputs[1])
    upstream = selection_source(node.inputs[0]).producer()
    params = quant_params(upstream) if upstream is not None else None
    if divisor.size != 1 or params is None:
        return None
    lo, hi = params.code_range
    if hi - lo + 1 > limit:
        return None
    codes = np.arange(lo, hi + 1, dtype=np.float32)
    # The Quant's own tail `(q - zeropt) * scale`, then the Div: every code must come back.
    values = np.asarray((codes - params.zeropt.reshape(())) * params.scale.reshape(()), dtype=np.float32)
    back = np.divide(values, divisor.reshape(()))
    if not np.all(np.isfinite(back)):
        return None
    delta = float(np.max(np.abs(back.astype(np.float64) - codes)))
    return (lo, hi, delta) if delta < 0.25 else None


def match_layer(
    node: ir.Node, limit: int, codes_of: Callable[[ir.Value, int], tuple[int, int, float] | None] = incoming_codes
) -> Layer | None:
    params = quant_params(node)
    if params is None:
        return None
    producer = node.inputs[0].producer()
    relu = producer is not None and producer.op_type == "Relu" and producer.domain == ""
    if relu:
        if single_use(producer.outputs[0]) is not node:
            return None
        producer = producer.inputs[0].producer()
    if producer is None or producer.op_type != "Mul" or producer.domain != "":
        return None
    mul = producer
    if single_use(mul.outputs[0]) is not (node if not relu else node.inputs[0].producer()):
        return None
    operands = scalar_operand(mul)
    if operands is None or not (np.isfinite(operands[1]).all() and float(operands[1].reshape(-1)[0]) > 0):
        return None
    acc, k = operands
    core = acc.producer()
    biases = []
    if core is not None and core.op_type == "Add" and core.domain == "" and single_use(acc) is mul:
        for data, const in ((0, 1), (1, 0)):
            bias = constant(core.inputs[const])
            if bias is not None and constant(core.inputs[data]) is None:
                biases.append(bias)
                acc = core.inputs[data]
                core = acc.producer()
                break
        else:
            return None
    if core is None or core.domain != "" or core.op_type not in ("MatMul", "Conv") or single_use(acc) is None:
        return None
    weight = constant(core.inputs[1])
    if weight is None or constant(core.inputs[0]) is not None:
        return None
    if core.op_type == "MatMul" and weight.ndim != 2:
        return None
    if core.op_type == "Conv" and len(core.inputs) > 2 and core.inputs[2] is not None:
        conv_bias = constant(core.inputs[2])
        if conv_bias is None:
            return None
        biases.append(conv_bias)
    codes = codes_of(core.inputs[0], limit)
    readers = reading_divs(node.outputs[0])
    if codes is None or not readers:
        return None
    return Layer(core, codes[:2], codes[2], weight, biases, mul, k, relu, params, readers, constant(readers[0].inputs[1]))


def reading_divs(value: ir.Value) -> list[ir.Node] | None:
    """The Divs by one scalar that read `value` through selection ops, if nothing else reads it."""
    divs: list[ir.Node] = []
    pending = [value]
    while pending:
        current = pending.pop()
        if current.is_graph_output():
            return None
        for user, index in current.uses():
            if is_selection(user) and index == 0:
                if any(out.uses() or out.is_graph_output() for out in user.outputs[1:]):
                    return None
                pending.append(user.outputs[0])
            elif user.op_type == "Div" and user.domain == "" and index == 0:
                divisor = constant(user.inputs[1])
                if divisor is None or divisor.size != 1:
                    return None
                if divs and divisor.reshape(-1).view(np.uint32)[0] != constant(divs[0].inputs[1]).reshape(-1).view(np.uint32)[0]:
                    return None
                divs.append(user)
            else:
                return None
    return divs
