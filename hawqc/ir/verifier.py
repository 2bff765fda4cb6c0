"""The IR's invariants, checked after loading and after every pass.

Every violation names the node (or value) so that a pass author sees at once what broke:
- each value is defined once, and before its first use (the node list is in topological order);
- graph outputs are defined;
- QONNX ops have the right number of inputs and outputs, and valid attributes;
- their quantization parameters (scale, zero point, bit width) are constants, and sane;
- every op is in a domain hawqc knows;
- every value has a known shape (the rank at least; a symbolic batch dimension is fine), and no
  dimension is negative; graph inputs, outputs and computed values have no zero-sized dimension
  (an empty integer list, the shape of a scalar, is fine).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import VerificationError
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN, is_known_domain, known_domains_text
from hawqc.ir.ops.keys import op_types
from hawqc.ir.ops.quantizer import INTEGER_QUANTIZERS, is_integer_quantizer
from hawqc.ir.ops.traits import Trait, ops_with
from hawqc.ir.shape_inference import why_not_inferred

ROUNDING_MODES = frozenset({"ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"})


@dataclass(frozen=True)
class QonnxSignature:
    """What a QONNX op must look like: its parameters (every input after X, constants), by input
    count where an op has versions, and its attributes."""

    parameters: dict[int, tuple[str, ...]]  # input count -> the parameters' roles, in order
    bool_attributes: tuple[str, ...] = ()
    has_rounding_mode: bool = False


# The roles of parameters; a scale or zero point holds one value per element of X or broadcasts to
# it (per tensor, per channel), a bit width is one number (QONNX's spec).
SCALE, ZERO_POINT, BIT_WIDTH, IN_BIT_WIDTH, OUT_SCALE, OUT_BIT_WIDTH, THRESHOLDS = (
    "scale", "zero point", "bit width", "input bit width", "output scale", "output bit width", "thresholds",
)  # fmt: skip
BROADCAST_ROLES = frozenset({SCALE, ZERO_POINT, OUT_SCALE})
SCALAR_ROLES = frozenset({BIT_WIDTH, IN_BIT_WIDTH, OUT_BIT_WIDTH})

QUANT_SIGNATURE = QonnxSignature({4: (SCALE, ZERO_POINT, BIT_WIDTH)}, ("signed", "narrow"), has_rounding_mode=True)
QONNX_SIGNATURES: dict[str, QonnxSignature] = {
    **{op: QUANT_SIGNATURE for op in op_types(INTEGER_QUANTIZERS, QONNX_DOMAIN)},
    "BipolarQuant": QonnxSignature({2: (SCALE,)}),
    # Trunc v1: (X, scale, zeropt, in_bitwidth, out_bitwidth); v2 adds out_scale before out_bitwidth.
    "Trunc": QonnxSignature(
        {5: (SCALE, ZERO_POINT, IN_BIT_WIDTH, OUT_BIT_WIDTH), 6: (SCALE, ZERO_POINT, IN_BIT_WIDTH, OUT_SCALE, OUT_BIT_WIDTH)},
        ("signed", "narrow"),
        has_rounding_mode=True,
    ),
    "MultiThreshold": QonnxSignature({2: (THRESHOLDS,)}),
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
        _verify_dimensions(value, f"graph input '{value.name}'", allow_empty=False)
    for name, value in graph.initializers.items():
        if value.const_value is None:
            raise VerificationError(f"initializer '{name}' has no data")
        if name not in defined:
            define(value, f"initializer '{name}'")

    for node in graph:
        where = describe(node)
        if not is_known_domain(node.domain):
            raise VerificationError(
                f"{where}: unknown op domain '{node.domain}'; hawqc knows {known_domains_text()}"
            )
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
            if require_shapes and value.shape is None and (value.uses() or value.is_graph_output()):
                raise VerificationError(
                    f"{where}: the shape of output '{value.name}' is unknown{_why_unknown(node, model)}"
                )
            _verify_dimensions(value, f"{where}: output '{value.name}'", allow_empty=_is_integer(value))

    for value in graph.outputs:
        if value.name not in defined:
            raise VerificationError(f"graph output '{value.name}' is never defined")
        if require_shapes and value.shape is None:
            raise VerificationError(f"graph output '{value.name}' has no known shape")
        _verify_dimensions(value, f"graph output '{value.name}'", allow_empty=False)


def _verify_dimensions(value: ir.Value, what: str, *, allow_empty: bool) -> None:
    """A negative dimension means nothing; a zero-sized one leaves nothing to compute (a graph
    input of shape [1, 0] has no element), except in an integer list of axes or dimensions."""
    for dim in value.shape or ():
        if isinstance(dim, int) and (dim < 0 or (dim == 0 and not allow_empty)):
            kind = "negative" if dim < 0 else "zero-sized"
            raise VerificationError(f"{what} has a {kind} dimension (shape {_shape_text(value.shape)})")


def _is_integer(value: ir.Value) -> bool:
    return value.dtype is not None and value.dtype.is_integer()


def _why_unknown(node: ir.Node, model: ir.Model) -> str:
    """What keeps onnx's shape inference from a node's output, where the inputs or onnx tell."""
    for index, value in enumerate(node.inputs):
        shape = None if value is None else value.shape
        if shape is not None and any(isinstance(dim, int) and dim == 0 for dim in shape):
            return f": input {index} '{value.name}' has a zero-sized dimension (shape {_shape_text(shape)})"
    if node.domain == QONNX_DOMAIN and node.op_type not in QONNX_SIGNATURES:
        return f": hawqc knows no QONNX op '{node.op_type}' (it knows {', '.join(sorted(QONNX_SIGNATURES))})"
    known = ops_with(Trait.CHANNELS_LAST, CHANNELS_LAST_DOMAIN)
    if node.domain == CHANNELS_LAST_DOMAIN and node.op_type not in known:
        return f": hawqc knows no channels-last op '{node.op_type}' (it knows {', '.join(sorted(known))})"
    version = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    reason = None if version is None else why_not_inferred(node, version)
    return "" if reason is None else f": {reason}"


def _verify_qonnx_node(node: ir.Node, where: str) -> None:
    signature = QONNX_SIGNATURES.get(node.op_type)
    if signature is None:
        return  # other QONNX ops are checked by whoever supports them
    roles = signature.parameters.get(len(node.inputs))
    if roles is None:
        expected = " or ".join(map(str, signature.parameters))
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
    x = node.inputs[0]
    for index, role in enumerate(roles, start=1):
        value = node.inputs[index]
        if value is None or value.const_value is None:
            name = value.name if value is not None else "<missing>"
            raise VerificationError(
                f"{where}: quantization parameter input {index} '{name}' is not a constant"
            )
        _verify_parameter_shape(value, role, x, where)
    if is_integer_quantizer(node):
        _verify_quant_parameters(node, where)


def _verify_parameter_shape(value: ir.Value, role: str, x: ir.Value | None, where: str) -> None:
    """A bit width is one number; a scale or zero point broadcasts to X without changing its shape
    (numpy's rule: trailing dimensions equal or 1; qonnx's output has the shape of X). A dimension
    of X that is not a number (a symbolic batch) only takes 1."""
    shape = tuple(value.const_value.shape)
    if role in SCALAR_ROLES and np.prod(shape, dtype=np.int64) != 1:
        raise VerificationError(f"{where}: {role} '{value.name}' must be a scalar, got shape {list(shape)}")
    if role not in BROADCAST_ROLES or x is None or x.shape is None:
        return
    x_shape = list(x.shape)
    fits = len(shape) <= len(x_shape) and all(
        p == 1 or p == d for p, d in zip(reversed(shape), reversed(x_shape))
    )
    if not fits:
        raise VerificationError(
            f"{where}: {role} '{value.name}' of shape {list(shape)} does not broadcast to input '{x.name}' "
            f"of shape {_shape_text(x_shape)}"
        )


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _verify_quant_parameters(node: ir.Node, where: str) -> None:
    scale = node.inputs[1].const_value.numpy()
    bitwidth = node.inputs[3].const_value.numpy()
    if np.isnan(bitwidth.item()):
        raise VerificationError(f"{where}: bit width is NaN")
    if not (bitwidth.item() >= 1):
        raise VerificationError(f"{where}: bit width {bitwidth.item()} is below 1")
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise VerificationError(f"{where}: scale must be finite and positive")
