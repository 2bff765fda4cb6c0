"""The op-knowledge layer (`hawqc.ir.ops`, `hawqc.ir.grid`): views of quantizers, windows and
BatchNorm with their defaults, the traits table, the grid exponents."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from hawqc.errors import UnsupportedModelError
from hawqc.ir.grid import element_exponents, exact_type, finest_exponent
from hawqc.ir.io import parse_text
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import channels_last_op, onnx_op, op_key, qonnx_op
from hawqc.ir.ops.quantizer import code_bounds, quantizer
from hawqc.ir.ops.traits import Trait, has_trait, keys_with, ops_with
from hawqc.ir.ops.window import Windows

HEADER = '<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : {qonnx}]>\n'


def _nodes(body: str, qonnx: int = 1) -> dict:
    model = parse_text(HEADER.format(qonnx=qonnx) + body)
    return {node.outputs[0].name: node for node in model.graph}


QUANTIZERS = """
g (float[1,4] x) => (float[1,4] a, float[1,4] b, float[1,4] c, float[1,4] d, float[1,4] e)
   <float s = {0.25}, float[4] sc = {0.5, 0.25, 0.25, 0.125}, float z = {0}, float b4 = {4}, float b1 = {1}, float b8 = {8}>
{
   a = qonnx.custom_op.general.Quant (x, s, z, b4)
   b = qonnx.custom_op.general.IntQuant <signed: int = 0, narrow: int = 1, rounding_mode: string = "floor"> (x, sc, z, b4)
   c = qonnx.custom_op.general.Quant <signed: int = 1> (x, s, z, b1)
   d = qonnx.custom_op.general.BipolarQuant (x, s)
   e = qonnx.custom_op.general.Trunc (x, s, z, b8, b4)
}
"""


def test_quantizer_view_reads_defaults_and_parameters() -> None:
    nodes = _nodes(QUANTIZERS)
    a = quantizer(nodes["a"])
    assert a is not None and a.layout == "Quant"
    assert (a.signed, a.narrow, a.rounding_mode, a.bits, a.code_bounds) == (True, False, "ROUND", 4, (-8, 7))
    assert a.per_tensor and a.channel_axis(2) is None and not a.is_bipolar
    b = quantizer(nodes["b"])
    assert (b.signed, b.narrow, b.rounding_mode, b.rounding_mode_as_written) == (False, True, "FLOOR", "floor")
    # qonnx's code narrows unsigned quantizers at the top.
    assert b.code_bounds == (0, 14) and not b.per_tensor and b.channel_axis(2) == 1
    assert b.annotation().integer_range() == b.code_bounds
    c, d = quantizer(nodes["c"]), quantizer(nodes["d"])
    assert c.is_bipolar and c.code_bounds == (-1, 1)
    assert d.is_bipolar and d.code_bounds == (-1, 1) and d.bits == 1 and float(d.zero_point) == 0
    e = quantizer(nodes["e"])
    assert e.layout == "Trunc v1" and e.rounding_mode == "FLOOR" and e.bits == 4
    assert int(e.constant("in_bit_width")) == 8 and e.input("out_scale") is None and e.annotation() is None


def test_trunc_v2_layout_follows_the_qonnx_domain_version() -> None:
    body = """
g (float[1,4] x) => (float[1,4] e)
   <float s = {0.25}, float z = {0}, float b4 = {4}, float b8 = {8}, float os = {1}>
{
   e = qonnx.custom_op.general.Trunc (x, s, z, b8, os, b4)
}
"""
    e = quantizer(_nodes(body, qonnx=2)["e"])
    assert e.layout == "Trunc v2" and e.expected_inputs == 6
    assert float(e.constant("out_scale")) == 1 and e.bits == 4
    # Before normalization, the version of the alias the node is written in.
    alias = parse_text(
        '<ir_version: 8, opset_import: ["" : 17, "onnx.brevitas" : 2]>\n' + body.replace("qonnx.custom_op.general.", "onnx.brevitas.")
    )
    assert quantizer(next(iter(alias.graph))).layout == "Trunc v2"


def test_quantizer_view_of_other_nodes_and_non_constant_parameters() -> None:
    body = """
