"""The quantizer view: QONNX's `Quant`, `IntQuant`, `BipolarQuant` and `Trunc`, read in one place.

Each op keeps its parameters in inputs and attributes that exports often leave at their defaults:
`signed` 1, `narrow` 0, `rounding_mode` ROUND (FLOOR for `Trunc`), as the QONNX spec gives them
(qonnx's own code requires the attributes; real exports omit them). `Trunc` has two input layouts:
v1 `(X, scale, zeropt, in_bitwidth, out_bitwidth)` and v2 `(X, scale, zeropt, in_bitwidth,
out_scale, out_bitwidth)`, chosen by the version of the QONNX domain the node runs at.

The view only reads: it says what the node's parameters are (constant tensors, or None where an
input is not a constant) and what they mean (integer code bounds, the bipolar case, the per-channel
axis). What a reader accepts (a power-of-two scale, a zero point of 0) is the reader's policy and
stays with it. The numeric evaluation in qonnx's dtypes is `hawqc.sim.quant`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.keys import OpKey, op_key, qonnx_op
from hawqc.ir.ops.reading import opset_version
from hawqc.ir.quant_annotation import QuantAnnotation

# `IntQuant` is the newer name of `Quant`: same inputs, attributes and meaning.
INTEGER_QUANTIZERS: frozenset[OpKey] = frozenset({qonnx_op("Quant"), qonnx_op("IntQuant")})
BIPOLAR_QUANTIZER: OpKey = qonnx_op("BipolarQuant")
TRUNC: OpKey = qonnx_op("Trunc")
# Every op whose output is its input 0 quantized, the other inputs being parameters that
# broadcast against it.
QUANTIZERS: frozenset[OpKey] = INTEGER_QUANTIZERS | {BIPOLAR_QUANTIZER, TRUNC}
# The quantizers of any float input to a code times the scale: what quantizes a weight or an
# activation. `Trunc` re-quantizes an input that is already on a grid.
CODE_QUANTIZERS: frozenset[OpKey] = INTEGER_QUANTIZERS | {BIPOLAR_QUANTIZER}

# A bit width: a Python int, or a numpy tensor evaluated in its dtype (`code_bounds`).
Bits = TypeVar("Bits", int, np.ndarray, np.generic)

# The version of the QONNX domain a node runs at when the model imports none (qonnx's default).
QONNX_DEFAULT_VERSION = 1

# Input positions of each layout's parameters.
_ROLES = {
    "Quant": {"scale": 1, "zero_point": 2, "bit_width": 3},
    "BipolarQuant": {"scale": 1},
    "Trunc v1": {"scale": 1, "zero_point": 2, "in_bit_width": 3, "bit_width": 4},
    "Trunc v2": {"scale": 1, "zero_point": 2, "in_bit_width": 3, "out_scale": 4, "bit_width": 5},
}


def code_bounds(bits: Bits, signed: bool, narrow: bool) -> tuple[Bits, Bits]:
    """The integers a quantizer's codes take, as qonnx's `min_int` / `max_int` give them. qonnx's
    code (not its spec) also narrows unsigned quantizers, at the top. A 1-bit signed `Quant` is
    qonnx's bipolar case (codes -1 and +1), which `Quantizer.code_bounds` reports.

    `bits` is a Python int (exact bounds) or a numpy bit-width tensor, on which the bounds are
    evaluated as qonnx evaluates them, in the tensor's dtype: each bound is one operation on a
    power of two (exact in a float dtype), so it is the exact bound rounded once (a 32-bit signed
    maximum is 2**31 in float32). The executor needs that to be bit-identical with qonnx."""
    if signed:
        half = 2 ** (bits - 1)
        return -half + int(narrow), half - 1
    return 0 * bits, 2**bits - (1 + int(narrow))


def is_quantizer(node: ir.Node, kinds: frozenset[OpKey] = QUANTIZERS) -> bool:
    return op_key(node) in kinds


def is_integer_quantizer(node: ir.Node) -> bool:
    """`Quant` or `IntQuant` (not `BipolarQuant` nor `Trunc`)."""
    return op_key(node) in INTEGER_QUANTIZERS


@dataclass(frozen=True)
class Quantizer:
    """A quantizer node's parameters and what they mean (see the module docstring)."""

    node: ir.Node
    # "Quant" (also for IntQuant), "BipolarQuant", "Trunc v1" or "Trunc v2".
    layout: str
    signed: bool
    narrow: bool
    # Upper case, as every reader compares it (QONNX's modes are case-insensitive).
    rounding_mode: str
    # As the file spells it, for messages.
    rounding_mode_as_written: str

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def x(self) -> ir.Value | None:
        return self.node.inputs[0] if self.node.inputs else None

    def input(self, role: str) -> ir.Value | None:
        """The input holding `role` ("scale", "zero_point", "bit_width", "in_bit_width",
        "out_scale"), or None where this op has no such input or the node leaves it out."""
        index = _ROLES[self.layout].get(role)
        if index is None or index >= len(self.node.inputs):
            return None
        return self.node.inputs[index]

    def constant(self, role: str) -> np.ndarray | None:
        return _constant_data(self.input(role))

    @property
    def expected_inputs(self) -> int:
        return 1 + len(_ROLES[self.layout])

    def integer_parameters(
        self, read_constant: Callable[[ir.Value | None], np.ndarray | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(scale, zero point, bit width tensor) of a `Quant` / `IntQuant` with every input there,
        the scale and zero point read by `read_constant` (default: a constant's data; a rewrite
        passes its own reader: float32 only, cached, ...), the bit width a constant of one element.
        None for another quantizer, or where a parameter is missing or not readable."""
        if self.layout != "Quant" or len(self.node.inputs) != self.expected_inputs:
            return None
        read = read_constant or _constant_data
        scale, zero_point = read(self.input("scale")), read(self.input("zero_point"))
        bit_width = self.bit_width_tensor
        if scale is None or zero_point is None or bit_width is None or bit_width.size != 1:
            return None
        return scale, zero_point, bit_width

    @property
    def scale(self) -> np.ndarray | None:
        return self.constant("scale")

    @property
    def zero_point(self) -> np.ndarray | None:
        """The zero point; a `BipolarQuant` has none and means 0."""
        if self.layout == "BipolarQuant":
            return np.zeros((), np.float32)
        return self.constant("zero_point")

    @property
    def bit_width_tensor(self) -> np.ndarray | None:
        """The bit width as the file stores it (`Trunc`: the output's), or None if not constant."""
        if self.layout == "BipolarQuant":
            return np.ones((), np.float32)
        return self.constant("bit_width")

    @property
    def bits(self) -> int | None:
        """The bit width as one positive integer, or None (not a constant, not a single integer)."""
        tensor = self.bit_width_tensor
        if tensor is None or tensor.size != 1:
            return None
        value = float(tensor.reshape(()))
        if not np.isfinite(value) or value != int(value) or value < 1:
            return None
        return int(value)

    @property
    def is_bipolar(self) -> bool:
        """A `BipolarQuant`, or a 1-bit signed `Quant`, which qonnx computes as one
        (`x >= 0 ? +s : -s`, for a zero point of 0)."""
        if self.layout == "BipolarQuant":
            return True
        return self.layout == "Quant" and self.signed and self.bits == 1

    @property
    def code_bounds(self) -> tuple[int, int] | None:
        """The integer codes the output takes (bipolar: -1 and +1), or None if the bit width is
        not a constant integer."""
        if self.is_bipolar:
            return -1, 1
        bits = self.bits
        return None if bits is None else code_bounds(bits, self.signed, self.narrow)

    @property
    def per_tensor(self) -> bool:
        scale, zero_point = self.scale, self.zero_point
        return scale is not None and zero_point is not None and scale.size == 1 and zero_point.size == 1

    def channel_axis(self, rank: int) -> int | None:
        """The axis of an input of `rank` along which the scale or zero point varies (numpy
        broadcasting aligns them from the right), or None when per tensor or not constant.
        Raises ValueError when they vary along more than one axis."""
        axes: set[int] = set()
        for parameter in (self.scale, self.zero_point):
            if parameter is None or parameter.ndim > rank:
                return None
            offset = rank - parameter.ndim
            axes.update(offset + axis for axis, extent in enumerate(parameter.shape) if extent != 1)
        if len(axes) > 1:
            raise ValueError(f"the quantization parameters vary along axes {sorted(axes)}")
        return next(iter(axes), None)

    def annotation(self) -> QuantAnnotation | None:
        """What `fold-quant` records on a constant this quantizer produced
        (`hawqc.ir.quant_annotation`), or None when the parameters are not constant and finite."""
        if self.layout not in ("Quant", "BipolarQuant"):
            return None
        scale, zero_point, bits = self.scale, self.zero_point, self.bits
        if scale is None or zero_point is None or bits is None:
            return None
        if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(zero_point))):
            return None
        # A BipolarQuant does not round; the annotation takes its default mode.
        mode = self.rounding_mode or "ROUND"
        return QuantAnnotation.from_arrays(bits, self.signed, self.narrow, scale, zero_point, mode)


def _constant_data(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def quantizer(node: ir.Node) -> Quantizer | None:
    """The view of a QONNX quantizer node, or None for any other node."""
    key = op_key(node)
    if key not in QUANTIZERS:
        return None
    attributes = node.attributes
    if key == BIPOLAR_QUANTIZER:
        return Quantizer(node, "BipolarQuant", True, False, "", "")
    if key == TRUNC:
        # The version its own domain is imported at: a file not yet normalized imports an alias.
        version = opset_version(node, node.domain) or QONNX_DEFAULT_VERSION
        layout, default_mode = ("Trunc v2" if version >= 2 else "Trunc v1"), "FLOOR"
    else:
        layout, default_mode = "Quant", "ROUND"
    mode = attributes.get_string("rounding_mode", default_mode)
    return Quantizer(
        node,
        layout,
        signed=bool(attributes.get_int("signed", 1)),
        narrow=bool(attributes.get_int("narrow", 0)),
        rounding_mode=mode.upper(),
        rounding_mode_as_written=mode,
    )
