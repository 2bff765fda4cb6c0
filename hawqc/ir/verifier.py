"""The IR's invariants, checked after loading and after every pass.

Every violation names the node (or value) so that a pass author sees at once what broke:
- each value is defined once, and before its first use (the node list is in topological order);
- graph outputs are defined;
- QONNX ops have the right number of inputs and outputs, and valid attributes;
- their quantization parameters (scale, zero point, bit width) are constants, and sane;
- every value has a known shape (the rank at least; a symbolic batch dimension is fine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import VerificationError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import QONNX_DOMAIN, QUANT_OPS

ROUNDING_MODES = frozenset({"ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"})


@dataclass(frozen=True)
class QonnxSignature:
    """What a QONNX op must look like: input counts, which inputs are constant parameters."""

    input_counts: tuple[int, ...]
    constant_inputs: tuple[int, ...]
    bool_attributes: tuple[str, ...] = ()
    has_rounding_mode: bool = False


QUANT_SIGNATURE = QonnxSignature((4,), (1, 2, 3), ("signed", "narrow"), has_rounding_mode=True)
QONNX_SIGNATURES: dict[str, QonnxSignature] = {
    **{op: QUANT_SIGNATURE for op in QUANT_OPS},
    "BipolarQuant": QonnxSignature((2,), (1,)),
    # Trunc v1: (X, scale, zeropt, in_bitwidth, out_bitwidth); v2 adds out_scale before out_bitwidth.
    "Trunc": QonnxSignature((5, 6), (1, 2, 3, 4, 5), ("signed", "narrow"), has_rounding_mode=True),
    "MultiThreshold": QonnxSignature((2,), (1,)),
}


def verify(model: ir.Model, *, require_shapes: bool = True) -> None:
    """Raise `VerificationError` naming the first node or value that breaks an invariant."""
    graph = model.graph
    defined: dict[str, str] = {}

    def define(value: ir.Value, where: str) -> None:
        if not value.name:
            raise VerificationError(f"{where}: defines a value with no name")
        if value.name in defined:
            raise VerificationError(
                f"{where}: value '{value.name}' is already defined by {defined[value.name]}"
            )
        defined[value.name] = where

    for value in graph.inputs:
        define(value, f"graph input '{value.name}'")
    for name, value in graph.initializers.items():
        if value.const_value is None:
            raise VerificationError(f"initializer '{name}' has no data")
        if name not in defined:
            define(value, f"initializer '{name}'")

    for node in graph:
        where = describe(node)
        for index, value in enumerate(node.inputs):
            if value is None:
                continue  # an omitted optional input
            if value.name not in defined:
                later = value.producer()
                if later is not None and later.graph is graph:
                    raise VerificationError(
                        f"{where}: input {index} '{value.name}' is used before {describe(later)} "
                        "defines it (nodes are not in topological order)"
                    )
                raise VerificationError(f"{where}: input {index} '{value.name}' is never defined")
        if node.domain == QONNX_DOMAIN:
            _verify_qonnx_node(node, where)
        for value in node.outputs:
            define(value, where)
            if require_shapes and value.uses() and value.shape is None:
                raise VerificationError(f"{where}: the shape of output '{value.name}' is unknown")

    for value in graph.outputs:
        if value.name not in defined:
            raise VerificationError(f"graph output '{value.name}' is never defined")
        if require_shapes and value.shape is None:
            raise VerificationError(f"graph output '{value.name}' has no known shape")


def _verify_qonnx_node(node: ir.Node, where: str) -> None:
    signature = QONNX_SIGNATURES.get(node.op_type)
    if signature is None:
        return  # other QONNX ops are checked by whoever supports them
    if len(node.inputs) not in signature.input_counts:
        expected = " or ".join(map(str, signature.input_counts))
        raise VerificationError(f"{where}: has {len(node.inputs)} inputs, expected {expected}")
    if len(node.outputs) != 1:
        raise VerificationError(f"{where}: has {len(node.outputs)} outputs, expected 1")
    for name in signature.bool_attributes:
        attr = node.attributes.get(name)
        if attr is not None and (attr.type != ir.AttributeType.INT or attr.value not in (0, 1)):
            raise VerificationError(f"{where}: attribute '{name}' must be the integer 0 or 1")
    if signature.has_rounding_mode and "rounding_mode" in node.attributes:
        attr = node.attributes["rounding_mode"]
        mode = attr.value.upper() if attr.type == ir.AttributeType.STRING else None
        if mode not in ROUNDING_MODES:
            raise VerificationError(
                f"{where}: rounding_mode {attr.value!r} is not one of {', '.join(sorted(ROUNDING_MODES))}"
            )
    for index in signature.constant_inputs:
        value = node.inputs[index]
        if value is None or value.const_value is None:
            name = value.name if value is not None else "<missing>"
            raise VerificationError(
                f"{where}: quantization parameter input {index} '{name}' is not a constant"
            )
    if node.op_type in QUANT_OPS:
        _verify_quant_parameters(node, where)


def _verify_quant_parameters(node: ir.Node, where: str) -> None:
    scale = node.inputs[1].const_value.numpy()
    bitwidth = node.inputs[3].const_value.numpy()
    if bitwidth.size != 1:
        raise VerificationError(f"{where}: bit width must be a scalar, got shape {bitwidth.shape}")
    if not (bitwidth.item() >= 1):
        raise VerificationError(f"{where}: bit width {bitwidth.item()} is below 1")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise VerificationError(f"{where}: scale must be finite and positive")
