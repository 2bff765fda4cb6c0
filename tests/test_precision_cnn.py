"""Precision inference on channels-last CNN graphs: one test (or a few) per rule, exact types.

Every expected interval and type is worked out by hand in the comments. Where a rule keeps
intervals per channel, a MatMul that reads a single channel afterwards makes the per-channel
interval visible as a tensor interval.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from hawqc.errors import UnsupportedModelError
from hawqc.ir.io import parse_text
from hawqc.ir.op_arithmetic import batch_norm_coefficients
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import FixedType
from hawqc.ir.quant_annotation import QuantAnnotation, annotate
from hawqc.ir.shape_inference import infer_shapes
from hawqc.passes.manager import PassManager
from hawqc.sim import Executor
from hawqc.sim.ops_conv import sum_pool_channels_last

HEADER = '<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1, "qonnx.custom_op.channels_last" : 1]>'
CL = "qonnx.custom_op.channels_last"


def quant(signed: int = 1, narrow: int = 0, mode: str = "ROUND") -> str:
    return f'qonnx.custom_op.general.Quant <signed: int = {signed}, narrow: int = {narrow}, rounding_mode: string = "{mode}">'


def floats(values) -> str:
    return ", ".join(repr(float(v)) for v in np.asarray(values, dtype=np.float32).reshape(-1))


def model(signature: str, constants: str, body: str):
    """A graph from ONNX text; every graph has z = 0 and the bit widths b3..b8 at hand."""
    common = "float z = {0}, float b3 = {3}, float b4 = {4}, float b8 = {8}, float half = {0.5}, float one = {1}"
    text = f"{HEADER}\ng {signature}\n   <{common}{', ' if constants else ''}{constants}>\n{{\n{body}\n}}"
    return parse_text(text)


def F(x) -> Fraction:
    return Fraction(x)


# ---- Conv -----------------------------------------------------------------------------------------


def _shifted_conv(pads: str) -> object:
    """x -> Quant(3-bit unsigned, LSB 1) in [0, 7] -> + 8: [8, 15], all away from zero -> 3x3 Conv of ones."""
    return model(
        "(float[1,3,3,1] x) => (float[1,3,3,1] y)" if pads else "(float[1,3,3,1] x) => (float[1,1,1,1] y)",
        f"float[1,3,3,1] w = {{{floats(np.ones(9))}}}, float eight = {{8}}",
        f"""   xq = {quant(signed=0)} (x, one, z, b3)
   shifted = Add (xq, eight)
   y = {CL}.Conv {pads} (shifted, w)""",
    )


def test_conv_without_padding_sums_nine_products():
    result = infer_types(_shifted_conv(""))
    assert result.intervals["y"] == (F(72), F(135))
    assert result.types["y"] == FixedType(8, 8, False)
    # Every product is positive, so partial sums start at 0.
    assert result.accumulators["y"] == FixedType(8, 8, False)


def test_conv_padding_adds_zero_only_where_a_window_can_read_padding():
    """pads 1 on a 3x3 input: the eight outer kernel positions can fall on padding in some window
    (they add [0, 15]), the centre never does (it adds [8, 15]): [8, 135], not [0, 135]."""
    result = infer_types(_shifted_conv("<pads: ints = [1, 1, 1, 1]>"))
    assert result.intervals["y"] == (F(8), F(135))
    values = Executor(_shifted_conv("<pads: ints = [1, 1, 1, 1]>"), mode="hardware").run(
        np.full((2, 3, 3, 1), [[7.0]], dtype=np.float32) * np.array([0, 1], dtype=np.float32).reshape(2, 1, 1, 1)
    )["y"]
    # All-8 input: corner windows 4 * 8 = 32; all-15: the centre window 9 * 15 = 135 (attained).
    assert values.min() == 32 and values.max() == 135


def test_conv_interval_per_output_channel_with_bias_and_accumulator():
    """2x2 kernel on a 2x2 input (one window), 2 input and 2 output channels, x in [-4, 3.5].

    channel 0: eight weights 1 -> [-32, 28], + bias 0.25 -> [-31.75, 28.25];
    channel 1: eight weights -0.5 -> [-14, 16], + bias -1 -> [-15, 15].
    LSB 1/2 * 1/2 = 1/4 (the bias 0.25 is on it too): codes [-127, 113], 8 bits signed.
    Partial sums: channel 0 reaches -32 before the bias is added: code -128, still 8 bits."""
    w = np.concatenate([np.ones(8), np.full(8, -0.5)])
    graph = model(
        "(float[1,2,2,2] x) => (float[1,1,1,2] y)",
        f"float[2,2,2,2] w = {{{floats(w)}}}, float[2] cb = {{0.25, -1}}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = {CL}.Conv (xq, w, cb)""",
    )
    result = infer_types(graph)
    assert result.intervals["y"] == (F(-31.75), F(28.25))
    assert result.types["y"] == FixedType(8, 6, True)
    assert result.accumulators["y"] == FixedType(8, 6, True)
    np.testing.assert_array_equal(result.constants["w"].reshape(-1), w)
    # The extremes are attained: x all -4 gives -32 + 0.25 on channel 0, all 3.5 gives 28.25.
    out = Executor(graph, mode="hardware").run(np.array([-4.0, 3.5], dtype=np.float32).reshape(2, 1, 1, 1) * np.ones((2, 2, 2, 2), np.float32))["y"]
    assert out[:, 0, 0, 0].tolist() == [-31.75, 28.25]


