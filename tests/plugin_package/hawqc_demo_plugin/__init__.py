"""A plugin as another team would write one: a pass and a backend, found through entry points."""

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx_ir as ir

import hawqc
from hawqc.backends.project import CSimRecipe, LayerReport, LoweredProject


@dataclass(frozen=True)
class CountQuants(hawqc.Pass):
    name: ClassVar[str] = "demo-count-quants"
    summary: ClassVar[str] = "Count quantizers (changes nothing)."
    op: str = hawqc.option("Quant", "op type to count")

    def run(self, model: ir.Model) -> hawqc.PassResult:
        count = sum(node.op_type == self.op for node in model.graph)
        return hawqc.PassResult(False, {f"{self.op.lower()}-nodes": count})


class DemoBackend:
    """Writes the model as ONNX text; a stand-in for a real code generator."""

    name = "demo"

    def lower(self, model, outdir: Path, *, project_name="myproject", io_type="io_parallel") -> LoweredProject:
        (outdir / f"{project_name}.onnxtxt").write_text(ir.to_onnx_text(model))
        layers = [LayerReport(node.name, node.op_type, "float32") for node in model.graph]
        return LoweredProject(
            outdir, self.name, project_name, io_type, layers, (), (), "", "",
            CSimRecipe(sources=(), include_dirs=(), cxxflags=(), entry=""),
        )  # fmt: skip
