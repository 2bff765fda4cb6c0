"""The ONNX frontend: QONNX, Brevitas and HAWQ-exported `.onnx` / `.onnxtxt` files into hawqc's IR.

Loading is where a user's file is judged: an invariant broken here is the file's fault (exit code
2, naming the file and node), while the same invariant broken later is a pass's bug.
"""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError, VerificationError
from hawqc.ir.computed_shapes import fold_computed_shapes
from hawqc.ir.diagnostics import describe
from hawqc.ir.io import parse_text, read_model
from hawqc.ir.normalize import normalize
from hawqc.ir.shape_inference import infer_shapes
from hawqc.ir.verifier import verify


def load_onnx(path: str | Path, *, verify_ir: bool = True) -> ir.Model:
    """Read, normalize, infer shapes and (unless told not to) verify the model in `path`."""
    return prepare_model(read_model(path), str(path), verify_ir)


def load_onnx_text(text: str, *, source: str = "<text>", verify_ir: bool = True) -> ir.Model:
    return prepare_model(parse_text(text, source=source), source, verify_ir)


def prepare_model(model: ir.Model, source: str, verify_ir: bool) -> ir.Model:
    """What every frontend's model goes through once: normalization, shape inference (with the
    Reshape targets the graph computes from shapes folded: `hawqc.ir.computed_shapes`),
    verification; errors name `source` (a file, or what was lifted)."""
    if not model.graph.outputs:
        raise UserInputError(f"{source}: the graph has no outputs")
    normalize(model)
    try:
        # A folded target makes more shapes known, which may resolve the next computed target.
        for _ in range(len(model.graph) + 1):
            infer_shapes(model)
            shapes = fold_computed_shapes(model)
            if not shapes.folded:
                break
    except UserInputError as err:
        raise UserInputError(f"{source}: {err}") from None
    if not verify_ir:
        return model  # `--no-verify`: a pass author feeding a deliberately broken graph
    if shapes.unresolved:
        # Refused even where the file declares the output's shape: nothing after load computes a
        # shape from data (no precision rule, no hls4ml layer), and here the user learns where.
        reshape, why = shapes.unresolved[0]
        raise UnsupportedModelError(f"{source}: {describe(reshape)}: {why}")
    try:
        verify(model)
    except VerificationError as err:
        raise UserInputError(f"{source}: {err}") from None
    return model
