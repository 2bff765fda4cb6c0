"""Data movement ops: Concat, Resize (nearest), Pad, Transpose, Squeeze, Unsqueeze, Dropout, and Cast
between float32 and float64.

The first half holds pure, dtype-generic functions (`resize_nearest`, `resize_output_shape`,
`pad`), shared with hardware mode; the second half the builders of semantic mode (see
`hawqc.sim.ops`). None of these ops does arithmetic on values except Resize's coordinate mapping,
which is computed in float32 exactly as onnxruntime computes it, so results are bit-identical.

The batch rule (see `hawqc.sim.ops`): these ops keep samples apart unless they act on dim 0 (Concat
or Pad along it, a Transpose that moves it, Squeeze / Unsqueeze of it, a Resize that scales it).
Such a node means what ONNX says at the batch size the graph declares, so it runs literally there
and refuses, naming the node, a batch of another size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.errors import UserInputError
from hawqc.ir.diagnostics import describe
from hawqc.ir.op_arithmetic import cast_target
from hawqc.ir.ops.reading import (
    check_input_count,
    present_inputs,
    refusal,
    standard_opset,
)

if TYPE_CHECKING:  # hawqc.sim.ops imports this module to fill its op table
    from hawqc.sim.ops import Kernel, NodeSpec

# ---------------------------------------------------------------------------------------------------
# Resize (mode "nearest")
# ---------------------------------------------------------------------------------------------------
# onnxruntime (upsamplebase.h), all in float32, for output index i along an axis of input length L,
# output length M and scale s:
#   half_pixel          (i + 0.5) / s - 0.5
#   pytorch_half_pixel  M > 1 ? (i + 0.5) / s - 0.5 : 0
#   align_corners       M == 1 ? 0 : i * (L - 1) / (M - 1)
#   asymmetric          i / s
#   tf_half_pixel_for_nn (i + 0.5) / s
# then the nearest mode: floor, ceil, round_prefer_ceil (halves up), round_prefer_floor (halves
# down), where onnxruntime 1.31 treats a coordinate within 1e-6 of a half as the half; or, in
# opset 10, "simple" (ceil when s < 1, else truncation). The index is clamped to [0, L - 1]. An
# axis with scale 1 is copied; a Resize whose output shape equals its input shape returns the
# input, whatever the scales (measured: scale 1.125 on a length-2 axis, the others at 1, keeps
# both pixels; next to a resized axis it maps both to pixel 0). The output length from a scale is
# floor(L * s), in float32.

_HALF_TOLERANCE = np.float32(1e-6)
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def resize_output_shape(in_shape: Sequence[int], scales: Sequence[float]) -> tuple[int, ...]:
    """Output dims of a Resize given by scales: floor(L * s) with L and s in float32."""
    dims = np.asarray(in_shape, dtype=np.float32) * np.asarray(scales, dtype=np.float32)
    return tuple(int(d) for d in dims)


def _source_coordinates(
    length: int, out_length: int, scale: np.float32, coordinate_transformation_mode: str
) -> np.ndarray:
    i = np.arange(out_length, dtype=np.float32)
    half = np.float32(0.5)
    mode = coordinate_transformation_mode
    if mode == "half_pixel":
        return (i + half) / scale - half
    if mode == "pytorch_half_pixel":
        return (i + half) / scale - half if out_length > 1 else np.zeros(out_length, np.float32)
    if mode == "align_corners":
        if out_length == 1:
            return np.zeros(1, np.float32)
        return i * np.float32(length - 1) / np.float32(out_length - 1)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nn":
        return (i + half) / scale
    raise ValueError(f"coordinate_transformation_mode '{mode}' (known: {', '.join(COORDINATE_MODES)})")


def _nearest(x: np.ndarray, nearest_mode: str, downsampling: bool) -> np.ndarray:
    if nearest_mode == "floor":
        return np.floor(x)
    if nearest_mode == "ceil":
        return np.ceil(x)
    if nearest_mode in ("round_prefer_ceil", "round_prefer_floor"):
        # A coordinate within 1e-6 of a half is a tie (measured: 9.5e-7 away is one, 1.07e-6 is
        # not, at every magnitude), so 3.4999998 goes to 4 under round_prefer_ceil.
        tie = np.abs(x - (np.floor(x) + np.float32(0.5))) < _HALF_TOLERANCE
        nearest = np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))
        return np.where(tie, np.ceil(x) if nearest_mode == "round_prefer_ceil" else np.floor(x), nearest)
    if nearest_mode == "simple":
        return np.ceil(x) if downsampling else np.trunc(x)
    raise ValueError(f"nearest_mode '{nearest_mode}' (known: {', '.join(NEAREST_MODES)})")


def resize_nearest_indices(
    length: int, out_length: int, scale: float, coordinate_transformation_mode: str, nearest_mode: str
) -> np.ndarray:
    """For each output position along one axis, the input position Resize (nearest) copies."""
    scale32 = np.float32(scale)
    source = _source_coordinates(length, out_length, scale32, coordinate_transformation_mode)
    index = _nearest(source, nearest_mode, bool(scale32 < 1))
    # Clamp in float first: an out-of-range float would not convert to int64 reliably.
    return np.clip(index, 0, max(length - 1, 0)).astype(np.int64)


def resize_nearest(
    x: np.ndarray,
    out_shape: Sequence[int],
    coordinate_transformation_mode: str,
    nearest_mode: str,
    scales: Sequence[float] | None = None,
) -> np.ndarray:
    """ONNX Resize with mode "nearest" to `out_shape`.

    `scales` are the scales as given (or as onnxruntime derives them from sizes: M / L in float32);
    when None they are derived from `out_shape`.
    """
    if len(out_shape) != x.ndim:
        raise ValueError(f"output shape {list(out_shape)} does not match an input of rank {x.ndim}")
    if tuple(out_shape) == x.shape:
        return x  # onnxruntime returns the input when the shape does not change, whatever the scales
    if scales is None:
        scales = [np.float32(m) / np.float32(n) if n else np.float32(1) for m, n in zip(out_shape, x.shape)]
    y = x
    for axis, (n, m, s) in enumerate(zip(x.shape, out_shape, scales)):
        if np.float32(s) == 1:
            continue  # onnxruntime copies an axis whose scale is 1
        y = y.take(resize_nearest_indices(n, int(m), s, coordinate_transformation_mode, nearest_mode), axis=axis)
    return y


# ---------------------------------------------------------------------------------------------------
# Pad
# ---------------------------------------------------------------------------------------------------

PAD_MODES = ("constant", "reflect", "edge", "wrap")


def pad(
    x: np.ndarray, pads: Sequence[int], mode: str = "constant", constant_value: float | np.generic = 0
) -> np.ndarray:
    """ONNX Pad: `pads` is [b1, ..., bn, e1, ..., en] over all dims; negative pads crop."""
    rank = x.ndim
    if len(pads) != 2 * rank:
        raise ValueError(f"expected {2 * rank} pads for a rank-{rank} input, got {list(pads)}")
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode '{mode}' (known: {', '.join(PAD_MODES)})")
    begins = [int(p) for p in pads[:rank]]
    ends = [int(p) for p in pads[rank:]]
    for axis, (b, e) in enumerate(zip(begins, ends)):
        if max(-b, 0) + max(-e, 0) > x.shape[axis]:
            raise ValueError(f"pads {b}, {e} crop more than dim {axis} holds ({x.shape[axis]})")
    crop = tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(zip(begins, ends)))
    x = x[crop]
    widths = [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]
    if mode != "constant" and 0 in x.shape:
        raise ValueError(f"mode '{mode}' cannot pad a tensor with an empty dim (onnxruntime refuses it too)")
    if all(w == (0, 0) for w in widths):
        return x
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=np.asarray(constant_value, dtype=x.dtype))
    for axis, (b, e) in enumerate(widths):
        if mode == "reflect" and max(b, e) >= x.shape[axis]:
            raise ValueError(f"reflect pads {b}, {e} must be smaller than dim {axis} ({x.shape[axis]})")
    return np.pad(x, widths, mode=mode)


# ===================================================================================================
# Builders of semantic mode
# ===================================================================================================


def _constant(spec: NodeSpec, index: int) -> np.ndarray | None:
    return spec.constants[index] if index < len(spec.constants) else None


def _axis(node: ir.Node, axis: int, rank: int) -> int:
    """A possibly negative axis as a plain index; ValueError (named by the executor) if out of range."""
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


class _BatchLiteral:
    """The batch rule for a node that acts on dim 0: literal ONNX at the declared batch only."""

    def __init__(self, spec: NodeSpec, what: str) -> None:
        self.node = spec.node
        self.declared = spec.declared_batch
        self.what = what

    def check(self, x: np.ndarray) -> None:
        if self.declared is not None and x.ndim > 0 and x.shape[0] != self.declared:
            raise UserInputError(
                f"{describe(self.node)} {self.what}, so it only runs at the batch size the graph "
                f"declares ({self.declared}), not {x.shape[0]}"
            )


def build_concat(spec: NodeSpec) -> Kernel:
    """`Concat` (inputs...), attribute axis (required since opset 4, negative counts from the end)."""
    node = spec.node
    inputs = present_inputs(node)
    if not inputs or any(value is None for value in inputs):
        raise refusal(node, "needs at least one input and no absent ones")
    default_axis = 1 if standard_opset(node) < 4 else None
    axis = node.attributes.get_int("axis", default_axis)
    if axis is None:
        raise refusal(node, "has no axis attribute (required)")
    is_constant = [c is not None for c in spec.constants]
    along_batch = _BatchLiteral(spec, "concatenates along dim 0 (the batch)")

    def concat(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        parts = list(args)
        a = _axis(node, axis, parts[0].ndim)
        data = next((p for p, const in zip(parts, is_constant) if not const), None)
        if data is not None and spec.declared_batch is not None and data.ndim > 0:
            if a == 0:
                along_batch.check(data)
            elif data.shape[0] != spec.declared_batch:
                # A constant exported with the declared batch in dim 0 is the same for every sample.
                parts = [
                    np.broadcast_to(p, (data.shape[0], *p.shape[1:]))
                    if const and p.ndim > 0 and p.shape[0] == spec.declared_batch
                    else p
                    for p, const in zip(parts, is_constant)
                ]
        return (np.concatenate(parts, axis=a),)

    return concat


def build_resize(spec: NodeSpec) -> Kernel:
    """`Resize` with mode "nearest": opset 10 (X, scales) or 11+ (X, roi, scales, sizes)."""
    node = spec.node
    opset = standard_opset(node)
    attrs = node.attributes
    mode = attrs.get_string("mode", "nearest")
    if mode != "nearest":
        raise refusal(node, f"mode '{mode}' is not supported (only 'nearest')")
    if opset < 11:
        check_input_count(node, 2, 2)
        coordinate_mode, nearest_mode = "asymmetric", "simple"
        scales_index, sizes_index = 1, None
    else:
        check_input_count(node, 1, 4)
        coordinate_mode = attrs.get_string("coordinate_transformation_mode", "half_pixel")
        nearest_mode = attrs.get_string("nearest_mode", "round_prefer_floor")
        scales_index, sizes_index = 2, 3
        if coordinate_mode not in COORDINATE_MODES:
            raise refusal(
                node, f"coordinate_transformation_mode '{coordinate_mode}' is not supported "
                f"(supported: {', '.join(COORDINATE_MODES)})",
            )  # fmt: skip
        if nearest_mode not in NEAREST_MODES[:-1]:
            raise refusal(
                node, f"nearest_mode '{nearest_mode}' is not supported (known: {', '.join(NEAREST_MODES[:-1])})"
            )
    if attrs.get_ints("axes", None) is not None:
        raise refusal(node, "the axes attribute (opset 18) is not supported")
    policy = attrs.get_string("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        raise refusal(node, f"keep_aspect_ratio_policy '{policy}' is not supported (only 'stretch')")
    scaling_batch = _BatchLiteral(spec, "resizes dim 0 (the batch)")

    def target(args: Sequence[np.ndarray | None], x: np.ndarray) -> tuple[tuple[int, ...], Sequence[float] | None]:
        scales = args[scales_index] if scales_index < len(args) else None
        sizes = args[sizes_index] if sizes_index is not None and sizes_index < len(args) else None
        has_scales = scales is not None and scales.size > 0
        has_sizes = sizes is not None and sizes.size > 0
        if has_scales == has_sizes:
            raise ValueError("exactly one of scales and sizes must be given (non-empty)")
        if has_scales:
            scales = [float(s) for s in np.asarray(scales, dtype=np.float32).reshape(-1)]
            if len(scales) != x.ndim:
                raise ValueError(f"{len(scales)} scales for an input of rank {x.ndim}")
            if scales[0] != 1:
                scaling_batch.check(x)
            return resize_output_shape(x.shape, scales), scales
        dims = [int(d) for d in np.asarray(sizes).reshape(-1)]
        if len(dims) != x.ndim:
            raise ValueError(f"{len(dims)} sizes for an input of rank {x.ndim}")
        if spec.declared_batch is not None and x.ndim > 0 and x.shape[0] != spec.declared_batch:
            if dims[0] != spec.declared_batch:
                scaling_batch.check(x)
            dims[0] = x.shape[0]  # the declared batch in sizes means "the batch", as in Reshape
        return tuple(dims), None

    def resize(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        out_shape, scales = target(args, x)
        return (resize_nearest(x, out_shape, coordinate_mode, nearest_mode, scales),)

    return resize


def build_pad(spec: NodeSpec) -> Kernel:
    """`Pad`: opset 2-10 attributes pads / mode / value, opset 11+ inputs pads, constant_value, axes."""
    node = spec.node
    opset = standard_opset(node)
    attrs = node.attributes
    mode = attrs.get_string("mode", "constant")
    known_modes = PAD_MODES if opset >= 19 else PAD_MODES[:-1]
    if mode not in known_modes:
        raise refusal(node, f"mode '{mode}' is not supported at opset {opset} (known: {', '.join(known_modes)})")
    if opset < 2:
        raise refusal(node, "Pad-1 (attribute 'paddings') is not supported")
    attr_pads = attrs.get_ints("pads", None)
    if opset < 11:
        check_input_count(node, 1, 1)
        if attr_pads is None:
            raise refusal(node, "has no pads attribute (required before opset 11)")
        value = attrs.get_float("value", 0.0)
    else:
        check_input_count(node, 2, 4)
    along_batch = _BatchLiteral(spec, "pads dim 0 (the batch)")

    def pad_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        if opset < 11:
            pads, constant = [int(p) for p in attr_pads], value
        else:
            pads = [int(p) for p in np.asarray(args[1]).reshape(-1)]
            given = args[2] if len(args) > 2 else None
            constant = 0 if given is None or given.size == 0 else given.reshape(-1)[0]
            axes = args[3] if len(args) > 3 else None
            if axes is not None:
                axes = [_axis(node, int(a), x.ndim) for a in np.asarray(axes).reshape(-1)]
                if len(pads) != 2 * len(axes):
                    raise ValueError(f"{len(pads)} pads for {len(axes)} axes")
                full = [0] * (2 * x.ndim)
                for i, a in enumerate(axes):
                    full[a], full[a + x.ndim] = pads[i], pads[i + len(axes)]
                pads = full
        if x.ndim > 0 and len(pads) == 2 * x.ndim and (pads[0] or pads[x.ndim]):
            along_batch.check(x)
        return (pad(x, pads, mode, constant),)

    return pad_kernel


def build_transpose(spec: NodeSpec) -> Kernel:
    """`Transpose` (data), attribute perm (default: the dims reversed)."""
    node = spec.node
    check_input_count(node, 1, 1)
    perm = node.attributes.get_ints("perm", None)
    moves_batch = _BatchLiteral(spec, "moves dim 0 (the batch)")

    def transpose(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        order = tuple(range(x.ndim))[::-1] if perm is None else tuple(int(p) for p in perm)
        if sorted(order) != list(range(x.ndim)):
            raise ValueError(f"perm {list(order)} is not a permutation of the {x.ndim} dims")
        if order and order[0] != 0:
            moves_batch.check(x)
        return (np.transpose(x, order),)

    return transpose


def _axes(spec: NodeSpec, opset_with_input: int) -> tuple[bool, np.ndarray | None, int | None]:
    """Where Squeeze / Unsqueeze take their axes: (from the input?, constant axes, input index)."""
    node = spec.node
    if standard_opset(node) < opset_with_input:
        check_input_count(node, 1, 1)
        given = node.attributes.get_ints("axes", None)
        return False, None if given is None else np.asarray(given, dtype=np.int64), None
    check_input_count(node, 1, 2)
    return True, _constant(spec, 1), 1


def build_squeeze(spec: NodeSpec) -> Kernel:
    """`Squeeze`: axes as attribute (opset < 13) or input (13+); none given: every dim of size 1."""
    node = spec.node
    from_input, constant_axes, index = _axes(spec, 13)
    of_batch = _BatchLiteral(spec, "squeezes dim 0 (the batch)")

    def squeeze(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        axes = constant_axes
        if from_input and axes is None and index < len(args):
            axes = args[index]
        if axes is None:
            # At the declared batch dim 0 would go too when it is 1.
            batch = spec.declared_batch if spec.declared_batch is not None else (x.shape[0] if x.ndim else None)
            chosen = [i for i, d in enumerate(x.shape) if (batch if i == 0 else d) == 1]
        else:
            chosen = sorted({_axis(node, int(a), x.ndim) for a in np.asarray(axes).reshape(-1)})
        if any(x.shape[a] != 1 for a in chosen if a != 0):
            raise ValueError(f"cannot squeeze dims {chosen} of shape {list(x.shape)}: not all of size 1")
        if 0 in chosen:
            of_batch.check(x)
            if x.shape[0] != 1:
                raise ValueError(f"cannot squeeze dim 0 of shape {list(x.shape)}")
        return (np.squeeze(x, axis=tuple(chosen)) if chosen else x,)

    return squeeze


def build_unsqueeze(spec: NodeSpec) -> Kernel:
    """`Unsqueeze`: axes as attribute (opset < 13) or input (13+), positions in the output."""
    node = spec.node
    from_input, constant_axes, index = _axes(spec, 13)
    if not from_input and constant_axes is None:
        raise refusal(node, "has no axes attribute (required before opset 13)")
    at_batch = _BatchLiteral(spec, "inserts a dim before dim 0 (the batch)")

    def unsqueeze(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        axes = constant_axes if constant_axes is not None else args[index] if index < len(args) else None
        if axes is None:
            raise ValueError("the axes input is missing")
        rank = x.ndim + axes.size
        chosen = [_axis(node, int(a), rank) for a in np.asarray(axes).reshape(-1)]
        if len(set(chosen)) != len(chosen):
            raise ValueError(f"axes {chosen} repeat a dim")
        if 0 in chosen:
            at_batch.check(x)
        return (np.expand_dims(x, tuple(chosen)),)

    return unsqueeze


def build_dropout(spec: NodeSpec) -> Kernel:
    """`Dropout` at inference: the data unchanged. The optional mask is what onnxruntime returns:
    all true from opset 12 on, all false (zeros, in the data's dtype before opset 10) before."""
    node = spec.node
    opset = standard_opset(node)
    check_input_count(node, 1, 3 if opset >= 12 else 1)
    if opset < 7 and not node.attributes.get_int("is_test", 0):
        raise refusal(node, "is_test=0 (training, opset < 7) is not supported")
    training = _constant(spec, 2)
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise refusal(node, "training_mode=true is not supported (inference only)")
    runtime_training = training is None and len(present_inputs(node)) > 2
    outputs = list(node.outputs)
    wants_mask = len(outputs) > 1 and outputs[1] is not None and bool(outputs[1].name)
    mask_dtype = None
    if wants_mask:
        declared = outputs[1].dtype
        mask_dtype = declared.numpy() if declared is not None else (np.dtype(bool) if opset >= 10 else None)

    def dropout(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        if runtime_training and args[2] is not None and bool(np.asarray(args[2]).reshape(-1)[0]):
            raise ValueError("training_mode=true is not supported (inference only)")
        if not wants_mask:
            return (x,)
        fill = np.ones if opset >= 12 else np.zeros
        return (x, fill(x.shape, dtype=mask_dtype if mask_dtype is not None else x.dtype))

    return dropout


# ---------------------------------------------------------------------------------------------------
# Cast
# ---------------------------------------------------------------------------------------------------
# Which targets, and how they round: `hawqc.ir.op_arithmetic.cast_target`.


def build_cast(spec: NodeSpec) -> Kernel:
    check_input_count(spec.node, 1, 1)
    target = cast_target(spec.node)

    def cast(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (np.asarray(args[0]).astype(target),)

    return cast
