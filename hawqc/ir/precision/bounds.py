"""The lattice precision inference computes in: exact intervals, kept per feature.

Each value gets an interval per feature along its last axis (the channel axis of a channels-last
activation), as integers times one power of two, so no rounding ever enters the analysis. Python
ints in object arrays keep every width exact (int64 could overflow on wide accumulators).

Codes are also counted per feature on the feature's own grid (`Bounds.grid`): a per-channel scale
of 2**-7 does not make a channel with scale 2**-4 look wide when float32 exactness is judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from hawqc.ir.grid import element_exponents
from hawqc.ir.grid import finest_exponent as finest_nonzero_exponent
from hawqc.ir.qtypes import FixedType


@dataclass(frozen=True)
class Bounds:
    """Values in [lo * 2**exp, hi * 2**exp]; lo/hi are int arrays of shape () or (features,).

    `grid` (same shape, or None for "exp everywhere") is, per feature, an exponent g >= exp such that
    every value of that feature is a multiple of 2**g: what float32 exactness is judged on.
    """

    lo: np.ndarray
    hi: np.ndarray
    exp: int
    grid: np.ndarray | None = None

    def __post_init__(self) -> None:
        # numpy hands back bare Python ints from 0-d object arithmetic: keep everything arrays.
        object.__setattr__(self, "lo", np.asarray(self.lo, dtype=object))
        object.__setattr__(self, "hi", np.asarray(self.hi, dtype=object))
        if self.grid is not None:
            object.__setattr__(self, "grid", np.asarray(self.grid, dtype=object))

    def at(self, exp: int) -> Bounds:
        """The same interval on a finer grid (exp <= self.exp)."""
        factor = 1 << (self.exp - exp)
        return Bounds(self.lo * factor, self.hi * factor, exp, self.grids())

    def grids(self) -> np.ndarray:
        """`grid` with the shape of `lo` (the exponent everywhere when there is none)."""
        grid = self.grid if self.grid is not None else np.asarray(self.exp, dtype=object)
        return np.array(np.broadcast_to(grid, np.broadcast_shapes(np.shape(grid), np.shape(self.lo))), dtype=object)

    def fractions(self) -> tuple[Fraction, Fraction]:
        step = Fraction(2) ** self.exp
        return Fraction(int(np.min(self.lo))) * step, Fraction(int(np.max(self.hi))) * step

    def fixed_type(self) -> FixedType:
        lo, hi = self.fractions()
        return FixedType.covering(lo, hi, self.exp)

    def max_grid_code(self) -> int:
        """The largest |code| of any value, each feature counted on its own grid."""
        lo, hi, grid = np.broadcast_arrays(self.lo, self.hi, self.grids())
        largest = 0
        for low, high, g in zip(lo.reshape(-1), hi.reshape(-1), grid.reshape(-1)):
            step = 1 << max(int(g) - self.exp, 0)
            largest = max(largest, -(-max(abs(int(low)), abs(int(high))) // step))
        return largest

    @property
    def features(self) -> int | None:
        return None if np.ndim(self.lo) == 0 else int(np.shape(self.lo)[0])

    def widened(self, features: int) -> Bounds:
        """Per-feature arrays of length `features` (scalar bounds repeated)."""
        if self.features == features:
            return self
        if self.features is not None:
            raise ValueError(f"{self.features} features do not broadcast to {features}")
        full = np.full(features, None, dtype=object)
        lo, hi, grid = full.copy(), full.copy(), full.copy()
        lo[:], hi[:], grid[:] = int(self.lo), int(self.hi), int(self.grids())
        return Bounds(lo, hi, self.exp, grid)

    def collapsed(self) -> Bounds:
        """One interval for all features (a layout change lost track of which feature is which)."""
        lo = np.asarray(int(np.min(self.lo)), dtype=object)
        hi = np.asarray(int(np.max(self.hi)), dtype=object)
        return Bounds(lo, hi, self.exp, np.asarray(int(np.min(self.grids())), dtype=object))


def int_array(values: np.ndarray) -> np.ndarray:
    """Python-int object array: exact for any width (int64 could overflow on wide accumulators)."""
    return np.asarray(values).astype(object)


def scalar(value: int) -> np.ndarray:
    return np.asarray(int(value), dtype=object)


def feature_bounds(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (last axis) min and max of an integer tensor; scalar if there is no feature axis."""
    codes = int_array(codes)
    if codes.ndim == 0 or codes.shape[-1] == 1:
        return np.asarray(codes.min(), dtype=object), np.asarray(codes.max(), dtype=object)
    flat = codes.reshape(-1, codes.shape[-1])
    return flat.min(axis=0), flat.max(axis=0)


def trunc_div(codes: np.ndarray, divisor: int) -> np.ndarray:
    """Integer division rounding toward zero (C's `/`, ap_fixed's `sdiv`), elementwise, exact."""
    return np.vectorize(lambda c: int(Fraction(int(c), divisor)), otypes=[object])(codes)


def exact_codes(values: np.ndarray, exp: int) -> np.ndarray:
    """values / 2**exp as exact integers (values are float32/float64 on that grid)."""
    scaled_values = np.ldexp(values.astype(np.float64), -exp)
    if not np.all(scaled_values == np.round(scaled_values)):
        raise ValueError(f"constant is not on the grid of 2**{exp}")
    if np.max(np.abs(scaled_values), initial=0) < 2**62:
        return int_array(scaled_values.astype(np.int64))
    return np.vectorize(lambda v: int(v), otypes=[object])(scaled_values)


def finest_exponent(values: np.ndarray) -> int:
    """The LSB exponent of the finest grid a float tensor lies on (0 for an all-zero tensor)."""
    finest = finest_nonzero_exponent(values)
    return 0 if finest is None else finest


def feature_grids(values: np.ndarray, exp: int) -> np.ndarray:
    """Per feature (last axis), the coarsest exponent all its values are multiples of (>= exp)."""
    exps = element_exponents(values)
    if exps.ndim == 0 or exps.shape[-1] == 1:
        finest = int(exps.min()) if exps.size else exp
    else:
        finest = exps.reshape(-1, exps.shape[-1]).min(axis=0)
    clipped = np.maximum(np.asarray(finest, dtype=np.int64), exp)
    clipped = np.minimum(clipped, exp + 64)  # all-zero features: any grid will do
    return int_array(clipped)


def dyadic_bounds(data: np.ndarray) -> Bounds:
    """Exact per-feature bounds of a constant factor (Mul's k, BatchNorm's a, a reciprocal)."""
    data = np.asarray(data)
    exp = finest_exponent(data)
    lo, hi = feature_bounds(exact_codes(data, exp))
    return Bounds(lo, hi, exp, feature_grids(data, exp))


def scaled(x: Bounds, k: Bounds) -> Bounds:
    """x times a constant factor with per-feature bounds k: the interval product at LSB(x) + LSB(k)
    (exact when k is one number per feature, as a per-tensor or per-channel scale is)."""
    products = [x.lo * k.lo, x.lo * k.hi, x.hi * k.lo, x.hi * k.hi]
    lo = np.minimum(np.minimum(products[0], products[1]), np.minimum(products[2], products[3]))
    hi = np.maximum(np.maximum(products[0], products[1]), np.maximum(products[2], products[3]))
    return Bounds(int_array(lo), int_array(hi), x.exp + k.exp, x.grids() + k.grids())
