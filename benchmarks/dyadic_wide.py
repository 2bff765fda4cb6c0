"""The dyadic requantization solver beyond enumeration (`hawqc.ir.dyadic_requant._solve_wide`): on
random 32-bit accumulators with tiny ratios (millions to billions of steps between the first and last
code), how long the proof takes, how many bits it needs, whether the fewest bits were proven; with
`--check K`, the first K results are checked on every step (in chunks, vectorized), which is what the
proof makes unnecessary.

    .venv/bin/python benchmarks/dyadic_wide.py [--cases 40] [--check 6] [--seed 11]
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from fractions import Fraction

import numpy as np

from hawqc.ir import dyadic_requant as dr
from hawqc.ir.ops.rounding import MODES


def random_case(rng: random.Random) -> dr.Requantization:
    r = Fraction(float(np.float32(rng.uniform(1, 2)))) / Fraction(float(np.float32(rng.uniform(1, 2))))
    r *= Fraction(1, 1 << rng.randint(14, 26))
    t = Fraction(float(np.float32(rng.uniform(-40, 40)))) if rng.random() < 0.6 else Fraction(rng.randint(-99, 99), 2)
    bits = rng.choice([4, 8, 16])
    return dr.Requantization(r, t, -(1 << 31), (1 << 31) - 1, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, rng.choice(MODES), rng.random() < 0.5)


def check_everywhere(q: dr.Requantization, d: dr.Dyadic, chunk: int = 1 << 22) -> bool:
    """Both sides computed by `exact_codes` (float64, exact fractions wherever float64's error could
    reach a rounding boundary; m*n itself overflows int64 at these widths)."""
    first, last = dr._plateau_ends(q, dr._lowest_code(q))
    dyadic = dr.Requantization(d.multiplier, d.offset, q.lo, q.hi, q.min_code, q.max_code, q.mode, q.relu)
    for start in range(first, last + 1, chunk):
        n = np.arange(start, min(start + chunk, last + 1), dtype=np.int64)
        if not np.array_equal(dr.exact_codes(dyadic, n), dr.exact_codes(q, n)):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--check", type=int, default=0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    times, bits, fewest, refused = [], [], 0, 0
    for index in range(args.cases):
        q = random_case(rng)
        first, last = dr._plateau_ends(q, dr._lowest_code(q))
        start = time.perf_counter()
        try:
            d = dr.solve(q)
        except dr.NoDyadic as refusal:
            refused += 1
            print(f"{index:3} {q.mode:9} steps {last - first + 1:>13,}  refused: {refusal.reason}")
            continue
        times.append(time.perf_counter() - start)
        bits.append(d.mantissa_bits)
        fewest += d.fewest
        line = f"{index:3} {q.mode:9} steps {last - first + 1:>13,}  e={d.e:2}  bits {d.mantissa_bits:2}  fewest proven {d.fewest}  {times[-1]:.2f} s"
        if index < args.check:
            start = time.perf_counter()
            line += f"  checked on every step: {check_everywhere(q, d)} ({time.perf_counter() - start:.1f} s)"
        print(line, flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\n{len(times)} solved ({fewest} fewest proven), {refused} refused; time {min(times):.2f}..{max(times):.2f} s, "
          f"median {sorted(times)[len(times) // 2]:.2f} s; bits {min(bits)}..{max(bits)}; peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
