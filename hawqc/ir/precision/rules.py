"""Which rule infers the precision of which op: one table keyed by `op_key(node)`, the union of the
tables of the rule families (quantizers, dense, pooling, elementwise, shapes).

Plain ONNX `Conv`, pools and BatchNormalization are channels-first: refused, naming the node ("run
channels-last first"), since intervals are kept along the last axis. Any other op has no rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.keys import OpKey, op_key
from hawqc.ir.ops.traits import Trait, keys_with
from hawqc.ir.precision import dense, elementwise, pooling, quantizers, shapes

if TYPE_CHECKING:
    from hawqc.ir.precision.analysis import Analysis

Rule = Callable[["Analysis", ir.Node], None]


def refuse_channels_first(analysis: Analysis, node: ir.Node) -> None:
    raise UnsupportedModelError(f"{describe(node)}: channels-first {node.op_type} has no precision rule; run channels-last first")


def _merged(*tables: Mapping[OpKey, Rule]) -> dict[OpKey, Rule]:
    """One table from the families' tables, each op in exactly one of them."""
    merged: dict[OpKey, Rule] = {}
    for table in tables:
        for key, rule in table.items():
            if key in merged:
                raise AssertionError(f"two precision rules for {key}")
            merged[key] = rule
    return merged


RULES: dict[OpKey, Rule] = _merged(
    quantizers.RULES,
    dense.RULES,
    pooling.RULES,
    elementwise.RULES,
    shapes.RULES,
    {key: refuse_channels_first for key in keys_with(Trait.CHANNELS_FIRST)},
)


def rule_for(node: ir.Node) -> Rule:
    rule = RULES.get(op_key(node))
    if rule is None:
        raise UnsupportedModelError(f"{describe(node)}: no precision rule for this op")
    return rule