def test_accumulator_is_wider_than_the_result_when_products_cancel():
    """x in [8, 15] (away from 0), one window of weights [+1, -1] per row of a 1x2 kernel:
    the result is in [8 - 15, 15 - 8] = [-7, 7], but a partial sum reaches 15 (or -15)."""
    graph = model(
        "(float[1,1,2,1] x) => (float[1,1,1,1] y)",
        "float[1,1,2,1] w = {1, -1}, float eight = {8}",
        f"""   xq = {quant(signed=0)} (x, one, z, b3)
   shifted = Add (xq, eight)
   y = {CL}.Conv (shifted, w)""",
    )
    result = infer_types(graph)
    assert result.intervals["y"] == (F(-7), F(7))
    assert result.types["y"] == FixedType(4, 4, True)
    assert result.accumulators["y"] == FixedType(5, 5, True)  # [-15, 15]


def test_depthwise_conv_keeps_channels_apart():
    """Channel 0 in [-4, 3.5], channel 1 scaled by 4: [-16, 14]. Depthwise 2x2 weights: 4 on
    channel 0 (4 * 4 * [-4, 3.5] = [-64, 56]), 0.25 on channel 1 (4 * 0.25 * [-16, 14] = [-16, 14]).
    Mixing the channels up would give 4 * 4 * [-16, 14] = [-256, 224]."""
    w = np.concatenate([np.full(4, 4.0), np.full(4, 0.25)])
    graph = model(
        "(float[1,2,2,2] x) => (float[1,1,1,2] y)",
        f"float[2,2,2,1] w = {{{floats(w)}}}, float[2] k = {{1, 4}}",
        f"""   xq = {quant()} (x, half, z, b4)
   xs = Mul (xq, k)
   y = {CL}.Conv <group: int = 2> (xs, w)""",
    )
    result = infer_types(graph)
    assert result.intervals["y"] == (F(-64), F(56))
    # LSB 1/2 * 1/4 (0.25 is the finest weight): codes [-512, 448], 10 bits.
    assert result.types["y"] == FixedType(10, 7, True)


def test_grouped_conv_reads_its_groups_channels():
    """4 input channels in 2 groups; channel c is scaled by 2**c. Output 0 reads channels 0, 1
    (weights 1: [-4, 3.5] + [-8, 7]), output 1 reads channels 2, 3 ([-16, 14] + [-32, 28])."""
    graph = model(
        "(float[1,1,1,4] x) => (float[1,1,1,2] y)",
        "float[2,1,1,2] w = {1, 1, 1, 1}, float[4] k = {1, 2, 4, 8}, float[2,1] pick0 = {1, 0}",
        f"""   xq = {quant()} (x, half, z, b4)
   xs = Mul (xq, k)
   y = {CL}.Conv <group: int = 2> (xs, w)
   first = MatMul (y, pick0)""",
    )
    result = infer_types(graph)
    assert result.intervals["y"] == (F(-48), F(42))
    assert result.intervals["first"] == (F(-12), F(10.5))


