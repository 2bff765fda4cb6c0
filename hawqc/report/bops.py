"""BOPs (bit operations) per layer and in total, the cost measure of the jet-tagging studies.

For a dense layer with `n` inputs, `m` outputs, weight bits `b_w`, input activation bits `b_a` and
a fraction `p` of non-zero weights (Baskin et al., as used by the HAWQ jet-tagging papers):

    BOPs = m * n * (p * b_a * b_w + b_a + b_w + log2(n))

A convolution is that dense layer applied at every output position: `n` is its fan-in
(kernel size times input channels per group), `m` its filters, and the BOPs are multiplied by the
number of output positions.

The bit widths are the ones the hardware uses: a weight's from its quantizer (a `fold-quant`
annotation or a Quant still in the graph), an activation's from its inferred fixed-point type when
precision inference can type the graph, else from the Quant that produced it. A float operand
(nothing says otherwise) counts as 32 bits.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.ops.keys import op_key
from hawqc.ir.ops.quantizer import is_integer_quantizer, quantizer
from hawqc.ir.ops.traits import Trait, has_trait, keys_with
from hawqc.ir.quant_annotation import read_annotation
from hawqc.sim import ops

FLOAT_BITS = 32
# Ops whose result holds only values of their input 0 (or zeros): an activation keeps its bits
# through them. Concat also only selects values, but from several inputs, each with its own bits.
VALUE_PRESERVING_OPS = frozenset(
    key
    for key in keys_with(Trait.SELECTS) | keys_with(Trait.SELECTS_OR_ZERO) | keys_with(Trait.INFERENCE_IDENTITY)
    if key[1] != "Concat"
)


@dataclass(frozen=True)
class LayerBops:
    name: str
    op: str
    n: int  # fan-in of one output
    m: int  # outputs (filters) per position
    positions: int  # output positions (1 for a dense layer)
    weight_bits: int
    input_bits: int
    nonzero_fraction: float
    bops: float

    def as_dict(self) -> dict:
        return asdict(self)


def bops_formula(n: int, m: int, weight_bits: int, input_bits: int, nonzero_fraction: float) -> float:
    return m * n * (nonzero_fraction * input_bits * weight_bits + input_bits + weight_bits + math.log2(n))


def _constant_weight(value: ir.Value | None) -> tuple[np.ndarray, int] | None:
    """The weight's values and bits, through a Quant of a constant if there still is one."""
    if value is None:
        return None
    if value.const_value is not None:
        annotation = read_annotation(value)
        return value.const_value.numpy(), annotation.bits if annotation is not None else FLOAT_BITS
    producer = value.producer()
    if producer is None or not is_integer_quantizer(producer):
        return None
    constants = tuple(None if v is None or v.const_value is None else v.const_value.numpy() for v in producer.inputs)
    bits = _bits(producer)
    if any(c is None for c in constants) or bits is None:
        return None
    # The quantized values (weights that round to zero count as zero), by the executor's own Quant.
    kernel = ops.build_quant(ops.NodeSpec(producer, constants, None))
    (quantized,) = kernel(constants)
    return quantized, bits


def _bits(node: ir.Node) -> int | None:
    """The bit width of a Quant / IntQuant when it is a constant (truncated to an integer)."""
    tensor = quantizer(node).bit_width_tensor  # type: ignore[union-attr]
    return None if tensor is None else int(tensor.reshape(()))


def _input_bits(value: ir.Value | None, types: dict) -> int:
    if value is None:
        return FLOAT_BITS
    fixed = types.get(value.name)
    if fixed is not None:
        return fixed.width
    producer = value.producer()
    # Ops that only move or select values keep their input's bits: look through them to the Quant.
    while producer is not None and op_key(producer) in VALUE_PRESERVING_OPS and producer.inputs:
        producer = producer.inputs[0].producer() if producer.inputs[0] is not None else None
    if producer is not None and is_integer_quantizer(producer):
        bits = _bits(producer)
        if bits is not None:
            return bits
    return FLOAT_BITS


def _dims(value: ir.Value | None) -> list[int] | None:
    if value is None or value.shape is None or not all(isinstance(d, int) for d in value.shape):
        return None
    return [int(d) for d in value.shape]


def layer_bops(model: ir.Model) -> list[LayerBops]:
    """BOPs of every MatMul, Gemm and Conv with constant weights, in graph order."""
    try:
        from hawqc.ir.precision import precision_of

        types = dict(precision_of(model).types)
    except UnsupportedModelError:
        types = {}  # a float model: activation bits come from Quants, else count as float
    layers = []
    for node in model.graph:
        op = node.op_type
        if not has_trait(node, Trait.LAYER):
            continue
        weight = _constant_weight(node.inputs[1] if len(node.inputs) > 1 else None)
        out_dims = _dims(node.outputs[0])
        if weight is None or out_dims is None:
            continue
        values, weight_bits = weight
        if op == "Conv":
            m = values.shape[0]
            n = int(values.size // m)
            spatial = out_dims[1:-1] if node.domain == CHANNELS_LAST_DOMAIN else out_dims[2:]
            positions = int(np.prod(spatial)) if spatial else 1
        else:
            transposed = op == "Gemm" and node.attributes.get_int("transB", 0) == 1
            n, m = (values.shape[1], values.shape[0]) if transposed else (values.shape[0], values.shape[-1])
            positions = int(np.prod(out_dims[1:-1])) if len(out_dims) > 2 else 1
        p = float(np.count_nonzero(values)) / values.size if values.size else 0.0
        b_a = _input_bits(node.inputs[0], types)
        bops = positions * bops_formula(n, m, weight_bits, b_a, p)
        layers.append(LayerBops(node.name or node.outputs[0].name, op, n, m, positions, weight_bits, b_a, p, bops))
    return layers


def bops_summary(model: ir.Model) -> dict:
    """`{"layers": [...], "total": ...}` for the report."""
    layers = layer_bops(model)
    return {"layers": [layer.as_dict() for layer in layers], "total": sum(layer.bops for layer in layers)}
