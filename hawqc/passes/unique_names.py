"""`unique-names`: give every node and value a name, unique in the model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir
from onnx_ir.passes.common import NameFixPass

from hawqc.passes.base import Pass, PassResult


@dataclass(frozen=True)
class UniqueNames(Pass):
    name: ClassVar[str] = "unique-names"
    summary: ClassVar[str] = "Name unnamed nodes and values; rename duplicates (graph inputs and outputs keep theirs)."

    def run(self, model: ir.Model) -> PassResult:
        # hls4ml turns node names into C++ identifiers and file names, and reports name layers by
        # them: every node needs one, and only one node may have it.
        return PassResult(NameFixPass()(model).modified)
