"""Bit-accuracy checks: the generated C simulation against hawqc's reference executor.

The inputs come from `hawqc.sim.inputs.draw_inputs`: inside the input quantizer's range, on and off
its grid, half-LSB ties and both ends included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hawqc.errors import BackendError


@dataclass(frozen=True)
class ModeComparison:
    """Hardware mode (the fixed-point arithmetic the backend emits) against semantic mode (the QONNX
    meaning, float32) on the verification inputs.

    They must agree bit for bit on integer-only graphs. Where precision inference found float parts
    (`declared_inexact`: values whose float32 computation can round where the exact hardware does not)
    they may differ, and this says by how much, in units of the output's least significant bit.

    A model whose float parts are computed in a default precision (`float_parts`, see
    `hawqc.ir.default_precision`) cannot be bit-exact against float semantics: it is acceptable only
    within an explicit `tolerance` (output LSBs). A tolerance, when given, bounds every model.
    """

    samples: int
    mismatched_samples: int
    max_abs_diff: float
    max_lsb_diff: float | None
    declared_inexact: tuple[str, ...]
    tolerance: float | None = None
    float_parts: str | None = None  # the default precision, when the model has float parts

    @property
    def within_tolerance(self) -> bool:
        if self.tolerance is None:
            return False
        return self.equal or (self.max_lsb_diff is not None and self.max_lsb_diff <= self.tolerance)

    @property
    def equal(self) -> bool:
        return self.mismatched_samples == 0

    @property
    def acceptable(self) -> bool:
        """Equal, or different only where precision inference said the graph has float parts (and,
        for a default precision or with a tolerance, within the tolerance)."""
        if self.tolerance is not None:
            return self.within_tolerance
        if self.float_parts is not None:
            return self.equal
        return self.equal or bool(self.declared_inexact)

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "equal": self.equal,
            "mismatched_samples": self.mismatched_samples,
            "mismatch_rate": self.mismatched_samples / self.samples if self.samples else 0.0,
            "max_abs_diff": self.max_abs_diff,
            "max_lsb_diff": self.max_lsb_diff,
            "declared_inexact": list(self.declared_inexact),
            **({} if self.tolerance is None else {"tolerance_lsb": self.tolerance, "within_tolerance": self.within_tolerance}),
            **({} if self.float_parts is None else {"float_parts": self.float_parts}),
        }

    def summary(self) -> str:
        if self.equal:
            return f"hardware mode equals semantic mode on {self.samples}/{self.samples} samples"
        lsb = "" if self.max_lsb_diff is None else f", at most {self.max_lsb_diff:g} output LSB"
        rate = ""
        if self.tolerance is not None or self.float_parts is not None:
            rate = f" ({100 * self.mismatched_samples / self.samples:.1f}%)"
        if self.tolerance is not None:
            verdict = "within" if self.within_tolerance else "beyond"
            lsb += f": {verdict} --tolerance {self.tolerance:g}"
        elif self.float_parts is not None:
            lsb += ": not bit-exact against float semantics; accept it with --tolerance (output LSBs)"
        why = (
            f" (float parts: {', '.join(self.declared_inexact[:3])}{', ...' if len(self.declared_inexact) > 3 else ''})"
            if self.declared_inexact
            else " on a graph precision inference found integer-only: a hawqc bug"
        )
        return (
            f"hardware mode differs from semantic mode on {self.mismatched_samples}/{self.samples} samples"
            f"{rate}{lsb}{why}"
        )


@dataclass
class Differences:
    """Two outputs compared sample by sample (as float64), added up over slices of samples in
    order: what `compare` and `compare_modes` report, the same whether the samples come at once
    or a slice at a time."""

    samples: int = 0
    mismatched_samples: int = 0
    max_abs_diff: float = 0.0
    first_mismatch: int | None = None  # index among all samples added

    def add(self, reference: np.ndarray, other: np.ndarray, *, what: str = "C simulation") -> int | None:
        """Add a slice; returns the index in it of its first differing sample, if any."""
        reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
        other = np.asarray(other, dtype=np.float64).reshape(len(other), -1)
        if reference.shape != other.shape:
            # The backend wrote a project whose output is not the model's: hawqc's bug, said plainly.
            raise BackendError(f"output shapes differ: reference {reference.shape}, {what} {other.shape}")
        differs = np.any(reference != other, axis=1)
        bad = np.flatnonzero(differs)
        if reference.size:
            # np.maximum, not max(): a NaN difference stays NaN, as one max over everything gives.
            self.max_abs_diff = float(np.maximum(self.max_abs_diff, np.abs(reference - other).max()))
        first = int(bad[0]) if bad.size else None
        if first is not None and self.first_mismatch is None:
            self.first_mismatch = self.samples + first
        self.samples += len(reference)
        self.mismatched_samples += int(bad.size)
        return first

    def modes(
        self,
        output_lsb: float | None,
        declared_inexact: tuple[str, ...],
        tolerance: float | None = None,
        float_parts: str | None = None,
    ) -> ModeComparison:
        """As hardware mode against semantic mode."""
        return ModeComparison(
            samples=self.samples,
            mismatched_samples=self.mismatched_samples,
            max_abs_diff=self.max_abs_diff,
            max_lsb_diff=None if output_lsb is None else self.max_abs_diff / output_lsb,
            declared_inexact=tuple(declared_inexact),
            tolerance=tolerance,
            float_parts=float_parts,
        )

    def result(self, *, against: str = "hardware", modes: ModeComparison | None = None) -> VerifyResult:
        """As the C simulation against the reference."""
        return VerifyResult(
            samples=self.samples,
            mismatched_samples=self.mismatched_samples,
            max_abs_diff=self.max_abs_diff,
            first_mismatch=self.first_mismatch,
            reference=against,
            modes=modes,
        )


def compare_modes(
    semantic: np.ndarray,
    hardware: np.ndarray,
    output_lsb: float | None,
    declared_inexact: tuple[str, ...],
    tolerance: float | None = None,
    float_parts: str | None = None,
) -> ModeComparison:
    differences = Differences()
    differences.add(semantic, hardware, what="hardware mode")
    return differences.modes(output_lsb, declared_inexact, tolerance, float_parts)


@dataclass(frozen=True)
class VerifyResult:
    samples: int
    mismatched_samples: int
    max_abs_diff: float
    first_mismatch: int | None  # index of the first sample that differs
    # What the C simulation was compared with: "hardware" mode, or "semantic" where no hardware
    # mode applies.
    reference: str = "hardware"
    modes: ModeComparison | None = None
    # On a mismatch: where the C simulation and hardware mode part (hawqc.flow.mismatch_trace.MismatchTrace).
    trace: Any = None
    # With `--outputs`: the C simulation against the user's expected outputs (hawqc.flow.user_data).
    expected: Any = None
    # A design with integer interfaces: hardware mode against the original model's exact meaning, and
    # float32 semantics against it (hawqc.flow.exact_meaning.ExactComparison).
    exact: Any = None

    @property
    def bit_exact(self) -> bool:
        return self.mismatched_samples == 0

    @property
    def passed(self) -> bool:
        """C simulation equals the reference, and hardware mode differs from semantic mode only where
        the graph has declared float parts."""
        return (
            self.bit_exact
            and (self.modes is None or self.modes.acceptable)
            and (self.expected is None or self.expected.equal)
            and (self.exact is None or self.exact.equal)
        )

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "reference": self.reference,
            "hardware_vs_semantic": None if self.modes is None else self.modes.as_dict(),
            "bit_exact": self.bit_exact,
            "mismatched_samples": self.mismatched_samples,
            "max_abs_diff": self.max_abs_diff,
            "first_mismatch": self.first_mismatch,
            "trace": None if self.trace is None else self.trace.as_dict(),
            "expected_outputs": None if self.expected is None else self.expected.as_dict(),
            "exact_meaning": None if self.exact is None else self.exact.as_dict(),
        }

    def summary(self) -> str:
        against = f" (C simulation vs {self.reference} mode)"
        if self.bit_exact:
            line = f"verify: {self.samples}/{self.samples} samples bit-exact{against}"
        else:
            line = (
                f"verify: {self.samples - self.mismatched_samples}/{self.samples} samples bit-exact{against}; "
                f"{self.mismatched_samples} differ (first: sample {self.first_mismatch}, "
                f"max abs diff {self.max_abs_diff:g})"
            )
        if self.modes is not None:
            line += f"\nverify: {self.modes.summary()}"
        if self.exact is not None:
            line += f"\nverify: {self.exact.summary()}"
        for extra in (self.trace, self.expected):
            if extra is not None:
                line += "".join(f"\nverify: {part}" for part in extra.summary().splitlines())
        return line


def compare(
    reference: np.ndarray, simulated: np.ndarray, *, against: str = "hardware", modes: ModeComparison | None = None
) -> VerifyResult:
    differences = Differences()
    differences.add(reference, simulated)
    return differences.result(against=against, modes=modes)
