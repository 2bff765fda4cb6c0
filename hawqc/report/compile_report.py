"""`hawqc_report.json`: what was compiled, how, with which types, and whether it is bit-exact."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hawqc._version import __version__
from hawqc.passes.base import PassRecord
from hawqc.temporaries import replace_atomically


@dataclass
class CompileReport:
    model: str
    backend: str
    pipeline: str
    passes: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    lowering_seconds: float
    # Graph inputs/outputs whose layout the passes changed (e.g. {"x": "NCHW->NHWC"}): the generated
    # project takes and returns data in the new layout.
    layouts: dict[str, str] = field(default_factory=dict)
    # Bit operations per MatMul/Gemm/Conv layer and in total (hawqc.report.bops).
    bops: dict[str, Any] | None = None
    # `--hawq-export-semantics hawq`: the requantizations read as HAWQ's, and the measured difference
    # of the file's own float32 arithmetic (hawqc.flow.hawq_export).
    hawq_export: dict[str, Any] | None = None
    # One row per layer (op, shapes, types, multiplications, BOPs, reuse factor, estimated cycles)
    # and totals (hawqc.report.layer_table): what `hawqc` and `hawqc report` print.
    layer_table: dict[str, Any] | None = None
    verify: dict[str, Any] | None = None
    csim: dict[str, Any] | None = None
    # Part, clock, strategy and reuse factor per layer the project is written for.
    hardware: dict[str, Any] | None = None
    # Float parts computed in `--default-precision` (hawqc.ir.default_precision): where, and the
    # weights' rounding. Absent for a quantized model.
    float_parts: dict[str, Any] | None = None
    # Ports that carry integer codes and outputs with an affine map to real units (hawqc.ir.interfaces),
    # and the proven dyadic requantizations with their multipliers' widths (integer-requant).
    interfaces: dict[str, Any] | None = None
    requantizations: list[dict[str, Any]] | None = None
    hawqc_version: str = __version__

    @classmethod
    def new(
        cls, *, model, backend, pipeline, passes: list[PassRecord], layers, lowering_seconds, layouts=None
    ) -> CompileReport:
        return cls(
            model=model,
            backend=backend,
            pipeline=pipeline,
            passes=[
                {
                    "name": record.name,
                    "seconds": round(record.seconds, 6),
                    "changed": record.changed,
                    "statistics": record.statistics,
                    "pipeline": record.pipeline,
                }
                for record in passes
            ],
            layers=[_layer_dict(layer) for layer in layers],
            lowering_seconds=round(lowering_seconds, 6),
            layouts=dict(layouts or {}),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        text = json.dumps(self.as_dict(), indent=2) + "\n"
        replace_atomically(path, lambda tmp: tmp.write_text(text))


def _layer_dict(layer: Any) -> dict[str, Any]:
    if isinstance(layer, dict):
        return layer
    return {"name": layer.name, "op": layer.op, "precision": str(layer.precision)}