def test_channels_first_conv_is_refused_by_name():
    graph = model(
        "(float[1,1,2,2] x) => (float[1,1,1,1] y)",
        "float[1,1,2,2] w = {1, 1, 1, 1}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = Conv (xq, w)""",
    )
    with pytest.raises(UnsupportedModelError, match=r"\(Conv\): channels-first Conv .* run channels-last first"):
        infer_types(graph)


def test_annotated_weights_take_their_quantizers_type():
    """fold-quant leaves weights as plain initializers annotated with their Quant: the weight type is
    the quantizer's (8 bits, LSB 1/16) although the values need 3 bits; the accumulator comes from
    the values themselves."""
    graph = model(
        "(float[1,2] x) => (float[1,1] y)",
        "float[2,1] w = {0.25, -0.125}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = MatMul (xq, w)""",
    )
    weight = graph.graph.initializers["w"]
    annotate(weight, QuantAnnotation.from_arrays(8, True, False, np.float32(1 / 16), np.float32(0)))
    result = infer_types(graph)
    assert result.types["w"] == FixedType.from_quant(8, 1 / 16, True, False) == FixedType(8, 4, True, "RND_CONV", "SAT")
    # [-4, 3.5] * 0.25 + [-4, 3.5] * -0.125 = [-1, 0.875] + [-0.4375, 0.5] = [-1.4375, 1.375].
    assert result.intervals["y"] == (F(-1.4375), F(1.375))
    # Without the annotation the weight gets the narrowest type of its values.
    del weight.metadata_props["hawqc.quant"]
    assert infer_types(graph).types["w"] == FixedType(3, 0, True)


def test_annotation_with_a_float_scale_falls_back_to_the_exact_values():
    graph = model(
        "(float[1,2] x) => (float[1,1] y)",
        "float[2,1] w = {0.25, -0.125}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = MatMul (xq, w)""",
    )
    annotate(graph.graph.initializers["w"], QuantAnnotation.from_arrays(8, True, False, np.float32(0.3), np.float32(0)))
    assert infer_types(graph).types["w"] == FixedType(3, 0, True)


# ---- element-wise -----------------------------------------------------------------------------------


def _two_branches(op: str):
    """a: 4-bit LSB 1/2 in [-4, 3.5]; b: 8-bit unsigned LSB 1/8 in [0, 31.875]."""
    return model(
        "(float[1,4] x) => (float[1,4] y)",
        "float eighth = {0.125}",
        f"""   a = {quant()} (x, half, z, b4)
   b = {quant(signed=0)} (x, eighth, z, b8)
   y = {op} (a, b)""",
    )


def test_residual_add_is_the_exact_aligned_sum():
    result = infer_types(_two_branches("Add"))
    assert result.intervals["y"] == (F(-4), F(35.375))
    assert result.types["y"] == FixedType(10, 7, True)  # codes [-32, 283] at LSB 1/8
    assert "y" not in result.inexact


def test_sub_subtracts_intervals():
    result = infer_types(_two_branches("Sub"))
    assert result.intervals["y"] == (F(-35.875), F(3.5))
    assert result.types["y"] == FixedType(10, 7, True)  # codes [-287, 28]


def _scaled(k: str, op: str = "Mul"):
    return model(
        "(float[1,1,1,2] x) => (float[1,1,1,2] y)",
        f"float[2] k = {{{k}}}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = {op} (xq, k)""",
    )


def test_mul_by_power_of_two_constants_is_exact():
    result = infer_types(_scaled("0.25, 2"))
    # LSB 1/2 * 1/4; channel 0 in [-1, 0.875], channel 1 in [-8, 7]: codes [-64, 56], 7 bits.
    assert result.intervals["y"] == (F(-8), F(7))
    assert result.types["y"] == FixedType(7, 4, True)
    assert not result.inexact and not result.float_inexact


