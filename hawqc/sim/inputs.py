"""Inputs for checking a model: drawn inside the range of its input quantizer.

That range is what the hardware's input port can hold. A third of the samples lie on the
quantization grid, a third exactly on half-LSB ties (where rounding modes differ) and a third
anywhere in between (exercising the input conversion's rounding); the first two are the two ends.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.quantizer import quantizer
from hawqc.sim.quant import quant_bounds


def input_range(model: ir.Model, value: ir.Value) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(low, high, lsb) of the Quant that reads graph input `value`, or None if none does."""
    for use in value.uses():
        view = quantizer(use.node)
        if view is not None and view.layout == "Quant" and use.idx == 0:
            scale, zero_point, bits = view.scale, view.zero_point, view.bit_width_tensor
            # The bounds the executor clamps to: qonnx's, in the bit width's dtype.
            bounds = quant_bounds(bits, view.signed, view.narrow)
            # qonnx's 1-bit signed Quant outputs +-1 (times the scale): its range is [-1, 1].
            low, high = (-1.0, 1.0) if bounds.bipolar else (bounds.min_int.item(), bounds.max_int.item())
            scale = scale.astype(np.float64)
            return (low - zero_point) * scale, (high - zero_point) * scale, scale
    return None


def _batched_shape(value: ir.Value, count: int) -> tuple[int, ...]:
    return (count, *[d if isinstance(d, int) else 1 for d in list(value.shape)[1:]])


def _placed(samples: np.ndarray, kind: np.ndarray, bounds, start: int, count: int) -> np.ndarray:
    """Samples `start...` of `count`: uniform draws moved onto the grid or a tie by their kind."""
    # Broadcast against the batched shape: exporters spell per-channel parameters with the
    # batch dimension ([1, C], [1, C, 1, 1]) as often as without it ([C]).
    low, high, lsb = (np.broadcast_to(b, samples.shape) for b in bounds)
    # Every other sample on the grid or on a half-LSB tie: those are where roundings differ.
    grid = np.round(samples / lsb) * lsb
    ties = np.clip(grid + 0.5 * lsb, low, high)
    samples = np.where(kind == 0, grid, np.where(kind == 1, ties, samples))
    if count >= 2:
        for index, end in ((0, low), (1, high)):
            if start <= index < start + len(samples):
                samples[index - start] = end[0]
    return samples.astype(np.float32)


def draw_inputs(model: ir.Model, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`count` samples for every graph input, inside its input quantizer's range."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for value in model.graph.inputs:
        shape = _batched_shape(value, count)
        bounds = input_range(model, value)
        if bounds is None:
            inputs[value.name] = rng.standard_normal(shape).astype(np.float32)
            continue
        samples = rng.uniform(*(np.broadcast_to(b, shape) for b in bounds[:2]), size=shape)
        kind = rng.integers(0, 3, size=(count,) + (1,) * (len(shape) - 1))
        inputs[value.name] = _placed(samples, kind, bounds, 0, count)
    return inputs


def draw_input_slices(model: ir.Model, count: int, seed: int, size: int) -> Iterator[np.ndarray]:
    """The first graph input's samples of `draw_inputs(model, count, seed)`, bit for bit, `size` at
    a time (the last slice may be shorter), never all `count` at once.

    That works because of how numpy's PCG64 stream is used: `uniform` takes one 64-bit output per
    value, in C order, and drawing it in pieces continues the same stream; the kinds are drawn after
    all `count` samples' uniforms, so a second generator jumped ahead by that many outputs
    (`advance`) draws them piece by piece. `standard_normal` (an input without a quantizer) just
    continues its stream."""
    value = model.graph.inputs[0]
    sample_shape = _batched_shape(value, 1)[1:]
    bounds = input_range(model, value)
    values = np.random.default_rng(seed)
    kinds = np.random.default_rng(seed)
    kinds.bit_generator.advance(count * math.prod(sample_shape))
    for start in range(0, count, size):
        shape = (min(size, count - start), *sample_shape)
        if bounds is None:
            yield values.standard_normal(shape).astype(np.float32)
            continue
        samples = values.uniform(*(np.broadcast_to(b, shape) for b in bounds[:2]), size=shape)
        kind = kinds.integers(0, 3, size=(shape[0],) + (1,) * len(sample_shape))
        yield _placed(samples, kind, bounds, start, count)