g (float[1,4] x, float s) => (float[1,4] a, float[1,4] r)
   <float z = {0}, float b4 = {4.5}>
{
   a = qonnx.custom_op.general.Quant (x, s, z, b4)
   r = Relu (x)
}
"""
    nodes = _nodes(body)
    assert quantizer(nodes["r"]) is None
    a = quantizer(nodes["a"])
    assert a.scale is None and a.bits is None and a.code_bounds is None and a.annotation() is None


def test_code_bounds() -> None:
    assert code_bounds(8, True, False) == (-128, 127)
    assert code_bounds(8, True, True) == (-127, 127)
    assert code_bounds(3, False, False) == (0, 7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_code_bounds_of_a_bit_width_tensor_are_qonnx_bit_for_bit(dtype) -> None:
    """On a bit-width tensor the bounds are qonnx's, in the tensor's dtype: in float32 a wide
    bound rounds (25-bit unsigned narrow: 2**25 - 2 is exact, 2**25 - 1 - 1 would not be)."""
    from qonnx.custom_op.general.quant import max_int, min_int

    for bits in range(1, 63):
        for signed in (False, True):
            for narrow in (False, True):
                tensor = np.asarray(bits, dtype=dtype)
                low, high = code_bounds(tensor, signed, narrow)
                expected = min_int(signed, narrow, tensor), max_int(signed, narrow, tensor)
                for got, want in zip((low, high), expected):
                    assert np.asarray(got).dtype == np.asarray(want).dtype and np.array_equal(got, want), (bits, signed, narrow)
                if bits < 60:  # the exact bounds, from a Python int
                    assert code_bounds(bits, signed, narrow) == (min_int(signed, narrow, bits), max_int(signed, narrow, bits))


WINDOWS = """
g (float[1,2,5,5] x) => (float[1,2,3,3] p, float[1,2,5,5] q, float[1,2,2,2] r)
{
   p = MaxPool <kernel_shape: ints = [3, 3], strides: ints = [2, 2], pads: ints = [1, 1, 1, 1]> (x)
   q = AveragePool <kernel_shape: ints = [3, 3], auto_pad: string = "SAME_UPPER", count_include_pad: int = 1> (x)
   r = MaxPool <kernel_shape: ints = [2, 2], strides: ints = [2, 2], pads: ints = [0, 0]> (x)
}
"""


def test_window_view_defaults_and_padding() -> None:
    nodes = _nodes(WINDOWS)
    p = Windows.read(nodes["p"])
    assert p.kernel == (3, 3) and p.dilations_or_default(2) == (1, 1) and not p.ceil_mode and p.group == 1
    assert p.pads_for((5, 5)) == (1, 1, 1, 1) == p.fixed_pads(2)
    q = Windows.read(nodes["q"])
    assert q.depends_on_input_size and q.fixed_pads(2) is None and q.count_include_pad
    assert q.pads_for((5, 5)) == (1, 1, 1, 1)
    with pytest.raises(UnsupportedModelError, match="pads \\[0, 0\\] has 2 values, expected 4"):
        Windows.read(nodes["r"])


def test_batch_norm_view() -> None:
    body = """
