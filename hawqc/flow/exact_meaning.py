"""Verification against the exact meaning, for designs with integer interfaces.

When `integer-requant` rewrote a model (scales that are not powers of two), the lowered design takes
integer codes and delivers integers with an affine map (`hawqc.ir.interfaces`); its semantic mode no
longer computes the model's float32 arithmetic. So verification then runs, per sample:

- the host's real input x (drawn in the input quantizer's range, on codes, on ties between codes and
  anywhere between, as `hawqc.sim.inputs` draws), and its exact codes (what the host sends);
- the C simulation and hardware mode on the codes (they must agree bit for bit, as always);
- the original model's exact meaning on x (`hawqc.sim.exact`): hardware mode, mapped back to real
  units, must equal it exactly;
- the original model's float32 semantics on x (what qonnx and onnxruntime compute): reported, not
  required: where float32 rounds near a rounding boundary it may give another code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hawqc.ir.interfaces import InputCodes, OutputAffine, input_codes, output_affines
from hawqc.ir.layout import invert, layout_permutations
from hawqc.ir.rationals import exact_fractions
from hawqc.sim.exact import ExactExecutor


@dataclass
class ExactComparison:
    """Hardware mode against the exact meaning, and float32 semantics against it."""

    samples: int = 0
    hardware_mismatches: int = 0
    first_hardware_mismatch: int | None = None
    float32_mismatches: int = 0
    # Samples where float32 is off by half an output step or more: a code came out different
    # somewhere, not just the rounding of a float output.
    float32_code_mismatches: int = 0
    float32_max_abs_diff: float = 0.0
    output_lsb: float | None = None

    @property
    def equal(self) -> bool:
        return self.hardware_mismatches == 0

    def as_dict(self) -> dict:
        return {
            "samples": self.samples,
            "hardware_equals_exact": self.equal,
            "hardware_mismatched_samples": self.hardware_mismatches,
            "first_hardware_mismatch": self.first_hardware_mismatch,
            "float32_mismatched_samples": self.float32_mismatches,
            "float32_mismatch_rate": self.float32_mismatches / self.samples if self.samples else 0.0,
            "float32_code_mismatched_samples": self.float32_code_mismatches,
            "float32_max_abs_diff": self.float32_max_abs_diff,
            "float32_max_lsb_diff": None if not self.output_lsb else self.float32_max_abs_diff / self.output_lsb,
        }

    def summary(self) -> str:
        if self.equal:
            line = f"hardware mode equals the exact meaning on {self.samples}/{self.samples} samples"
        else:
            line = (
                f"hardware mode differs from the exact meaning on {self.hardware_mismatches}/{self.samples} samples "
                f"(first: sample {self.first_hardware_mismatch}): a hawqc bug"
            )
        if self.float32_mismatches:
            lsb = f", at most {self.float32_max_abs_diff / self.output_lsb:.3g} output steps" if self.output_lsb else ""
            codes = (
                f", {self.float32_code_mismatches} by half an output step or more" if self.output_lsb else ""
            )
            line += (
                f"; float32 semantics (qonnx) differs from it on {self.float32_mismatches}/{self.samples} samples "
                f"({100 * self.float32_mismatches / self.samples:.1f}%{codes}{lsb}, max abs diff "
                f"{self.float32_max_abs_diff:.3g}): float32 rounds products and quotients of scales"
            )
        else:
            line += "; float32 semantics (qonnx) equals it on every sample"
        return line


@dataclass
class ExactMeaning:
    """What the verification of a design with integer interfaces needs (see the module docstring)."""

    original: ir.Model
    lowered: ir.Model
    comparison: ExactComparison = field(default_factory=ExactComparison)

    def __post_init__(self) -> None:
        from hawqc.sim import Executor

        self.exact = ExactExecutor(self.original)
        self.semantic = Executor(self.original)
        self.codes: dict[str, InputCodes] = input_codes(self.lowered)
        self.affines: dict[str, OutputAffine] = output_affines(self.lowered)
        layouts = layout_permutations(self.lowered)
        self.input_name = self.original.graph.inputs[0].name
        self.output_name = self.original.graph.outputs[0].name
        self.input_perm = layouts.get(self.input_name)
        self.output_perm = layouts.get(self.output_name)
        self.comparison.output_lsb = self._output_lsb()

    def _output_lsb(self) -> float | None:
        """The step of the output's integers in real units (its smallest scale)."""
        affine = self.affines.get(self.output_name)
        if affine is None:
            return None
        scales = {s for s in affine.scale.reshape(-1)}
        return float(min(scales)) if scales else None

    def host_values(self, drawn: np.ndarray) -> np.ndarray:
        """Real host inputs (original layout) from samples drawn in the design's code range: codes,
        ties between codes and values between, mapped back through the input's scale."""
        u = drawn if self.input_perm is None else drawn.transpose(invert(self.input_perm))
        codes = self.codes.get(self.input_name)
        if codes is None:
            return np.asarray(u, dtype=np.float32)
        real = (u.astype(np.float64) * float(codes.scale) - float(codes.pre_offset)) / float(codes.pre_scale)
        return real.astype(np.float32)

    def host_layout(self, given: np.ndarray) -> np.ndarray:
        """The user's own real inputs (`--inputs`, already in the design's layout) in the model's."""
        return np.asarray(given if self.input_perm is None else given.transpose(invert(self.input_perm)), dtype=np.float32)

    def design_inputs(self, x: np.ndarray) -> np.ndarray:
        """The codes the host sends for real inputs x, in the design's layout."""
        codes = self.codes.get(self.input_name)
        sent = x if codes is None else codes.encode(x)
        return sent if self.input_perm is None else np.ascontiguousarray(sent.transpose(self.input_perm))

    def real_outputs(self, design: np.ndarray) -> np.ndarray:
        """The design's outputs in the model's real units (exact Fractions), original layout."""
        out = design if self.output_perm is None else design.transpose(invert(self.output_perm))
        affine = self.affines.get(self.output_name)
        if affine is None:
            return exact_fractions(np.asarray(out, dtype=np.float64))
        return affine.decode(out)

    def add(self, x: np.ndarray, hardware: np.ndarray) -> int | None:
        """Compare one slice; returns the index of its first sample where hardware differs."""
        exact = self.exact.run({self.input_name: x})[self.output_name]
        reference = exact.fractions()
        got = self.real_outputs(np.asarray(hardware).reshape((len(x),) + tuple(np.shape(reference)[1:])))
        differs = np.asarray(reference != got, dtype=bool).reshape(len(x), -1).any(axis=1)
        semantic = np.asarray(self.semantic.run({self.input_name: x})[self.output_name], dtype=np.float64)
        rounded = exact.to_float64().astype(np.float32).astype(np.float64).reshape(semantic.shape)
        float_differs = (semantic != rounded).reshape(len(x), -1).any(axis=1)
        if c_lsb := self.comparison.output_lsb:
            far = (np.abs(semantic - rounded) >= c_lsb / 2).reshape(len(x), -1).any(axis=1)
            self.comparison.float32_code_mismatches += int(far.sum())
        c = self.comparison
        first = int(np.flatnonzero(differs)[0]) if differs.any() else None
        if first is not None and c.first_hardware_mismatch is None:
            c.first_hardware_mismatch = c.samples + first
        c.samples += len(x)
        c.hardware_mismatches += int(differs.sum())
        c.float32_mismatches += int(float_differs.sum())
        if semantic.size:
            c.float32_max_abs_diff = max(c.float32_max_abs_diff, float(np.abs(semantic - rounded).max()))
        return first
