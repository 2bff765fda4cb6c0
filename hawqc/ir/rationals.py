"""Float arrays as the exact rationals they are (every float32 / float64 is a Fraction exactly).

One conversion for everything that reasons about exact meanings (exact mode, integer interfaces,
integer-requant, verify's comparison with the exact meaning): numpy has no rational dtype, so the
values become an object array of `fractions.Fraction`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def _exact(x) -> Fraction | None:
    if isinstance(x, Fraction):
        return x
    x = float(x)
    return Fraction(x) if math.isfinite(x) else None


_EXACT = np.frompyfunc(_exact, 1, 1)


def exact_fractions(array) -> np.ndarray:
    """Every element as the exact Fraction it is (Fractions pass through; inf and nan become None),
    as an object array of the same shape (0-d for a scalar)."""
    result = _EXACT(np.asarray(array))
    if isinstance(result, np.ndarray):
        return result
    out = np.empty((), dtype=object)
    out[()] = result
    return out