def test_mul_by_a_float_is_the_exact_dyadic_product_and_recorded_inexact():
    """0.3 in float32 is 10066330 * 2**-25 = 5033165 * 2**-24 (23 significant bits): the product's
    LSB is 2**-1 * 2**-24, and codes of 4 * 23 bits need more than float32's 24."""
    k32 = np.float32(0.3)
    result = infer_types(_scaled(f"0.75, {float(k32)!r}"))
    assert F(float(k32)) == Fraction(5033165, 2**24)
    assert result.types["y"].lsb_exponent == -25
    lo, hi = result.intervals["y"]
    assert (lo, hi) == (F(-3), F(2.625))  # [-4, 3.5] * 0.75: channel 0 dominates
    assert "y" in result.float_inexact
    assert "float32 rounds beyond 24" in result.inexact["y"]


def test_per_channel_grids_keep_small_products_exact():
    """k = [2**-10, 1]: the tensor's LSB is 2**-11, on which channel 1's codes (up to 7 * 2**11)
    would look wide, but each channel on its own grid needs 4 bits: float32 is exact."""
    result = infer_types(_scaled(f"{2.0**-10!r}, 1"))
    assert result.types["y"].lsb_exponent == -11
    assert not result.inexact


def test_add_after_an_inexact_product_is_judged_on_its_own_codes():
    graph = model(
        "(float[1,1,1,2] x) => (float[1,1,1,2] y)",
        f"float[2] k = {{0.75, {float(np.float32(0.3))!r}}}, float[2] b = {{0.5, 1024}}",
        f"""   xq = {quant()} (x, half, z, b4)
   m = Mul (xq, k)
   y = Add (m, b)""",
    )
    result = infer_types(graph)
    assert "m" in result.inexact and "y" in result.inexact
    graph_small = _scaled("0.75, 0.5")
    assert not infer_types(graph_small).inexact


def test_div_by_a_power_of_two_and_refused_otherwise():
    result = infer_types(_scaled("4, 0.5", op="Div"))
    # [-4, 3.5] / 4 and / 0.5: [-1, 0.875] and [-8, 7] at LSB 1/8.
    assert result.intervals["y"] == (F(-8), F(7))
    assert result.types["y"] == FixedType(7, 4, True)
    with pytest.raises(UnsupportedModelError, match=r"\(Div\): division by a constant that is not a power of two"):
        infer_types(_scaled("3, 1", op="Div"))


def _activation(node: str):
    return model(
        "(float[1,4] x) => (float[1,4] y)",
        "float six = {6}, float lo = {-0.75}",
        f"""   xq = {quant()} (x, one, z, b8)
   y = {node}""",
    )


def test_leaky_relu_scales_the_negative_side_exactly():
    # x in [-128, 127]; alpha 1/8: [-16, 127] at LSB 1/8.
    result = infer_types(_activation("LeakyRelu <alpha: float = 0.125> (xq)"))
    assert result.intervals["y"] == (F(-16), F(127))
    assert result.types["y"] == FixedType(11, 8, True)
    assert not result.inexact


def test_leaky_relu_with_a_float_alpha_is_recorded_inexact():
    result = infer_types(_activation("LeakyRelu <alpha: float = 0.1> (xq)"))
    alpha = F(float(np.float32(0.1)))
    assert result.intervals["y"] == (-128 * alpha, F(127))
    assert "y" in result.inexact


def test_clip_clamps_at_its_bounds_on_the_finer_grid():
    result = infer_types(_activation("Clip (xq, lo, six)"))
    assert result.intervals["y"] == (F(-0.75), F(6))
    assert result.types["y"] == FixedType(6, 4, True)  # LSB 1/4 for -0.75: codes [-3, 24]


def test_relu_of_a_residual_sum_drops_the_sign_bit():
    graph = model(
        "(float[1,4] x) => (float[1,4] y)",
        "",
        f"""   a = {quant()} (x, half, z, b4)
   s = Add (a, a)
   y = Relu (s)""",
    )
    result = infer_types(graph)
    assert result.types["s"] == FixedType(5, 4, True) and result.types["y"] == FixedType(4, 3, False)


