"""`remove-identity`: bypass `Identity` nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

from hawqc.passes.base import Pass, PassResult


@dataclass(frozen=True)
class RemoveIdentity(Pass):
    name: ClassVar[str] = "remove-identity"
    summary: ClassVar[str] = (
        "Bypass Identity nodes; one that copies a graph input, an initializer or another graph "
        "output into a graph output stays (the model's interface needs both names)."
    )

    def run(self, model: ir.Model) -> PassResult:
        # One sweep rewires whole chains (qonnx's RemoveIdentityOps removes one node per sweep and
        # re-infers shapes each time). Written here rather than with onnx_ir's pass, which merges
        # two graph outputs into one when an Identity copies one to the other.
        graph = model.graph
        removed = 0
        for node in list(graph):
            if node.op_type != "Identity" or node.domain != "":
                continue
            source, copy = node.inputs[0], node.outputs[0]
            if copy.is_graph_output():
                if source.is_graph_input() or source.is_initializer() or source.is_graph_output():
                    continue
                name = copy.name
                ir.convenience.replace_all_uses_with(copy, source, replace_graph_outputs=True)
                graph.remove(node, safe=True)
                source.name = name  # consumers outside the model know the output by its name
            else:
                ir.convenience.replace_all_uses_with(copy, source)
                graph.remove(node, safe=True)
            removed += 1
        return PassResult(removed > 0, {"identities-removed": removed})
