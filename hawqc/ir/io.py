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
        return parse_text(path.read_text(), source=str(path))
    try:
        proto = onnx.load_model(str(path), load_external_data=True)
    except (DecodeError, RuntimeWarning, ValueError, OSError) as err:
        raise UserInputError(f"{path}: not an ONNX model ({_first_line(err)})") from None
    if not proto.graph.node and not proto.graph.input:
        # protobuf happily decodes many non-ONNX byte strings into an empty message.
        raise UserInputError(f"{path}: not an ONNX model (no graph found)")
    try:
        return ir.from_proto(proto)
    except Exception as err:  # onnx_ir raises assorted errors on malformed protos
        raise UserInputError(f"{path}: malformed ONNX model ({_first_line(err)})") from None


def parse_text(text: str, *, source: str = "<text>") -> ir.Model:
    try:
        model = ir.from_onnx_text(text)
    except Exception as err:  # onnx's C++ parser raises a bare Exception/ValueError/RuntimeError
        raise UserInputError(f"{source}: cannot parse ONNX text ({_first_line(err)})") from None
    # ONNX text keeps only the model's metadata: value annotations travel there (quant_annotation).
    restore_from_model_metadata(model)
    return model


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


def write_model(model: ir.Model, path: str | Path) -> None:
    """Write `model` to `path`, as text if the suffix says so. Writes atomically (temp + rename)."""
    from hawqc.temporaries import replace_atomically

    path = Path(path)
    if is_text_path(path):
        text = to_text(model)
        replace_atomically(path, lambda tmp: tmp.write_text(text))
    else:
        proto = to_proto(model)
        # format= : onnx would go by the temporary's name.
        replace_atomically(path, lambda tmp: onnx.save_model(proto, str(tmp), format="protobuf"))


def _first_line(err: BaseException) -> str:
    """One line from a library's error; onnx's parser hands back bytes spread over several lines."""
    arg = err.args[0] if err.args else None
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__