# ---- pooling --------------------------------------------------------------------------------------


def _pool(node: str, shape: str = "[1,4,4,2]", out: str = "[1,2,2,2]"):
    return model(
        f"(float{shape} x) => (float{out} y)",
        "",
        f"""   xq = {quant()} (x, half, z, b4)
   y = {node} (xq)""",
    )


def test_max_pools_keep_the_interval_and_type():
    for node, out in ((f"{CL}.MaxPool <kernel_shape: ints = [2, 2], strides: ints = [2, 2]>", "[1,2,2,2]"),
                      (f"{CL}.GlobalMaxPool", "[1,1,1,2]")):  # fmt: skip
        result = infer_types(_pool(node, out=out))
        assert result.intervals["y"] == (F(-4), F(3.5))
        assert result.types["y"] == FixedType(4, 3, True)


def test_average_of_four_is_exact_two_bits_further_right():
    result = infer_types(_pool(f"{CL}.AveragePool <kernel_shape: ints = [2, 2], strides: ints = [2, 2]>"))
    # The mean of values in [-4, 3.5] lies in [-4, 3.5], at LSB 1/8: codes [-32, 28], 6 bits.
    assert result.intervals["y"] == (F(-4), F(3.5))
    assert result.types["y"] == FixedType(6, 3, True)
    # The window sums [-16, 14] in the same LSB: codes [-128, 112], 8 bits.
    assert result.accumulators["y"] == FixedType(8, 5, True)
    assert not result.inexact


def test_average_of_nine_truncates_toward_zero_and_is_recorded():
    result = infer_types(_pool(f"{CL}.GlobalAveragePool", "[1,3,3,2]", "[1,1,1,2]"))
    assert result.types["y"] == FixedType(4, 3, True)  # the sum's LSB, 1/2: [-4, 3.5]
    assert result.accumulators["y"] == FixedType(8, 7, True)  # sums of nine: [-36, 31.5]
    assert "truncates the quotient toward zero" in result.inexact["y"]
    graph = _pool(f"{CL}.GlobalAveragePool", "[1,3,3,2]", "[1,1,1,2]")
    x = np.zeros((1, 3, 3, 2), dtype=np.float32)
    x[0, 0, 0] = [-0.5, 3.5]
    x[0, 1, 1] = [-1.5, 1.0]
    hardware = Executor(graph, mode="hardware").run(x)["y"]
    # Channel 0: -2 / 9 = -0.22 truncates to 0 (floor would give -0.5); channel 1: 4.5 / 9 = 0.5.
    assert hardware.reshape(-1).tolist() == [0.0, 0.5]


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize(("kernel", "strides", "pads", "ceil"), [
    ([3, 3], [1, 1], [1, 1, 1, 1], 0), ([2, 2], [2, 2], [0, 0, 1, 1], 0), ([3, 2], [2, 2], [1, 0, 1, 1], 1),
])  # fmt: skip
def test_average_window_sizes_are_the_kernels(kernel, strides, pads, ceil, include_pad):
    """The divisors precision inference sees are the ones ops_conv divides by, window for window."""
    attributes = (f"<kernel_shape: ints = {kernel}, strides: ints = {strides}, pads: ints = {pads}, "
                  f"ceil_mode: int = {ceil}, count_include_pad: int = {include_pad}>")  # fmt: skip
    graph = _pool(f"{CL}.AveragePool {attributes}", "[1,5,4,1]", "[1,h,w,1]")
    _, counts = sum_pool_channels_last(
        np.ones((1, 5, 4, 1)), kernel=kernel, strides=strides, pads=pads, ceil_mode=bool(ceil),
        count_include_pad=bool(include_pad),
    )  # fmt: skip
    divisors = sorted({int(c) for c in counts.reshape(-1)})
    result = infer_types(graph)
    powers = all(d & (d - 1) == 0 for d in divisors)
    assert ("y" in result.inexact) == (not powers)
    if not powers:
        assert ", ".join(map(str, divisors)) in result.inexact["y"]
    else:
        assert result.types["y"].lsb_exponent == -1 - max(divisors).bit_length() + 1
    # Padding counted in the divisor pulls averages toward 0: the interval never leaves [-4, 3.5].
    lo, hi = result.intervals["y"]
    assert F(-4) <= lo and hi <= F(3.5)


