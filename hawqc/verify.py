"""Bit-accuracy checks: the generated C simulation against hawqc's reference executor.

The inputs come from `hawqc.sim.inputs.draw_inputs`: inside the input quantizer's range, on and off
its grid, half-LSB ties and both ends included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hawqc.errors import BackendError



@dataclass(frozen=True)
class VerifyResult:
    samples: int
    mismatched_samples: int
    max_abs_diff: float
    first_mismatch: int | None  # index of the first sample that differs

    @property
    def bit_exact(self) -> bool:
        return self.mismatched_samples == 0

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "bit_exact": self.bit_exact,
            "mismatched_samples": self.mismatched_samples,
            "max_abs_diff": self.max_abs_diff,
            "first_mismatch": self.first_mismatch,
        }

    def summary(self) -> str:
        if self.bit_exact:
            return f"verify: {self.samples}/{self.samples} samples bit-exact"
        return (
            f"verify: {self.samples - self.mismatched_samples}/{self.samples} samples bit-exact; "
            f"{self.mismatched_samples} differ (first: sample {self.first_mismatch}, "
            f"max abs diff {self.max_abs_diff:g})"
        )


def compare(reference: np.ndarray, simulated: np.ndarray) -> VerifyResult:
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    simulated = np.asarray(simulated, dtype=np.float64).reshape(len(simulated), -1)
    if reference.shape != simulated.shape:
        # The backend wrote a project whose output is not the model's: hawqc's bug, said plainly.
        raise BackendError(
            f"output shapes differ: reference {reference.shape}, C simulation {simulated.shape}"
        )
    differs = np.any(reference != simulated, axis=1)
    bad = np.flatnonzero(differs)
    diff = np.abs(reference - simulated)
    return VerifyResult(
        samples=len(reference),
        mismatched_samples=int(differs.sum()),
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        first_mismatch=int(bad[0]) if bad.size else None,
    )
