"""`hawqc.ir.residues`: the x whose linear residue lands in a window, against brute force."""

from __future__ import annotations

import random

import pytest

from hawqc.ir.residues import all_in_window, first_in_window


def test_the_first_x_in_a_window_is_the_brute_force_one():
    rng = random.Random(0)
    for _ in range(5000):
        d = rng.randint(1, 300)
        a, b = rng.randint(-400, 400), rng.randint(-400, 400)
        lo = rng.randint(0, d - 1)
        hi = rng.randint(lo, d - 1)
        # Residues repeat with period d, so the first x (if any) is below d.
        expected = next((x for x in range(d) if lo <= (a * x + b) % d <= hi), None)
        assert first_in_window(a, b, d, lo, hi) == expected, (a, b, d, lo, hi)


def test_all_in_a_window_are_the_brute_force_ones_and_the_limit_holds():
    rng = random.Random(1)
    for _ in range(1000):
        d = rng.randint(1, 200)
        a, b = rng.randint(0, 400), rng.randint(-400, 400)
        lo = rng.randint(0, d - 1)
        hi = rng.randint(lo, d - 1)
        count = rng.randint(0, 600)
        expected = [x for x in range(count) if lo <= (a * x + b) % d <= hi]
        assert all_in_window(a, b, d, lo, hi, count, 10**6) == expected
        if expected:
            assert all_in_window(a, b, d, lo, hi, count, len(expected) - 1) is None


def test_huge_moduli_are_exact():
    # 120-bit numbers (denominators of products of float32 scales): each solution checked directly.
    rng = random.Random(2)
    d = rng.getrandbits(120) | 1
    a = rng.getrandbits(119)
    found = all_in_window(a, 5, d, 0, d >> 20, 1 << 30, 10**5)
    assert 500 < len(found) < 2000  # about 2^30 / 2^20 of them
    assert all((a * x + 5) % d <= d >> 20 for x in found)
    # ... and none is missed between two found ones (checked on the first gap, by brute force).
    assert all((a * x + 5) % d > d >> 20 for x in range(found[0] + 1, min(found[1], found[0] + 200000)))


def test_a_window_outside_the_modulus_is_an_error():
    with pytest.raises(ValueError):
        first_in_window(1, 0, 5, 3, 5)
