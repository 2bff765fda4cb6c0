"""Deliberately broken passes for the lit tests of the pass manager's error paths."""

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

import hawqc


@hawqc.register_pass
@dataclass(frozen=True)
class Crash(hawqc.Pass):
    name: ClassVar[str] = "test-crash"

    def run(self, model: ir.Model) -> bool:
        raise RuntimeError("the pass fell over")


@hawqc.register_pass
@dataclass(frozen=True)
class BreakIR(hawqc.Pass):
    """Removes the first Relu without rewiring its users: the verifier must blame this pass."""

    name: ClassVar[str] = "test-break-ir"

    def run(self, model: ir.Model) -> bool:
        node = next(node for node in model.graph if node.op_type == "Relu")
        model.graph.remove(node, safe=False)
        return True


@hawqc.register_pass
@dataclass(frozen=True)
class NeverSettles(hawqc.Pass):
    """Claims a change every time: a fixpoint group around it must hit its cap."""

    name: ClassVar[str] = "test-never-settles"

    def run(self, model: ir.Model) -> bool:
        return True


@hawqc.register_pass
@dataclass(frozen=True)
class FlipSign(hawqc.Pass):
    """Turns the first Add into a Sub: translation validation must catch it."""

    name: ClassVar[str] = "test-flip-sign"

    def run(self, model: ir.Model) -> bool:
        node = next(node for node in model.graph if node.op_type == "Add")
        node.op_type = "Sub"
        return True
