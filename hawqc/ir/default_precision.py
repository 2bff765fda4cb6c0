"""`--default-precision`: the one fixed-point type a graph's float parts are computed in.

A quantized graph says the type of every value (its Quants, and exact intervals from there). A
graph with float parts does not: an unquantized graph input has no range, a float32 weight needs
more bits than any accumulator should hold, and the value a float layer computes would grow wider
layer after layer. hls4ml answers with one default type (`ap_fixed<16,6>`) for everything the
user did not configure; hawqc does the same, explicitly and only where the graph is float:

- an unquantized graph input is cast into the default type (the C bridge's double -> input type
  conversion, with the type's rounding and saturation);
- a weight or bias that is not quantized (no Quant, no `fold-quant` annotation) and either is
  applied to a float value (the layer is float) or has no exact fixed-point type of at most 32
  bits (what precision inference would otherwise refuse) is rounded into the default type, with
  the type's rounding and saturation. (A float32 weight is always some exact dyadic number, often
  within 32 bits: exactness alone does not make it quantized; a constant scale factor of `Mul`
  stays the exact number it is, the product is then cast.) The model keeps its float weights; the report says how many
  weights the rounding changed and by how much at most;
- an activation computed by arithmetic (MatMul, Conv, Add, Sub, Mul, Div, LeakyRelu,
  BatchNormalization, average pooling) from a float part, and not read by a Quant of its own, is
  cast into the default type, as a Quant would cast it. A dot product's accumulator is not cast:
  it is inferred exactly from the (rounded) weights as in a quantized graph, and the cast happens
  where hls4ml's Dense / Conv writes its result (after the bias). Data movement (Relu, pooling by
  maximum, reshapes, concatenation, ...) keeps its exact type.

Nothing else changes: values a Quant types, and constants that are exact, keep their exact types,
so a quantized graph given a default precision compiles exactly as without one.

Rounding and saturation: `fixed<16,6>` without modes means RND_CONV / SAT, which is exactly what a
QONNX `Quant(rounding_mode=ROUND)` does (round half to even, clamp), so a float part is cast the
way a Quant would cast it. hls4ml's own default, `ap_fixed<16,6>` with TRN / WRAP (truncate, wrap
around on overflow), is spelled `fixed<16,6,TRN,WRAP>`.

The default precision travels with the model (`metadata_props[METADATA_KEY]`), so every analysis
of it (precision inference, hardware mode, the lowering, the mismatch trace) applies the same one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.errors import OptionError
from hawqc.ir.ops.traits import Trait, ops_with
from hawqc.ir.qtypes import ROUNDING_MODES, SATURATION_MODES, FixedType

METADATA_KEY = "hawqc.default_precision"
DEFAULT_ROUNDING = "RND_CONV"
DEFAULT_SATURATION = "SAT"
# Ops whose result is new arithmetic (not a value moved or clamped): a float one is cast.
ARITHMETIC_OPS = ops_with(Trait.ARITHMETIC)

_SPELLING = re.compile(
    r"(?:ap_)?(?P<kind>u?fixed)<\s*(?P<width>\d+)\s*,\s*(?P<integer>-?\d+)\s*"
    r"(?:,\s*(?:AP_)?(?P<rounding>[A-Z_]+)\s*(?:,\s*(?:AP_)?(?P<saturation>[A-Z_]+)\s*)?)?>"
)


def parse_default_precision(text: str, option: str = "default_precision") -> FixedType:
    """`fixed<W,I>`, `ufixed<W,I>` (also `ap_fixed` / `ap_ufixed`), optionally with a rounding and
    a saturation mode (`fixed<16,6,TRN,WRAP>`, `AP_` prefixes allowed); UserInputError naming the
    option otherwise."""
    match = _SPELLING.fullmatch(text.strip())
    usage = "expected e.g. fixed<16,6> or fixed<16,6,TRN,WRAP>"
    if match is None:
        raise OptionError(f"{{}} {text!r}: not a fixed-point type ({usage})", option)
    width, integer = int(match["width"]), int(match["integer"])
    rounding = (match["rounding"] or DEFAULT_ROUNDING).upper()
    saturation = (match["saturation"] or DEFAULT_SATURATION).upper()
    if not 2 <= width <= 32:
        raise OptionError(f"{{}} {text!r}: width must be 2..32 bits, got {width}", option)
    if rounding not in ROUNDING_MODES:
        raise OptionError(f"{{}} {text!r}: unknown rounding mode {rounding} (known: {', '.join(sorted(ROUNDING_MODES))})", option)
    if saturation not in SATURATION_MODES:
        raise OptionError(
            f"{{}} {text!r}: unknown saturation mode {saturation} (known: {', '.join(sorted(SATURATION_MODES))})", option
        )
    return FixedType(width, integer, match["kind"] == "fixed", rounding, saturation)


def attach(model: ir.Model, fixed: FixedType) -> None:
    model.metadata_props[METADATA_KEY] = str(fixed)


def detach(model: ir.Model) -> None:
    model.metadata_props.pop(METADATA_KEY, None)


def read(model: ir.Model) -> FixedType | None:
    """The default precision the model carries, or None (a quantized-only compile)."""
    text = model.metadata_props.get(METADATA_KEY)
    return None if text is None else parse_default_precision(text, option=f"model metadata {METADATA_KEY}")


# ---- casting exactly, on codes ------------------------------------------------------------------


def _round_code(x: Fraction, mode: str) -> int:
    """x (in LSB units) rounded to an integer by ap_fixed's quantization mode `mode`."""
    floor = x.numerator // x.denominator
    frac = x - floor
    if frac == 0:
        return floor
    if mode == "TRN":
        return floor
    if mode == "TRN_ZERO":
        return floor if x > 0 else floor + 1
    if frac != Fraction(1, 2):
        return floor + (1 if frac > Fraction(1, 2) else 0)
    tie = {
        "RND": floor + 1,
        "RND_MIN_INF": floor,
        "RND_INF": floor + 1 if x > 0 else floor,
        "RND_ZERO": floor if x > 0 else floor + 1,
        "RND_CONV": floor if floor % 2 == 0 else floor + 1,
    }
    return tie[mode]


