"""What every reader of a node needs: its present inputs, the opset version it runs at, and the
one-line refusal naming it. The op views of this package, the executor's builders, precision
inference and the planner read nodes through these."""

from __future__ import annotations

import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.keys import STANDARD_DOMAINS


def refusal(node: ir.Node, reason: str) -> UnsupportedModelError:
    """The one-line error for a node hawqc cannot run: its name, its op, why."""
    return UnsupportedModelError(f"{describe(node)}: {reason}")


def present_inputs(node: ir.Node) -> list[ir.Value | None]:
    """The node's inputs without trailing absent optional ones."""
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    return inputs


def check_input_count(node: ir.Node, least: int, most: int) -> None:
    inputs = present_inputs(node)
    if not least <= len(inputs) <= most:
        expected = str(least) if least == most else f"{least} to {most}"
        raise refusal(node, f"has {len(inputs)} inputs, expected {expected}")
    if any(value is None for value in inputs[:least]):
        raise refusal(node, "lacks a required input")


def check_single_output(node: ir.Node, what: str) -> None:
    """Refuse optional outputs beyond the first that the graph actually names."""
    if any(value is not None and value.name for value in list(node.outputs)[1:]):
        raise refusal(node, f"its second output ({what}) is not supported")


def opset_version(node: ir.Node, domain: str) -> int | None:
    """The version of `domain` the node runs at: its own (onnx_ir), else its graph's import."""
    same_domain = domain == node.domain or (domain in STANDARD_DOMAINS and node.domain in STANDARD_DOMAINS)
    if same_domain and node.version is not None:
        return node.version
    graph = node.graph
    if graph is None:
        return None
    names = STANDARD_DOMAINS if domain in STANDARD_DOMAINS else (domain,)
    for name in names:
        if name in graph.opset_imports:
            return graph.opset_imports[name]
    return None


def standard_opset(node: ir.Node) -> int:
    """The ONNX opset the node means its op at (qonnx runs standard nodes at the model's import)."""
    version = opset_version(node, "")
    if version is None:
        raise refusal(node, "the model imports no version of the ONNX domain, which gives this op its meaning")
    return version
