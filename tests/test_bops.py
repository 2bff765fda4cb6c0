"""BOPs per layer (hawqc.report.bops) and in the compile report."""

from __future__ import annotations

import math

import pytest
from conftest import REPO

from hawqc.frontends.onnx import load_onnx, load_onnx_text
from hawqc.passes.manager import PassManager
from hawqc.report.bops import bops_formula, layer_bops

QUANT = 'qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 1, rounding_mode: string = "ROUND">'
UQUANT = 'qonnx.custom_op.general.Quant <signed: int = 0, narrow: int = 0, rounding_mode: string = "ROUND">'


def test_formula_of_the_jet_tagging_studies():
    # m * n * (p * b_a * b_w + b_a + b_w + log2(n)), checked by hand: 4 * 8 * (0.5*6*3 + 6 + 3 + 3)
    assert bops_formula(n=8, m=4, weight_bits=3, input_bits=6, nonzero_fraction=0.5) == 4 * 8 * (9 + 12)


def test_dense_and_conv_layers_with_their_quantizers_bits():
    model = load_onnx_text(
        f"""<ir_version: 8, opset_import: ["" : 13, "qonnx.custom_op.general" : 1]>
g (float[1,1,4,4] x) => (float[1,3] y)
   <float s = {{0.5}}, float z = {{0}}, float b5 = {{5}}, float b3 = {{3}}, float b7 = {{7}},
    float[2,1,3,3] w = {{1,0,1,0,1,0,1,0,1, 1,1,1,1,1,1,1,1,1}},
    float[8,3] v = {{1,0,0, 0,1,0, 0,0,1, 1,1,1, 0,0,0, 0,0,0, 1,0,0, 0,1,0}},
    int64[2] shape = {{1, 8}}>
{{
   xq = {UQUANT} (x, s, z, b7)
   wq = {QUANT} (w, s, z, b3)
   c = Conv <pads: ints = [1, 1, 1, 1], strides: ints = [2, 2]> (xq, wq)
   r = Relu (c)
   rq = {UQUANT} (r, s, z, b5)
   p = MaxPool <kernel_shape: ints = [2, 2], strides: ints = [2, 2]> (rq)
   f = Reshape (p, shape)
   vq = {QUANT} (v, s, z, b3)
   y = MatMul (f, vq)
}}"""
    )
    conv, dense = layer_bops(model)
    # Conv: 2 filters of 3x3x1, 13 of 18 weights non-zero, 7-bit input, 2x2 output positions.
    assert (conv.n, conv.m, conv.positions, conv.weight_bits, conv.input_bits) == (9, 2, 4, 3, 7)
    assert conv.nonzero_fraction == 14 / 18
    assert conv.bops == pytest.approx(4 * 2 * 9 * (14 / 18 * 7 * 3 + 7 + 3 + math.log2(9)))
    # Dense: 8 -> 3, 8 of 24 non-zero, 5-bit input (the activation quantizer before the pool).
    assert (dense.n, dense.m, dense.positions, dense.weight_bits, dense.input_bits) == (8, 3, 1, 3, 5)
    assert dense.bops == 3 * 8 * (8 / 24 * 5 * 3 + 5 + 3 + 3)


def test_folded_weights_keep_their_bits_and_the_report_has_totals(tmp_path):
    model = load_onnx(REPO / "examples" / "jet_tagger" / "jet_tagger.onnx")
    before = layer_bops(model)
    PassManager.parse("default").run(model)  # weights folded by fold-quant: bits from annotations
    after = layer_bops(model)
    assert [(layer.n, layer.m, layer.weight_bits, layer.input_bits) for layer in after] == [
        (16, 64, 6, 8), (64, 32, 6, 8), (32, 32, 6, 8), (32, 5, 6, 8)
    ]
    assert [layer.bops for layer in after] == [layer.bops for layer in before]


def test_compile_report_lists_bops(tmp_path, capsys):
    import json

    from hawqc.cli import main

    assert main([str(REPO / "examples" / "jet_tagger" / "jet_tagger.onnx"), "-o", str(tmp_path / "p")]) == 0
    report = json.loads((tmp_path / "p" / "hawqc_report.json").read_text())
    layers = report["bops"]["layers"]
    assert [layer["name"] for layer in layers] == ["fc1_matmul", "fc2_matmul", "fc3_matmul", "fc4_matmul"]
    assert report["bops"]["total"] == pytest.approx(sum(layer["bops"] for layer in layers))


def test_value_preserving_ops_come_from_the_traits_table() -> None:
    """The ops an activation's bits are looked up through: those that select (but not Concat,
    which joins several inputs), Relu and Dropout, standard or channels-last."""
    from hawqc.report.bops import VALUE_PRESERVING_OPS

    standard = {"Reshape", "Flatten", "MaxPool", "GlobalMaxPool", "Relu", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Resize", "Dropout"}
    assert {op for domain, op in VALUE_PRESERVING_OPS if domain == ""} == standard
    assert {op for domain, op in VALUE_PRESERVING_OPS if domain != ""} == {"MaxPool", "GlobalMaxPool"}
