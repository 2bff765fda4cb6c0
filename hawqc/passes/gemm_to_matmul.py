"""`gemm-to-matmul`: rewrite `Gemm` as `MatMul` (+ `Mul` by alpha) (+ `Add` of the bias).

The backends know one dense layer, MatMul with a [in, out] weight followed by an optional bias Add;
Gemm's four attributes (all optional in real exports) become explicit nodes. A transposed weight is
transposed where it is stored: a constant initializer directly, and a QONNX quantizer of a constant
(Brevitas' `Quant(W) -> Gemm(transB=1)`) by a new quantizer of the transposed weight whose scale and
zero point are transposed along with it, so that per-channel parameters stay on their channels. Only
a weight computed at run time gets a Transpose node.

A Gemm whose alpha or beta is not a power of two is left as it is (and counted): splitting it would
round one more time than Gemm does (see `exactly_splittable`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.keys import op_key
from hawqc.ir.ops.quantizer import CODE_QUANTIZERS
from hawqc.ir.quant_annotation import annotate, read_annotation
from hawqc.passes.base import Pass, PassResult
from hawqc.passes.rewrite import Match, Op, Rewriter, RewriteRule, apply_rules


def exactly_splittable(match: Match) -> bool:
    """Whether MatMul, Mul and Add, each rounded to float32, give Gemm's result bit for bit.

    onnxruntime rounds `alpha * acc + beta * C` once. Scaling by a power of two is exact in
    float32, so with power-of-two factors the split graph rounds only in the Add, like Gemm does;
    any other factor would add a rounding, and the pass would change the model's results. Beta
    scales C only: without C, or with beta = 0 (C is then not read at all), it does not matter.
    """
    factors = ["alpha"] + (["beta"] if _reads_bias(match.root) else [])
    return all(_is_power_of_two(match.root.attributes.get_float(name, 1.0)) for name in factors)


def _reads_bias(gemm: ir.Node) -> bool:
    """Whether Gemm adds beta * C: C given, and beta not 0."""
    has_c = len(gemm.inputs) > 2 and gemm.inputs[2] is not None
    return has_c and gemm.attributes.get_float("beta", 1.0) != 0.0


def _is_power_of_two(factor: float) -> bool:
    mantissa, _ = np.frexp(np.float32(factor))
    return factor > 0 and mantissa == 0.5


def split_gemm(match: Match, rewriter: Rewriter) -> list[ir.Value]:
    gemm = match.root
    a, b = gemm.inputs[0], gemm.inputs[1]
    c = gemm.inputs[2] if _reads_bias(gemm) else None
    alpha = gemm.attributes.get_float("alpha", 1.0)
    beta = gemm.attributes.get_float("beta", 1.0)
    base = gemm.name or "gemm"
    if gemm.attributes.get_int("transA", 0):
        a = rewriter.op("Transpose", [a], {"perm": [1, 0]}, name=f"{base}_transpose_a",
                        shape=_transposed_shape(a.shape))  # fmt: skip
    if gemm.attributes.get_int("transB", 0):
        b = _transposed_weight(b, base, rewriter)
    y = rewriter.op("MatMul", [a, b], name=f"{base}_matmul")
    if alpha != 1.0:
        alpha_value = rewriter.constant(np.array(alpha, dtype=np.float32), f"{base}_alpha")
        y = rewriter.op("Mul", [y, alpha_value], name=f"{base}_alpha")
    if c is not None:
        if beta != 1.0:
            beta_value = rewriter.constant(np.array(beta, dtype=np.float32), f"{base}_beta")
            c = rewriter.op("Mul", [c, beta_value], name=f"{base}_beta", shape=c.shape)
        y = rewriter.op("Add", [y, c], name=f"{base}_bias")
    return [y]


RULE = RewriteRule("gemm-to-matmul", Op("Gemm"), split_gemm, check=exactly_splittable)


@dataclass(frozen=True)
class GemmToMatMul(Pass):
    name: ClassVar[str] = "gemm-to-matmul"
    summary: ClassVar[str] = (
        "Rewrite Gemm as MatMul (+Mul alpha) (+Add bias), transposing weights in place; "
        "Gemms with alpha/beta not a power of two stay."
    )

    def run(self, model: ir.Model) -> PassResult:
        gemms = sum(node.op_type == "Gemm" and node.domain == "" for node in model.graph)
        rewritten = apply_rules(model, [RULE])[RULE.name]
        return PassResult(rewritten > 0, {"gemms-rewritten": rewritten, "gemms-kept-inexact": gemms - rewritten})


def _transposed_weight(b: ir.Value, base: str, rewriter: Rewriter) -> ir.Value:
    if b.const_value is not None:
        transposed = rewriter.constant(b.const_value.numpy().T, f"{b.name}_transposed")
        # A weight fold-quant already folded keeps its quantization (per-channel parameters turn with it).
        annotation = read_annotation(b)
        if annotation is not None:
            annotate(transposed, annotation.transposed((1, 0)))
        return transposed
    producer = b.producer()
    # A weight quantizer's inputs 1.. are parameters that broadcast against the weight.
    if producer is not None and op_key(producer) in CODE_QUANTIZERS and producer.inputs[0].const_value is not None:
        weight = producer.inputs[0]
        inputs = [rewriter.constant(weight.const_value.numpy().T, f"{weight.name}_transposed")]
        inputs += [_transposed_parameter(parameter, rewriter) for parameter in producer.inputs[1:]]
        return rewriter.op(
            producer.op_type,
            inputs,
            {attr.name: attr for attr in producer.attributes.values()},
            domain=producer.domain,
            name=f"{producer.name or base}_transposed",
            output_name=f"{b.name}_transposed",
            like=b,
            shape=_transposed_shape(b.shape),
        )
    return rewriter.op("Transpose", [b], {"perm": [1, 0]}, name=f"{base}_transpose_b", like=b,
                       shape=_transposed_shape(b.shape))  # fmt: skip


def _transposed_parameter(parameter: ir.Value, rewriter: Rewriter) -> ir.Value:
    """A quantizer parameter that broadcasts against W^T as the original did against W."""
    array = parameter.const_value.numpy()
    if array.size == 1:
        return parameter  # a scalar (bit width, per-tensor scale) broadcasts the same either way
    # Broadcasting aligns trailing axes: lift to rank 2 first so that a [in] vector becomes [1, in]
    # and, transposed, the [in, 1] column that lines up with W^T's rows.
    return rewriter.constant(np.atleast_2d(array).T.copy(), f"{parameter.name}_transposed")


def _transposed_shape(shape: ir.Shape | None) -> ir.Shape | None:
    return None if shape is None else ir.Shape(list(reversed(list(shape))))
