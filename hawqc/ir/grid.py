"""The dyadic grid of float tensors: which power of two each value is a multiple of.

Every finite float is an integer times a power of two. Quantized tensors lie on a coarse grid (a
power-of-two scale), and that grid is what folding, precision inference and the hls4ml planner need:
the LSB of the narrowest fixed-point type that holds the values exactly. Zeros lie on every grid,
so they never make one finer; infinities and NaNs lie on none and are left out.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from hawqc.ir.qtypes import FixedType

# Stands for "no finite non-zero element": a zero is a multiple of every power of two.
ANY_EXPONENT = int(np.iinfo(np.int32).max)


def element_exponents(values: np.ndarray) -> np.ndarray:
    """Per element, the exponent of the coarsest power of two the value is a multiple of
    (`ANY_EXPONENT` for zeros and non-finite values, so that they never make a grid finer)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    mantissa, exponent = np.frexp(np.where(finite, values, 0.0))
    # |mantissa| * 2**53 is an integer; its lowest set bit says how coarse each value's grid is.
    ints = np.abs(mantissa * 2.0**53).astype(np.int64)
    lowest = np.where(ints == 0, 1, ints & -ints)
    exps = exponent.astype(np.int64) - 53 + np.log2(lowest.astype(np.float64)).astype(np.int64)
    return np.where((values == 0) | ~finite, ANY_EXPONENT, exps)


def finest_exponent(values: np.ndarray) -> int | None:
    """The exponent of the largest power of two every finite element is a multiple of; None when
    no element is finite and non-zero (every grid holds such a tensor)."""
    exponents = element_exponents(values)
    if exponents.size == 0:
        return None
    finest = int(np.min(exponents))
    return None if finest == ANY_EXPONENT else finest


def exact_type(values: np.ndarray) -> FixedType:
    """The narrowest fixed-point type holding every element of a finite float tensor exactly."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    lsb = finest_exponent(values)
    if lsb is None:
        return FixedType.covering(0, 0, 0)
    return FixedType.covering(Fraction(float(values.min())), Fraction(float(values.max())), lsb)
