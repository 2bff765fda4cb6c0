"""hls4ml's binary and integer types, as FixedType subclasses the plan and the checks can carry.

hls4ml picks the product of a Dense or Conv (`FPGABackend.product_type`) from the *class* of the
types, not from their values: `XnorPrecisionType` weights and data give `both_binary` (XNOR,
popcount), `XnorPrecisionType` on one side `weight_binary` / `data_binary` (conditional negation),
`IntegerPrecisionType(2, signed)` weights `weight_ternary`. A FixedType of the same numbers would
give `mult`. So the plan needs these two kinds of type:

- `XnorType`: one bit, `ap_uint<1>` / `ac_int<1, false>`, where code 0 MEANS -1 and code 1 means +1
  (hls4ml's binary encoding). Its fixed-point range (0..1) is not the numbers it stands for; the
  planner keeps the scale of what it stands for next to it.
- `IntType`: `ap_int<w>` / `ac_int<w, true>`, the numbers a FixedType(w, w, signed) holds, TRN/WRAP.

hls4ml's config takes a precision string or a PrecisionType object; there is no string for the Xnor
type (`uint<1>` parses as an IntegerPrecisionType), so `hls4ml_string` hands over the object.
"""

from __future__ import annotations

from dataclasses import dataclass

from hawqc.ir.qtypes import FixedType


@dataclass(frozen=True)
class XnorType(FixedType):
    """hls4ml's binary type: code 0 means -1, code 1 means +1 (see the module docstring)."""

    def __str__(self) -> str:
        return "xnor<1> (0 = -1, 1 = +1)"

    def hls4ml_string(self):  # type: ignore[override]
        return self.to_hls4ml()

    def to_hls4ml(self):  # type: ignore[override]
        from hls4ml.model.types import XnorPrecisionType

        return XnorPrecisionType()

    def ap_cpp(self) -> str:
        return "ap_uint<1>"

    def ac_cpp(self) -> str:
        return "ac_int<1,false>"


def xnor_type() -> XnorType:
    return XnorType(width=1, integer=1, signed=False)


@dataclass(frozen=True)
class IntType(FixedType):
    """An integer type (`IntegerPrecisionType`): what hls4ml's `weight_ternary` product needs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.integer != self.width or self.rounding != "TRN" or self.saturation != "WRAP":
            raise ValueError(f"an integer type is ap_int<w>: integer bits == width, TRN/WRAP, got {self!r}")

    def __str__(self) -> str:
        return f"{'' if self.signed else 'u'}int<{self.width}>"

    def hls4ml_string(self) -> str:
        return str(self)

    def to_hls4ml(self):  # type: ignore[override]
        from hls4ml.model.types import IntegerPrecisionType

        return IntegerPrecisionType(width=self.width, signed=self.signed)

    def ap_cpp(self) -> str:
        return f"ap_{'' if self.signed else 'u'}int<{self.width}>"

    def ac_cpp(self) -> str:
        return f"ac_int<{self.width},{'true' if self.signed else 'false'}>"


def int_type(width: int, signed: bool = True) -> IntType:
    return IntType(width=width, integer=width, signed=signed)


def special_cpp_spelling(fixed: FixedType, hls4ml_backend: str) -> str | None:
    """The C++ spelling hls4ml writes for an XnorType / IntType (None for a plain FixedType): the
    targets spell FixedTypes themselves, through `FixedType.ap_cpp`, which these override."""
    if not isinstance(fixed, (XnorType, IntType)):
        return None
    return fixed.ac_cpp() if hls4ml_backend.lower() == "catapult" else fixed.ap_cpp()
