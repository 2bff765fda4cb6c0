"""HAWQ's dyadic rescaling factors `m / 2^e`, and the float64 constant that holds one exactly (numpy only: the
HAWQ lifter and the HAWQ-export reading both use it, the latter without importing torch).

HAWQ requantizes with `round(z_int * m / 2^e)` where `m` has up to 31 significant bits, computed in
double. float32 cannot hold `m * 2^-e` (24 significant bits), float64 can (53), so the lifted graph
multiplies in double (`hawqc.frontends.hawq.lift`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MANTISSA_BITS = 31  # HAWQ's batch_frexp scales the frexp mantissa by 2^31


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


@dataclass(frozen=True)
class Dyadic:
    """Per-channel `m / 2^e` (or one scalar pair), as integer arrays."""

    mantissa: np.ndarray  # m, integer-valued int64
    exponent: np.ndarray  # e, int64

    def as_float64(self) -> np.ndarray:
        """`m * 2^-e` as float64, exactly: m < 2^32 fits the 53-bit significand, and the exponents
        HAWQ's ratios give stay far from float64's subnormal range (checked)."""
        factors = np.ldexp(self.mantissa.astype(np.float64), -self.exponent)
        for m, e, f in zip(self.mantissa.flat, self.exponent.flat, factors.flat):
            if int(m) != 0 and float(f) * 2.0 ** int(e) != float(m):
                raise ValueError(f"dyadic factor {int(m)} / 2^{int(e)} is not exact in float64")
        return factors


def dyadic(ratio: np.ndarray) -> Dyadic:
    """HAWQ's `batch_frexp`: `mantissa, exp = frexp(r)`, `m = round_half_up(mantissa * 2^31)`,
    `e = 31 - exp`, element by element, on float64 ratios."""
    ratio = np.asarray(ratio, dtype=np.float64)
    mantissas, exps = np.frexp(ratio)
    m = np.array([_round_half_up(float(x) * 2.0**MANTISSA_BITS) for x in mantissas.flat], dtype=np.int64)
    e = MANTISSA_BITS - exps.astype(np.int64).reshape(-1)
    return Dyadic(m.reshape(ratio.shape), e.reshape(ratio.shape))
