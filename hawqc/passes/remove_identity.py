"""`remove-identity`: bypass `Identity` nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir
from onnx_ir.passes.common import IdentityEliminationPass

from hawqc.passes.base import Pass, PassResult


@dataclass(frozen=True)
class RemoveIdentity(Pass):
    name: ClassVar[str] = "remove-identity"
    summary: ClassVar[str] = "Bypass Identity nodes (one that copies a graph input to an output stays)."

    def run(self, model: ir.Model) -> PassResult:
        # onnx_ir's pass rewires every Identity in one sweep; qonnx's RemoveIdentityOps removes one
        # per sweep and re-infers shapes each time (cubic on long chains).
        before = len(model.graph)
        changed = IdentityEliminationPass()(model).modified
        return PassResult(changed, {"identities-removed": before - len(model.graph)})
