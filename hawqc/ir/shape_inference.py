"""Shape and type inference that covers the QONNX ops.

onnx's own inference leaves the outputs of custom ops unknown, and everything downstream of them.
Every QONNX quantizer keeps the shape of its first input, so in a copy of the graph each one is
stood in for by an `Identity` of that input (a `Cast` to float32 for `Quant` / `IntQuant`, whose
result qonnx always casts to float32, whatever the input's type: a double input is HAWQ's
requantization in a lifted graph), onnx infers the rest (with data
propagation, so that `Shape -> Gather -> Reshape` flatten chains resolve), and the results are
copied back by value name. The model itself is never replaced, only annotated.

The channels-last ops (`qonnx.custom_op.channels_last`) mean "the standard op on input 0 transposed
to channels-first, result transposed back" (for Conv, the weight too), so in the copy each is stood
in for by exactly that: Transpose -> standard op -> Transpose, and onnx's own rules give the output
shape, attributes absent or not. The Transposes need the input's rank; where neither the model nor
the op's attributes say it, onnx infers the graph up to that op first.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir

from hawqc.errors import UserInputError
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN, is_qonnx_domain
from hawqc.ir.io import to_proto
from hawqc.ir.layout import channels_first_perm, channels_last_perm
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.keys import op_types
from hawqc.ir.ops.quantizer import INTEGER_QUANTIZERS
from hawqc.ir.ops.traits import Trait, ops_with

# QONNX ops whose output has the shape of input 0 (elementwise quantizers, MultiThreshold).
SHAPE_PRESERVING_QONNX_OPS = ops_with(Trait.KEEPS_INPUT_SHAPE, QONNX_DOMAIN)
_FLOAT32_QONNX_OPS = op_types(INTEGER_QUANTIZERS, QONNX_DOMAIN)
_CHANNELS_LAST_OPS = ops_with(Trait.CHANNELS_LAST, CHANNELS_LAST_DOMAIN)


def infer_shapes(model: ir.Model) -> int:
    """Fill in the type and shape of every value onnx can infer; returns how many were updated."""
    proto = to_proto(model)
    for node in proto.graph.node:
        if is_qonnx_domain(node.domain) and node.op_type in SHAPE_PRESERVING_QONNX_OPS:
            _stand_in_identity(node, float32=node.op_type in _FLOAT32_QONNX_OPS)
    # Exporters leave out the opset import of a custom domain (the channels-last ops); onnx then
    # refuses the whole graph instead of skipping the ops it does not know.
    imported = {opset.domain for opset in proto.opset_import}
    for domain in sorted({node.domain for node in proto.graph.node} - imported):
        proto.opset_import.append(onnx.helper.make_opsetid(domain, 1))
    _stand_in_channels_last_ops(proto)
    inferred = _onnx_infer(proto)
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


def _stand_in_identity(node: onnx.NodeProto, float32: bool) -> None:
    first_input = node.input[0]
    del node.input[:]
    node.input.append(first_input)
    del node.attribute[:]
    node.op_type, node.domain = ("Cast", "") if float32 else ("Identity", "")
    if float32:
        node.attribute.append(onnx.helper.make_attribute("to", onnx.TensorProto.FLOAT))


def _onnx_infer(proto: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError) as err:
        raise UserInputError(f"shape inference failed: {str(err).splitlines()[0]}") from None


def _stand_in_channels_last_ops(proto: onnx.ModelProto) -> None:
    """Replace every channels-last op whose input rank is known by Transpose -> op -> Transpose.

    Ranks come from the model (graph inputs, initializers, shapes already known) and the ops'
    attributes, which settles them all in one go on graphs hawqc wrote. Only where a rank is still
    unknown does onnx infer the graph so far and the loop go round again; an op whose rank nothing
    reveals stays, and its output is left unknown for the verifier to report.
    """
    # Keyed by first output name: protobuf hands out a new wrapper object on every access.
    pending = {
        node.output[0]
        for node in proto.graph.node
        if node.domain == CHANNELS_LAST_DOMAIN and node.op_type in _CHANNELS_LAST_OPS
    }
    if not pending:
        return
    names = _name_source(proto)
    ranks = _known_ranks(proto)
    while True:
        replaced: list[onnx.NodeProto] = []
        progressed = False
        for node in proto.graph.node:
            rank = _channels_last_rank(node, ranks) if node.output[0] in pending else None
            if rank is None:
                replaced.append(node)
                continue
            pending.discard(node.output[0])
            progressed = True
            replaced.extend(_channels_first_sandwich(node, rank, names))
        if progressed:
            del proto.graph.node[:]
            proto.graph.node.extend(replaced)
        if not pending:
            return
        learned = _known_ranks(_onnx_infer(proto))
        if not any(_channels_last_rank(node, learned) for node in proto.graph.node if node.output[0] in pending):
            return
        ranks = learned


def _channels_last_rank(node: onnx.NodeProto, ranks: dict[str, int]) -> int | None:
    rank = ranks.get(node.input[0]) if node.input else None
    if rank is None and node.op_type == "Conv" and len(node.input) > 1:
        rank = ranks.get(node.input[1])  # the weight: [M, k..., C/group] has the data's rank
    if rank is None:
        for attribute in node.attribute:
            if attribute.name == "kernel_shape":
                rank = len(attribute.ints) + 2
    return rank if rank is not None and rank >= 3 else None


def _channels_first_sandwich(node: onnx.NodeProto, rank: int, names: FreshNames) -> list[onnx.NodeProto]:
    to_first = list(channels_first_perm(rank))
    to_last = list(channels_last_perm(rank))
    transposed_inputs = 2 if node.op_type == "Conv" else 1
    nodes = []
    standard = onnx.NodeProto()
    standard.CopyFrom(node)
    standard.domain = ""
    for index in range(min(transposed_inputs, len(node.input))):
        first = names(f"{node.input[index]}_channels_first")
        nodes.append(onnx.helper.make_node("Transpose", [node.input[index]], [first], perm=to_first))
        standard.input[index] = first
    result = names(f"{node.output[0]}_channels_first")
    standard.output[0] = result
    nodes.append(standard)
    nodes.append(onnx.helper.make_node("Transpose", [result], [node.output[0]], perm=to_last))
    return nodes


def _name_source(proto: onnx.ModelProto) -> FreshNames:
    """Value names not used in the proto, for the stand-ins' intermediate values."""
    graph = proto.graph
    used = {value.name for value in (*graph.input, *graph.output, *graph.value_info)}
    used.update(tensor.name for tensor in graph.initializer)
    for node in graph.node:
        used.update(node.input)
        used.update(node.output)
    return FreshNames(used=used)


