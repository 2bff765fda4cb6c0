"""The exact rounding of QONNX's modes, and the fewest-bit dyadic requantization, against brute force."""

from __future__ import annotations

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from hawqc.ir import dyadic_requant
from hawqc.ir.dyadic_requant import NoDyadic, Requantization, SumRequantization, solve, solve_sum
from hawqc.ir.ops.rounding import MODES, code_cell, round_quotient
from hawqc.sim.quant import rounding_function


@pytest.mark.parametrize("mode", MODES)
def test_round_quotient_is_qonnx_rounding_on_exact_values(mode):
    # Quarters are exact in float64, so qonnx's numpy rounding of them is the exact rounding.
    num = np.arange(-41, 42, dtype=np.int64)
    expected = rounding_function(mode)(num.astype(np.float64) / 4)
    assert np.array_equal(round_quotient(num, 4, mode), expected)
    assert np.array_equal(round_quotient(num.astype(object), 4, mode).astype(np.int64), expected)


@pytest.mark.parametrize("mode", MODES)
def test_a_code_cell_holds_exactly_the_values_that_round_to_the_code(mode):
    num = np.arange(-40, 41, dtype=np.int64)  # eighths: ends, ties and interiors
    codes = round_quotient(num, 8, mode)
    cells = code_cell(codes, mode)
    y8 = num  # y = num / 8; a cell end lo2 / 2 is lo2 * 4 eighths
    inside_lo = np.where(cells.lo_closed, y8 >= cells.lo2 * 4, y8 > cells.lo2 * 4)
    inside_hi = np.where(cells.hi_closed, y8 <= cells.hi2 * 4, y8 < cells.hi2 * 4)
    assert inside_lo.all() and inside_hi.all()
    # ... and a value of a neighbouring code lies outside.
    for k in range(-3, 4):
        cell = code_cell(np.array([k]), mode)
        for y in num:
            rounds_to_k = round_quotient(np.array([y]), 8, mode)[0] == k
            lo_ok = y >= cell.lo2[0] * 4 if cell.lo_closed[0] else y > cell.lo2[0] * 4
            hi_ok = y <= cell.hi2[0] * 4 if cell.hi_closed[0] else y < cell.hi2[0] * 4
            assert rounds_to_k == (lo_ok and hi_ok), (k, y)


def _random_requantization(rng: random.Random, span: int) -> Requantization:
    r = Fraction(float(np.float32(rng.uniform(1e-3, 0.4)))) * (-1 if rng.random() < 0.15 else 1)
    t = Fraction(float(np.float32(rng.uniform(-40, 40)))) if rng.random() < 0.7 else Fraction(0)
    if rng.random() < 0.2:
        t = Fraction(rng.randint(-20, 20), 2)  # half-integers: ties of the exact meaning
    bits = rng.choice([1, 2, 3, 4, 8])
    signed = rng.random() < 0.5 and bits > 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    lo, hi = sorted(rng.sample(range(-span, span), 2))
    return Requantization(r, t, lo, hi, low, high, rng.choice(MODES), rng.random() < 0.3)


def test_the_dyadic_reproduces_every_code_of_the_range():
    rng = random.Random(1)
    for _ in range(60):
        q = _random_requantization(rng, 1000)
        d = solve(q)
        codes = [q.exact_code(n) for n in range(q.lo, q.hi + 1)]
        assert codes == [q.dyadic_code(d, n) for n in range(q.lo, q.hi + 1)], (q, d)


