"""A reference ONNX Conv on channels-first data, for tests: the executor's channels-last kernel on
transposed operands (semantic mode itself transposes once per node, not through this)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hawqc.sim.ops_conv import conv_channels_last, to_channels_first, to_channels_last


def conv_nchw(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None = None,
    *,
    strides: Sequence[int] | None = None,
    pads: Sequence[int] | None = None,
    dilations: Sequence[int] | None = None,
    group: int = 1,
) -> np.ndarray:
    """ONNX Conv: x [N, C, spatial...], weight [M, C/group, k...], bias [M] -> [N, M, out...]."""
    y = conv_channels_last(
        to_channels_last(x), to_channels_last(w), b,
        strides=strides, pads=pads, dilations=dilations, group=group,
    )  # fmt: skip
    return np.ascontiguousarray(to_channels_first(y))
