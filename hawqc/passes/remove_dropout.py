"""`remove-dropout`: bypass `Dropout` nodes, which are the identity at inference.

PyTorch exports in training mode and HAWQ models (QuantDropout) leave Dropout nodes behind; the
backends have no use for them. A Dropout stays when it is not the identity: `training_mode` given
and not a constant false, or its mask output in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

from hawqc.passes.base import Pass, PassResult
from hawqc.passes.rewrite import Match, Op, Rewriter, RewriteRule, Var, apply_rules


def is_inference_dropout(match: Match) -> bool:
    node = match.root
    if len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output()):
        return False
    training_mode = node.inputs[2] if len(node.inputs) > 2 else None
    if training_mode is None:
        return True
    return training_mode.const_value is not None and not training_mode.const_value.numpy().any()


def bypass(match: Match, rewriter: Rewriter) -> list[ir.Value]:
    return [match.value("data")]


RULE = RewriteRule("remove-dropout", Op("Dropout", inputs=(Var("data"),)), bypass, check=is_inference_dropout)


@dataclass(frozen=True)
class RemoveDropout(Pass):
    name: ClassVar[str] = "remove-dropout"
    summary: ClassVar[str] = "Bypass inference-time Dropout nodes (the identity)."

    def run(self, model: ir.Model) -> PassResult:
        removed = apply_rules(model, [RULE])[RULE.name]
        return PassResult(removed > 0, {"dropouts-removed": removed})