def test_no_dyadic_with_a_smaller_exponent_exists():
    rng = random.Random(2)
    for _ in range(40):
        q = _random_requantization(rng, 40)
        q = Requantization(abs(q.r), q.t, q.lo, q.hi, -4, 3, q.mode, q.relu)
        d = solve(q)
        n = np.arange(q.lo, q.hi + 1, dtype=np.int64)
        exact = np.array([q.exact_code(int(v)) for v in n])
        for e in range(d.e):  # every (m, c) at a smaller exponent fails somewhere
            bound = int(abs(q.t) * 2**e) + (8 << e) + 2
            c = np.arange(-bound, bound + 1, dtype=np.int64)[:, None]
            for m in range(0, int(q.r * 2**e * 2) + 3):
                num = m * n[None, :] + c
                if q.relu:
                    num = np.maximum(num, 0)
                num = np.clip(num, q.min_code << e, q.max_code << e)
                codes = round_quotient(num, 1 << e, q.mode)
                assert not (codes == exact).all(axis=1).any(), (q, d, m, e)


def test_a_dyadic_requantization_is_its_own_exact_solution():
    q = Requantization(Fraction(3, 8), Fraction(-5, 4), -1000, 1000, -128, 127, "ROUND")
    d = solve(q)
    assert d.multiplier <= Fraction(3, 8) * 2 and d.e <= 3


def test_a_wide_accumulator_range_is_checked_only_between_the_plateaus():
    # 2^40 accumulator values, but only ~ 2 * 128 / r of them are between the first and last code.
    q = Requantization(Fraction(float(np.float32(0.0123))), Fraction(0), -(1 << 40), 1 << 40, -128, 127, "ROUND")
    d = solve(q)
    for n in (-(1 << 40), -10500, -10400, -5, 0, 7, 10400, 10500, 1 << 40):
        assert q.exact_code(n) == q.dyadic_code(d, n)


def _check_everywhere(q: Requantization, d, chunk: int = 1 << 22) -> None:
    """code~ == code on every accumulator between the plateaus (beyond them both are monotone), in chunks."""
    # Both sides by exact_codes (tested against brute force above): m*n overflows int64 at wide e.
    first, last = dyadic_requant._plateau_ends(q, dyadic_requant._lowest_code(q))
    dyadic = Requantization(d.multiplier, d.offset, q.lo, q.hi, q.min_code, q.max_code, q.mode, q.relu)
    for start in range(first, last + 1, chunk):
        n = np.arange(start, min(start + chunk, last + 1), dtype=np.int64)
        assert np.array_equal(dyadic_requant.exact_codes(dyadic, n), dyadic_requant.exact_codes(q, n)), (q, d, start)


def test_reasoning_beyond_enumeration_finds_the_same_fewest_bits(monkeypatch):
    """The proof on the accumulators near a rounding boundary (forced on small ranges here) gives the
    exponent the step-by-step enumeration gives, and a dyadic exact on every accumulator."""
    rng = random.Random(5)
    cases = [_random_requantization(rng, 3000) for _ in range(150)]
    enumerated = []
    for q in cases:
        try:
            enumerated.append(solve(q))
        except NoDyadic:
            enumerated.append(None)
    monkeypatch.setattr(dyadic_requant, "MAX_CHECKED", 16)
    monkeypatch.setattr(dyadic_requant, "NEAR_START", 2)  # start with a narrow margin: the widening runs
    reasoned = 0
    for q, expected in zip(cases, enumerated):
        if expected is None:
            with pytest.raises(NoDyadic):
                solve(q)
            continue
        d = solve(q)
        assert d.e == expected.e, (q, d, expected)
        assert all(q.exact_code(n) == q.dyadic_code(d, n) for n in range(q.lo, q.hi + 1)), (q, d)
        reasoned += q.r != 0 and abs(q.r) * (q.hi - q.lo) > 20
    assert reasoned > 50


@pytest.mark.parametrize("mode", ["HALF_EVEN", "FLOOR", "HALF_UP"])
def test_tens_of_millions_of_steps_are_proven_without_enumeration(mode):
    # A 32-bit accumulator with a ratio of 2^-18: 2^26 steps between the first and last 8-bit code
    # (16 times what is enumerated). Checked everywhere here, in chunks.
    r = Fraction(float(np.float32(1.37))) / Fraction(float(np.float32(1.1))) * Fraction(1, 1 << 18)
    q = Requantization(r, Fraction(float(np.float32(-3.7))), -(1 << 31), (1 << 31) - 1, -128, 127, mode, mode == "FLOOR")
    first, last = dyadic_requant._plateau_ends(q, dyadic_requant._lowest_code(q))
    assert last - first + 1 > 4 * dyadic_requant.MAX_CHECKED
    d = solve(q)
    _check_everywhere(q, d)


