"""Bit-accuracy checks: the generated C simulation against hawqc's reference executor.

Inputs are drawn inside the range of the input quantizer (what the hardware's input port can
hold), half of them off the quantization grid, so that the input conversion's rounding is exercised
too, and including exact half-LSB ties and both ends of the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import BackendError
from hawqc.ir.domains import QONNX_DOMAIN, QUANT_OPS


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


def input_range(model: ir.Model, value: ir.Value) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(low, high, lsb) of the Quant that reads graph input `value`, or None if none does."""
    for use in value.uses():
        node = use.node
        if node.domain == QONNX_DOMAIN and node.op_type in QUANT_OPS and use.idx == 0:
            scale, zero_point, bits = (node.inputs[i].const_value.numpy() for i in (1, 2, 3))
            bits = int(bits.item())
            signed = node.attributes.get_int("signed", 1)
            narrow = node.attributes.get_int("narrow", 0)
            if signed:
                low, high = -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
            else:
                low, high = 0, 2**bits - 1 - narrow
            scale = scale.astype(np.float64)
            return (low - zero_point) * scale, (high - zero_point) * scale, scale
    return None


def draw_inputs(model: ir.Model, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` samples for every graph input, inside its input quantizer's range."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for value in model.graph.inputs:
        shape = (count, *[d if isinstance(d, int) else 1 for d in list(value.shape)[1:]])
        bounds = input_range(model, value)
        if bounds is None:
            inputs[value.name] = rng.standard_normal(shape).astype(np.float32)
            continue
        low, high, lsb = (np.broadcast_to(b, shape[1:]) for b in bounds)
        samples = rng.uniform(low, high, size=shape)
        # Every other sample on the grid or on a half-LSB tie: those are where roundings differ.
        grid = np.round(samples / lsb) * lsb
        ties = np.clip(grid + 0.5 * lsb, low, high)
        kind = rng.integers(0, 3, size=(count,) + (1,) * (len(shape) - 1))
        samples = np.where(kind == 0, grid, np.where(kind == 1, ties, samples))
        if count >= 2:
            samples[0], samples[1] = low, high
        inputs[value.name] = samples.astype(np.float32)
    return inputs


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
