"""What integer-requant tracks about a value taken to integers, and the helpers its rules share."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.ir.dyadic_requant import Requantization
from hawqc.ir.qtypes import power_of_two_exponent

FLOAT32_EXACT_INT = 1 << 24
MULTIPLIER_BITS_KEY = "hawqc.requant.multiplier_bits"
# Set (to "false") on a requantization whose multiplier is exact but not proven the fewest bits
# (`Dyadic.fewest`: a range too wide for the solver to rule out a smaller exponent).
FEWEST_PROVEN_KEY = "hawqc.requant.fewest_bits_proven"
# Why the pass left a model with float scales as it was (read by the compile driver).
REFUSAL_KEY = "hawqc.integer_requant.refused"

COUNTERS = ("requantizations-made-dyadic", "input-code-ports", "output-affine-maps", "widest-multiplier-bits")

def label(node: ir.Node) -> str:
    """A node's name, or its first output's where it has none (text IR leaves nodes unnamed)."""
    return node.name or node.outputs[0].name or node.op_type.lower()


def objects(value, shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out[...] = value
    return out


def is_power_of_two(values: np.ndarray) -> bool:
    return all(power_of_two_exponent(float(v)) is not None for v in np.asarray(values).reshape(-1))


def one_power_of_two(values: np.ndarray) -> bool:
    """One power of two for every element: the graph can carry codes times it (a value tracks one
    exponent), where per-channel powers of two must carry the codes themselves."""
    flat = np.asarray(values).reshape(-1)
    return bool(flat.size) and bool(np.all(flat == flat[0])) and is_power_of_two(flat[:1])


def is_dyadic(f: Fraction) -> bool:
    return f.denominator & (f.denominator - 1) == 0


def float_exact(values: np.ndarray, double: bool = False) -> np.ndarray | None:
    """The Fractions as float32 (float64 with `double`), or None where one is not exactly that."""
    flat = [Fraction(v) for v in np.asarray(values, dtype=object).reshape(-1)]
    out = np.array([float(v) for v in flat], dtype=np.float64 if double else np.float32)
    if any(Fraction(float(o)) != v for o, v in zip(out, flat)):
        return None
    return out.reshape(np.shape(values))


AFFINE_OPS = ("Mul", "Div", "Add", "Sub")
MOVE_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


@dataclass(frozen=True)
class InputChain:
    """A graph input (`source`, None if there is none) under moves and constant rescales `nodes`
    (listed from the reader up): the rescales map x to x * scale + offset."""

    source: ir.Value | None
    scale: Fraction
    offset: Fraction
    nodes: list

    @property
    def trivial(self) -> bool:
        return self.scale == 1 and self.offset == 0 and not any(n.op_type in AFFINE_OPS for n in self.nodes)


@dataclass(frozen=True)
class Affine:
    """A rescaled value: the graph computes `n * 2^exp` for integers n in [lo, hi], and the model's
    value is `relu?(scale * n + offset)`. Every array has the value's rank with a batch axis of size 1
    and the per-sample dims (or 1 where it does not vary)."""

    scale: np.ndarray
    offset: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    relu: bool = False
    exp: int = 0

    def full(self, dims: tuple[int, ...]) -> Affine:
        shape = (1, *dims)
        arrays = (np.broadcast_to(a, shape).copy() for a in (self.scale, self.offset, self.lo, self.hi))
        return Affine(*arrays, self.relu, self.exp)


@dataclass(frozen=True)
class PendingSum:
    """A sum of two rescaled values of different scales, waiting for the quantizer that reads it
    (`Rewriter.dyadic_sum`), perhaps through a Relu (then applied after the requantization's offset)."""

    a: Affine
    b: Affine
    node: ir.Node  # the Add or Sub
    relu: bool = False


def compact(array: np.ndarray) -> np.ndarray:
    """One number when all are equal, else the array reduced to size 1 along every axis it is
    constant along (a per-channel constant stays per channel)."""
    array = np.asarray(array)
    array = array if array.dtype == np.float64 else array.astype(np.float32)
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0], dtype=array.dtype)
    for axis in range(array.ndim):
        first = np.take(array, [0], axis=axis)
        if np.all(array == first):
            array = first
    return array


def requantized_range(a: Affine, r, t, low: int, high: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    los, his = np.empty(r.shape, dtype=object), np.empty(r.shape, dtype=object)
    for index in np.ndindex(r.shape):
        q = Requantization(r[index], t[index], int(a.lo[index]), int(a.hi[index]), low, high, mode, a.relu)
        ends = (q.exact_code(q.lo), q.exact_code(q.hi))
        los[index], his[index] = min(ends), max(ends)
    return los, his


