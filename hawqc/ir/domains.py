"""The operator domains hawqc recognizes, and the one it normalizes them to.

QONNX ops reach us under several domain names, depending on which exporter wrote the file.
Every part of hawqc after loading sees only `QONNX_DOMAIN`.
"""

from __future__ import annotations

QONNX_DOMAIN = "qonnx.custom_op.general"
CHANNELS_LAST_DOMAIN = "qonnx.custom_op.channels_last"

# Older Brevitas, HAWQ's own exporter and FINN all wrote the same ops under their own names.
QONNX_DOMAIN_ALIASES = frozenset(
    {QONNX_DOMAIN, "onnx.brevitas", "hawq2qonnx", "finn.custom_op.general", "qonnx.custom_op"}
)

def is_qonnx_domain(domain: str) -> bool:
    return domain in QONNX_DOMAIN_ALIASES


def is_known_domain(domain: str) -> bool:
    """ONNX's own ops (`""`, also spelled `ai.onnx`), QONNX's under any of its names, and the
    channels-last ops: nothing else has a meaning hawqc knows."""
    return domain in ("", "ai.onnx", CHANNELS_LAST_DOMAIN) or is_qonnx_domain(domain)


def known_domains_text() -> str:
    aliases = ", ".join(sorted(QONNX_DOMAIN_ALIASES - {QONNX_DOMAIN}))
    return f"'' (ONNX), '{QONNX_DOMAIN}' (also written {aliases}), '{CHANNELS_LAST_DOMAIN}'"
