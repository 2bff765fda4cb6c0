"""`fold-constants`: evaluate standard ONNX nodes whose inputs are all constant.

QONNX nodes are never folded: a Quant on a weight carries the quantization (bit width, scale,
rounding) that precision inference and the backends read; folding it into a float initializer, as
qonnx's cleanup does, throws that away.

One sweep in topological order folds whole constant chains: a folded result becomes an initializer
under the same name, so the next node in the chain already sees a constant input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import onnx_ir as ir
from onnx.reference import ReferenceEvaluator

from hawqc.ir.constants import make_initializer
from hawqc.ir.ops.keys import op_key
from hawqc.ir.ops.traits import Trait, ops_with
from hawqc.passes.base import Pass, PassResult, option
from hawqc.sim import ops as sim_ops

# Ops whose result is not a function of their inputs, or that hold subgraphs.
NEVER_FOLD = ops_with(Trait.NEVER_FOLD)


@dataclass(frozen=True)
class FoldConstants(Pass):
    name: ClassVar[str] = "fold-constants"
    summary: ClassVar[str] = (
        "Evaluate standard ONNX nodes with constant inputs (and Shape of static shapes); "
        "QONNX quantizers are left alone."
    )
    max_elements: int = option(1 << 22, "largest result (in elements) to store as an initializer")

    def run(self, model: ir.Model) -> PassResult:
        graph = model.graph
        opset = model.opset_imports.get("", 17)
        folded = 0
        for node in list(graph):
            if node.domain != "" or node.op_type in NEVER_FOLD:
                continue
            if any(output in graph.outputs for output in node.outputs):
                continue  # a graph output keeps its producer, so the model keeps its signature
            results = self._evaluate(node, opset)
            if results is None:
                continue
            for output, array in zip(node.outputs, results, strict=True):
                _replace_with_initializer(graph, output, array)
            graph.remove(node, safe=True)
            folded += 1
        return PassResult(folded > 0, {"nodes-folded": folded})

    def _evaluate(self, node: ir.Node, opset: int) -> list[np.ndarray] | None:
        if node.op_type == "Shape":
            return _static_shape(node)
        if any(value is not None and value.const_value is None for value in node.inputs):
            return None
        kernel_results = _evaluate_with_executor(node)
        if kernel_results is not None:
            return self._small_enough(kernel_results)
        arrays = {
            value.name: value.const_value.numpy() for value in node.inputs if value is not None
        }
        proto = ir.serde.serialize_node(node)
        graph = onnx.helper.make_graph(
            [proto],
            "fold",
            [onnx.helper.make_empty_tensor_value_info(name) for name in arrays],
            [onnx.helper.make_empty_tensor_value_info(out.name) for out in node.outputs],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        try:
            results = ReferenceEvaluator(model).run(None, arrays)
        except Exception:  # noqa: BLE001 - an op the reference evaluator lacks stays unfolded
            return None
        return self._small_enough([np.asarray(result) for result in results])

    def _small_enough(self, results: list[np.ndarray]) -> list[np.ndarray] | None:
        return None if any(result.size > self.max_elements for result in results) else results


def _evaluate_with_executor(node: ir.Node) -> list[np.ndarray] | None:
    """The node's results by the semantic executor's own kernel, if it has one for this op.

    The executor defines what a graph means (bit-identical to onnxruntime, qonnx's oracle), so a
    folded constant must be what it computes. onnx's reference evaluator rounds differently in
    places (Gemm with alpha: twice where onnxruntime rounds once), so it serves only the ops the
    executor lacks: shape arithmetic (Shape, Gather, Concat, Unsqueeze...), which is exact.
    """
    builder = sim_ops.OP_TABLE.get(op_key(node))
    if builder is None:
        return None
    constants = tuple(None if value is None else value.const_value.numpy() for value in node.inputs)
    kernel = builder(sim_ops.NodeSpec(node, constants, declared_batch=None))
    return [np.asarray(result) for result in kernel(constants)]


def _static_shape(node: ir.Node) -> list[np.ndarray] | None:
    shape = node.inputs[0].shape
    if shape is None or not all(isinstance(dim, int) for dim in shape):
        return None
    dims = list(shape)
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", len(dims))
    return [np.array(dims[start:end], dtype=np.int64)]


def _replace_with_initializer(graph: ir.Graph, output: ir.Value, array: np.ndarray) -> None:
    constant = make_initializer(array, output.name)
    ir.convenience.replace_all_uses_with(output, constant)
    output.name = None  # the name moves to the initializer; the dead output is removed with its node
    graph.register_initializer(constant)
