"""QONNX's rounding modes on exact rational numbers: the code of a quotient, and the cell of a code.

A `Quant` rounds `x / s + z`; its exact meaning rounds the exact quotient (the scale, the zero point
and x are exact rationals: float32 numbers are). Two views of one rounding mode:
- `round_quotient(num, den, mode)`: the integer code of `num / den` (integer arrays, den > 0),
  vectorized over numpy int64 or object (Python int) arrays;
- `code_cell(k, mode)`: the set of reals that round to the integer k, as an interval whose ends are
  half-integers (given doubled, so they are integers) and are open or closed.

The modes are qonnx 1.0.0's (`resolve_rounding_mode`): ROUND and HALF_EVEN round half to even, CEIL,
FLOOR, UP (away from zero), DOWN (toward zero), HALF_UP (half away from zero: `sign(x) *
floor(|x| + 0.5)`), HALF_DOWN (half toward zero: `sign(x) * ceil(|x| - 0.5)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hawqc.errors import UnsupportedModelError

MODES = ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")
# Modes whose cells end at half-integers (the others end at integers).
HALF_MODES = frozenset({"ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN"})


def check_mode(mode: str) -> str:
    mode = mode.upper()
    if mode not in MODES:
        raise UnsupportedModelError(f"rounding mode {mode} is not supported (known: {', '.join(MODES)})")
    return mode


def round_quotient(num, den, mode: str):
    """The code `round(num / den)` in `mode`, exactly: `num` an integer array (int64 or object), `den`
    a positive integer or array of them broadcasting against it."""
    mode = check_mode(mode)
    num = np.asarray(num)
    floor = num // den
    twice_rest = 2 * (num - floor * den)  # 2 * (num/den - floor) * den, in [0, 2 den)
    den = np.asarray(den)
    exact = twice_rest == 0
    above_half = twice_rest > den
    at_half = twice_rest == den
    positive = num > 0
    one = np.ones_like(floor)
    if mode == "FLOOR":
        return floor
    if mode == "CEIL":
        return floor + np.where(exact, 0 * one, one)
    if mode == "DOWN":  # toward zero
        return floor + np.where(exact | positive, 0 * one, one)
    if mode == "UP":  # away from zero
        return floor + np.where(exact | ~positive, 0 * one, one)
    up = above_half
    if mode in ("ROUND", "HALF_EVEN"):
        up = above_half | (at_half & (floor % 2 != 0))
    elif mode == "HALF_UP":  # ties away from zero: up when positive
        up = above_half | (at_half & positive)
    elif mode == "HALF_DOWN":  # ties toward zero: up when negative
        up = above_half | (at_half & ~positive)
    return floor + np.where(up, one, 0 * one)


@dataclass(frozen=True)
class Cells:
    """For integer codes k (an array): the reals that round to k are the interval between `lo2 / 2`
    and `hi2 / 2`, each end included where `lo_closed` / `hi_closed` (element-wise arrays)."""

    lo2: np.ndarray
    lo_closed: np.ndarray
    hi2: np.ndarray
    hi_closed: np.ndarray


def code_cell(k: np.ndarray, mode: str) -> Cells:
    """The cell of every code in `k` (int64 array) under `mode`: see `Cells`."""
    mode = check_mode(mode)
    k = np.asarray(k, dtype=np.int64)
    pos, neg, zero = k > 0, k < 0, k == 0
    true = np.ones(k.shape, dtype=bool)
    if mode in HALF_MODES:
        lo2, hi2 = 2 * k - 1, 2 * k + 1
        if mode in ("ROUND", "HALF_EVEN"):
            even = k % 2 == 0
            return Cells(lo2, even, hi2, even)
        if mode == "HALF_UP":  # ties away from zero: [k-1/2, k+1/2) above 0, mirrored below, open at 0
            return Cells(lo2, pos, hi2, neg)
        # HALF_DOWN: ties toward zero: (k-1/2, k+1/2] above 0, mirrored below, closed at 0
        return Cells(lo2, neg | zero, hi2, pos | zero)
    if mode == "FLOOR":
        return Cells(2 * k, true, 2 * k + 2, ~true)
    if mode == "CEIL":
        return Cells(2 * k - 2, ~true, 2 * k, true)
    if mode == "DOWN":  # [k, k+1) above 0, (k-1, k] below, (-1, 1) at 0
        lo2 = np.where(pos, 2 * k, 2 * k - 2)
        hi2 = np.where(neg, 2 * k, 2 * k + 2)
        return Cells(lo2, pos, hi2, neg)
    # UP: (k-1, k] above 0, [k, k+1) below, {0} at 0
    lo2 = np.where(pos, 2 * k - 2, 2 * k)
    hi2 = np.where(neg, 2 * k + 2, 2 * k)
    return Cells(lo2, neg | zero, hi2, pos | zero)
