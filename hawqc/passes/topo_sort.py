"""`topo-sort`: order nodes so that every value is defined before it is used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir
from onnx_ir.passes.common import TopologicalSortPass

from hawqc.passes.base import Pass, PassResult


@dataclass(frozen=True)
class TopologicalSort(Pass):
    name: ClassVar[str] = "topo-sort"
    summary: ClassVar[str] = "Sort nodes topologically (stable: an already sorted graph is unchanged)."

    def run(self, model: ir.Model) -> PassResult:
        before = list(model.graph)
        TopologicalSortPass()(model)
        # onnx_ir's pass reports a change whenever it runs; compare the orders instead.
        changed = any(a is not b for a, b in zip(before, model.graph))
        return PassResult(changed)
