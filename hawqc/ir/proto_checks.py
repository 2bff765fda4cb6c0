"""Checks on a model's protobuf, made before it becomes IR: what onnx_ir cannot tell afterwards.

onnx_ir builds one value per name, so a file that defines a name twice comes out as something else:
of two initializers of one name the last silently wins (onnx's checker refuses such a file, and
`--verify` cannot catch it: the reference executor reads the same IR), and two nodes writing one
name fail inside onnx_ir with a message that names neither. A tensor whose data does not fit its
shape fails only when a pass first reads it, and a standard node with too few inputs or an
attribute of the wrong type deep inside a pass. All are the file's fault and are said here, naming
the value or node (`hawqc.ir.io` adds the file).
"""

from __future__ import annotations

import math
import re

import onnx
import onnx_ir as ir

from hawqc.errors import UserInputError

_STANDARD_DOMAINS = ("", "ai.onnx")


def check_model_proto(proto: onnx.ModelProto) -> None:
    """Raise `UserInputError` naming the first value defined twice, used or listed as an output
    without a definition, the first tensor whose data does not fit its shape, or the first
    standard node that does not fit its ONNX schema."""
    check_unique_names(proto.graph)
    check_defined(proto.graph)
    check_tensor_data(proto.graph)
    check_standard_nodes(proto)


def describe_proto(node: onnx.NodeProto) -> str:
    """A node as `hawqc.ir.diagnostics.describe` names it, from its protobuf."""
    op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
    return f"node '{node.name}' ({op})" if node.name else f"unnamed node ({op})"


def check_unique_names(graph: onnx.GraphProto) -> None:
    """Every name is defined once: by a graph input, an initializer or a node output. An
    initializer may shadow a graph input of its name (older exporters list every initializer as
    an input too); an empty name is an omitted optional output, not a definition."""
    defined: dict[str, str] = {}
    for info in graph.input:
        if info.name in defined:
            raise UserInputError(f"graph input '{info.name}' is listed twice")
        defined[info.name] = f"graph input '{info.name}'"
    initializers: set[str] = set()
    for tensor in (*graph.initializer, *(sparse.values for sparse in graph.sparse_initializer)):
        if not tensor.name:
            raise UserInputError("an initializer has no name")  # onnx_ir would drop it with a warning
        if tensor.name in initializers:
            raise UserInputError(f"initializer '{tensor.name}' is defined twice (which one is meant is ambiguous)")
        initializers.add(tensor.name)
        defined.setdefault(tensor.name, f"initializer '{tensor.name}'")
    for node in graph.node:
        for name in node.output:
            if not name:
                continue
            if name in defined:
                raise UserInputError(f"{describe_proto(node)}: output '{name}' is already defined by {defined[name]}")
            defined[name] = describe_proto(node)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                check_unique_names(attribute.g)
            for subgraph in attribute.graphs:
                check_unique_names(subgraph)


_GRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def check_defined(graph: onnx.GraphProto) -> None:
    """Every input of a node of the main graph, and every graph output, is defined somewhere (the
    order is the verifier's business). onnx_ir would make up a value, and log a warning, for each."""
    defined = {info.name for info in graph.input} | {tensor.name for tensor in graph.initializer}
    defined |= {sparse.values.name for sparse in graph.sparse_initializer}
    defined |= {name for node in graph.node for name in node.output}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name and name not in defined:
                raise UserInputError(f"{describe_proto(node)}: input {index} '{name}' is never defined")
    for info in graph.output:
        if info.name not in defined:
            raise UserInputError(f"graph output '{info.name}' is never defined")


def check_tensor_data(graph: onnx.GraphProto) -> None:
    """Every initializer and tensor attribute of the main graph has a known data type and exactly
    the data its shape asks for: onnx_ir reads tensors lazily, and a short or long one would only
    fail (or be read some other way) when a pass first looks at its values."""
    for tensor in graph.initializer:
        _check_tensor(tensor, f"initializer '{tensor.name}'")
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                _check_tensor(attribute.t, f"{describe_proto(node)}: attribute '{attribute.name}'")


def _check_tensor(tensor: onnx.TensorProto, what: str) -> None:
    try:
        dtype = ir.DataType(tensor.data_type)
    except ValueError:
        raise UserInputError(f"{what}: unknown data type {tensor.data_type}") from None
    if dtype == ir.DataType.UNDEFINED:
        raise UserInputError(f"{what}: has no data type")
    if any(dim < 0 for dim in tensor.dims):
        raise UserInputError(f"{what}: negative dimension in shape {list(tensor.dims)}")
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return  # read by `hawqc.ir.io` from its file, which checks the bounds
    if dtype != ir.DataType.STRING and dtype.bitwidth % 8:
        return  # packed sub-byte types: nothing in hawqc reads them
    elements = math.prod(tensor.dims)
    shape = f"shape {list(tensor.dims)} ({elements} element{'' if elements == 1 else 's'})"
    field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    if tensor.HasField("raw_data") and len(getattr(tensor, field)):
        raise UserInputError(f"{what}: holds both raw data and {field} (which one is meant is ambiguous)")
    if tensor.HasField("raw_data"):
        if dtype == ir.DataType.STRING:
            raise UserInputError(f"{what}: a STRING tensor cannot hold raw data")
        expected = elements * dtype.bitwidth // 8
        if len(tensor.raw_data) != expected:
            raise UserInputError(
                f"{what}: {len(tensor.raw_data)} bytes of {dtype.name} data for {shape}, expected {expected}"
            )
        return
    # The typed field holds one entry per element (a complex number: two).
    expected = elements * (2 if dtype in (ir.DataType.COMPLEX64, ir.DataType.COMPLEX128) else 1)
    count = len(getattr(tensor, field))
    if count != expected:
        raise UserInputError(f"{what}: {count} values of {dtype.name} data for {shape}, expected {expected}")


def check_standard_nodes(proto: onnx.ModelProto) -> None:
    """Each node of the standard domain fits its schema at the model's opset: the op exists, input
    and output counts, required inputs present, attributes known and of the right type (onnx's own
    node checker). Nodes holding subgraphs are left to whoever supports them."""
    versions = {opset.domain: opset.version for opset in proto.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        return  # no standard opset imported: shape inference says so for any standard node
    context = onnx.checker.C.CheckerContext()
    context.ir_version = proto.ir_version or onnx.IR_VERSION
    context.opset_imports = {domain: version for domain in _STANDARD_DOMAINS}
    scope = onnx.checker.C.LexicalScopeContext()
    for node in proto.graph.node:
        if node.domain not in _STANDARD_DOMAINS or any(a.type in _GRAPH_TYPES for a in node.attribute):
            continue
        try:
            onnx.checker.check_node(node, context, scope)
        except onnx.checker.ValidationError as err:
            raise UserInputError(f"{describe_proto(node)}: {_schema_complaint(err, node, version)}") from None


# onnx's checker starts its messages with the node ("Node(name) with schema(::Gemm:13) has ...",
# "Node ()'s input 1 is ..."); the rest is what is wrong.
_NODE_PREFIX = re.compile(r"^Node\s*(?:\(.*?\))?\s*(?:with schema\(.*?\)\s*|'s\s+)?")


def _schema_complaint(err: onnx.checker.ValidationError, node: onnx.NodeProto, version: int) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    text = _NODE_PREFIX.sub("", lines[0] if lines else type(err).__name__)
    if text.startswith("No Op registered"):
        return f"ONNX has no op '{node.op_type}' at opset {version}"
    return f"does not fit ONNX's {node.op_type} (opset {version}): {text}"
