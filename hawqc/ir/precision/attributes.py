"""Reading a node's attributes and constant inputs, with errors that name the node."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe


def attr(node: ir.Node, name: str, default: str | float | None = None) -> int | str | float:
    """The attribute's value; `default` when absent (None: the attribute is required)."""
    attribute = node.attributes.get(name)
    if attribute is None:
        if default is None:
            raise UnsupportedModelError(f"{describe(node)}: missing attribute {name!r}")
        return default
    return attribute.value


def ints_attr(node: ir.Node, name: str) -> list[int] | None:
    attribute = node.attributes.get(name)
    return None if attribute is None else [int(v) for v in attribute.value]


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The value's data if it is a constant (an initializer or a folded value), else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()
