"""Shape and type inference that covers the QONNX ops.

onnx's own inference leaves the outputs of custom ops unknown, and everything downstream of them.
Every QONNX quantizer keeps the shape of its first input and yields float32, so in a copy of the
graph each one is stood in for by an `Identity` of that input, onnx infers the rest (with data
propagation, so that `Shape -> Gather -> Reshape` flatten chains resolve), and the results are
copied back by value name. The model itself is never replaced, only annotated.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from hawqc.errors import UserInputError
from hawqc.ir.domains import QUANT_OPS, is_qonnx_domain
from hawqc.ir.io import to_proto

# QONNX ops whose output has the shape of input 0 (elementwise quantizers).
SHAPE_PRESERVING_QONNX_OPS = QUANT_OPS | {"BipolarQuant", "Trunc", "MultiThreshold"}


def infer_shapes(model: ir.Model) -> int:
    """Fill in the type and shape of every value onnx can infer; returns how many were updated."""
    proto = to_proto(model)
    for node in proto.graph.node:
        if is_qonnx_domain(node.domain) and node.op_type in SHAPE_PRESERVING_QONNX_OPS:
            _stand_in_identity(node)
    # Exporters leave out the opset import of a custom domain (the channels-last ops); onnx then
    # refuses the whole graph instead of skipping the ops it does not know.
    imported = {opset.domain for opset in proto.opset_import}
    for domain in sorted({node.domain for node in proto.graph.node} - imported):
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as err:
        raise UserInputError(f"shape inference failed: {str(err).splitlines()[0]}") from None
    known = {
        info.name: info.type
        for info in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)
    }
    updated = 0
    for value in _all_values(model.graph):
        type_proto = known.get(value.name)
        if type_proto is None or not type_proto.HasField("tensor_type"):
            continue
        shape = ir.serde.deserialize_type_proto_for_shape(type_proto)
        if shape is not None and _more_specific(shape, value.shape):
            value.shape = shape
            updated += 1
        if value.type is None:
            value.type = ir.serde.deserialize_type_proto_for_type(type_proto)
    return updated


def _stand_in_identity(node: onnx.NodeProto) -> None:
    first_input = node.input[0]
    del node.input[:]
    node.input.append(first_input)
    del node.attribute[:]
    node.op_type, node.domain = "Identity", ""


def _all_values(graph: ir.Graph):
    yield from graph.inputs
    for node in graph:
        yield from node.outputs


def _more_specific(new: ir.Shape, old: ir.Shape | None) -> bool:
    if old is None:
        return True
    if len(new) != len(old):
        return False
    known_new = sum(isinstance(dim, int) for dim in new)
    known_old = sum(isinstance(dim, int) for dim in old)
    return known_new > known_old
