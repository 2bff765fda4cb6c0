"""Window geometry of a Conv or pool, as onnxruntime (and `hawqc.sim.ops_conv`) computes it: which
kernel positions some window places on padding, and how many positions each average divides by.
The attributes come from the window view (`hawqc.ir.ops.window`), absent ones at ONNX's defaults."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.ir.op_arithmetic import window_count
from hawqc.ir.ops.window import Windows


@dataclass(frozen=True)
class WindowGeometry:
    """The sliding windows of a Conv or pool over an input of known (or unknown) spatial size."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    # None: padding that depends on a shape we do not know (auto_pad SAME_* without a shape).
    pads: tuple[int, ...] | None
    ceil_mode: bool
    count_include_pad: bool

    @classmethod
    def of(cls, node: ir.Node, kernel: Sequence[int], spatial: Sequence[int] | None) -> WindowGeometry:
        """The node's windows; `kernel` is the weight's (Conv) or `kernel_shape` (pools)."""
        return cls.from_view(Windows.read(node, kernel), kernel, spatial)

    @classmethod
    def from_view(cls, windows: Windows, kernel: Sequence[int], spatial: Sequence[int] | None) -> WindowGeometry:
        rank = len(kernel)
        pads = windows.fixed_pads(rank)
        if pads is None and spatial is not None:
            pads = windows.pads_for(spatial, kernel)
        return cls(
            tuple(kernel),
            windows.strides_or_default(rank),
            windows.dilations_or_default(rank),
            pads,
            windows.ceil_mode,
            windows.count_include_pad,
        )

    def padded(self) -> bool:
        return self.pads is None or any(p > 0 for p in self.pads) or self.ceil_mode

    def positions_on_padding(self, spatial: Sequence[int] | None) -> np.ndarray:
        """Bool array of shape `kernel`: True where some window reads padding at that position."""
        rank = len(self.kernel)
        if not self.padded():
            return np.zeros(self.kernel, dtype=bool)
        if spatial is None or self.pads is None:
            return np.ones(self.kernel, dtype=bool)
        on_padding = np.zeros(self.kernel, dtype=bool)
        for axis in range(rank):
            size, k, s, d = spatial[axis], self.kernel[axis], self.strides[axis], self.dilations[axis]
            begin, end = self.pads[axis], self.pads[axis + rank]
            count = window_count(size, k, s, d, begin, end, self.ceil_mode)
            starts = np.arange(count) * s - begin
            for position in range(k):
                taps = starts + position * d
                if np.any((taps < 0) | (taps >= size)):
                    index = [slice(None)] * rank
                    index[axis] = position
                    on_padding[tuple(index)] = True
        return on_padding

    def averaging_sizes(self, spatial: Sequence[int], count_include_pad: bool) -> set[tuple[int, int]]:
        """Every (input positions, divisor) pair some window of AveragePool has (onnxruntime's rule:
        padding counts with count_include_pad, positions past the end pad never do)."""
        assert self.pads is not None
        rank = len(self.kernel)
        per_axis = []
        for axis in range(rank):
            size, k, s, d = spatial[axis], self.kernel[axis], self.strides[axis], self.dilations[axis]
            begin, end = self.pads[axis], self.pads[axis + rank]
            count = window_count(size, k, s, d, begin, end, self.ceil_mode)
            starts = np.arange(count) * s - begin
            taps = starts[:, None] + np.arange(k)[None, :] * d
            real = ((taps >= 0) & (taps < size)).sum(axis=1)
            low, high = (-begin, size + end) if count_include_pad else (0, size)
            divisor = ((taps >= low) & (taps < high)).sum(axis=1)
            per_axis.append({(int(r), int(c)) for r, c in zip(real, divisor)})
        return {
            (math.prod(r for r, _ in combo), math.prod(c for _, c in combo)) for combo in itertools.product(*per_axis)
        }
