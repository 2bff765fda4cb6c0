"""What the report says about integer interfaces and proven requantizations (`integer-requant`):
what the host must send and how to read the outputs, and every dyadic multiplier's width."""

from __future__ import annotations

from typing import Any

import onnx_ir as ir

from hawqc.ir.interfaces import input_codes, output_affines
from hawqc.passes.integer_requant import FEWEST_PROVEN_KEY, MULTIPLIER_BITS_KEY


def interfaces_summary(model: ir.Model) -> dict[str, Any] | None:
    """{"inputs": {name: {..., "host": sentence}}, "outputs": {...}}, None without interfaces."""
    inputs, outputs = input_codes(model), output_affines(model)
    if not inputs and not outputs:
        return None
    return {
        "inputs": {name: {**codes.as_dict(), "host": codes.describe()} for name, codes in inputs.items()},
        "outputs": {name: {**affine.as_dict(), "host": affine.describe()} for name, affine in outputs.items()},
    }


def interface_lines(model: ir.Model) -> list[str]:
    """One line per port that is not in the model's real units (printed after a compile)."""
    return [codes.describe() for codes in input_codes(model).values()] + [
        affine.describe() for affine in output_affines(model).values()
    ]


def requantizations(model: ir.Model) -> list[dict[str, Any]]:
    """Every proven dyadic requantization: its Mul node, the widest multiplier's significant bits, and
    whether no fewer bits can do (proven, except on ranges too wide to rule a smaller exponent out)."""
    return [
        {
            "node": node.name,
            "multiplier_bits": int(node.metadata_props[MULTIPLIER_BITS_KEY]),
            "fewest_bits_proven": node.metadata_props.get(FEWEST_PROVEN_KEY) != "false",
        }
        for node in model.graph
        if MULTIPLIER_BITS_KEY in node.metadata_props
    ]
