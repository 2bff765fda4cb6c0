"""A complete custom hawqc pass: Relu(Relu(x)) -> Relu(x).

From the command line (the file registers its pass when loaded):
    hawqc-opt model.onnx --load-pass-plugin examples/custom_pass.py -p 'merge-relus,cleanup'
From Python:
    python examples/custom_pass.py model.onnx [out.onnxtxt]
"""

import sys
from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

import hawqc
from hawqc.passes.rewrite import Op, RewriteRule, apply_rules

# Relu is idempotent: of two stacked Relus, the outer one computes nothing new.
MERGE = RewriteRule(
    "merge-relus",
    Op("Relu", inputs=(Op("Relu", name="inner"),)),
    replace=lambda match, rewriter: [match.node("inner").outputs[0]],
)


@hawqc.register_pass
@dataclass(frozen=True)
class MergeRelus(hawqc.Pass):
    name: ClassVar[str] = "merge-relus"
    summary: ClassVar[str] = "Relu(Relu(x)) -> Relu(x)."

    def run(self, model: ir.Model) -> hawqc.PassResult:
        merged = apply_rules(model, [MERGE])["merge-relus"]
        return hawqc.PassResult(merged > 0, {"relus-merged": merged})


if __name__ == "__main__":
    model = hawqc.load(sys.argv[1])
    # validate=100: the semantic executor checks, on 100 inputs, that no pass changed any output bit.
    for record in hawqc.PassManager.parse("merge-relus,cleanup", validate=100).run(model):
        print(f"{record.name}: changed={record.changed} {record.statistics}")
    if len(sys.argv) > 2:
        hawqc.save(model, sys.argv[2])
