"""Fresh names for what a rewrite adds to a graph: names no value or node of the graph uses yet.

ONNX needs every value name unique in its graph; node names are kept unique too, so that messages
and reproducers name one node. The names in use are gathered once, so a sweep that adds many nodes
stays linear.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx_ir as ir


class FreshNames:
    """Names not yet taken: by any value or node of `graph`, and by the names in `used` (gathered
    once: linear per sweep). A taken name gets the first free suffix `_{first_suffix}`, `_{first_suffix + 1}`, ..."""

    def __init__(self, graph: ir.Graph | None = None, *, used: Iterable[str] = (), first_suffix: int = 1) -> None:
        self.used = set(used)
        self.first_suffix = first_suffix
        if graph is not None:
            self.used.update(value.name for value in (*graph.inputs, *graph.initializers.values()))
            for node in graph:
                self.used.add(node.name)
                self.used.update(value.name for value in node.outputs)

    def __call__(self, wanted: str) -> str:
        candidate, index = wanted, self.first_suffix - 1
        while candidate in self.used:
            index += 1
            candidate = f"{wanted}_{index}"
        self.used.add(candidate)
        return candidate
