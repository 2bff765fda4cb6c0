"""The fewest-bit dyadic multiply-add that requantizes an integer accumulator exactly.

A requantization maps an integer accumulator n to the next quantizer's code. Its exact meaning, with
every float32 scale, zero point and bias taken as the exact rational it is:

    code(n) = R(clip(g(r * n + t)))

r, t rationals (products and quotients of float32 scales, a folded BatchNorm, a float bias in code
units), g the identity or a Relu, clip to the quantizer's code bounds [a, b], R its rounding mode.
Fixed-point hardware computes the dyadic form exactly:

    code~(n) = R(clip(g((m * n + c) / 2^e)))

`solve` finds integers m, c, e with code~(n) == code(n) for **every** integer n in the accumulator's
range [lo, hi] (what range analysis allows), with the smallest e (so the fewest mantissa bits of m).

Why the check is a proof, not a sample:
- Codes are monotone in n (r > 0; r < 0 is mirrored, r == 0 is a constant). Below the first step the
  code is the smallest one, above the last the largest; code~ is monotone too (m >= 0) and clipped to
  the same bounds, so it suffices to check the n of the steps between, plus the last n of the bottom
  plateau and the first of the top one.
- The exact codes of those n are computed in float64 and recomputed with exact fractions wherever
  float64's error bound could reach a rounding boundary (`exact_codes`).
- For a candidate m at e, every checked n confines c to an interval (the code's cell, `code_cell`,
  scaled by 2^e, minus m*n), with exact integer ends; c must lie in their intersection. An m is
  accepted with a c from that intersection, so code~ equals code at every checked n by construction.
- Feasibility is monotone in e ((m, c, e) feasible implies (2m, 2c, e+1) is), so e is searched by
  bisection, then walked down while a smaller e still works.
Ties of the exact meaning (r*n + t on a cell's end) are cell ends like any other, closed or open as
R decides; where no dyadic satisfies them all, the refusal names the accumulator value and the tie.

Up to `MAX_CHECKED` steps every n between the plateaus is checked. Beyond (a 32-bit accumulator with a
tiny ratio has billions), the proof is by exact reasoning on the rationals (`_solve_wide`): only the n
whose exact value lies near a cell end can be reproduced wrongly by a dyadic that stays close to the
exact line; those n are found directly (`hawqc.ir.residues`) and checked as above, and one more
constraint keeps the dyadic within the margin of the exact line on all the others.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from hawqc.ir.ops.rounding import HALF_MODES, check_mode, code_cell, round_quotient
from hawqc.ir.residues import all_in_window

# The largest exponent tried: m*n must stay exact in the hardware's product (hls4ml types are wide,
# but nobody wants a multiplier beyond this), and float64 scales stop at 2^53 mantissas anyway.
MAX_EXPONENT = 62
# The most accumulator values checked one by one (the steps between the plateaus).
MAX_CHECKED = 1 << 22
# Beyond that, the most accumulator values near a rounding boundary reasoned about (`_solve_wide`).
MAX_NEAR = 1 << 22
# How many of them to start with (about): the margin grows from there while it costs bits.
NEAR_START = 1 << 12

# A further constraint on the offset c for a multiplier m at exponent e: an integer interval.
OffsetBound = Callable[[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Dyadic:
    """code~(n) = R(clip(g((m*n + c) / 2^e)))."""

    m: int
    c: int
    e: int
    # False only beyond enumeration when the margin proof could not rule out a smaller exponent with
    # the accumulator values it could afford (`_solve_wide`): exact everywhere, perhaps not fewest.
    fewest: bool = field(default=True, compare=False)

    @property
    def multiplier(self) -> Fraction:
        return Fraction(self.m, 1 << self.e)

    @property
    def offset(self) -> Fraction:
        return Fraction(self.c, 1 << self.e)

    @property
    def mantissa_bits(self) -> int:
        """Significant bits of the multiplier (the width of the hardware's multiplier input)."""
        m = abs(self.m)
        return (m >> _trailing_zeros(m)).bit_length() if m else 0


@dataclass(frozen=True)
class Requantization:
    """One channel's requantization: its exact meaning, and the accumulator range it must hold on."""

    r: Fraction
    t: Fraction
    lo: int
    hi: int
    min_code: int
    max_code: int
    mode: str
    relu: bool = False

    def exact_code(self, n: int) -> int:
        y = self.r * n + self.t
        if self.relu and y < 0:
            y = Fraction(0)
        y = min(max(y, Fraction(self.min_code)), Fraction(self.max_code))
        return int(round_quotient(np.array([y.numerator], dtype=object), y.denominator, self.mode)[0])

    def dyadic_code(self, d: Dyadic, n: int) -> int:
        return Requantization(d.multiplier, d.offset, self.lo, self.hi, self.min_code, self.max_code, self.mode, self.relu).exact_code(n)


class NoDyadic(Exception):
    """No dyadic reproduces the exact codes: `reason` says where (the accumulator value, the tie)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1 if x else 0


def solve(q: Requantization) -> Dyadic:
    """The dyadic with the smallest exponent reproducing `q` on its whole range (see the module
    docstring); raises NoDyadic naming the accumulator value where none can, or where too many
    accumulator values lie near a rounding boundary to reason about."""
    mode = check_mode(q.mode)
    q = Requantization(q.r, q.t, q.lo, q.hi, q.min_code, q.max_code, mode, q.relu)
    if q.lo > q.hi:
        raise ValueError("empty accumulator range")
    if q.r < 0:
        mirrored = Requantization(-q.r, q.t, -q.hi, -q.lo, q.min_code, q.max_code, mode, q.relu)
        d = solve(mirrored)
        return replace(d, m=-d.m)
    low_code = _lowest_code(q)
    if q.r == 0:
        n = np.array([q.lo], dtype=np.int64)
        return _search(q, n, exact_codes(q, n), low_code)
    first, last = _plateau_ends(q, low_code)
    if last - first + 1 <= MAX_CHECKED:
        n = np.arange(first, last + 1, dtype=np.int64)
        return _search(q, n, exact_codes(q, n), low_code)
    return _solve_wide(q, first, last, low_code)


def _lowest_code(q: Requantization) -> int:
    return q.exact_code(q.lo) if q.r == 0 else max(q.min_code, 0 if q.relu and q.min_code <= 0 <= q.max_code else q.min_code)


def _plateau_ends(q: Requantization, low_code: int) -> tuple[int, int]:
    """The last n of the bottom plateau and the first n of the top one (r > 0): the codes between
    them are the steps to check."""
    # The bottom plateau ends below the lowest code's cell end; the top one starts at the highest
    # code's cell start. Estimate with fractions, then step to the exact ends.
    low_cell = code_cell(np.array([low_code]), q.mode)
    top_cell = code_cell(np.array([q.max_code]), q.mode)
    first = math.floor((Fraction(int(low_cell.hi2[0]), 2) - q.t) / q.r) - 1
    last = math.ceil((Fraction(int(top_cell.lo2[0]), 2) - q.t) / q.r) + 1
    # Both estimates can fall outside the range (a range on one plateau): clamp both into it.
    first, last = min(max(first, q.lo), q.hi), min(max(last, q.lo), q.hi)
    while first > q.lo and q.exact_code(first) != low_code:
        first -= 1
    while first < q.hi and q.exact_code(first + 1) == low_code:
        first += 1
    while last < q.hi and q.exact_code(last) != q.max_code:
        last += 1
    while last > q.lo and q.exact_code(last - 1) == q.max_code:
        last -= 1
    return min(first, last), max(first, last)


def _solve_wide(q: Requantization, first: int, last: int, low_code: int) -> Dyadic:
    """`solve` on more steps than can be checked one by one: by exact reasoning on the rationals.

    In units of the rounding step, shifted so that the cell ends are the integers (by 1/2 for the
    half modes), the exact meaning is u(n) = (a*n + b) / d with integers a, b, d. An n whose residue
    (a*n + b) mod d lies in (h, d - h) is farther than w = (h + 1) / d from every cell end, so any
    dyadic within w of the exact line at that n gives its code; the error of a dyadic is linear in n,
    so within w at `first` and `last` means within w everywhere between. So the dyadic is solved on
    the few n near a cell end (found directly, `hawqc.ir.residues`), plus the two ends of the range,
    with that margin as one more constraint: code~ == code on every n of the range, proven.
    Fewest bits: a dyadic for the whole range is one for those n, so if no smaller exponent works
    on them alone, none works at all. Otherwise the margin is widened (h grows, more n) and solved
    again, until the proof admits the fewest bits or the n near a cell end are too many to check.
    """
    shift = Fraction(1, 2) if q.mode in HALF_MODES else Fraction(0)
    offset = q.t - shift
    d = math.lcm(q.r.denominator, offset.denominator)
    a, b = int(q.r * d), int(offset * d)
    count = last - first + 1
    base = a * first + b
    near_ends = NEAR_START
    best: Dyadic | None = None
    while True:
        h = min(d * near_ends // (2 * count), d // 2)  # at d // 2 the two windows hold every residue
        near = _near_cell_ends(a, base, d, h, count)
        if near is None:
            break  # too many to check: keep the best proven so far
        n = np.array(sorted(set(near) | {0, count - 1}), dtype=np.int64) + first
        codes = exact_codes(q, n)
        margin = Fraction(h + 1, d)
        ends = [(first, q.r * first + q.t), (last, q.r * last + q.t)]

        def within_margin(e: int, m: int) -> tuple[int, int]:
            """The c keeping (m*n + c) / 2^e within the margin of the exact line at both ends."""
            scale = 1 << e
            c_lo = max(math.floor((y - margin) * scale) - m * v for v, y in ends) + 1
            c_hi = min(math.ceil((y + margin) * scale) - m * v for v, y in ends) - 1
            return c_lo, c_hi

        cells, bottom, top = code_cell(codes, q.mode), codes == low_code, codes == q.max_code
        every_n = 2 * h + 1 >= d  # every residue is near a cell end: no n is left to the margin
        try:
            found = _search(q, n, codes, low_code, None if every_n else within_margin)
        except NoDyadic:
            if _feasible_at(q, MAX_EXPONENT, n, cells, bottom, top) is None:
                raise NoDyadic(_why_none(q, n, codes)) from None  # none even for these n alone
            found = None
        if found is not None:
            best = found if best is None or found.e < best.e else best
            if found.e == 0 or _feasible_at(q, found.e - 1, n, cells, bottom, top) is None:
                return found  # no smaller exponent works even on these n alone
        if every_n:
            break
        near_ends *= 4
    if best is None:
        raise NoDyadic(
            f"the accumulator takes {count} values between the quantizer's first and last code, and more "
            f"than {MAX_NEAR} of them lie too near a rounding boundary to reason about"
        )
    return replace(best, fewest=False)


def _near_cell_ends(a: int, base: int, d: int, h: int, count: int) -> list[int] | None:
    """The x in [0, count) with (a*x + base) mod d in [0, h] or [d - h, d): within h/d of a cell end."""
    below = all_in_window(a, base, d, 0, h, count, MAX_NEAR)
    if below is None or h == 0:
        return below
    above = all_in_window(a, base, d, d - h, d - 1, count, MAX_NEAR - len(below))
    return None if above is None else below + above


def exact_codes(q: Requantization, n: np.ndarray) -> np.ndarray:
    """code(n) for every n, exact: float64 where its error cannot reach a cell end, fractions elsewhere."""
    r, t = float(q.r), float(q.t)
    y = r * n.astype(np.float64) + t
    # |y_float - y| <= 4 ulps of the terms: the rounding of r, t, the product and the sum.
    tolerance = (np.abs(r * n.astype(np.float64)) + abs(t) + 1.0) * 2.0**-48
    if q.relu:
        y = np.maximum(y, 0.0)
    y = np.clip(y, q.min_code, q.max_code)
    step = 0.5 if q.mode in HALF_MODES else 1.0
    boundary_distance = np.abs(y / step - np.round(y / step)) * step
    # Rounded with the exact rounding on float64 values (exact as fractions of a power of two).
    codes = _round_float(y, q.mode)
    unsure = np.flatnonzero(boundary_distance <= tolerance)
    for i in unsure:
        codes[i] = q.exact_code(int(n[i]))
    return codes


def _round_float(y: np.ndarray, mode: str) -> np.ndarray:
    """R(y) on float64 values: exact (each float64 is num / 2^k), by the integer rounding."""
    mantissa, exponent = np.frexp(y)
    scale = 60
    num = np.round(mantissa * 2.0**53).astype(np.int64)  # exact: |mantissa| < 1 has 53 bits
    shift = 53 - exponent  # y = num / 2^shift
    out = np.empty(y.shape, dtype=np.int64)
    for s in np.unique(shift):
        where = shift == s
        s = int(s)
        if s <= 0:
            out[where] = num[where] << -s
        elif s < scale:
            out[where] = round_quotient(num[where], 1 << s, mode)
        else:  # |y| < 2^-6: compare exactly with Python ints
            out[where] = round_quotient(num[where].astype(object), 1 << s, mode).astype(np.int64)
    return out


def _search(q: Requantization, n: np.ndarray, codes: np.ndarray, low_code: int, extra: OffsetBound | None = None) -> Dyadic:
    """The dyadic with the smallest exponent giving `codes` at every n (and whose offset c lies in
    `extra(e, m)`, a further constraint)."""
    cells = code_cell(codes, q.mode)
    # Plateaus are open-ended: below the lowest code and above the highest, anything is that code.
    bottom, top = codes == low_code, codes == q.max_code
    cache: dict[int, Dyadic | None] = {}

    def at(e: int) -> Dyadic | None:
        if e not in cache:
            cache[e] = _feasible_at(q, e, n, cells, bottom, top, extra)
        return cache[e]

    lo_e, hi_e = 0, None
    for probe in (*range(0, MAX_EXPONENT, 4), MAX_EXPONENT):
        if at(probe) is not None:
            hi_e = probe
            break
        lo_e = probe + 1
    if hi_e is None:
        raise NoDyadic(_why_none(q, n, codes))
    return _smallest_feasible(at, lo_e, hi_e)


def _smallest_feasible(at: Callable[[int], object | None], lo_e: int, hi_e: int):
    """at(e) for the smallest e in [lo_e, hi_e] where it is not None, by bisection: feasibility is
    monotone in e (a dyadic at e is one at e + 1 with every integer doubled), and at(hi_e) is feasible."""
    while lo_e < hi_e:
        mid = (lo_e + hi_e) // 2
        if at(mid) is not None:
            hi_e = mid
        else:
            lo_e = mid + 1
    result = at(hi_e)
    assert result is not None
    return result


def _feasible_at(q, e: int, n: np.ndarray, cells, bottom: np.ndarray, top: np.ndarray, extra: OffsetBound | None = None) -> Dyadic | None:
    """A dyadic with exponent e reproducing every checked code, trying the multipliers nearest r*2^e."""
    target = q.r * (1 << e)
    base = math.floor(target)
    candidates = sorted({max(0, base + k) for k in (0, 1, -1, 2)}, key=lambda m: abs(m - target))
    for m in candidates:
        window = _offset_window(e, [(m, n)], cells, bottom, top)
        if window is None:
            continue
        c_min, c_max = window
        if extra is not None:
            lo, hi = extra(e, m)
            c_min, c_max = max(c_min, lo), min(c_max, hi)
            if c_min > c_max:
                continue
        return Dyadic(m, _simplest_in(c_min, c_max, q.t * (1 << e)), e)
    return None


def _offset_window(e: int, terms: list[tuple[int, np.ndarray]], cells, bottom, top) -> tuple[int, int] | None:
    """The integers c with (sum of m*n over `terms` + c) / 2^e in every checked code's cell:
    [c_min, c_max], or None."""
    big = sum(max(abs(int(n.min())), abs(int(n.max())), 1) * abs(m) for m, n in terms) + (int(np.abs(cells.hi2).max()) + 2 << e)
    if big < 1 << 60:
        mn = sum(m * n for m, n in terms)
        lo2, hi2 = cells.lo2 << e, cells.hi2 << e
    else:
        mn = sum(n.astype(object) * m for m, n in terms)
        lo2 = cells.lo2.astype(object) * (1 << e)
        hi2 = cells.hi2.astype(object) * (1 << e)
    # 2(mn + c) >= lo2 (closed) or > lo2 (open): c >= ceil((lo2 - 2mn) / 2) or floor(...) + 1.
    low = lo2 - 2 * mn
    c_low = np.where(cells.lo_closed, -((-low) // 2), low // 2 + 1)
    high = hi2 - 2 * mn
    c_high = np.where(cells.hi_closed, high // 2, -((-high) // 2) - 1)
    c_low = c_low[~bottom]
    c_high = c_high[~top]
    c_min = int(c_low.max()) if c_low.size else None
    c_max = int(c_high.min()) if c_high.size else None
    if c_min is not None and c_max is not None and c_min > c_max:
        return None
    if c_min is None and c_max is None:
        return (0, 0)
    if c_min is None:
        c_min = c_max - (1 << 62)
    if c_max is None:
        c_max = c_min + (1 << 62)
    return c_min, c_max


def _simplest_in(c_min: int, c_max: int, near: Fraction) -> int:
    """The integer of [c_min, c_max] with the most trailing zeros (fewest significant bits), nearest
    to `near` among those."""
    if c_min <= 0 <= c_max:
        return 0
    for k in range(max(abs(c_min), abs(c_max)).bit_length(), -1, -1):
        step = 1 << k
        first = -((-c_min) // step) * step
        if first <= c_max:
            options = range(first, c_max + 1, step)
            centre = round(near / step) * step
            return min((options[0], options[-1], min(max(centre, first), options[-1])), key=lambda c: (abs(c - near), abs(c)))
    return c_min


def _why_none(q: Requantization, n: np.ndarray, codes: np.ndarray) -> str:
    ys = [(q.r * int(v) + q.t, int(v), int(k)) for v, k in zip(n, codes)]
    step = Fraction(1, 2) if q.mode in HALF_MODES else Fraction(1)
    ties = [(v, y, k) for y, v, k in ys if (y / step).denominator == 1 and q.min_code <= y <= q.max_code]
    if ties:
        v, y, k = ties[0]
        return f"accumulator {v} gives exactly {y} (a tie of {q.mode}, code {k}); no dyadic multiply up to 2^{MAX_EXPONENT} reproduces it"
    return f"no dyadic multiply with up to {MAX_EXPONENT} fraction bits reproduces the codes of accumulators {int(n[0])}..{int(n[-1])}"


# ---- a requantization of a sum of two integers (a residual's two branches) ---------------------


@dataclass(frozen=True)
class SumRequantization:
    """code(n1, n2) = R(clip(g(r1*n1 + r2*n2 + t))), n1 in [lo1, hi1] and n2 in [lo2, hi2]: the
    requantization of two integers with different scales added (a residual sum)."""

    r1: Fraction
    r2: Fraction
    t: Fraction
    lo1: int
    hi1: int
    lo2: int
    hi2: int
    min_code: int
    max_code: int
    mode: str
    relu: bool = False

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        n1, n2 = np.meshgrid(np.arange(self.lo1, self.hi1 + 1, dtype=np.int64), np.arange(self.lo2, self.hi2 + 1, dtype=np.int64), indexing="ij")
        return n1.reshape(-1), n2.reshape(-1)

    def exact_codes(self, n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
        """code(n1, n2) for every pair, exact: over one common denominator, in Python integers."""
        den = math.lcm(self.r1.denominator, self.r2.denominator, self.t.denominator)
        a1, a2, b = int(self.r1 * den), int(self.r2 * den), int(self.t * den)
        num = n1.astype(object) * a1 + n2.astype(object) * a2 + b
        if self.relu:
            num = np.maximum(num, 0)
        num = np.clip(num, self.min_code * den, self.max_code * den)
        return np.asarray(round_quotient(num, den, self.mode), dtype=np.int64)


@dataclass(frozen=True)
class SumDyadic:
    """code~(n1, n2) = R(clip(g((m1*n1 + m2*n2 + c) / 2^e)))."""

    m1: int
    m2: int
    c: int
    e: int

    @property
    def mantissa_bits(self) -> int:
        """Significant bits of the wider of the two multipliers."""
        return max(Dyadic(m, 0, self.e).mantissa_bits for m in (self.m1, self.m2))

    def codes(self, q: SumRequantization, n1: np.ndarray, n2: np.ndarray) -> np.ndarray:
        num = n1.astype(object) * self.m1 + n2.astype(object) * self.m2 + self.c
        if q.relu:
            num = np.maximum(num, 0)
        num = np.clip(num, q.min_code << self.e, q.max_code << self.e)
        return np.asarray(round_quotient(num, 1 << self.e, q.mode), dtype=np.int64)


def solve_sum(q: SumRequantization) -> SumDyadic:
    """The dyadic pair with the smallest exponent reproducing `q` on every (n1, n2) of its ranges,
    proven by enumerating them all (each pair confines c to its code's cell, as in `solve`; a
    code at the lowest or highest end only from one side). Feasibility is monotone in e here too
    ((m1, m2, c, e) -> (2m1, 2m2, 2c, e+1)), so e is found by bisection. Raises NoDyadic when the
    ranges hold more than MAX_CHECKED pairs or no dyadic up to 2^-MAX_EXPONENT reproduces them."""
    mode = check_mode(q.mode)
    q = SumRequantization(q.r1, q.r2, q.t, q.lo1, q.hi1, q.lo2, q.hi2, q.min_code, q.max_code, mode, q.relu)
    count = (q.hi1 - q.lo1 + 1) * (q.hi2 - q.lo2 + 1)
    if count > MAX_CHECKED:
        raise NoDyadic(f"the two added integers take {count} pairs of values (more than {MAX_CHECKED} to check)")
    n1, n2 = q.grid()
    codes = q.exact_codes(n1, n2)
    low_code = max(q.min_code, 0) if q.relu and q.min_code <= 0 <= q.max_code else q.min_code
    cells, bottom, top = code_cell(codes, mode), codes == low_code, codes == q.max_code

    def at(e: int) -> SumDyadic | None:
        near = [sorted({math.floor(r * (1 << e)) + k for k in (0, 1, -1, 2)}, key=lambda m: abs(m - r * (1 << e))) for r in (q.r1, q.r2)]
        for m1 in near[0]:
            for m2 in near[1]:
                window = _offset_window(e, [(m1, n1), (m2, n2)], cells, bottom, top)
                if window is not None:
                    return SumDyadic(m1, m2, _simplest_in(*window, q.t * (1 << e)), e)
        return None

    if at(MAX_EXPONENT) is None:
        raise NoDyadic(f"no pair of dyadic multipliers with up to {MAX_EXPONENT} fraction bits reproduces the codes of the sum")
    return _smallest_feasible(at, 0, MAX_EXPONENT)
