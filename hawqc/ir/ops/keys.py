"""The key every per-op table is indexed by: `(domain, op_type)`, with the domain as loading
normalizes it (`hawqc.ir.normalize`): `""` for ONNX's own ops (also written `ai.onnx`),
`QONNX_DOMAIN` for QONNX's under any of their names, `CHANNELS_LAST_DOMAIN` for the channels-last
ops. Precision inference, semantic and hardware mode, channels-last and the hls4ml planner all
dispatch on it, so an op is one entry in each of their tables."""

from __future__ import annotations

import onnx_ir as ir

from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN, is_qonnx_domain

STANDARD_DOMAINS = ("", "ai.onnx")

OpKey = tuple[str, str]


def canonical_domain(domain: str) -> str:
    if domain in STANDARD_DOMAINS:
        return ""
    if is_qonnx_domain(domain):
        return QONNX_DOMAIN
    return domain


def op_key(node: ir.Node) -> OpKey:
    return canonical_domain(node.domain), node.op_type


def onnx_op(op_type: str) -> OpKey:
    return "", op_type


def qonnx_op(op_type: str) -> OpKey:
    return QONNX_DOMAIN, op_type


def op_types(keys: frozenset[OpKey], domain: str) -> frozenset[str]:
    """The op types of the keys in `domain` (canonical), for the patterns that match by op type."""
    return frozenset(op for d, op in keys if d == domain)


def channels_last_op(op_type: str) -> OpKey:
    return CHANNELS_LAST_DOMAIN, op_type
