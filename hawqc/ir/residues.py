"""Which x of a range make a linear function's residue land in a window: `(a*x + b) mod d in [lo, hi]`.

The dyadic requantization solver (`hawqc.ir.dyadic_requant`) needs, on accumulator ranges too wide to
enumerate, the few accumulator values whose exact meaning lies near a rounding boundary: with the
meaning `(a*n + b) / d` (in units of the rounding step), those are the n whose residue mod d is small
or close to d. Scanning the range for them is what it cannot afford, so each one is found directly
by the Euclid-like recursion below, in O(log d) steps, with Python integers of any size (the
denominators of products of float32 scales have 100 bits and more).

No library computes this (numpy works in 64 bits; sympy solves single congruences, not windows).
"""

from __future__ import annotations


def first_in_window(a: int, b: int, d: int, lo: int, hi: int) -> int | None:
    """The smallest x >= 0 with `(a*x + b) mod d` in [lo, hi] (0 <= lo <= hi < d), or None if no x does."""
    if not 0 <= lo <= hi < d:
        raise ValueError(f"window [{lo}, {hi}] is not inside [0, {d})")
    a, b = a % d, b % d
    # (a*x + b) mod d in [lo, hi]  <=>  (a*x) mod d in [lo - b, hi - b] (mod d): one window or two.
    start, end = (lo - b) % d, (hi - b) % d
    if start <= end:
        return _first(a, d, start, end)
    candidates = [x for x in (_first(a, d, start, d - 1), _first(a, d, 0, end)) if x is not None]
    return min(candidates) if candidates else None


def _first(a: int, d: int, lo: int, hi: int) -> int | None:
    """The smallest x >= 0 with `(a*x) mod d` in [lo, hi], for 0 <= a < d and 0 <= lo <= hi < d.

    Either the first run of multiples of a (before a*x passes d) reaches the window, or every run
    jumps over it (the window is narrower than a). Then x belongs to the smallest wrap count y >= 0
    for which [lo + d*y, hi + d*y] holds a multiple of a, that is for which `(d*y) mod a` lies in the
    window [(-hi) mod a, (-lo) mod a]: the same problem with (d mod a, a), as in Euclid's algorithm.
    """
    if lo == 0:
        return 0
    if a == 0:
        return None
    x = -(-lo // a)
    if a * x <= hi:
        return x
    start, end = (-hi) % a, (-lo) % a
    if start > end:  # the window wraps past 0, so y = 0 would work: excluded by the first run
        raise AssertionError("first run missed a wrapping window")
    y = _first(d % a, a, start, end)
    if y is None:
        return None
    return -(-(lo + d * y) // a)


def all_in_window(a: int, b: int, d: int, lo: int, hi: int, count: int, limit: int) -> list[int] | None:
    """Every x in [0, count) with `(a*x + b) mod d` in [lo, hi], ascending; None if more than `limit`."""
    found: list[int] = []
    start = 0
    while start < count:
        x = first_in_window(a, b + a * start, d, lo, hi)
        if x is None or start + x >= count:
            break
        if len(found) == limit:
            return None
        found.append(start + x)
        start += x + 1
    return found