def test_ties_no_dyadic_reproduces_are_named_beyond_enumeration_too():
    # r = 1 / (3 * 2^20) is not dyadic, and half-even ties fall both ways: no dyadic keeps them all.
    q = Requantization(Fraction(1, 3 << 20), Fraction(0), -(1 << 40), 1 << 40, -(1 << 15), (1 << 15) - 1, "ROUND")
    with pytest.raises(NoDyadic, match=r"accumulator -?\d+ gives exactly .* \(a tie of ROUND"):
        solve(q)


def test_too_many_values_near_a_boundary_are_refused_naming_the_count(monkeypatch):
    monkeypatch.setattr(dyadic_requant, "MAX_NEAR", 64)
    q = Requantization(Fraction(1, 3 << 20), Fraction(0), -(1 << 40), 1 << 40, -(1 << 15), (1 << 15) - 1, "ROUND")
    with pytest.raises(NoDyadic, match=r"accumulator takes \d+ values .* more than 64 of them lie too near"):
        solve(q)


def _random_sum(rng: random.Random, span: int) -> SumRequantization:
    r1 = Fraction(float(np.float32(rng.uniform(0.02, 1.5))))
    r2 = Fraction(float(np.float32(rng.uniform(0.02, 1.5)))) * (-1 if rng.random() < 0.3 else 1)
    t = Fraction(float(np.float32(rng.uniform(-3, 3)))) if rng.random() < 0.7 else Fraction(rng.randint(-6, 6), 2)
    bits = rng.choice([2, 3, 4])
    signed = rng.random() < 0.5
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    lo1, hi1 = sorted(rng.sample(range(-span, span), 2))
    lo2, hi2 = sorted(rng.sample(range(-span, span), 2))
    return SumRequantization(r1, r2, t, lo1, hi1, lo2, hi2, low, high, rng.choice(MODES), rng.random() < 0.3)


def test_the_sum_dyadic_reproduces_every_pair_and_no_smaller_exponent_exists():
    """solve_sum against brute force: exact on every pair of the two ranges, and at every smaller
    exponent no (m1, m2, c) at all reproduces the codes (searched over wide ranges of each)."""
    rng = random.Random(4)
    for _ in range(25):
        q = _random_sum(rng, 6)
        d = solve_sum(q)
        n1, n2 = q.grid()
        exact = q.exact_codes(n1, n2)
        assert np.array_equal(d.codes(q, n1, n2), exact), (q, d)
        for e in range(d.e):
            scale = 1 << e
            c = np.arange(-(12 << e), (12 << e) + 1, dtype=np.int64)[:, None]
            for m1 in range(math.floor(q.r1 * scale) - 3, math.floor(q.r1 * scale) + 5):
                for m2 in range(math.floor(q.r2 * scale) - 3, math.floor(q.r2 * scale) + 5):
                    num = m1 * n1[None, :] + m2 * n2[None, :] + c
                    if q.relu:
                        num = np.maximum(num, 0)
                    num = np.clip(num, q.min_code << e, q.max_code << e)
                    codes = round_quotient(num, scale, q.mode)
                    assert not (codes == exact).all(axis=1).any(), (q, d, m1, m2, e)


def test_a_sum_with_too_many_pairs_is_refused_naming_the_count(monkeypatch):
    monkeypatch.setattr(dyadic_requant, "MAX_CHECKED", 100)
    q = SumRequantization(Fraction(1, 3), Fraction(1, 5), Fraction(0), 0, 20, 0, 20, -8, 7, "ROUND")
    with pytest.raises(NoDyadic, match=r"take 441 pairs of values \(more than 100 to check\)"):
        solve_sum(q)
