"""Integer interfaces: what a design's ports carry when they are not the model's real values.

When a graph input passes a quantizer whose scale is not a power of two, no fixed-point type holds
its values, so the design's input port takes the quantizer's integer codes and the scale moves
downstream (`integer-requant`). The host computes the codes:

    code = clip(R((x * a + b) / s), min, max)       (a, b: the graph's constant pre-scaling, often 1, 0)

with R the quantizer's rounding mode, on the exact quotient. Likewise an output that is not on a
fixed-point grid (a float scale, a float bias) is delivered as integers v with an affine map to the
model's real units: `real = v * scale + offset`, per element, exact rationals.

Both travel with the model in `metadata_props` (JSON; rationals as "p/q" strings so they stay
exact), so verification, the report and the test bench read them from the lowered model alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.rounding import round_quotient
from hawqc.ir.rationals import exact_fractions

INPUT_KEY = "hawqc.input_codes."
_ROUNDING_NAMES = {"ROUND": "round_half_even", "HALF_EVEN": "round_half_even"}
OUTPUT_KEY = "hawqc.output_affine."


def _to_text(values: np.ndarray) -> list:
    return [str(Fraction(v)) for v in np.asarray(values, dtype=object).reshape(-1)]


def _from_text(texts: list, shape: list[int]) -> np.ndarray:
    out = np.empty(len(texts), dtype=object)
    out[:] = [Fraction(t) for t in texts]
    return out.reshape(shape)


@dataclass(frozen=True)
class InputCodes:
    """Input `name` takes `bits`-bit codes of Quant(x * pre_scale + pre_offset, scale)."""

    name: str
    scale: Fraction
    bits: int
    signed: bool
    narrow: bool
    rounding_mode: str
    min_code: int
    max_code: int
    pre_scale: Fraction = Fraction(1)
    pre_offset: Fraction = Fraction(0)
    # A binary quantizer (BipolarQuant): the code is +1 where x * pre_scale + pre_offset >= 0, else -1.
    bipolar: bool = False

    def encode(self, x: np.ndarray) -> np.ndarray:
        """The codes of real host values (float32), exactly: float32 codes, as the port takes them."""
        x = np.asarray(x, dtype=np.float32)
        if self.bipolar:
            exact = np.frompyfunc(lambda v: Fraction(float(v)) * self.pre_scale + self.pre_offset >= 0, 1, 1)(x.astype(np.float64))
            return np.where(np.asarray(exact, dtype=bool), np.float32(1), np.float32(-1))
        total = self.pre_scale / self.scale
        offset = self.pre_offset / self.scale
        # x = k * 2^-149 exactly for every float32; v = x * total + offset over one denominator.
        numerator = exact_fractions(x.astype(np.float64))
        v = numerator * total + offset
        num = np.frompyfunc(lambda f: f.numerator, 1, 1)(v)
        den = np.frompyfunc(lambda f: f.denominator, 1, 1)(v)
        num = np.maximum(np.minimum(num, den * self.max_code), den * self.min_code)
        codes = round_quotient(np.asarray(num, dtype=object), np.asarray(den, dtype=object), self.rounding_mode)
        return np.asarray(codes, dtype=np.float64).astype(np.float32)

    def describe(self) -> str:
        if self.bipolar:
            rescaled = "x" if self.pre_scale == 1 and self.pre_offset == 0 else f"x * {float(self.pre_scale):.6g} + {float(self.pre_offset):.6g}"
            return f"input '{self.name}': +1 / -1 codes of BipolarQuant(scale {float(self.scale):.6g}); code = +1 where {rescaled} >= 0, else -1"
        kind = "signed" if self.signed else "unsigned"
        v = "x"
        if self.pre_scale != 1 or self.pre_offset != 0:
            v = f"(x * {float(self.pre_scale):.6g} {'-' if self.pre_offset < 0 else '+'} {abs(float(self.pre_offset)):.6g})"
        rounding = _ROUNDING_NAMES.get(self.rounding_mode, self.rounding_mode.lower())
        return (
            f"input '{self.name}': {self.bits}-bit {kind} codes of Quant(scale {float(self.scale):.6g}); "
            f"code = clip({rounding}({v} / scale), {self.min_code}, {self.max_code})"
        )

    def as_dict(self) -> dict:
        return {
            "scale": str(self.scale), "bits": self.bits, "signed": self.signed, "narrow": self.narrow,
            "rounding_mode": self.rounding_mode, "min_code": self.min_code, "max_code": self.max_code,
            "pre_scale": str(self.pre_scale), "pre_offset": str(self.pre_offset), "bipolar": self.bipolar,
        }  # fmt: skip

    @staticmethod
    def from_dict(name: str, data: dict) -> InputCodes:
        return InputCodes(
            name, Fraction(data["scale"]), int(data["bits"]), bool(data["signed"]), bool(data["narrow"]),
            str(data["rounding_mode"]), int(data["min_code"]), int(data["max_code"]),
            Fraction(data.get("pre_scale", "1")), Fraction(data.get("pre_offset", "0")), bool(data.get("bipolar", False)),
        )  # fmt: skip


@dataclass(frozen=True)
class OutputAffine:
    """Output `name` carries v; the model's value is `v * scale + offset` (arrays of Fractions with
    the output's rank, batch axis 1, broadcasting against it)."""

    name: str
    scale: np.ndarray
    offset: np.ndarray

    def decode(self, v: np.ndarray) -> np.ndarray:
        """Exact real values (object array of Fractions) of the port's values (float64, exact)."""
        exact = exact_fractions(np.asarray(v, dtype=np.float64))
        return exact * self.scale + self.offset

    def decode_float(self, v: np.ndarray) -> np.ndarray:
        return np.frompyfunc(float, 1, 1)(self.decode(v)).astype(np.float64)

    def describe(self) -> str:
        scales = sorted({float(s) for s in self.scale.reshape(-1)})
        offsets = {float(o) for o in self.offset.reshape(-1)}
        scale_text = f"{scales[0]:.6g}" if len(scales) == 1 else f"{len(scales)} scales {scales[0]:.3g}..{scales[-1]:.3g}"
        offset_text = "" if offsets == {0.0} else " + offset (per element)"
        return f"output '{self.name}': integers v; value = v * {scale_text}{offset_text}"

    def as_dict(self) -> dict:
        return {"shape": list(self.scale.shape), "scale": _to_text(self.scale), "offset": _to_text(self.offset)}

    @staticmethod
    def from_dict(name: str, data: dict) -> OutputAffine:
        return OutputAffine(name, _from_text(data["scale"], data["shape"]), _from_text(data["offset"], data["shape"]))


def write_input(model: ir.Model, codes: InputCodes) -> None:
    model.metadata_props[INPUT_KEY + codes.name] = json.dumps(codes.as_dict())


def write_output(model: ir.Model, affine: OutputAffine) -> None:
    model.metadata_props[OUTPUT_KEY + affine.name] = json.dumps(affine.as_dict())


def input_codes(model: ir.Model) -> dict[str, InputCodes]:
    return {
        key[len(INPUT_KEY) :]: InputCodes.from_dict(key[len(INPUT_KEY) :], json.loads(text))
        for key, text in model.metadata_props.items()
        if key.startswith(INPUT_KEY)
    }


def output_affines(model: ir.Model) -> dict[str, OutputAffine]:
    return {
        key[len(OUTPUT_KEY) :]: OutputAffine.from_dict(key[len(OUTPUT_KEY) :], json.loads(text))
        for key, text in model.metadata_props.items()
        if key.startswith(OUTPUT_KEY)
    }


def has_interfaces(model: ir.Model) -> bool:
    return any(key.startswith((INPUT_KEY, OUTPUT_KEY)) for key in model.metadata_props)
