"""QONNX `MultiThreshold`: a pure kernel and the executor's builder.

qonnx 1.0.0 (`qonnx.custom_op.general.multithreshold`) defines the op: input 0 `v`, input 1
`thresholds` of shape [C, T] (or [1, T]: the same thresholds for every channel); each element of
`v` becomes the number of thresholds of its channel that it is greater than or equal to, then
`out_scale * count + out_bias`. The channel axis is the position of "C" in the `data_layout`
attribute; without one, qonnx guesses from the rank (2: "NC", 3: "NWC", 4: "NCHW"), and from rank 5
on it takes axis 1. The arithmetic repeats qonnx's in the same dtypes: the count is cast to the
dtype of `v`, and the attributes (float32 in the file, Python floats after reading) enter numpy as
weak scalars, so `out_scale * count + out_bias` is two float32 operations on float32 data. A NaN
compares false with every threshold: it counts 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe

if TYPE_CHECKING:  # hawqc.sim.ops imports this module to fill its op table
    from hawqc.sim.ops import Kernel, NodeSpec

# qonnx's guess of the layout when the node has no `data_layout` attribute, by rank.
LAYOUT_BY_RANK = {2: "NC", 3: "NWC", 4: "NCHW"}


def channel_axis_of(data_layout: str, rank: int) -> int:
    """The axis qonnx thresholds per channel for a tensor of `rank` (see the module docstring)."""
    if not data_layout:
        data_layout = LAYOUT_BY_RANK.get(rank, "")
    return data_layout.index("C") if "C" in data_layout else 1


def multithreshold(
    v: np.ndarray,
    thresholds: np.ndarray,
    out_scale: float = 1.0,
    out_bias: float = 0.0,
    channel_axis: int = 1,
) -> np.ndarray:
    """`out_scale * count(v >= thresholds[c]) + out_bias`, c the channel of each element."""
    channels = v.shape[channel_axis]
    if thresholds.ndim != 2 or thresholds.shape[0] not in (1, channels):
        raise ValueError(
            f"thresholds of shape {list(thresholds.shape)} do not fit {channels} channels (expected [C, T] or [1, T])"
        )
    # Channels last, then one more axis for the T thresholds to broadcast along.
    moved = np.moveaxis(v, channel_axis, -1)[..., np.newaxis]
    counts = np.count_nonzero(moved >= thresholds, axis=-1).astype(v.dtype)
    counts = np.moveaxis(counts, -1, channel_axis)
    return out_scale * counts + out_bias


def build_multithreshold(spec: NodeSpec) -> Kernel:
    """`MultiThreshold` (v, thresholds), attributes out_scale (1.0), out_bias (0.0), data_layout."""
    node = spec.node
    if len(node.inputs) != 2 or any(value is None for value in node.inputs):
        raise UnsupportedModelError(f"{describe(node)} has {len(node.inputs)} inputs, expected 2")
    out_scale = node.attributes.get_float("out_scale", 1.0)
    out_bias = node.attributes.get_float("out_bias", 0.0)
    data_layout = node.attributes.get_string("data_layout", "")

    def multithreshold_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        v, thresholds = args[0], args[1]
        if v.ndim < 2:
            raise UnsupportedModelError(f"{describe(node)}: input of rank {v.ndim} has no channel axis")
        axis = channel_axis_of(data_layout, v.ndim)
        if axis >= v.ndim:
            raise UnsupportedModelError(
                f"{describe(node)}: data_layout '{data_layout}' puts the channels on axis {axis} of a rank-{v.ndim} input"
            )
        try:
            return (multithreshold(v, thresholds, out_scale, out_bias, axis),)
        except ValueError as err:
            raise UnsupportedModelError(f"{describe(node)}: {err}") from None

    return multithreshold_kernel
