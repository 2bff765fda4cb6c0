"""`gemm-to-matmul`: rewrite `Gemm` as `MatMul` (+ `Mul` by alpha) (+ `Add` of the bias).

A Gemm whose alpha or beta is not a power of two is left as it is (and counted): splitting it would
round one more time than Gemm does (see `_exactly_splittable`).

The backends know one dense layer, MatMul with a [in, out] weight followed by an optional bias Add;
Gemm's four attributes (all optional in real exports) become explicit nodes. A transposed weight is
transposed where it is stored: a constant initializer directly, and a QONNX quantizer of a constant
(Brevitas' `Quant(W) -> Gemm(transB=1)`) by a new quantizer of the transposed weight whose scale and
zero point are transposed along with it, so that per-channel parameters stay on their channels. Only
a weight computed at run time gets a Transpose node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.passes.base import Pass, PassResult

# QONNX quantizers whose inputs 1.. are parameters that broadcast against input 0.
ELEMENTWISE_QUANTIZERS = frozenset({"Quant", "IntQuant", "BipolarQuant"})


@dataclass(frozen=True)
class GemmToMatMul(Pass):
    name: ClassVar[str] = "gemm-to-matmul"
    summary: ClassVar[str] = "Rewrite Gemm as MatMul (+Mul alpha) (+Add bias), transposing weights in place."

    def run(self, model: ir.Model) -> PassResult:
        graph = model.graph
        names = _FreshNames(graph)
        rewritten = kept = 0
        for node in list(graph):
            if node.op_type != "Gemm" or node.domain != "":
                continue
            if not _exactly_splittable(node):
                kept += 1
                continue
            _rewrite(graph, node, names)
            rewritten += 1
        return PassResult(rewritten > 0, {"gemms-rewritten": rewritten, "gemms-kept-inexact": kept})


def _exactly_splittable(gemm: ir.Node) -> bool:
    """Whether MatMul, Mul and Add, each rounded to float32, give Gemm's result bit for bit.

    onnxruntime rounds `alpha * acc + beta * C` once. Scaling by a power of two is exact in
    float32, so with power-of-two factors the split graph rounds only in the Add, like Gemm does;
    any other factor would add a rounding, and the pass would change the model's results.
    """
    return all(
        _is_power_of_two(gemm.attributes.get_float(name, 1.0)) for name in ("alpha", "beta")
    )


def _is_power_of_two(factor: float) -> bool:
    mantissa, _ = np.frexp(np.float32(factor))
    return factor > 0 and mantissa == 0.5


class _FreshNames:
    """Names not yet used by any value or node of the graph (gathered once: linear per pass run)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.used = {value.name for value in (*graph.inputs, *graph.initializers.values())}
        for node in graph:
            self.used.add(node.name)
            self.used.update(value.name for value in node.outputs)

    def __call__(self, wanted: str) -> str:
        candidate, index = wanted, 0
        while candidate in self.used:
            index += 1
            candidate = f"{wanted}_{index}"
        self.used.add(candidate)
        return candidate


def _rewrite(graph: ir.Graph, gemm: ir.Node, names: _FreshNames) -> None:
    a, b = gemm.inputs[0], gemm.inputs[1]
    c = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    alpha = gemm.attributes.get_float("alpha", 1.0)
    beta = gemm.attributes.get_float("beta", 1.0)
    base = gemm.name or "gemm"
    result = gemm.outputs[0]
    new_nodes: list[ir.Node] = []

    def emit(op_type: str, inputs: list[ir.Value], suffix: str, **attributes) -> ir.Value:
        node = ir.node(op_type, inputs, attributes or None, name=names(f"{base}_{suffix}"))
        node.outputs[0].name = names(f"{base}_{suffix}_out")
        node.outputs[0].type = result.type
        new_nodes.append(node)
        return node.outputs[0]

    if gemm.attributes.get_int("transA", 0):
        a = emit("Transpose", [a], "transpose_a", perm=[1, 0])
        a.shape = _transposed_shape(gemm.inputs[0].shape)
    if gemm.attributes.get_int("transB", 0):
        b = _transposed_weight(graph, b, base, new_nodes, emit, names)
    y = emit("MatMul", [a, b], "matmul")
    y.shape = result.shape
    if alpha != 1.0:
        y = emit("Mul", [y, _scalar(graph, alpha, names(f"{base}_alpha"))], "alpha")
        y.shape = result.shape
    if c is not None:
        if beta != 1.0:
            c = emit("Mul", [c, _scalar(graph, beta, names(f"{base}_beta"))], "beta")
            c.shape = gemm.inputs[2].shape
        y = emit("Add", [y, c], "bias")
        y.shape = result.shape

    graph.insert_before(gemm, new_nodes)
    name = result.name
    ir.convenience.replace_all_uses_with(result, y, replace_graph_outputs=True)
    graph.remove(gemm, safe=True)
    y.name = name  # consumers and graph outputs keep the name they knew


def _transposed_weight(graph, b: ir.Value, base: str, new_nodes: list[ir.Node], emit, names) -> ir.Value:
    if b.const_value is not None:
        return _initializer(graph, b.const_value.numpy().T, names(f"{b.name}_transposed"))
    producer = b.producer()
    if (
        producer is not None
        and producer.domain == QONNX_DOMAIN
        and producer.op_type in ELEMENTWISE_QUANTIZERS
        and producer.inputs[0].const_value is not None
    ):
        weight = producer.inputs[0]
        inputs = [_initializer(graph, weight.const_value.numpy().T, names(f"{weight.name}_transposed"))]
        for parameter in producer.inputs[1:]:
            inputs.append(_transposed_parameter(graph, parameter, names))
        quant = ir.node(
            producer.op_type,
            inputs,
            {attr.name: attr for attr in producer.attributes.values()},
            domain=producer.domain,
            name=names(f"{producer.name or base}_transposed"),
        )
        out = quant.outputs[0]
        out.name = names(f"{b.name}_transposed")
        out.type = b.type
        out.shape = _transposed_shape(b.shape)
        new_nodes.append(quant)
        return out
    transposed = emit("Transpose", [b], "transpose_b", perm=[1, 0])
    transposed.shape = _transposed_shape(b.shape)
    return transposed


def _transposed_parameter(graph, parameter: ir.Value, names: _FreshNames) -> ir.Value:
    """A quantizer parameter that broadcasts against W^T as the original did against W."""
    array = parameter.const_value.numpy()
    if array.size == 1:
        return parameter  # a scalar (bit width, per-tensor scale) broadcasts the same either way
    # Broadcasting aligns trailing axes: lift to rank 2 first so that a [in] vector becomes [1, in]
    # and, transposed, the [in, 1] column that lines up with W^T's rows.
    return _initializer(graph, np.atleast_2d(array).T.copy(), names(f"{parameter.name}_transposed"))


def _initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    tensor = ir.tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(
        name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor
    )
    graph.register_initializer(value)
    return value


def _scalar(graph: ir.Graph, number: float, name: str) -> ir.Value:
    return _initializer(graph, np.array(number, dtype=np.float32), name)


def _transposed_shape(shape: ir.Shape | None) -> ir.Shape | None:
    return None if shape is None else ir.Shape(list(reversed(list(shape))))
