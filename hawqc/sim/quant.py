"""Quantization arithmetic of QONNX's `Quant` / `IntQuant` and `BipolarQuant`, bit for bit.

Semantic mode promises results bit-identical to qonnx 1.0.0's `execute_onnx`, so these functions
repeat the numpy operations of `qonnx.custom_op.general.intquant.int_quant` and
`bipolar_quant.binary_quant` in the same order and with the same dtypes. In particular:
- `x / scale` is a true division in the dtype numpy picks (float32 for float32 operands), never a
  multiplication by a precomputed reciprocal, which would round differently;
- `+ zeropt` and `- zeropt` are always performed, even for a zero point of 0, because
  `-0.0 + 0.0` is `+0.0` and a bitwise comparison sees the sign of zero;
- the clamp bounds are computed in the dtype of the bitwidth tensor (float32 in practice), so for
  wide bit widths they round exactly as qonnx's do (a 32-bit signed max is 2**31, not 2**31 - 1,
  in float32: `hawqc.ir.ops.quantizer.code_bounds`);
- a 1-bit signed Quant is qonnx's "bipolar" special case: `where(x/scale + zeropt >= 0, 1, -1)`,
  with no clamping or rounding (qonnx marks this as a known bug; we follow its code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hawqc.ir.ops.quantizer import code_bounds

RoundingFn = Callable[[np.ndarray], np.ndarray]


def _round_up(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.ceil(np.abs(x))


def _round_half_up(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _round_half_down(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.ceil(np.abs(x) - 0.5)


# The seven QONNX rounding modes, as qonnx implements them. qonnx also accepts "HALF_EVEN" as a
# spelling of ROUND (np.round rounds half to even); we accept it too, since the oracle does and a
# file that qonnx runs should not be refused here.
ROUNDING_MODES: dict[str, RoundingFn] = {
    "ROUND": np.round,
    "HALF_EVEN": np.round,
    "CEIL": np.ceil,
    "FLOOR": np.floor,
    "UP": _round_up,
    "DOWN": np.fix,
    "HALF_UP": _round_half_up,
    "HALF_DOWN": _round_half_down,
}


def rounding_function(mode: str) -> RoundingFn | None:
    """The rounding function of a mode name (case-insensitive), or None if the mode is unknown."""
    return ROUNDING_MODES.get(mode.upper())


@dataclass(frozen=True)
class QuantBounds:
    """What a bit width, signedness and narrowness mean for one Quant node.

    `bipolar` is qonnx's 1-bit signed special case; the bounds are then unused. The bounds are numpy
    scalars or arrays in the dtype qonnx's own arithmetic gives them, not Python ints.
    """

    bipolar: bool
    min_int: np.ndarray | np.generic
    max_int: np.ndarray | np.generic


def quant_bounds(bitwidth: np.ndarray, signed: int, narrow: int) -> QuantBounds:
    """qonnx's `min_int` / `max_int` evaluated on the bitwidth tensor in its dtype
    (`hawqc.ir.ops.quantizer.code_bounds`), and its bipolar case.

    `bitwidth` must hold exactly one element (qonnx's `bitwidth == 1 and signed` needs that too).
    """
    if bool(bitwidth == 1) and signed:
        zero = bitwidth * 0
        return QuantBounds(bipolar=True, min_int=zero, max_int=zero)
    min_int, max_int = code_bounds(bitwidth, bool(signed), bool(narrow))
    return QuantBounds(bipolar=False, min_int=np.asarray(min_int)[()], max_int=np.asarray(max_int)[()])


def int_quant(
    x: np.ndarray,
    scale: np.ndarray,
    zeropt: np.ndarray,
    bounds: QuantBounds,
    rounding: RoundingFn,
) -> np.ndarray:
    """Quantize `x` to the integer grid and back, exactly as qonnx's `int_quant` does.

    Broadcasting of per-channel `scale` / `zeropt` against `x` is numpy's, as in qonnx.
    """
    y = x / scale
    y = y + zeropt
    if bounds.bipolar:
        ones = np.ones(y.shape, dtype=y.dtype)
        y = np.where(y >= 0.0, ones, -ones)
    else:
        # Two `where`s rather than np.clip: they keep NaN and the sign of zero exactly as qonnx does.
        y = np.where(y > bounds.max_int, bounds.max_int.astype(y.dtype), y)
        y = np.where(y < bounds.min_int, bounds.min_int.astype(y.dtype), y)
        y = rounding(y)
    out = y - zeropt
    out = out * scale
    # qonnx casts the result of a Quant node to float32 whatever the parameter dtypes were.
    return np.asarray(out, dtype=np.float32)


def bipolar_quant(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """qonnx's `binary_quant`: +1 where x >= 0 (so also for -0.0), else -1, times the scale.

    Unlike Quant, qonnx does not cast the result: its dtype is numpy's promotion of x and scale.
    """
    ones = np.ones(x.shape, dtype=x.dtype)
    y = np.where(x >= 0.0, ones, -ones)
    return np.asarray(y * scale)
