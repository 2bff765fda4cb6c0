"""Bring a model as exported by any QONNX producer into the one form the rest of hawqc expects.

Real exports differ in ways that carry no meaning: the domain name of the QONNX ops, parameters
held in `Constant` nodes, graph inputs that an initializer of the same name shadows (older ONNX
exporters list every initializer as an input too). qonnx's own transformations raise on several of
these; hawqc removes them once, on load, so that no pass has to care.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass, RemoveInitializersFromInputsPass

from hawqc.ir.domains import QONNX_DOMAIN, is_qonnx_domain

# Standard ONNX ops that an exporter wrote under its own QONNX domain: HAWQ's exporter registers
# torch functions `Conv` (older branch: `Conv(x, W)` with the standard attributes) and `Round`
# (torch.round: half to even, as ONNX Round) as `hawq2qonnx::Conv` / `hawq2qonnx::Round`. They are
# the standard ops, inputs and attributes alike, and move to the default domain.
STANDARD_OPS_UNDER_ALIASES = {"hawq2qonnx": frozenset({"Conv", "Round"})}


@dataclass(frozen=True)
class NormalizeReport:
    """What normalization changed, for messages and tests."""

    renamed_domains: int
    lifted_constants: int
    unshadowed_inputs: int

    @property
    def changed(self) -> bool:
        return bool(self.renamed_domains or self.lifted_constants or self.unshadowed_inputs)


def normalize(model: ir.Model) -> NormalizeReport:
    """Normalize `model` in place."""
    renamed = _normalize_domains(model)
    constants = sum(1 for node in model.graph if node.op_type == "Constant" and node.domain == "")
    # size_limit=0: quantization parameters are scalars, and they must become initializers too.
    LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(model)
    constants -= sum(1 for node in model.graph if node.op_type == "Constant" and node.domain == "")
    shadowed = sum(1 for value in model.graph.inputs if value.name in model.graph.initializers)
    RemoveInitializersFromInputsPass()(model)
    return NormalizeReport(renamed, constants, shadowed)


def _normalize_domains(model: ir.Model) -> int:
    renamed = 0
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.op_type in STANDARD_OPS_UNDER_ALIASES.get(node.domain, ()):
            node.domain = ""
            renamed += 1
        elif node.domain != QONNX_DOMAIN and is_qonnx_domain(node.domain):
            node.domain = QONNX_DOMAIN
            renamed += 1
    # The version of an alias import carries meaning (Trunc v2 has an extra input): the merged import
    # keeps the highest version any of them declared.
    versions = []
    for domain in list(model.opset_imports):
        if is_qonnx_domain(domain):
            versions.append(model.opset_imports[domain])
            if domain != QONNX_DOMAIN:
                del model.opset_imports[domain]
    if versions:
        model.opset_imports[QONNX_DOMAIN] = max(versions)
    elif any(node.domain == QONNX_DOMAIN for node in model.graph):
        model.opset_imports[QONNX_DOMAIN] = 1
    return renamed
