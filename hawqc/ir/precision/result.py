"""What precision inference finds: the type and interval of every value, and what the lowering
needs besides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from hawqc.ir import default_precision
from hawqc.ir.qtypes import FixedType


@dataclass
class PrecisionResult:
    """Types and intervals of every value (by name), and what the backend lowering needs besides.

    - `types[name]`: the exact type of the value (a Quant's own type, or the narrowest type holding
      the value's interval);
    - `intervals[name]`: the exact [lo, hi] over all elements;
    - `accumulators[name]`: for the output of a MatMul or Conv, or of an Add of a constant to one
      (a bias), the type that holds every partial sum of its dot products; for an AveragePool, the
      type the window sums are accumulated and divided in;
    - `constants[name]`: the value of each quantized (or plain) constant operand, exact, float64;
    - `float_inexact`: values whose integer code exceeds what their float type holds exactly (2**24
      for float32, 2**53 for double), where QONNX semantics may round while the fixed-point
      hardware does not (the two then differ; a verifier reports it);
    - `inexact[name]`: every value where the float semantics may differ from the exact hardware
      arithmetic (those of `float_inexact` and others, e.g. an average whose divisor is not a power
      of two), with the reason. Values computed from such a value are not listed again.
    """

    types: dict[str, FixedType] = field(default_factory=dict)
    intervals: dict[str, tuple[Fraction, Fraction]] = field(default_factory=dict)
    accumulators: dict[str, FixedType] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    float_inexact: set[str] = field(default_factory=set)
    inexact: dict[str, str] = field(default_factory=dict)
    # Where the model's default precision was applied (hawqc.ir.default_precision); None if nowhere.
    float_parts: default_precision.FloatParts | None = None

    def __getitem__(self, name: str) -> FixedType:
        return self.types[name]

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def __iter__(self) -> Iterator[str]:
        return iter(self.types)

    def __len__(self) -> int:
        return len(self.types)
