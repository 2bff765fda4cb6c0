"""Reading and writing models: binary `.onnx` and ONNX text (`.onnxtxt`).

Reading is strict about what it accepts and says which file is wrong; it does not normalize (see
`hawqc.ir.normalize`), so a file can be read back exactly as written.
"""

from __future__ import annotations

from pathlib import Path

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
    with mirrored_in_model_metadata(model):
        return ir.to_onnx_text(model)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The protobuf of `model`, with an IR version every consumer here can read."""
    proto = ir.to_proto(model)
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto


def write_model(model: ir.Model, path: str | Path) -> None:
    """Write `model` to `path`, as text if the suffix says so. Writes atomically (temp + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if is_text_path(path):
        tmp.write_text(to_text(model))
    else:
        onnx.save_model(to_proto(model), str(tmp))
    tmp.replace(path)


def _first_line(err: BaseException) -> str:
    """One line from a library's error; onnx's parser hands back bytes spread over several lines."""
    arg = err.args[0] if err.args else None
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines) if lines else type(err).__name__
