"""Analyses of a model computed once per IR state, cached on the model.

An analysis (precision inference) is a function of the IR. `cached(model, name, compute)` runs it
once and hands back the same result while the IR is unchanged. Two guards keep a result from going
stale:
- the pass manager calls `invalidate(model)` after every pass that reports a change (anything that
  changes the graph on purpose is a pass);
- each result is kept with the IR state it was computed on (`ir_state`): the nodes in order with
  their attributes and operands, each operand's name, type, shape, constant and annotations, and the
  model's metadata (the default precision among them). A result is handed back only while the
  state is equal, so code that edits a model outside the manager (a frontend, a test, a caller
  between two executors) never reads a result of an earlier graph. The state holds the objects
  themselves, so the identity of a replaced node, value or tensor is never reused while compared.
  Only a write into a tensor's array in place goes unseen by the state; nothing in hawqc does that
  outside a pass.
The cache lives in `model.meta`, which onnx_ir never serializes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import onnx_ir as ir

# The key of the cache in `model.meta`: one entry per analysis name.
META_KEY = "hawqc.analyses"

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry:
    state: tuple
    result: Any


def cached(model: ir.Model, name: str, compute: Callable[[ir.Model], T]) -> T:
    """`compute(model)`, or its result from an earlier call on the same IR state."""
    store: dict[str, _Entry] | None = model.meta.get(META_KEY)
    if store is None:
        store = model.meta[META_KEY] = {}
    entry = store.get(name)
    if entry is not None and entry.state == ir_state(model):
        return entry.result
    result = compute(model)
    # The state after the analysis: it may annotate shapes it had to infer.
    store[name] = _Entry(ir_state(model), result)
    return result


def invalidate(model: ir.Model) -> None:
    """Forget every cached analysis of `model` (the IR changed)."""
    model.meta.pop(META_KEY, None)


def ir_state(model: ir.Model) -> tuple:
    """What an analysis of the top-level graph can read, as a tuple compared by `==` (nodes, values
    and tensors compare by identity)."""
    graph = model.graph
    values: dict[int, ir.Value] = {}
    nodes = []
    for node in graph:
        attributes = tuple((name, _attribute_state(attr)) for name, attr in node.attributes.items())
        nodes.append((node, node.domain, node.op_type, attributes, tuple(node.inputs), tuple(node.outputs)))
        for value in (*node.inputs, *node.outputs):
            if value is not None:
                values[id(value)] = value
    for value in (*graph.inputs, *graph.outputs):
        values[id(value)] = value
    return (
        tuple(sorted(model.metadata_props.items())),
        tuple(graph.inputs),
        tuple(graph.outputs),
        tuple(nodes),
        tuple(_value_state(value) for value in values.values()),
    )


def _value_state(value: ir.Value) -> tuple:
    shape = None if value.shape is None else tuple(value.shape.dims)
    return (value, value.name, value.const_value, value.dtype, shape, tuple(sorted(value.metadata_props.items())))


def _attribute_state(attr: ir.Attr) -> tuple:
    value = attr.value
    return (attr.type, tuple(value) if isinstance(value, list) else value)
