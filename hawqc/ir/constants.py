"""Constant values of the graph: initializers, typed and shaped from their data."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir


def make_initializer(array: np.ndarray, name: str) -> ir.Value:
    """A value holding `array`, with its type and shape set (not yet registered in a graph)."""
    # np.ascontiguousarray would turn a 0-d array (a scalar parameter) into shape (1,).
    tensor = ir.tensor(np.asarray(array, order="C"), name=name)
    return ir.Value(name=name, shape=ir.Shape(tensor.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