# ---- BatchNormalization, Concat, Resize, Pad, reshapes ----------------------------------------------


def test_unfused_batchnorm_is_its_scale_then_its_offset():
    gamma, beta, mean, var = (np.array(v, dtype=np.float32) for v in ([1.5, -0.5], [0.25, 1.0], [0.5, -1.0], [4.0, 0.25]))
    a, b = batch_norm_coefficients(gamma, beta, mean, var, 1e-5)
    # onnxruntime's float32 steps, written out (contract: two roundings, no FMA).
    a_ref = (np.float32(1) / np.sqrt(var + np.float32(1e-5))).astype(np.float32) * gamma
    b_ref = beta - (mean * a_ref).astype(np.float32)
    assert a.tobytes() == a_ref.astype(np.float32).tobytes() and b.tobytes() == b_ref.astype(np.float32).tobytes()
    graph = model(
        "(float[1,2,2,2] x) => (float[1,2,2,2] y)",
        f"float[2] g = {{{floats(gamma)}}}, float[2] be = {{{floats(beta)}}}, float[2] m = {{{floats(mean)}}}, "
        f"float[2] v = {{{floats(var)}}}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = {CL}.BatchNormalization (xq, g, be, m, v)""",
    )
    result = infer_types(graph)
    per_channel = [sorted([F(-4) * F(float(a[c])) + F(float(b[c])), F(3.5) * F(float(a[c])) + F(float(b[c]))]) for c in range(2)]
    assert result.intervals["y"] == (min(p[0] for p in per_channel), max(p[1] for p in per_channel))
    x = np.array([-4.0, 3.5, 0.5, -0.5], dtype=np.float32).reshape(4, 1, 1, 1) * np.ones((4, 2, 2, 2), np.float32)
    hardware = Executor(graph, mode="hardware").run(x)["y"]
    expected = x.astype(np.float64) * a.astype(np.float64) + b.astype(np.float64)  # exact: 4 + 24 bits
    np.testing.assert_array_equal(hardware, expected)
    assert "y" in result.inexact  # x * a needs 4 + 24 bits: float32 rounds it


def test_concat_on_the_channel_axis_concatenates_the_channel_intervals():
    """a in [-4, 3.5] (LSB 1/2), b in [0, 1.875] (LSB 1/8): the type is their union at LSB 1/8,
    and channel 1 (b's) keeps b's interval: a MatMul reading it sees [0, 1.875]."""
    graph = model(
        "(float[1,1] x) => (float[1,1] y)",
        "float eighth = {0.125}, float[2,1] pick1 = {0, 1}",
        f"""   a = {quant()} (x, half, z, b4)
   b = {quant(signed=0)} (x, eighth, z, b4)
   c = Concat <axis: int = -1> (a, b)
   y = MatMul (c, pick1)""",
    )
    result = infer_types(graph)
    assert result.types["c"] == FixedType(6, 3, True)  # codes [-32, 28] at LSB 1/8
    assert result.intervals["y"] == (F(0), F(1.875))


def test_resize_and_pad():
    graph = model(
        "(float[1,2,2,1] x) => (float[1,6,4,1] y)",
        "float[4] scales = {1, 2, 2, 1}, int64[8] pads = {0, 1, 0, 0, 0, 1, 0, 0}, float fill = {5.25}",
        f"""   xq = {quant()} (x, half, z, b4)
   r = Resize <mode: string = "nearest"> (xq, , scales)
   y = Pad (r, pads, fill)""",
    )
    result = infer_types(graph)
    assert result.types["r"] == FixedType(4, 3, True)
    # The pad value joins the interval, on its own grid (1/4): [-4, 5.25], codes [-16, 21].
    assert result.intervals["y"] == (F(-4), F(5.25))
    assert result.types["y"] == FixedType(6, 4, True)


