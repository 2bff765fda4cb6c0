"""Crash reproducers: when a pass fails, a file that makes the failure happen again.

The manager keeps the pipeline's input (serialized once, before the first pass). On failure it
replays the passes that had succeeded on a copy of that input, to recover the IR the failing pass
was given, and writes it as ONNX text with the failing pass as the pipeline: the smallest
reproducer (MLIR's "local" reproducer). If replaying fails, the whole input and the whole pipeline
are written instead.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
import onnx_ir as ir

from hawqc.ir.io import to_text

REPRODUCER_DIR_ENV = "HAWQC_REPRODUCER_DIR"


def default_reproducer_dir() -> Path:
    return Path(os.environ.get(REPRODUCER_DIR_ENV) or Path(tempfile.gettempdir()) / "hawqc-reproducers")


@dataclass
class Snapshot:
    """The pipeline's input, kept as protobuf bytes: cheap to keep, exact to restore."""

    data: bytes

    @classmethod
    def of(cls, model: ir.Model) -> Snapshot:
        return cls(ir.to_proto(model).SerializeToString())

    def restore(self) -> ir.Model:
        proto = onnx.ModelProto()
        proto.ParseFromString(self.data)
        return ir.from_proto(proto)


def write_reproducer(
    directory: Path,
    snapshot: Snapshot,
    succeeded: Sequence,
    failing,
    full_pipeline: str,
    error: BaseException,
    flags: Sequence[str] = (),
) -> str:
    """Write the reproducer; returns the command that re-runs it."""
    model, pipeline, scope = snapshot.restore(), full_pipeline, "the pipeline's input"
    try:
        for earlier in succeeded:
            earlier.run(model)
        pipeline, scope = failing.spelling(), f"the input of pass '{failing.spelling()}'"
    except Exception:  # noqa: BLE001 - replay is best effort; the fallback reproduces from the start
        model = snapshot.restore()
    directory.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f"{_slug(failing.name)}-", suffix=".onnxtxt", dir=directory)
    command = shlex.join(["hawqc-opt", name, "-p", pipeline, *flags])
    header = (
        f"# hawqc crash reproducer: {scope}\n"
        f"# error: {str(error).splitlines()[0] if str(error) else type(error).__name__}\n"
        f"# full pipeline: {full_pipeline}\n"
        f"# re-run: {command}\n"
    )
    with os.fdopen(handle, "w") as stream:
        stream.write(header + to_text(model) + "\n")
    return command


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "pass"
