"""`dce`: remove nodes and initializers whose results nothing uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from hawqc.passes.base import Pass, PassResult


@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    name: ClassVar[str] = "dce"
    summary: ClassVar[str] = "Remove nodes and initializers that no graph output depends on."

    def run(self, model: ir.Model) -> PassResult:
        # onnx_ir's pass walks the graph once in reverse, so a dead chain goes in one sweep.
        nodes_before = len(model.graph)
        initializers_before = len(model.graph.initializers)
        changed = RemoveUnusedNodesPass()(model).modified
        return PassResult(
            changed,
            {
                "nodes-removed": nodes_before - len(model.graph),
                "initializers-removed": initializers_before - len(model.graph.initializers),
            },
        )
