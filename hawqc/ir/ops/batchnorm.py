"""The BatchNormalization view: an inference-mode BatchNormalization (standard, channels on axis 1,
or channels-last, channels on the last axis) as the per-channel `y = x * a + b` that every reader
computes.

ONNX's defaults: `epsilon` 1e-5, `training_mode` 0, `spatial` 1 (opsets before 9; 0 means
per-element statistics). Inference mode means `training_mode` 0, `spatial` 1, and no reader of the
running mean / variance outputs. `a` and `b` are `hawqc.ir.op_arithmetic.batch_norm_coefficients`,
bit for bit what onnxruntime computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.op_arithmetic import batch_norm_coefficients
from hawqc.ir.ops.keys import OpKey, op_key

BATCH_NORMS: frozenset[OpKey] = frozenset({("", "BatchNormalization"), (CHANNELS_LAST_DOMAIN, "BatchNormalization")})
DEFAULT_EPSILON = 1e-5


@dataclass(frozen=True)
class BatchNormAttributes:
    """The attributes and parameters of a BatchNormalization node, absent ones at their defaults."""

    node: ir.Node
    epsilon: float
    training_mode: bool
    spatial: bool

    @property
    def channels_last(self) -> bool:
        return self.node.domain == CHANNELS_LAST_DOMAIN

    def channel_axis(self, rank: int) -> int:
        return rank - 1 if self.channels_last else 1

    @property
    def statistics_read(self) -> bool:
        """Whether the running mean / variance outputs (training only) have readers."""
        return any(out is not None and (out.uses() or out.is_graph_output()) for out in list(self.node.outputs)[1:])

    @property
    def inference_mode(self) -> bool:
        return not self.training_mode and self.spatial and not self.statistics_read

    def parameters(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(scale, bias, mean, var) when all four are constants, else None."""
        inputs = list(self.node.inputs[1:5])
        if len(inputs) != 4 or any(v is None or v.const_value is None for v in inputs):
            return None
        scale, bias, mean, var = (v.const_value.numpy() for v in inputs)  # type: ignore[union-attr]
        return scale, bias, mean, var

    def coefficients(self, parameters: tuple[np.ndarray, ...] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """`(a, b)` of `y = x * a + b` from the given (or the node's constant) parameters."""
        parameters = parameters if parameters is not None else self.parameters()
        if parameters is None:
            return None
        return batch_norm_coefficients(*parameters, self.epsilon)


def batch_norm(node: ir.Node) -> BatchNormAttributes | None:
    """The view of a BatchNormalization node, or None for any other node."""
    if op_key(node) not in BATCH_NORMS:
        return None
    attributes = node.attributes
    return BatchNormAttributes(
        node,
        epsilon=attributes.get_float("epsilon", DEFAULT_EPSILON),
        training_mode=bool(attributes.get_int("training_mode", 0)),
        spatial=bool(attributes.get_int("spatial", 1)),
    )