g (float[1,2] x) => (float[1,2] y)
   <float[2] g = {1, 2}, float[2] b = {0, 1}, float[2] m = {0, 0}, float[2] v = {1, 3}>
{
   y = BatchNormalization <epsilon: float = 1> (x, g, b, m, v)
}
"""
    view = batch_norm(_nodes(body)["y"])
    assert view.epsilon == 1 and view.inference_mode and view.channel_axis(2) == 1
    a, b = view.coefficients()
    np.testing.assert_array_equal(a, np.array([1 / np.sqrt(2), 1.0], np.float32))
    np.testing.assert_array_equal(b, np.array([0, 1], np.float32))


def test_traits_table() -> None:
    assert ops_with(Trait.CHANNELS_FIRST) == {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization"}
    assert ops_with(Trait.CHANNELS_LAST, "qonnx.custom_op.channels_last") == ops_with(Trait.CHANNELS_FIRST)
    assert ops_with(Trait.REARRANGES) == {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}
    assert ops_with(Trait.REARRANGES) <= ops_with(Trait.SELECTS)
    assert ops_with(Trait.NEW_SHAPE) == {"Flatten", "Reshape", "Squeeze", "Unsqueeze"}
    # What hardware mode runs with semantic mode's dtype-generic kernels.
    assert ops_with(Trait.MOVES_DATA) == {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Resize", "Pad"}
    assert {("qonnx.custom_op.general", op) for op in ("Quant", "IntQuant", "BipolarQuant", "Trunc")} == keys_with(Trait.QUANTIZER)
    nodes = _nodes(QUANTIZERS)
    assert has_trait(nodes["a"], Trait.QUANTIZER | Trait.ELEMENTWISE)


def test_grid_exponents() -> None:
    values = np.array([0.5, 0.75, 3, 0, -0.125, np.inf], np.float32)
    assert element_exponents(values)[:5].tolist()[:3] == [-1, -2, 0]
    assert finest_exponent(values) == -3
    assert finest_exponent(np.zeros(3)) is None
    assert str(exact_type(values[:5])) == "fixed<6,3,TRN,WRAP>"
    assert str(exact_type(np.zeros(2))) == str(exact_type(np.zeros(1)))


def test_fresh_names_avoid_the_graph_and_the_given_names() -> None:
    from hawqc.ir.names import FreshNames

    nodes = _nodes(QUANTIZERS)
    graph = nodes["a"].graph
    names = FreshNames(graph, used={"w"})
    assert names("a") == "a_1" and names("a") == "a_2" and names("w") == "w_1" and names("new") == "new"
    counted_from_two = FreshNames(first_suffix=2)
    assert [counted_from_two("v") for _ in range(3)] == ["v", "v_2", "v_3"]


def test_bipolar_annotation_takes_the_default_rounding_mode() -> None:
    # A BipolarQuant does not round: its annotation (what fold-quant records) says ROUND, the default.
    d = quantizer(_nodes(QUANTIZERS)["d"])
    annotation = d.annotation()
    assert annotation is not None and annotation.rounding_mode == "ROUND"
    assert (annotation.bits, annotation.signed, annotation.narrow) == (1, True, False)


def test_code_quantizers_and_op_types() -> None:
    from hawqc.ir.domains import QONNX_DOMAIN
    from hawqc.ir.ops.keys import op_types
    from hawqc.ir.ops.quantizer import CODE_QUANTIZERS, INTEGER_QUANTIZERS

    assert op_types(CODE_QUANTIZERS, QONNX_DOMAIN) == {"Quant", "IntQuant", "BipolarQuant"}
    assert op_types(INTEGER_QUANTIZERS, QONNX_DOMAIN) == {"Quant", "IntQuant"}
    assert op_types(CODE_QUANTIZERS, "") == frozenset()


def test_op_sets_read_from_the_traits_are_the_hand_written_sets_they_replace() -> None:
    # Each set below was written out by hand in its module; the traits table must give exactly it.
    from hawqc.ir import default_precision, shape_inference
    from hawqc.ir.layout import CHANNELS_LAST_OPS
    from hawqc.passes import channels_last, fold_constants, fold_quant, fuse_bn, hawq_export_layers

    cl = "qonnx.custom_op.channels_last"
    assert CHANNELS_LAST_OPS == {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization"}
    assert channels_last.IMAGE_OPS == CHANNELS_LAST_OPS
    assert channels_last.ELEMENTWISE_OPS == {
        "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Round",
        "Floor", "Ceil", "Abs", "Neg", "Sign", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Elu", "Selu",
        "Celu", "Softplus", "Softsign", "Identity", "Cast", "Not", "IsNaN", "IsInf", "Dropout",
        "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Equal", "Less",
        "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "BitShift",
    }  # fmt: skip
    assert channels_last.ELEMENTWISE_QONNX_OPS == {"Quant", "IntQuant", "BipolarQuant", "Trunc"}
    assert channels_last.SOFTMAX_OPS == {"Softmax", "LogSoftmax", "Hardmax"}
    assert fold_quant.SHAPE_OPS == {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"}
    assert fold_quant._SELECTING == {
        ("", op) for op in ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Relu", "MaxPool",
                            "GlobalMaxPool", "Resize", "Concat")
    } | {(cl, "MaxPool"), (cl, "GlobalMaxPool")}  # fmt: skip
    selecting = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "MaxPool", "GlobalMaxPool")
    # Channels-last twins exist of the max pools only, so those are the only channels-last selections.
    assert hawq_export_layers.SELECTION_OPS == {("", op) for op in selecting} | {(cl, "MaxPool"), (cl, "GlobalMaxPool")}
    assert fuse_bn.LAYER_OPS == {("", "Conv"), ("", "MatMul"), ("", "Gemm"), (cl, "Conv")}
    assert fuse_bn.BN_DOMAINS == ("", cl)
    assert fold_constants.NEVER_FOLD == {
        "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "If",
        "Loop", "Scan",
    }  # fmt: skip
    assert default_precision.ARITHMETIC_OPS == {
        "MatMul", "Conv", "Add", "Sub", "Mul", "Div", "LeakyRelu", "BatchNormalization", "AveragePool", "GlobalAveragePool",
    }  # fmt: skip
    assert shape_inference.SHAPE_PRESERVING_QONNX_OPS == {"Quant", "IntQuant", "BipolarQuant", "Trunc", "MultiThreshold"}


def test_op_keys_canonicalize_the_domain() -> None:
    x = ir.Value(name="x")
    nodes = [ir.Node(domain, op, [x]) for domain, op in (("onnx.brevitas", "Quant"), ("ai.onnx", "Relu"), ("qonnx.custom_op.channels_last", "MaxPool"))]
    assert [op_key(node) for node in nodes] == [qonnx_op("Quant"), onnx_op("Relu"), channels_last_op("MaxPool")]
    assert channels_last_op("MaxPool") == ("qonnx.custom_op.channels_last", "MaxPool")


def _exact_type_by_fractions(values: np.ndarray):
    """The narrowest exact type computed value by value with Python's exact rationals (what the
    hls4ml planner computed before `hawqc.ir.grid.exact_type`): the reference."""
    from fractions import Fraction

    from hawqc.ir.qtypes import FixedType

    values = np.asarray(values, dtype=np.float64).reshape(-1)
    nonzero = [float(v) for v in values if v != 0]
    if not nonzero:
        return FixedType.covering(0, 0, 0)

    def lsb(value: float) -> int:
        numerator, denominator = Fraction(value).as_integer_ratio()
        exponent = -(denominator.bit_length() - 1)
        while numerator % 2 == 0:
            numerator //= 2
            exponent += 1
        return exponent

    return FixedType.covering(Fraction(float(values.min())), Fraction(float(values.max())), min(lsb(v) for v in nonzero))


@pytest.mark.parametrize(
    "values",
    [
        [5e-324, -5e-324, 3 * 5e-324],  # subnormals: the finest grid there is
        [2.2250738585072014e-308, -1.5 * 2.2250738585072014e-308],  # the smallest normal, and a neighbour
        [-0.0, 0.0, -0.0],  # zeros of both signs only
        [-0.0, 0.75, 0.0, -3.5],  # mixed zeros
        [-1.0, -2.0**60, -(2.0**-40)],  # negative only, wide
        [1e300, 3.0, -(2.0**53 + 2)],  # large values on coarse grids
        [np.float32(0.1), np.float32(-1 / 3)],  # float32 values widened
        [7.0],
    ],
)
def test_exact_type_equals_the_value_by_value_reference(values) -> None:
    array = np.asarray(values, dtype=np.float64)
    assert exact_type(array) == _exact_type_by_fractions(array)
    assert exact_type(array.reshape(-1, 1)) == _exact_type_by_fractions(array)


def test_integer_parameters_of_a_quant() -> None:
    nodes = _nodes(QUANTIZERS)
    scale, zero_point, bits = quantizer(nodes["b"]).integer_parameters()
    assert scale.tolist() == [0.5, 0.25, 0.25, 0.125] and float(zero_point) == 0 and int(bits) == 4
    # Not a Quant / IntQuant, or a parameter the reader cannot read: None.
    assert quantizer(nodes["d"]).integer_parameters() is None
    assert quantizer(nodes["e"]).integer_parameters() is None
    assert quantizer(nodes["a"]).integer_parameters(lambda value: None) is None