def test_flatten_tiles_channel_bounds_and_transpose_collapses_them():
    """Channel 0 in [-4, 3.5], channel 1 in [-0.5, 0.4375] (scaled by 1/8). Flattening [2, 2, 2]
    channels-last puts channel 1 at the odd features: feature 3 keeps [-0.5, 0.4375]. After a
    Transpose nobody knows which feature is which: the hull [-4, 3.5]."""
    graph = model(
        "(float[1,2,2,2] x) => (float[1,1] y)",
        f"float[2] k = {{1, 0.125}}, float[8,1] pick3 = {{{floats(np.eye(8)[3])}}}, "
        f"float[2,1] pick1 = {{0, 1}}",
        f"""   xq = {quant()} (x, half, z, b4)
   xs = Mul (xq, k)
   f = Flatten (xs)
   y = MatMul (f, pick3)
   t = Transpose <perm: ints = [0, 2, 1, 3]> (xs)
   y2 = MatMul (t, pick1)""",
    )
    result = infer_types(graph)
    assert result.intervals["y"] == (F(-0.5), F(0.4375))
    assert result.intervals["y2"] == (F(-4), F(3.5))


def test_reshape_that_splits_the_channel_axis_merges_its_bounds():
    graph = model(
        "(float[1,4] x) => (float[1,2,1] y)",
        "float[4] k = {1, 0.125, 2, 0.125}, int64[3] shape = {1, 2, 2}, float[2,1] pick1 = {0, 1}",
        f"""   xq = {quant()} (x, half, z, b4)
   xs = Mul (xq, k)
   r = Reshape (xs, shape)
   y = MatMul (r, pick1)""",
    )
    # Features 1 and 3 (both scaled by 1/8) become feature 1 of the new last axis.
    assert infer_types(graph).intervals["y"] == (F(-0.5), F(0.4375))


# ---- the pass -------------------------------------------------------------------------------------


def test_pass_annotates_every_typed_value_and_is_idempotent():
    graph = _shifted_conv("<pads: ints = [1, 1, 1, 1]>")
    infer_shapes(graph)  # the pipeline's graphs have their shapes; the manager verifies that
    manager = PassManager.parse("infer-precision")
    (record,) = manager.run(graph)
    assert record.changed
    values = {v.name: v for node in graph.graph for v in node.outputs} | dict(graph.graph.initializers)
    assert values["y"].metadata_props["hawqc.type"] == "ufixed<8,8,TRN,WRAP>"
    assert values["y"].metadata_props["hawqc.accum_type"] == "ufixed<8,8,TRN,WRAP>"
    assert values["xq"].metadata_props["hawqc.type"] == "ufixed<3,3,RND_CONV,SAT>"
    assert "hawqc.type" not in graph.graph.inputs[0].metadata_props  # the float input has no type
    assert "hawqc.type" not in values["z"].metadata_props  # nor do quantizer parameters
    (again,) = manager.run(graph)
    assert not again.changed
    # A stale annotation is corrected.
    values["y"].metadata_props["hawqc.type"] = "fixed<3,3,TRN,WRAP>"
    values["z"].metadata_props["hawqc.type"] = "fixed<3,3,TRN,WRAP>"
    (fixed,) = manager.run(graph)
    assert fixed.changed and fixed.statistics["annotations-changed"] == 2
    assert "hawqc.type" not in values["z"].metadata_props


def test_annotation_of_a_quantizer_without_a_fixed_point_type_falls_back_to_the_values():
    """A CEIL weight quantizer has no ap_fixed rounding mode, but its folded values are known exactly."""
    graph = model(
        "(float[1,2] x) => (float[1,1] y)",
        "float[2,1] w = {0.25, -0.125}",
        f"""   xq = {quant()} (x, half, z, b4)
   y = MatMul (xq, w)""",
    )
    annotate(graph.graph.initializers["w"], QuantAnnotation.from_arrays(8, True, False, np.float32(1 / 16), np.float32(0), "CEIL"))
    assert infer_types(graph).types["w"] == FixedType(3, 0, True)
