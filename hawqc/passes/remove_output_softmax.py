"""`remove-output-softmax`: make a classifier's logits the graph output, dropping its final Softmax.

This pass changes what the model computes, on purpose and only when asked for: the outputs become
the Softmax's input (the logits), whose arg-max is the same class. It exists because hawqc has no
bit-exact fixed-point rule for Softmax (hls4ml computes it with lookup tables of float
exponentials and reciprocals), while float classifiers (PyTorch and Keras exports) end in one. Add
it to the pipeline (`-p default,remove-output-softmax`) to compile such a model; verify then
compares the logits. Only a Softmax that produces a graph output and whose input nothing else
reads is removed; one inside the graph stays (and is refused by the lowering, naming it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

from hawqc.passes.base import Pass, PassResult

STANDARD_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class RemoveOutputSoftmax(Pass):
    name: ClassVar[str] = "remove-output-softmax"
    summary: ClassVar[str] = "Output the logits: drop a Softmax that produces a graph output (changes the outputs)."
    changes_meaning: ClassVar[bool] = True

    def run(self, model: ir.Model) -> PassResult:
        graph = model.graph
        removed = 0
        for index, output in enumerate(list(graph.outputs)):
            node = output.producer()
            if node is None or node.op_type != "Softmax" or node.domain not in STANDARD_DOMAINS:
                continue
            logits = node.inputs[0]
            if logits is None or logits.is_graph_output() or len(list(logits.consumers())) != 1:
                continue
            graph.outputs[index] = logits
            graph.remove(node, safe=True)
            removed += 1
        return PassResult(removed > 0, {"softmaxes-removed": removed})
