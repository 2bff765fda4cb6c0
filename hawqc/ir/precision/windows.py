"""Window geometry of a Conv or pool, as onnxruntime (and `hawqc.sim.ops_conv`) computes it: which
kernel positions some window places on padding, and how many positions each average divides by."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.op_arithmetic import auto_pads, window_count
from hawqc.ir.precision.attributes import attr, ints_attr


@dataclass(frozen=True)
class Windows:
    """The sliding-window attributes of a Conv or pool, absent ones at their ONNX defaults."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    # None: padding that depends on a shape we do not know (auto_pad SAME_* without a shape).
    pads: tuple[int, ...] | None
    ceil_mode: bool

    @classmethod
    def of(cls, node: ir.Node, kernel: Sequence[int], spatial: Sequence[int] | None) -> Windows:
        rank = len(kernel)
        strides = tuple(ints_attr(node, "strides") or [1] * rank)
        dilations = tuple(ints_attr(node, "dilations") or [1] * rank)
        auto_pad = str(attr(node, "auto_pad", "NOTSET"))
        pads: tuple[int, ...] | None
        if auto_pad in ("NOTSET", ""):
            pads = tuple(ints_attr(node, "pads") or [0] * (2 * rank))
        elif auto_pad == "VALID":
            pads = (0,) * (2 * rank)
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = None if spatial is None else tuple(auto_pads(auto_pad, spatial, kernel, strides, dilations))
        else:
            raise UnsupportedModelError(f"{describe(node)}: unknown auto_pad {auto_pad!r}")
        if len(strides) != rank or len(dilations) != rank or (pads is not None and len(pads) != 2 * rank):
            raise UnsupportedModelError(f"{describe(node)}: strides/dilations/pads do not match a {rank}-D kernel")
        return cls(tuple(kernel), strides, dilations, pads, bool(attr(node, "ceil_mode", 0)))

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
