"""The pattern-rewrite helper: matching by op type and domain (QONNX ops too), captures, replacement."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir.io import to_text
from hawqc.passes.rewrite import Const, Op, QonnxOp, RewriteRule, Var, apply_rules, match

GRAPH = """<ir_version: 8, opset_import: ["" : 17, "onnx.brevitas" : 1]>
g (float[1,3] x) => (float[1,2] y)
   <float[3,2] w = {1,2,3,4,5,6}, float s = {0.5}, float z = {0}, float b = {4}>
{
   [wq] q = onnx.brevitas.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (w, s, z, b)
   [mm] m = MatMul (x, q)
   [r1] r = Relu (m)
   [r2] y = Relu (r)
}"""


def nodes(model, op_type):
    return [node for node in model.graph if node.op_type == op_type]


def test_nested_patterns_match_qonnx_ops_after_domain_normalization():
    model = load_onnx_text(GRAPH)
    (matmul,) = nodes(model, "MatMul")
    pattern = Op("MatMul", inputs=(Var("x"), QonnxOp("Quant", inputs=(Const("w"), Const("scale")), name="quant")))
    found = match(pattern, matmul)
    assert found is not None
    assert found.value("x").name == "x" and found.value("w").name == "w" and found.node("quant").name == "wq"
    # The same op in the ONNX domain is another op: no match.
    assert match(Op("MatMul", inputs=(Var("x"), Op("Quant"))), matmul) is None
    # A Const pattern does not match a computed value.
    assert match(Op("Relu", inputs=(Const("c"),)), nodes(model, "Relu")[0]) is None


def test_a_name_used_twice_means_the_same_value():
    model = load_onnx_text("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2] x, float[1,2] w) => (float[1,2] y, float[1,2] z) { y = Add (x, x)  z = Add (x, w) }""")
    same, different = nodes(model, "Add")
    pattern = Op("Add", inputs=(Var("a"), Var("a")))
    assert match(pattern, same) is not None and match(pattern, different) is None


def test_missing_optional_inputs_match_only_none():
    model = load_onnx_text("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3] x) => (float[1,2] y) <float[3,2] w = {1,2,3,4,5,6}> { y = Gemm (x, w) }""")
    (gemm,) = nodes(model, "Gemm")
    assert match(Op("Gemm", inputs=(Var("a"), Var("b"), None)), gemm) is not None
    assert match(Op("Gemm", inputs=(Var("a"), Var("b"), Var("c"))), gemm) is None


def test_rules_replace_in_one_sweep_and_keep_output_names():
    model = load_onnx_text(GRAPH)
    double_relu = RewriteRule(
        "double-relu",
        Op("Relu", inputs=(Op("Relu", inputs=(Var("x"),)),)),
        replace=lambda found, rewriter: [rewriter.op("Relu", [found["x"]])],
    )
    assert apply_rules(model, [double_relu]) == {"double-relu": 1}
    text = to_text(model)
    assert "y = Relu (m)" in text  # the graph output keeps its name


def test_a_rule_can_decline_and_checks_gate_it():
    model = load_onnx_text(GRAPH)
    declined = RewriteRule("never", Op("Relu"), replace=lambda found, rewriter: None)
    unchecked = RewriteRule("gated", Op("Relu"), replace=lambda found, rewriter: [found.root.inputs[0]], check=lambda found: False)
    before = to_text(model)
    assert apply_rules(model, [declined, unchecked]) == {"never": 0, "gated": 0}
    assert to_text(model) == before


def test_constants_made_by_a_rewrite_get_fresh_names():
    model = load_onnx_text(GRAPH)
    scale_relus = RewriteRule(
        "scale",
        Op("Relu", inputs=(Var("x"),)),
        replace=lambda found, rewriter: [rewriter.op("Mul", [found["x"], rewriter.constant(np.array(2, np.float32), "w")])],
    )
    assert apply_rules(model, [scale_relus]) == {"scale": 2}
    assert sorted(name for name in model.graph.initializers if name.startswith("w")) == ["w", "w_1", "w_2"]
    names = [value.name for node in model.graph for value in node.outputs]
    assert len(names) == len(set(names))


def test_replacing_fewer_outputs_than_are_used_is_an_error():
    model = load_onnx_text("""<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y, bool[1,4] m) { y, m = Dropout (x) }""")
    rule = RewriteRule("bad", Op("Dropout", inputs=(Var("x"),)), replace=lambda found, rewriter: [found["x"]])
    with pytest.raises(ValueError, match="left its used output 'm' without a replacement"):
        apply_rules(model, [rule])


def test_graph_is_still_valid_after_rewrites():
    from hawqc.ir.verifier import verify

    model = load_onnx_text(GRAPH)
    rule = RewriteRule("relu-to-neg-neg", Op("Relu", inputs=(Var("x"),)),
                       replace=lambda found, rewriter: [rewriter.op("Neg", [rewriter.op("Neg", [found["x"]])])])  # fmt: skip
    apply_rules(model, [rule])
    verify(model)
    assert [node.op_type for node in model.graph].count("Neg") == 4
    assert isinstance(model.graph.outputs[0], ir.Value) and model.graph.outputs[0].name == "y"
