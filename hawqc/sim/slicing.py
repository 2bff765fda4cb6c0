"""How many samples the executors (and the C simulation beside them) can take at once: a bound on
one sample's working set, from the shapes in the IR, and the slice size it gives under a budget.
Verification (`hawqc.flow.verify_slices`) and the HAWQ-export measurement run in such slices, so their
memory is bounded by the model, not by the sample count."""

from __future__ import annotations

import math

import onnx_ir as ir

from hawqc.ir.ops.window import Windows

# What one slice may hold: the executors' intermediate values and the verification's own arrays.
SLICE_BYTES = 256 << 20
# Bytes per value an executor may hold: hardware mode's longdouble where float64 is too narrow.
_VALUE_BYTES = 16
# Per input value: the float32 sample, the C simulation's float64 copy, hardware mode's cast.
_INPUT_BYTES = 4 + 8 + 16
# Per output value: hardware, semantic and C simulation outputs, and two comparisons' float64
# copies and differences.
_OUTPUT_BYTES = 8 + 4 + 8 + 2 * 3 * 8


def _per_sample(value: ir.Value) -> int | None:
    dims = list(value.shape or ())[1:] if value.shape is not None else None
    if dims is None or not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims)


def _runtime_values(model: ir.Model) -> list[ir.Value]:
    """Values computed from the data (not folded from constants). One pass: verified IR lists its
    nodes in topological order."""
    graph = model.graph
    live = {v for v in graph.inputs if v.name not in graph.initializers}
    for node in graph:
        if any(v in live for v in node.inputs if v is not None):
            live.update(node.outputs)
    return list(live)


def _patches(node: ir.Node) -> int:
    """Values of a convolution's im2col patches per sample (`hawqc.sim.ops_conv`): one kernel window
    of the input channels for every output position."""
    if node.op_type != "Conv" or node.inputs[1] is None or node.inputs[1].shape is None:
        return 0
    out = _per_sample(node.outputs[0])
    weight = [d for d in node.inputs[1].shape.dims if isinstance(d, int)]
    if out is None or len(weight) != len(node.inputs[1].shape.dims) or not weight[0]:
        return 0
    return out // weight[0] * math.prod(weight[1:]) * Windows.read(node).group


def sample_bytes(model: ir.Model) -> int:
    """A bound on what verifying one sample holds: every value computed from the data (the
    executor frees values after their last reader; counting all of them covers skip connections
    held across a U-Net), the largest convolution's patches, and the slice's own input and outputs.
    A value of unknown shape counts as the largest known one."""
    values = _runtime_values(model)
    sizes = [_per_sample(v) for v in values]
    known = [s for s in sizes if s is not None]
    largest = max(known, default=1)
    held = sum(largest if s is None else s for s in sizes)
    patches = max((_patches(node) for node in model.graph), default=0)
    inputs = sum(_per_sample(v) or largest for v in model.graph.inputs if v.name not in model.graph.initializers)
    outputs = sum(_per_sample(v) or largest for v in model.graph.outputs)
    return (held + patches) * _VALUE_BYTES + inputs * _INPUT_BYTES + outputs * _OUTPUT_BYTES


def slice_size(model: ir.Model, budget: int | None = None) -> int:
    """Samples per slice: as many as fit in `budget` (default `SLICE_BYTES`), at least one."""
    return max(1, (budget or SLICE_BYTES) // max(1, sample_bytes(model)))
