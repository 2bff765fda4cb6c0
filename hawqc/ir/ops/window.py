"""The window view: the sliding-window attributes of `Conv`, `MaxPool` and `AveragePool` (standard
or channels-last), read once, checked once, absent ones at their ONNX defaults.

ONNX's defaults: strides and dilations 1 on every axis, pads 0, `auto_pad` NOTSET (also written
""), `ceil_mode` 0, `count_include_pad` 0, `group` 1. `kernel_shape` may be left out of a Conv (the
weight gives it), never out of a pool. `auto_pad` SAME_UPPER / SAME_LOWER pads so that the output
has ceil(size / stride) positions, which depends on the input's spatial size: `pads_for` takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx_ir as ir

from hawqc.ir.op_arithmetic import auto_pads
from hawqc.ir.ops.reading import refusal

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


@dataclass(frozen=True)
class Windows:
    """A Conv's or pool's window attributes. `kernel` is None only for a Conv whose weight is not
    a constant and that has no `kernel_shape`; `strides`, `dilations`, `pads` are None where the
    node leaves them out (`*_or_default` give ONNX's default)."""

    kernel: tuple[int, ...] | None
    strides: tuple[int, ...] | None
    dilations: tuple[int, ...] | None
    pads: tuple[int, ...] | None
    auto_pad: str
    ceil_mode: bool
    count_include_pad: bool
    group: int

    @classmethod
    def read(cls, node: ir.Node, kernel: Sequence[int] | None = None) -> Windows:
        """Read and check the node's window attributes; `kernel` is the weight's kernel (Conv)."""
        attrs = node.attributes
        given = attrs.get_ints("kernel_shape", None)
        if given is not None and kernel is not None and tuple(given) != tuple(kernel):
            raise refusal(node, f"kernel_shape {list(given)} does not match the weight's kernel {list(kernel)}")
        kernel = tuple(int(k) for k in given) if given is not None else (None if kernel is None else tuple(kernel))
        auto_pad = attrs.get_string("auto_pad", "NOTSET") or "NOTSET"
        if auto_pad not in AUTO_PADS:
            raise refusal(node, f"unknown auto_pad '{auto_pad}' (known: {', '.join(AUTO_PADS)})")
        windows = cls(
            kernel,
            _optional_ints(attrs.get_ints("strides", None)),
            _optional_ints(attrs.get_ints("dilations", None)),
            _optional_ints(attrs.get_ints("pads", None)),
            auto_pad,
            bool(attrs.get_int("ceil_mode", 0)),
            bool(attrs.get_int("count_include_pad", 0)),
            attrs.get_int("group", 1),
        )
        windows._check(node)
        return windows

    def _check(self, node: ir.Node) -> None:
        if self.group < 1:
            raise refusal(node, f"group {self.group} must be at least 1")
        if self.kernel is None:
            return
        rank = len(self.kernel)
        for name, values, length in (
            ("strides", self.strides, rank),
            ("dilations", self.dilations, rank),
            ("pads", self.pads, 2 * rank),
        ):
            if values is not None and len(values) != length:
                raise refusal(node, f"{name} {list(values)} has {len(values)} values, expected {length}")
        if any(k < 1 for k in self.kernel) or any(v < 1 for v in (*(self.strides or ()), *(self.dilations or ()))):
            raise refusal(node, "kernel_shape, strides and dilations must be positive")
        if self.auto_pad != "NOTSET" and any(self.pads or ()):
            raise refusal(node, f"has both auto_pad {self.auto_pad} and explicit pads")
        if self.auto_pad.startswith("SAME") and any(d != 1 for d in self.dilations or ()):
            # onnxruntime refuses it for Conv and computes garbage for pools.
            raise refusal(node, f"auto_pad {self.auto_pad} with dilations != 1 is not supported (onnxruntime refuses it)")

    def strides_or_default(self, rank: int) -> tuple[int, ...]:
        return self.strides if self.strides is not None else (1,) * rank

    def dilations_or_default(self, rank: int) -> tuple[int, ...]:
        return self.dilations if self.dilations is not None else (1,) * rank

    @property
    def depends_on_input_size(self) -> bool:
        """True when the padding follows from the input's spatial size (auto_pad SAME_*)."""
        return self.auto_pad.startswith("SAME")

    def pads_for(self, spatial: Sequence[int], kernel: Sequence[int] | None = None) -> tuple[int, ...]:
        """ONNX pads [begin..., end...] for an input of spatial size `spatial`."""
        kernel = tuple(kernel if kernel is not None else self.kernel or ())
        rank = len(kernel)
        if self.auto_pad == "NOTSET":
            return self.pads if self.pads is not None else (0,) * (2 * rank)
        return tuple(
            auto_pads(self.auto_pad, spatial, kernel, self.strides_or_default(rank), self.dilations_or_default(rank))
        )

    def fixed_pads(self, rank: int) -> tuple[int, ...] | None:
        """The pads when they do not depend on the input's size (None for auto_pad SAME_*)."""
        if self.auto_pad == "NOTSET":
            return self.pads if self.pads is not None else (0,) * (2 * rank)
        if self.auto_pad == "VALID":
            return (0,) * (2 * rank)
        return None


def _optional_ints(values: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if values is None else tuple(int(v) for v in values)