def _saturate_code(code: int, fixed: FixedType) -> int:
    if fixed.min_int <= code <= fixed.max_int:
        return code
    if fixed.saturation in ("SAT", "SAT_SYM"):
        return min(max(code, fixed.min_int), fixed.max_int)
    if fixed.saturation == "SAT_ZERO":
        return 0
    span = 1 << fixed.width
    return (code - fixed.min_int) % span + fixed.min_int


def cast_code(x: Fraction, fixed: FixedType) -> int:
    """The code (value / LSB) an assignment of the exact number `x` to type `fixed` stores."""
    return _saturate_code(_round_code(x / Fraction(2) ** fixed.lsb_exponent, fixed.rounding), fixed)


def cast_code_bounds(lo: int, hi: int, exp: int, fixed: FixedType) -> tuple[int, int]:
    """Bounds (codes of `fixed`) of every value of [lo, hi] * 2**exp after the cast: the cast
    bounds where rounding is monotonic and nothing overflows, else the type's whole range (a
    wrap can land anywhere)."""
    step = Fraction(2) ** exp
    low, high = cast_code(Fraction(lo) * step, fixed), cast_code(Fraction(hi) * step, fixed)
    unit = Fraction(2) ** fixed.lsb_exponent
    rounded_lo = _round_code(Fraction(lo) * step / unit, fixed.rounding)
    rounded_hi = _round_code(Fraction(hi) * step / unit, fixed.rounding)
    overflows = rounded_lo < fixed.min_int or rounded_hi > fixed.max_int
    if overflows and fixed.saturation not in ("SAT", "SAT_SYM"):
        return fixed.min_int, fixed.max_int
    return low, high


# ---- what was applied ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundedConstant:
    """A float weight or bias rounded into the default precision."""

    name: str
    elements: int
    changed: int  # elements whose value the rounding changed
    max_error: float  # largest |rounded - original|

    def as_dict(self) -> dict:
        return {"name": self.name, "elements": self.elements, "changed": self.changed, "max_error": self.max_error}


def round_constant(name: str, data: np.ndarray, fixed: FixedType) -> tuple[np.ndarray, RoundedConstant]:
    """`data` rounded (and saturated) into `fixed`, exactly, and what that changed."""
    flat = np.asarray(data, dtype=np.float64).reshape(-1)
    codes = [cast_code(Fraction(float(v)), fixed) for v in flat]
    rounded = np.ldexp(np.asarray(codes, dtype=np.float64), fixed.lsb_exponent).reshape(np.shape(data)) + 0.0
    error = np.abs(rounded.reshape(-1) - flat)
    changed = int(np.count_nonzero(error))
    return rounded, RoundedConstant(name, int(flat.size), changed, float(error.max()) if error.size else 0.0)


@dataclass
class FloatParts:
    """Where precision inference applied the default precision (`PrecisionResult.float_parts`)."""

    fixed: FixedType
    inputs: list[str] = field(default_factory=list)  # graph inputs cast into it
    casts: list[str] = field(default_factory=list)  # activations cast into it
    constants: dict[str, RoundedConstant] = field(default_factory=dict)  # weights and biases rounded

    @property
    def applied(self) -> bool:
        return bool(self.inputs or self.casts or self.constants)

    def as_dict(self) -> dict:
        return {
            "default_precision": str(self.fixed),
            "inputs": list(self.inputs),
            "casts": list(self.casts),
            "constants": [c.as_dict() for c in self.constants.values()],
            "weights": sum(c.elements for c in self.constants.values()),
            "weights_changed": sum(c.changed for c in self.constants.values()),
            "max_weight_error": max((c.max_error for c in self.constants.values()), default=0.0),
        }

    def summary(self) -> str:
        facts = self.as_dict()
        parts = []
        if self.inputs:
            parts.append(f"input {', '.join(repr(n) for n in self.inputs)}")
        if self.constants:
            parts.append(
                f"{facts['weights_changed']}/{facts['weights']} float weights changed by rounding "
                f"(largest error {facts['max_weight_error']:.3g})"
            )
        if self.casts:
            parts.append(f"{len(self.casts)} float activations cast")
        return f"float parts computed in {self.fixed}: {'; '.join(parts)}"
