"""Reading and writing models: binary `.onnx` and ONNX text (`.onnxtxt`).

Reading is strict about what it accepts and says which file is wrong; it does not normalize (see
`hawqc.ir.normalize`), so a file can be read back exactly as written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
from google.protobuf.message import DecodeError

from hawqc.errors import UserInputError
from hawqc.ir.proto_checks import check_model_proto
from hawqc.ir.quant_annotation import (
    mirrored_in_model_metadata,
    restore_from_model_metadata,
)

TEXT_SUFFIXES = frozenset({".onnxtxt", ".txt"})

# onnxruntime 1.31 (behind qonnx's executor and most users' tools) reads IR versions up to 10
# reliably; onnx 1.2x writes newer ones by default. Nothing hawqc emits needs a newer IR.
MAX_IR_VERSION = 10


def is_text_path(path: Path) -> bool:
    return path.suffix in TEXT_SUFFIXES


def read_model(path: str | Path) -> ir.Model:
    """Read `path` as ONNX text if its suffix says so, as a binary ONNX protobuf otherwise."""
    path = Path(path)
    if not path.exists():
        raise UserInputError(f"{path}: no such file")
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory, expected an .onnx or .onnxtxt file")
    if is_text_path(path):
        return parse_text(read_text_file(path), source=str(path))
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except OSError as err:
        raise UserInputError(f"{path}: cannot read ({err.strerror or _first_line(err)})") from None
    except (DecodeError, RuntimeWarning, ValueError) as err:
        raise UserInputError(f"{path}: not an ONNX model ({_first_line(err)})") from None
    if not proto.graph.node and not proto.graph.input:
        # protobuf happily decodes many non-ONNX byte strings into an empty message.
        raise UserInputError(f"{path}: not an ONNX model (no graph found)")
    _load_external_data(proto, path)
    return _from_proto(proto, str(path), "malformed ONNX model")


def read_text_file(path: Path) -> str:
    """The UTF-8 text of a file the user named; UserInputError naming it if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UserInputError(f"{path}: cannot read ({err.strerror or _first_line(err)})") from None


def _load_external_data(proto: onnx.ModelProto, path: Path) -> None:
    """Tensors stored beside the model (onnx's external data), read from the model's directory;
    a missing or short data file is the model's fault and names both files."""
    external = [t for t in _tensors(proto.graph) if onnx.external_data_helper.uses_external_data(t)]
    for tensor in external:
        try:
            location = onnx.external_data_helper.ExternalDataInfo(tensor).location
        except ValueError as err:
            raise UserInputError(f"{path}: tensor '{tensor.name}': bad external data entry ({_first_line(err)})") from None
        if not (path.parent / location).is_file():
            raise UserInputError(
                f"{path}: the external data file '{location}' of tensor '{tensor.name}' is missing "
                f"(looked for {path.parent / location})"
            )
    if not external:
        return
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except (onnx.checker.ValidationError, ValueError, OSError) as err:
        raise UserInputError(f"{path}: cannot read its external data ({_first_line(err)})") from None


def _tensors(graph: onnx.GraphProto):
    """Every tensor of a graph that can hold data: initializers and tensor attributes, subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _from_proto(proto: onnx.ModelProto, source: str, malformed: str) -> ir.Model:
    try:
        check_model_proto(proto)
    except UserInputError as err:
        raise UserInputError(f"{source}: {err}") from None
    try:
        return ir.from_proto(proto)
    except Exception as err:  # onnx_ir raises assorted errors on malformed protos
        raise UserInputError(f"{source}: {malformed} ({_first_line(err)})") from None


def parse_text(text: str, *, source: str = "<text>") -> ir.Model:
    try:
        proto = onnx.parser.parse_model(text)
    except Exception as err:  # onnx's C++ parser raises a bare Exception/ValueError/RuntimeError
        raise UserInputError(f"{source}: cannot parse ONNX text ({_first_line(err)})") from None
    _drop_parser_integer_copies(proto.graph)
    model = _from_proto(proto, source, "cannot parse ONNX text")
    # ONNX text keeps only the model's metadata: value annotations travel there (quant_annotation).
    restore_from_model_metadata(model)
    return model


def _drop_parser_integer_copies(graph: onnx.GraphProto) -> None:
    """onnx's parser reads `alpha: float = 1` into both the float and the integer field of the
    attribute; onnx's node checker then refuses the node. The declared type says which one is meant."""
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.FLOAT and attribute.HasField("i"):
                attribute.ClearField("i")


def to_text(model: ir.Model) -> str:
    """ONNX text that reads back as the same model, float values bit for bit (see `_exact_floats`)."""
    with mirrored_in_model_metadata(model):
        proto = ir.to_proto(model)
    return _exact_floats(onnx.printer.to_text(proto), proto.graph)


