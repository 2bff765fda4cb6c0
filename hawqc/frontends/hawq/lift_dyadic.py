"""HAWQ's dyadic rescaling factors `m / 2^e`, and their exact float32 pieces.

HAWQ requantizes with `round(z_int * m / 2^e)` where `m` has up to 31 significant bits. float32
holds 24, so `m * 2^-e` is split into `hi + lo`, each an exact float32 (`hi` keeps the top 24 bits
of `m`, `lo` the rest, at most 7 bits). `z * hi + z * lo` is then exactly `z * m / 2^e` in exact
(hardware-mode) arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MANTISSA_BITS = 31  # HAWQ's batch_frexp scales the frexp mantissa by 2^31
FLOAT32_SIGNIFICAND_BITS = 24


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


@dataclass(frozen=True)
class Dyadic:
    """Per-channel `m / 2^e` (or one scalar pair), as Python integers in object arrays."""

    mantissa: np.ndarray  # m, integer-valued int64
    exponent: np.ndarray  # e, int64

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """(hi, lo): float32 arrays with hi + lo == m * 2^-e exactly and each exactly representable."""
        hi = np.empty(self.mantissa.shape, dtype=np.float32)
        lo = np.empty(self.mantissa.shape, dtype=np.float32)
        for index, (m, e) in enumerate(zip(self.mantissa.flat, self.exponent.flat)):
            m, e = int(m), int(e)
            drop = max(0, m.bit_length() - FLOAT32_SIGNIFICAND_BITS)
            m_hi = (m >> drop) << drop
            hi.flat[index] = np.float32(np.ldexp(float(m_hi), -e))
            lo.flat[index] = np.float32(np.ldexp(float(m - m_hi), -e))
            assert float(hi.flat[index]) == np.ldexp(float(m_hi), -e), "hi part must be exact"
            assert float(lo.flat[index]) == np.ldexp(float(m - m_hi), -e), "lo part must be exact"
        return hi, lo

    def exact_in_float32(self) -> bool:
        """True if every m fits float32's significand, so a single Mul constant holds m * 2^-e."""
        return all(
            int(m).bit_length() - ((int(m) & -int(m)).bit_length() - 1) <= FLOAT32_SIGNIFICAND_BITS
            for m in self.mantissa.flat
            if int(m) != 0
        )


def dyadic(ratio: np.ndarray) -> Dyadic:
    """HAWQ's `batch_frexp`: `mantissa, exp = frexp(r)`, `m = round_half_up(mantissa * 2^31)`,
    `e = 31 - exp`, element by element, on float64 ratios."""
    ratio = np.asarray(ratio, dtype=np.float64)
    mantissas, exps = np.frexp(ratio)
    m = np.array([_round_half_up(float(x) * 2.0**MANTISSA_BITS) for x in mantissas.flat], dtype=np.int64)
    e = MANTISSA_BITS - exps.astype(np.int64).reshape(-1)
    return Dyadic(m.reshape(ratio.shape), e.reshape(ratio.shape))
