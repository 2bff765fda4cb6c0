"""How hawqc names things in messages, the same way in every floor."""

from __future__ import annotations

import onnx_ir as ir


def describe(node: ir.Node) -> str:
    """A node as a user finds it in Netron: its name, and its op with the domain if not ONNX's."""
    op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
    return f"node '{node.name}' ({op})" if node.name else f"unnamed node ({op})"
