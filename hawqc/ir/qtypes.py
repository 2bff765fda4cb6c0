"""Fixed-point types: the one description of a number format that every backend spells its own way.

A `FixedType` is `ap_fixed<width, integer, rounding, saturation>` in backend-neutral form: `width`
bits in total, `integer` of them left of the binary point (the sign bit included when signed), so
the value of the least significant bit is `2 ** (integer - width)`. Rounding and saturation are
hls4ml's mode names (`TRN`, `RND_CONV`, `SAT`, `SAT_SYM`, ...); they matter only where a value is
narrowed into the type, which in hawqc happens exactly at the QONNX `Quant` nodes. Every other type
is wide enough for all values that can reach it and keeps the free defaults `TRN` / `WRAP`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

from hawqc.errors import UnsupportedModelError

if TYPE_CHECKING:
    from hls4ml.model.types import FixedPrecisionType

# QONNX rounding mode (upper-cased) -> hls4ml rounding mode with the same result on every input.
# Read from qonnx 1.0.0 `resolve_rounding_mode`: HALF_UP is `sign(x) * floor(|x| + 0.5)`, ties away
# from zero, which is AP_RND_INF; HALF_DOWN is `sign(x) * ceil(|x| - 0.5)`, ties toward zero, which is
# AP_RND_ZERO. CEIL and UP (away from zero) have no ap_fixed/ac_fixed quantization mode.
QONNX_TO_HLS_ROUNDING: dict[str, str] = {
    "ROUND": "RND_CONV",
    "HALF_EVEN": "RND_CONV",
    "FLOOR": "TRN",
    "DOWN": "TRN_ZERO",
    "HALF_UP": "RND_INF",
    "HALF_DOWN": "RND_ZERO",
}
UNEXPRESSIBLE_ROUNDING = frozenset({"CEIL", "UP"})

# The modes hawqc emits. All of them exist under the same names in ap_fixed (AP_*) and in
# Catapult's ac_fixed (AC_*, see ac_fixed.h: ac_q_mode / ac_o_mode), which is how hls4ml spells them.
ROUNDING_MODES = frozenset({"TRN", "TRN_ZERO", "RND", "RND_ZERO", "RND_INF", "RND_MIN_INF", "RND_CONV"})
SATURATION_MODES = frozenset({"WRAP", "SAT", "SAT_ZERO", "SAT_SYM"})


def power_of_two_exponent(value: float) -> int | None:
    """`e` if `value == 2**e` exactly, else None."""
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        return None
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else None


@dataclass(frozen=True)
class FixedType:
    width: int
    integer: int
    signed: bool
    rounding: str = "TRN"
    saturation: str = "WRAP"

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"fixed-point width must be >= 1, got {self.width}")
        if self.rounding not in ROUNDING_MODES:
            raise ValueError(f"unknown rounding mode {self.rounding!r}; known: {sorted(ROUNDING_MODES)}")
        if self.saturation not in SATURATION_MODES:
            raise ValueError(f"unknown saturation mode {self.saturation!r}; known: {sorted(SATURATION_MODES)}")

    # ---- what the type holds -------------------------------------------------------------
    @property
    def fractional(self) -> int:
        return self.width - self.integer

    @property
    def lsb_exponent(self) -> int:
        """The value of one step is `2 ** lsb_exponent`."""
        return self.integer - self.width

    @property
    def min_int(self) -> int:
        """Smallest value in units of the LSB (AP_SAT_SYM gives up the most negative code)."""
        if not self.signed:
            return 0
        low = -(1 << (self.width - 1))
        return low + 1 if self.saturation == "SAT_SYM" else low

    @property
    def max_int(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def min_value(self) -> Fraction:
        return Fraction(self.min_int) * Fraction(2) ** self.lsb_exponent

    @property
    def max_value(self) -> Fraction:
        return Fraction(self.max_int) * Fraction(2) ** self.lsb_exponent

    def holds(self, lo: Fraction, hi: Fraction) -> bool:
        """True if every multiple of the LSB in [lo, hi] is representable without wrapping."""
        return self.min_value <= lo and hi <= self.max_value

    # ---- spellings --------------------------------------------------------------------------
    def __str__(self) -> str:
        prefix = "fixed" if self.signed else "ufixed"
        return f"{prefix}<{self.width},{self.integer},{self.rounding},{self.saturation}>"

    def hls4ml_string(self) -> str:
        """The precision string hls4ml's config parser accepts for every backend (AP notation
        without the `ap_` prefix; Catapult converts the parsed type to ac_fixed itself)."""
        return str(self)

    def to_hls4ml(self) -> FixedPrecisionType:
        """A fresh hls4ml type object (hls4ml's backends rewrite `__class__` in place, so never share one)."""
        from hls4ml.model.types import FixedPrecisionType

        return FixedPrecisionType(
            width=self.width,
            integer=self.integer,
            signed=self.signed,
            rounding_mode=self.rounding,
            saturation_mode=self.saturation,
            saturation_bits=0,
        )

    def ap_cpp(self) -> str:
        """The ap_fixed spelling (what hls4ml writes for Vivado and Vitis)."""
        prefix = "ap_fixed" if self.signed else "ap_ufixed"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return f"{prefix}<{self.width},{self.integer}>"
        return f"{prefix}<{self.width},{self.integer},AP_{self.rounding},AP_{self.saturation},0>"

    def ac_cpp(self) -> str:
        """The ac_fixed spelling (what hls4ml writes for Catapult)."""
        signed = "true" if self.signed else "false"
        if self.rounding == "TRN" and self.saturation == "WRAP":
            return f"ac_fixed<{self.width},{self.integer},{signed}>"
        return f"ac_fixed<{self.width},{self.integer},{signed},AC_{self.rounding},AC_{self.saturation}>"

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_quant(
        cls,
        bitwidth: int,
        scale: float,
        signed: bool,
        narrow: bool,
        rounding_mode: str = "ROUND",
        *,
        where: str = "Quant",
    ) -> FixedType:
        """The type whose rounding and saturation perform QONNX `Quant(x, scale, 0, bitwidth)`.

        With `scale = 2**e` the Quant output is `q * 2**e` with `q` a `bitwidth`-bit integer, so the
        type is `bitwidth` wide with its LSB at `2**e`. QONNX clamps before rounding; with integer
        clamp bounds that equals rounding then saturating, which is what ap_fixed/ac_fixed do.
        `where` names the node in error messages.
        """
        exponent = power_of_two_exponent(scale)
        if exponent is None:
            raise UnsupportedModelError(f"{where}: scale {scale!r} is not a power of two")
        if bitwidth != int(bitwidth) or bitwidth < 1:
            raise UnsupportedModelError(f"{where}: bit width {bitwidth!r} is not a positive integer")
        bitwidth = int(bitwidth)
        if signed and bitwidth == 1:
            # qonnx 1.0.0 turns a 1-bit signed Quant into +-1 (a known bug in its source), not {-1, 0}.
            raise UnsupportedModelError(f"{where}: 1-bit signed Quant (qonnx maps it to +-1, not a fixed-point type)")
        if narrow and not signed:
            # qonnx clamps an unsigned narrow Quant to 2**b - 2; no saturation mode stops there.
            raise UnsupportedModelError(f"{where}: unsigned narrow-range Quant has no exact saturation mode")
        mode = str(rounding_mode).upper()
        if mode in UNEXPRESSIBLE_ROUNDING:
            raise UnsupportedModelError(f"{where}: rounding mode {mode} has no ap_fixed/ac_fixed equivalent")
        if mode not in QONNX_TO_HLS_ROUNDING:
            raise UnsupportedModelError(f"{where}: unknown rounding mode {rounding_mode!r}")
        return cls(
            width=bitwidth,
            integer=bitwidth + exponent,
            signed=bool(signed),
            rounding=QONNX_TO_HLS_ROUNDING[mode],
            saturation="SAT_SYM" if signed and narrow else "SAT",
        )

    @classmethod
    def covering(cls, lo: Fraction | int, hi: Fraction | int, lsb_exponent: int) -> FixedType:
        """The narrowest type with LSB `2**lsb_exponent` that holds every value of [lo, hi].

        Such a type never rounds or saturates the values it was made for, so it keeps the free
        TRN/WRAP modes. Signed only if `lo < 0`.
        """
        lo, hi = Fraction(lo), Fraction(hi)
        if lo > hi:
            raise ValueError(f"empty interval [{lo}, {hi}]")
        step = Fraction(2) ** lsb_exponent
        lo_int, hi_int = lo / step, hi / step
        if lo_int.denominator != 1 or hi_int.denominator != 1:
            raise ValueError(f"[{lo}, {hi}] is not on the grid of 2**{lsb_exponent}")
        lo_i, hi_i = int(lo_int), int(hi_int)
        if lo_i < 0:
            # w bits signed hold [-2**(w-1), 2**(w-1) - 1].
            width = max((-lo_i - 1).bit_length(), hi_i.bit_length() if hi_i > 0 else 0) + 1
            signed = True
        else:
            width = max(hi_i.bit_length(), 1)
            signed = False
        return cls(width=width, integer=width + lsb_exponent, signed=signed)

    def union(self, other: FixedType) -> FixedType:
        """The narrowest type holding every value of both (modes of `self`; used for per-channel
        weights whose values are constants and never rounded by the type)."""
        lsb = min(self.lsb_exponent, other.lsb_exponent)
        merged = FixedType.covering(
            min(self.min_value, other.min_value), max(self.max_value, other.max_value), lsb
        )
        kept = FixedType(merged.width, merged.integer, merged.signed, self.rounding, self.saturation)
        # AP_SAT_SYM gives up the most negative code; keep the modes only if both ranges still fit.
        fits = kept.holds(self.min_value, self.max_value) and kept.holds(other.min_value, other.max_value)
        return kept if fits else merged
