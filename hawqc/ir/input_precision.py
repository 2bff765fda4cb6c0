"""`--input-precision`: the fixed-point type an unquantized graph input is taken as.

A graph input read by anything but a quantizer has no range, so precision inference refuses it.
The user knows what the sensor or the host sends; `fixed<W,I>` says it, and the input is then
exactly what a QONNX `Quant` of it would be:

    Quant(x, scale = 2**(I - W), zero_point = 0, bit_width = W, signed, narrow, rounding_mode)

That Quant is the one thing every later floor already knows: precision inference types it as
`fixed<W,I,...>`, semantic and hardware mode compute it, verification draws inputs inside its range,
and the hls4ml planner makes it the input layer, whose type is then `ap_fixed<W,I,AP_RND_CONV,AP_SAT>`
(for the default modes): the C bridge's `input_t(float)` conversion rounds and saturates exactly as
the Quant does (`FixedType.from_quant`, the inverse of the mapping below, is what precision
inference reads back).

Rounding and saturation. `fixed<W,I>` without modes means RND_CONV / SAT (as for
`--default-precision`): round half to even, clamp, which is `Quant(rounding_mode=ROUND)`. Other
modes map to the QONNX rounding mode with the same result on every input
(`qtypes.QONNX_TO_HLS_ROUNDING`, inverted); SAT_SYM of a signed type is `narrow=1`. A type whose
modes no Quant performs is refused naming the option: WRAP and SAT_ZERO (a Quant always clamps),
RND and RND_MIN_INF (ties toward +inf or -inf: no QONNX mode), SAT_SYM of an unsigned type.
"""

from __future__ import annotations

from dataclasses import dataclass

from hawqc.errors import OptionError
from hawqc.ir.default_precision import parse_default_precision
from hawqc.ir.qtypes import QONNX_TO_HLS_ROUNDING, FixedType

# hls4ml rounding mode -> the QONNX rounding mode with the same result on every input. ROUND and
# HALF_EVEN are one mode; ROUND is the name every exporter writes.
HLS_TO_QONNX_ROUNDING: dict[str, str] = {hls: qonnx for qonnx, hls in QONNX_TO_HLS_ROUNDING.items() if qonnx != "HALF_EVEN"}


@dataclass(frozen=True)
class InputQuant:
    """The parameters of the `Quant` that takes a graph input as `fixed`."""

    fixed: FixedType
    scale_exponent: int  # scale = 2**scale_exponent: the type's LSB
    bit_width: int
    signed: bool
    narrow: bool
    rounding_mode: str

    def describe(self) -> str:
        sign = "signed" if self.signed else "unsigned"
        narrow = ", narrow" if self.narrow else ""
        return f"Quant(scale 2^{self.scale_exponent}, {self.bit_width} bits {sign}{narrow}, {self.rounding_mode})"


def parse_input_precision(text: str, option: str = "input_precision") -> InputQuant:
    """The Quant that takes an input as the type `text` spells (`fixed<8,3>`, `ufixed<8,0>`,
    `fixed<8,3,TRN,SAT>`, with `ap_` / `AP_` prefixes as for `--default-precision`);
    OptionError naming `option` for a wrong spelling or modes no Quant performs."""
    fixed = parse_default_precision(text, option=option)
    return input_quant(fixed, text, option)


def input_quant(fixed: FixedType, text: str | None = None, option: str = "input_precision") -> InputQuant:
    shown = str(fixed) if text is None else text
    rounding = HLS_TO_QONNX_ROUNDING.get(fixed.rounding)
    if rounding is None:
        known = ", ".join(sorted(HLS_TO_QONNX_ROUNDING))
        raise OptionError(f"{{}} {shown!r}: rounding mode {fixed.rounding} has no QONNX Quant equivalent (use one of {known})", option)
    if fixed.saturation not in ("SAT", "SAT_SYM") or (fixed.saturation == "SAT_SYM" and not fixed.signed):
        raise OptionError(
            f"{{}} {shown!r}: saturation mode {fixed.saturation} has no QONNX Quant equivalent "
            "(a Quant clamps: SAT, or SAT_SYM for a signed type)",
            option,
        )
    return InputQuant(
        fixed=fixed,
        scale_exponent=fixed.lsb_exponent,
        bit_width=fixed.width,
        signed=fixed.signed,
        narrow=fixed.saturation == "SAT_SYM",
        rounding_mode=rounding,
    )
