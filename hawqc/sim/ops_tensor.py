"""Data movement ops: Concat, Resize (nearest), Pad, Transpose, Squeeze, Unsqueeze, Dropout.

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

import numpy as np

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
# then the nearest mode: floor, ceil, round_prefer_ceil (std::round, halves away from zero),
# round_prefer_floor (halves down), or, in opset 10, "simple" (ceil when s < 1, else truncation);
# the index is clamped to [0, L - 1]. The output length from a scale is floor(L * s), in float32.

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
    if nearest_mode == "round_prefer_ceil":
        return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))  # std::round
    if nearest_mode == "round_prefer_floor":
        # onnxruntime: x == (int)x + 0.5 ? floor(x) : round(x)
        tie = x == np.trunc(x) + np.float32(0.5)
        return np.where(tie, np.floor(x), np.sign(x) * np.floor(np.abs(x) + np.float32(0.5)))
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
    if scales is None:
        scales = [np.float32(m) / np.float32(n) if n else np.float32(1) for m, n in zip(out_shape, x.shape)]
    y = x
    for axis, (n, m, s) in enumerate(zip(x.shape, out_shape, scales)):
        if n == m and np.float32(s) == 1:
            continue  # every mode maps i to i at scale 1
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