# onnx's printer writes float and double values with 6 significant digits (C++ stream defaults), so
# its text of a scale like 0.0137 or of HAWQ's 31-bit requantization factors reads back as another
# model. Every float32 / float64 initializer and float attribute of the main graph is written again
# with the shortest literal that parses back to the same bits (onnx's parser reads float literals
# with std::stof / std::stod: correctly rounded). Subnormal float32 values stay as the printer wrote
# them: std::stof refuses them. A value the printer's `%g` already gets right keeps that spelling.
def _float32_literal(value: float) -> str:
    short = "%g" % value
    return short if np.float32(short).tobytes() == np.float32(value).tobytes() else str(np.float32(value))


def _float64_literal(value: float) -> str:
    short = "%g" % value
    return short if np.float64(short).tobytes() == np.float64(value).tobytes() else repr(float(value))


_INITIALIZER_PRINTERS = {onnx.TensorProto.FLOAT: _float32_literal, onnx.TensorProto.DOUBLE: _float64_literal}


# `name =  {v1,v2,...}`: one initializer's values in the printer's text.
_INITIALIZER_VALUES = re.compile(r"(?<![\w.])([^\s,<>={}]+) =\s*\{[^}]*\}")


def _exact_floats(text: str, graph: onnx.GraphProto) -> str:
    literals = {}
    for tensor in graph.initializer:
        printer = _INITIALIZER_PRINTERS.get(tensor.data_type)
        if printer is None:
            continue
        values = onnx.numpy_helper.to_array(tensor).reshape(-1)
        if tensor.data_type == onnx.TensorProto.FLOAT and np.any(_subnormal(values)):
            continue
        literals[tensor.name] = ",".join(printer(v) for v in values)

    def exact(match: re.Match) -> str:
        # One pass over the text (a pass per initializer was quadratic in the model's size); each
        # initializer's first segment only, as before.
        literal = literals.pop(match.group(1), None)
        if literal is None:
            return match.group(0)
        return match.group(0)[: match.group(0).index("{") + 1] + literal + "}"

    return _exact_float_attributes(_INITIALIZER_VALUES.sub(exact, text), graph)


def _subnormal(values: np.ndarray) -> np.ndarray:
    magnitude = np.abs(values.astype(np.float32))
    return (magnitude > 0) & (magnitude < np.finfo(np.float32).tiny)


def _exact_float_attributes(text: str, graph: onnx.GraphProto) -> str:
    """Float attributes, node by node: the printer writes one line per node of a graph without
    subgraphs, in graph order, between the graph's `{` and `}` lines; anything else is left alone."""
    lines = text.split("\n")
    try:
        start = lines.index("{")
        end = len(lines) - 1 - lines[::-1].index("}")
    except ValueError:
        return text
    body = range(start + 1, end)
    if len(body) != len(graph.node):
        return text
    for index, node in zip(body, graph.node):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.FLOAT and not _subnormal(np.array([attribute.f])).any():
                exact = f"{attribute.name}: float = {_float32_literal(attribute.f)}"
                lines[index] = re.sub(rf"(?<![\w.]){re.escape(attribute.name)}: float = [^,>]*", exact, lines[index], count=1)
            elif attribute.type == onnx.AttributeProto.FLOATS and not _subnormal(np.array(attribute.floats)).any():
                exact = ", ".join(_float32_literal(v) for v in attribute.floats)
                lines[index] = re.sub(
                    rf"(?<![\w.]){re.escape(attribute.name)}: floats = \[[^\]]*\]",
                    f"{attribute.name}: floats = [{exact}]", lines[index], count=1,
                )  # fmt: skip
    return "\n".join(lines)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The protobuf of `model`, with an IR version every consumer here can read."""
    proto = ir.to_proto(model)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto


def check_writable(path: str | Path) -> Path:
    """What can be said about an output file before anything is computed: its directory exists
    and it is not itself a directory. UserInputError naming the path otherwise."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory, expected a file name (.onnx or .onnxtxt)")
    if not path.parent.is_dir():
        raise UserInputError(f"{path}: no such directory {path.parent}")
    return path


def write_model(model: ir.Model, path: str | Path) -> None:
    """Write `model` to `path`, as text if the suffix says so. Writes atomically (temp + rename):
    a failed write leaves no file behind, and an existing one as it was."""
    from hawqc.temporaries import replace_atomically

    path = check_writable(path)
    try:
        if is_text_path(path):
            text = to_text(model)
            replace_atomically(path, lambda tmp: tmp.write_text(text))
        else:
            proto = to_proto(model)
            # format= : onnx would go by the temporary's name.
            replace_atomically(path, lambda tmp: onnx.save_model(proto, str(tmp), format="protobuf"))
    except OSError as err:
        raise UserInputError(f"{path}: cannot write ({err.strerror or _first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    """One line from a library's error; onnx's parser hands back bytes spread over several lines."""
    arg = err.args[0] if err.args else None
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__


def copy_model(model: ir.Model) -> ir.Model:
    """An independent copy (nodes, values, constants, metadata): what a later pass changes in one
    is not seen in the other."""
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))