def _known_ranks(proto: onnx.ModelProto) -> dict[str, int]:
    graph = proto.graph
    ranks = {tensor.name: len(tensor.dims) for tensor in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    return ranks


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


def why_not_inferred(node: ir.Node, opset_version: int) -> str | None:
    """onnx's reason for leaving a standard node's output shapes unknown (strict inference of that
    node alone, on its inputs' types and constant values), or None if it gives none. The inference
    of the whole graph runs non-strict, so that one unknown shape does not stop the rest."""
    if node.domain not in ("", "ai.onnx") or any(value is None or value.type is None for value in node.inputs if value is not None):
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, opset_version, "")
        types = {value.name: ir.serde.serialize_value(value).type for value in node.inputs if value is not None}
        data = {
            value.name: ir.serde.serialize_tensor(value.const_value)
            for value in node.inputs
            if value is not None and value.const_value is not None
        }
        onnx.shape_inference.infer_node_outputs(
            schema, ir.serde.serialize_node(node), types, data, opset_imports=[onnx.helper.make_opsetid("", opset_version)]
        )
    except (onnx.shape_inference.InferenceError, onnx.defs.SchemaError, RuntimeError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return text.replace("[ShapeInferenceError] ", "").replace("[TypeInferenceError] ", "")
    return None
