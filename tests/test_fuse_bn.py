"""fuse-bn: every rewrite keeps the semantic results bit for bit, or (float weights) reports its error.

Translation validation runs the semantic executor before and after the pass and compares raw bits.
The threshold rewrites are also checked where they are most fragile: on each threshold the pass
found and on the float32 values right next to it, on infinities, and on inputs of every magnitude.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from hawqc.errors import UnsupportedModelError
from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir.io import to_text
from hawqc.ir.op_arithmetic import batch_norm_coefficients
from hawqc.passes.fuse_bn import (
    FloatFoldResult,
    FuseBatchNorm,
    float_keys,
    from_keys,
)
from hawqc.passes.manager import PassManager
from hawqc.passes.validation import TranslationValidationError
from hawqc.sim import Executor
from hawqc.sim.ops_threshold import multithreshold
from hawqc.sim.qonnx_oracle import QonnxOracle

QONNX = "qonnx.custom_op.general"
CL = "qonnx.custom_op.channels_last"
HEADER = f'<ir_version: 8, opset_import: ["" : 17, "{QONNX}" : 1, "{CL}" : 1]>'
QUANT = f'{QONNX}.Quant <signed: int = 1, narrow: int = 1, rounding_mode: string = "ROUND">'
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def floats(values) -> str:
    """A tensor literal that parses back to exactly these float32 values."""
    return ",".join(repr(float(v)) for v in np.asarray(values, dtype=np.float32).reshape(-1))


def bn_params(gamma, beta, mean, var) -> str:
    c = len(gamma)
    return ", ".join(
        f"float[{c}] {name} = {{{floats(values)}}}"
        for name, values in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))
    )


def bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(f"u{array.dtype.itemsize}")


def assert_bit_identical(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, want.dtype, got.shape, want.shape)
    differs = bits(got) != bits(want)
    if differs.any():
        first = tuple(int(i) for i in np.argwhere(differs)[0])
        pytest.fail(f"{what}: {int(differs.sum())} elements differ, first at {first}: {want[first]!r} -> {got[first]!r}")


def run_pass(model: ir.Model, text: str = "fuse-bn", validate: int = 256) -> dict[str, int]:
    (record,) = PassManager.parse(text, validate=validate).run(model)
    return record.statistics


# ---------------------------------------------------------------------------------------------------
# The arithmetic the pass relies on
# ---------------------------------------------------------------------------------------------------


def onnxruntime_batchnorm(x: np.ndarray, gamma, beta, mean, var, epsilon: float) -> np.ndarray:
    node = oh.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], epsilon=epsilon)
    shape = [None, *x.shape[1:]]
    graph = oh.make_graph(
        [node], "bn",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in zip("gbmv", (gamma, beta, mean, var))],
    )  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 15)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


float32s = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)


@st.composite
def batchnorms(draw: st.DrawFn, channels: int = 4) -> tuple[np.ndarray, ...]:
    """BN parameters: negative and zero gamma, tiny and zero variance, large and tiny scales."""
    magnitude = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    gamma = np.array(draw(st.lists(st.one_of(float32s, st.just(0.0)), min_size=channels, max_size=channels)), np.float32)
    gamma *= np.float32(magnitude)
    gamma[np.abs(gamma) < np.finfo(np.float32).tiny] = 0  # ONNX text cannot spell subnormals
    beta = np.array(draw(st.lists(float32s, min_size=channels, max_size=channels)), np.float32)
    mean = np.array(draw(st.lists(float32s, min_size=channels, max_size=channels)), np.float32)
    var = np.array(draw(st.lists(st.sampled_from([0.0, 1e-8, 1e-3, 0.25, 1.0, 7.3, 1e4]), min_size=channels, max_size=channels)), np.float32)
    epsilon = draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    return gamma, beta, mean, var, epsilon


@PROPERTY
@given(params=batchnorms(channels=8))
def test_scale_offset_is_onnxruntime_batchnorm(params) -> None:
    """BN == fl(fl(x * a) + b) with the (a, b) the pass uses, against onnxruntime."""
    gamma, beta, mean, var, epsilon = params
    x = (np.random.default_rng(0).standard_normal((64, 8, 3)) * 100).astype(np.float32)
    a, b = batch_norm_coefficients(gamma, beta, mean, var, epsilon)
    with np.errstate(all="ignore"):
        mine = x * a[:, None] + b[:, None]
    assert_bit_identical(mine, onnxruntime_batchnorm(x, gamma, beta, mean, var, epsilon))


def test_float_keys_order_every_float32() -> None:
    values = np.array([-np.inf, -3e38, -1.0, -1e-45, -0.0, 0.0, 1e-45, 1.0, 3e38, np.inf], dtype=np.float32)
    keys = float_keys(values)
    assert np.all(np.diff(keys) >= 0) and keys[4] == keys[5] == 0
    assert np.all(np.diff(keys[[0, 1, 2, 3, 5, 6, 7, 8, 9]]) > 0)
    assert_bit_identical(from_keys(float_keys(values[values != 0])), values[values != 0])
    neighbours = from_keys(float_keys(np.float32([1.0, -1.0])) + 1)
    assert_bit_identical(neighbours, np.nextafter(np.float32([1.0, -1.0]), np.float32(np.inf)))


# ---------------------------------------------------------------------------------------------------
# The MultiThreshold kernel against qonnx
# ---------------------------------------------------------------------------------------------------


def multithreshold_proto(shape: list[int], thresholds: np.ndarray, **attributes) -> onnx.ModelProto:
    node = oh.make_node("MultiThreshold", ["v", "t"], ["y"], domain=QONNX, out_dtype="INT4", **attributes)
    graph = oh.make_graph(
        [node], "mt",
        [oh.make_tensor_value_info("v", TensorProto.FLOAT, shape)],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(thresholds, "t")],
    )  # fmt: skip
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(QONNX, 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    ("shape", "attributes", "channel_axis"),
    [
        ([5, 3, 4, 4], {}, 1),  # rank 4 without a layout: qonnx guesses NCHW
        ([5, 4, 3], {}, 2),  # rank 3 without a layout: qonnx guesses NWC
        ([5, 3], {"out_scale": 0.375, "out_bias": -1.25}, 1),
        ([5, 3, 6], {"data_layout": "NCW", "out_scale": 2.0, "out_bias": -1.0}, 1),
        ([5, 4, 4, 3], {"data_layout": "NHWC", "out_scale": -0.5}, 3),
        ([5, 3, 2, 2, 2], {"data_layout": "NCDHW"}, 1),
    ],
)
@pytest.mark.parametrize("global_thresholds", [False, True])
def test_multithreshold_matches_qonnx(shape, attributes, channel_axis, global_thresholds) -> None:
    rng = np.random.default_rng(len(shape))
    channels = 1 if global_thresholds else shape[channel_axis]
    thresholds = np.sort(rng.standard_normal((channels, 5)).astype(np.float32), axis=1)
    thresholds[0, 0] = -np.inf
    v = rng.standard_normal(shape).astype(np.float32)
    v.reshape(-1)[:4] = [np.nan, np.inf, -np.inf, -0.0]
    v.reshape(-1)[4:9] = thresholds.reshape(-1)[:5]  # exactly on thresholds: >= counts
    proto = multithreshold_proto(shape, thresholds, **attributes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = QonnxOracle(proto).run(v, per_sample=False)["y"]
    got = Executor(ir.from_proto(proto)).run(v)["y"]
    assert_bit_identical(got, want, "MultiThreshold")
    assert_bit_identical(
        multithreshold(v, thresholds, attributes.get("out_scale", 1.0), attributes.get("out_bias", 0.0), channel_axis),
        want,
        "multithreshold()",
    )


def test_multithreshold_refuses_thresholds_of_other_channels() -> None:
    proto = multithreshold_proto([2, 3], np.zeros((2, 1), np.float32))
    with pytest.raises(UnsupportedModelError, match="do not fit 3 channels"):
        Executor(ir.from_proto(proto)).run(np.zeros((2, 3), np.float32))


# ---------------------------------------------------------------------------------------------------
# Translation validation on small graphs: every rewrite is bit-exact
# ---------------------------------------------------------------------------------------------------

INPUT_QUANT = f'{QONNX}.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND">'
BN3 = bn_params([1.5, -0.7, 2.3], [0.1, -0.3, 1.7], [0.25, -1.5, 3.0], [0.9, 2.5, 1e-4])

GRAPHS = {
    # name: (text, the statistic that must count 1 or more)
    "conv2d_quantized_relu_quant": (f"""{HEADER}
g (float[1,2,5,5] x) => (float[1,3,5,5] y)
   <float xs = {{0.0625}}, float z = {{0}}, float xb = {{8}}, float wb = {{4}}, float ys = {{0.125}},
    float[3,2,3,3] w = {{{floats(np.linspace(-1.3, 1.1, 54))}}}, float[3,1,1,1] ws = {{0.25, 0.125, 0.0625}}, {BN3}>
{{
   xq = {INPUT_QUANT} (x, xs, z, xb)
   wq = {QUANT} (w, ws, z, wb)
   c = Conv <pads: ints = [1, 1, 1, 1]> (xq, wq)
   n = BatchNormalization (c, gamma, beta, mean, var)
   r = Relu (n)
   y = {INPUT_QUANT} (r, ys, z, xb)
}}""", "bns-to-requant"),
    "conv1d_bias_input_strided": (f"""{HEADER}
g (float[1,2,9] x) => (float[1,3,5] y)
   <float xs = {{0.0625}}, float z = {{0}}, float xb = {{8}}, float wb = {{3}}, float[3] cb = {{0.5, -0.25, 0.125}},
    float[3,2,3] w = {{{floats(np.linspace(-0.9, 1.2, 18))}}}, float ws = {{0.25}}, {BN3}>
{{
   xq = {INPUT_QUANT} (x, xs, z, xb)
   wq = {QUANT} (w, ws, z, wb)
   c = Conv <strides: ints = [2], pads: ints = [1, 1]> (xq, wq, cb)
   y = BatchNormalization <epsilon: float = 0.001> (c, gamma, beta, mean, var)
}}""", "bns-to-requant"),
    "depthwise_conv_bias_add": (f"""{HEADER}
g (float[1,3,4,4] x) => (float[1,3,4,4] y)
   <float xs = {{0.0625}}, float z = {{0}}, float xb = {{8}}, float wb = {{4}}, float[1,3,1,1] bias = {{0.5, -0.25, 0.75}},
    float[3,1,3,3] w = {{{floats(np.linspace(-1.0, 1.0, 27))}}}, float ws = {{0.125}}, {BN3}>
{{
   xq = {INPUT_QUANT} (x, xs, z, xb)
   wq = {QUANT} (w, ws, z, wb)
   c = Conv <group: int = 3, pads: ints = [1, 1, 1, 1]> (xq, wq)
   cb = Add (c, bias)
   y = BatchNormalization (cb, gamma, beta, mean, var)
}}""", "bns-to-requant"),
    "channels_last_conv": (f"""{HEADER}
g (float[1,4,4,2] x) => (float[1,4,4,3] y)
   <float xs = {{0.0625}}, float z = {{0}}, float xb = {{8}}, float wb = {{4}},
    float[3,1,1,2] w = {{1,-1,2,0.5,-2,1}}, float ws = {{0.5}}, {BN3}>
{{
   xq = {INPUT_QUANT} (x, xs, z, xb)
   wq = {QUANT} (w, ws, z, wb)
   c = {CL}.Conv (xq, wq)
   y = {CL}.BatchNormalization (c, gamma, beta, mean, var)
}}""", "bns-to-requant"),
    "matmul_and_gemm": (f"""{HEADER}
g (float[1,4] x) => (float[1,3] y, float[1,3] y2)
   <float xs = {{0.0625}}, float z = {{0}}, float xb = {{8}}, float wb = {{4}}, float[3] c = {{0.5, -0.25, 0.125}},
    float[4,3] w = {{{floats(np.linspace(-1.0, 1.3, 12))}}}, float[3,4] wt = {{{floats(np.linspace(1.2, -0.8, 12))}}},
    float ws = {{0.125}}, {BN3}>
{{
   xq = {INPUT_QUANT} (x, xs, z, xb)
   wq = {QUANT} (w, ws, z, wb)
   m = MatMul (xq, wq)
   y = BatchNormalization (m, gamma, beta, mean, var)
   wtq = {QUANT} (wt, ws, z, wb)
   gm = Gemm <transB: int = 1, beta: float = 0.5> (xq, wtq, c)
   y2 = BatchNormalization (gm, gamma, beta, mean, var)
}}""", "bns-to-requant"),
    "annotated_weight": (f"""<
   ir_version: 8,
   opset_import: ["" : 17, "{QONNX}" : 1],
   metadata_props: ["hawqc.quant.w": "{{\\"bits\\": 4, \\"signed\\": 1, \\"narrow\\": 1, \\"scale\\": 0.5, \\"zeropt\\": 0.0, \\"rounding_mode\\": \\"ROUND\\"}}"]
>
g (float[1,2,4,4] x) => (float[1,3,4,4] y)
   <float xs = {{0.0625}}, float z = {{0}}, float xb = {{8}}, float[3,2,1,1] w = {{1,-1,2,0.5,-2,1.5}}, {BN3}>
{{
   xq = {INPUT_QUANT} (x, xs, z, xb)
   c = Conv (xq, w)
   y = BatchNormalization (c, gamma, beta, mean, var)
}}""", "bns-to-requant"),
    "bipolar_negative_and_zero_gamma": (f"""{HEADER}
g (float[1,3,2,2] x) => (float[1,3,2,2] y)
   <float s = {{0.75}}, {bn_params([1.5, -0.7, 0.0], [0.1, -0.3, 1.7], [0.25, -1.5, 3.0], [0.9, 2.5, 1e-4])}>
{{
   n = BatchNormalization (x, gamma, beta, mean, var)
   y = {QONNX}.BipolarQuant (n, s)
}}""", "bns-to-thresholds"),
    "bipolar_per_channel_and_one_bit_quant": (f"""{HEADER}
g (float[1,3] x) => (float[1,3] y, float[1,3] y1)
   <float[3] s = {{0.5, 0.25, 3}}, float z = {{0}}, float one = {{1}}, {BN3}>
{{
   n = BatchNormalization (x, gamma, beta, mean, var)
   y = {QONNX}.BipolarQuant (n, s)
   y1 = {QONNX}.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (n, s, z, one)
}}""", "bns-to-thresholds"),
    "ternary_then_conv_then_bn": (f"""{HEADER}
g (float[1,3,4] x) => (float[1,2,4] y)
   <float s = {{0.5}}, float z = {{0}}, float two = {{2}}, float[2,3,1] w = {{1,-1,0.5,2,0.25,-1}}, {BN3},
    float[2] g2 = {{1, 2}}, float[2] b2 = {{0.5, -0.5}}, float[2] m2 = {{0, 1}}, float[2] v2 = {{1, 1}}>
{{
   n = BatchNormalization (x, gamma, beta, mean, var)
   t = {QUANT} (n, s, z, two)
   c = Conv (t, w)
   y = BatchNormalization (c, g2, b2, m2, v2)
}}""", "bns-to-thresholds"),
    "channels_last_bipolar": (f"""{HEADER}
g (float[1,2,3] x) => (float[1,2,3] y)
   <float s = {{1}}, {BN3}>
{{
   n = {CL}.BatchNormalization (x, gamma, beta, mean, var)
   y = {QONNX}.BipolarQuant (n, s)
}}""", "bns-to-thresholds"),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_translation_validation(name: str) -> None:
    text, statistic = GRAPHS[name]
    model = load_onnx_text(text, source=name)
    statistics = run_pass(model, validate=256)
    assert statistics[statistic] >= 1, statistics
    remaining = [node.op_type for node in model.graph if node.op_type in ("BatchNormalization", "BipolarQuant")]
    if name != "ternary_then_conv_then_bn":  # its second BN follows a float-weight Conv: it stays
        assert remaining == [], remaining


def test_ternary_quantizer_outputs_negative_zero_that_no_multithreshold_can() -> None:
    """Why the ternary rewrite needs `zero_sign_unobservable`: on a graph output it would differ."""
    text = f"""{HEADER}
g (float[1,1] x) => (float[1,1] y)
   <float s = {{1}}, float z = {{0}}, float two = {{2}}, {bn_params([1], [0], [0], [1])}>
{{
   n = BatchNormalization <epsilon: float = 0> (x, gamma, beta, mean, var)
   y = {QUANT} (n, s, z, two)
}}"""
    model = load_onnx_text(text)
    x = np.array([[-0.25]], np.float32)
    assert np.signbit(Executor(model).run(x)["y"][0, 0])  # round(-0.25) = -0.0
    statistics = run_pass(model, validate=0)
    assert statistics["ternary-kept-zero-sign"] == 1 and statistics["bns-to-thresholds"] == 0
    # The MultiThreshold it would have built: thresholds -0.5 and just above 0.5, levels -1, 0, +1.
    thresholds = np.array([[-0.5, np.nextafter(np.float32(0.5), np.float32(1))]], np.float32)
    assert not np.signbit(multithreshold(x, thresholds, 1.0, -1.0)[0, 0])


@pytest.mark.parametrize(
    ("after", "converted"),
    [
        ("y = Relu (t)", False),  # Relu keeps -0.0: the output would show it
        ("r = Relu (t)\n   y = Add (r, c)", True),  # adding a constant without -0.0 erases it
        ("r = Relu (t)\n   y = Add (r, negzero)", False),  # -0.0 + -0.0 is -0.0
        ("r = Relu (t)\n   f = Flatten (r)\n   y = Quant <signed: int = 1, narrow: int = 0> (f, s, z, eight)", True),
        # A sum of zeros may keep their sign; the analysis does not rely on how BLAS starts its sums.
        ("y = MatMul (t, w)", False),
        ("m = MatMul (t, w)\n   y = Add (m, c)", True),
    ],
)
def test_ternary_rewrite_only_where_the_sign_of_zero_cannot_show(after: str, converted: bool) -> None:
    """Most inputs land in the ternary quantizer's -0.0 (tiny gamma, negative beta): translation
    validation sees any rewrite that lets that zero's sign reach the output."""
    after = after.replace("Quant <", f"{QONNX}.Quant <")
    text = f"""{HEADER}
g (float[1,2] x) => (float[1,2] y)
   <float s = {{0.5}}, float z = {{0}}, float two = {{2}}, float eight = {{8}}, float[2,2] w = {{1,2,0.5,1}},
    float[2] c = {{0, 0.25}}, float[2] negzero = {{-0.0, 1}}, {bn_params([0.01, -0.02], [-0.1, -0.05], [0, 0.5], [1, 1])}>
{{
   n = BatchNormalization (x, gamma, beta, mean, var)
   t = {QUANT} (n, s, z, two)
   {after}
}}"""
    model = load_onnx_text(text)
    statistics = run_pass(model, validate=512)
    assert statistics["bns-to-thresholds"] == int(converted), statistics
    assert statistics.get("ternary-kept-zero-sign", 0) == int(not converted)


def test_no_match_leaves_the_graph_untouched() -> None:
    text = f"""{HEADER}
g (float[1,3] x, float[3,3] wr) => (float[1,3] y, float[1,3] y2)
   <{BN3}, float s = {{0.5}}, float z = {{0}}, float three = {{3}}>
{{
   r = Relu (x)
   y = BatchNormalization (r, gamma, beta, mean, var)
   m = MatMul (x, wr)
   n = BatchNormalization (m, gamma, beta, mean, var)
   y2 = {QUANT} (n, s, z, three)
}}"""
    model = load_onnx_text(text)
    before = to_text(model)
    result = FuseBatchNorm().run(model)
    assert not result.changed
    assert result.statistics["bns-kept"] == 2
    assert to_text(model) == before


# ---------------------------------------------------------------------------------------------------
# Thresholds, property-style: on and next to every threshold, at every magnitude
# ---------------------------------------------------------------------------------------------------

QUANTIZERS = {
    "bipolar": f"{QONNX}.BipolarQuant (n, s)",
    "one_bit": f'{QONNX}.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (n, s, z, one)',
    **{
        f"ternary_{mode.lower()}": f'{QONNX}.Quant <signed: int = 1, narrow: int = 1, rounding_mode: string = "{mode}"> (n, s, z, two)'
        for mode in ("ROUND", "FLOOR", "CEIL", "HALF_UP", "DOWN")
    },
}
LAYOUTS = {  # input shape with the channels C, which BN, and the shape of a per-channel scale
    "NC": ("[1,{c}]", "BatchNormalization", "[{c}]"),
    "NCHW": ("[1,{c},1,1]", "BatchNormalization", "[{c},1,1]"),
    "NWC": ("[1,1,{c}]", f"{CL}.BatchNormalization", "[{c}]"),
}


def threshold_graph(params, quantizer: str, layout: str, scale: np.ndarray) -> str:
    gamma, beta, mean, var, epsilon = params
    c = len(gamma)
    shape, bn, scale_shape = (part.format(c=c) for part in LAYOUTS[layout])
    scale_type = f"float{scale_shape}" if scale.size > 1 else "float"
    # The Add of a constant without -0.0 makes the ternary quantizer's -0.0 unobservable.
    return f"""{HEADER}
g (float{shape} x) => (float{shape} y)
   <{scale_type} s = {{{floats(scale)}}}, float z = {{0}}, float one = {{1}}, float two = {{2}}, float k = {{0.25}},
    {bn_params(gamma, beta, mean, var)}>
{{
   n = {bn} <epsilon: float = {float(np.float32(epsilon))!r}> (x, gamma, beta, mean, var)
   q = {QUANTIZERS[quantizer]}
   y = Add (q, k)
}}"""


def probing_inputs(model: ir.Model, channels: int, rng: np.random.Generator) -> np.ndarray:
    """[N, C] inputs: each threshold the pass chose and its float32 neighbours, infinities, signed
    zeros, and random values from 1e-6 to 1e6 in magnitude (x = sign * u for the thresholded u)."""
    initializers = model.graph.initializers
    thresholds = next(v.const_value.numpy() for name, v in initializers.items() if name.endswith("thresholds"))
    signs = next((v.const_value.numpy().reshape(-1) for name, v in initializers.items() if name.endswith("signs")), None)
    signs = np.ones(channels, np.float32) if signs is None else np.where(signs == 0, 1, signs).astype(np.float32)
    keys = float_keys(thresholds)  # [C, T]
    near = [from_keys(np.clip(keys + step, -0x7F800000, 0x7F800000)) for step in (-2, -1, 0, 1, 2)]
    u = np.concatenate(near, axis=1).T  # [5T, C]
    special = np.array([np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38], np.float32)
    random = rng.standard_normal((200, channels)) * 10.0 ** rng.uniform(-6, 6, (200, 1))
    x = np.concatenate([u * signs, np.repeat(special[:, None], channels, 1), random.astype(np.float32)])
    return x.astype(np.float32)


@PROPERTY
@given(
    params=batchnorms(channels=4),
    quantizer=st.sampled_from(sorted(QUANTIZERS)),
    layout=st.sampled_from(sorted(LAYOUTS)),
    per_channel=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_thresholds_are_exact(params, quantizer: str, layout: str, per_channel: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scale = (2.0 ** rng.integers(-4, 3, 4) if per_channel else np.array(0.375)).astype(np.float32)
    model = load_onnx_text(threshold_graph(params, quantizer, layout, scale))
    reference = Executor(model)
    statistics = run_pass(model, validate=64)
    assert statistics["bns-to-thresholds"] == 1, statistics
    assert [node.op_type for node in model.graph if node.op_type in ("BatchNormalization", "Quant", "BipolarQuant")] == []
    x = probing_inputs(model, 4, rng).reshape(-1, *[d for d in model.graph.inputs[0].shape][1:])
    with np.errstate(all="ignore"):
        want = reference.run(x)["y"]
        got = Executor(model).run(x)["y"]
    if quantizer.startswith("ternary"):
        # A NaN out of the BN (only from 0 * inf, a channel with gamma 0 fed an infinity) stays NaN
        # through Quant; a MultiThreshold counts it at the lowest level (see the module docstring).
        keep = ~np.isnan(want)
        assert np.all(keep | np.isinf(x)), "NaN out of a finite input"
        want, got = want[keep], got[keep]
    assert_bit_identical(got, want, f"{quantizer} {layout}")


# ---------------------------------------------------------------------------------------------------
# Float weights: folded only on request, with the error measured and reported
# ---------------------------------------------------------------------------------------------------

FLOAT_WEIGHTS = f"""{HEADER}
g (float[1,2,6,6] x, float[1,4] v) => (float[1,3,6,6] y, float[1,3] yd, float[1,3] yg)
   <float[3,2,3,3] w = {{{floats(np.random.default_rng(1).standard_normal(54))}}}, float[3] cb = {{0.3, -0.2, 0.1}},
    float[4,3] wd = {{{floats(np.random.default_rng(2).standard_normal(12))}}},
    float[3,4] wg = {{{floats(np.random.default_rng(3).standard_normal(12))}}}, float[3] c = {{0.5, -1.5, 0.25}}, {BN3}>
{{
   cv = Conv <pads: ints = [1, 1, 1, 1]> (x, w, cb)
   y = BatchNormalization (cv, gamma, beta, mean, var)
   d = MatMul (v, wd)
   yd = BatchNormalization (d, gamma, beta, mean, var)
   gm = Gemm <transB: int = 1, alpha: float = 0.5, beta: float = 2.0> (v, wg, c)
   yg = BatchNormalization (gm, gamma, beta, mean, var)
}}"""


def test_float_weights_stay_by_default() -> None:
    model = load_onnx_text(FLOAT_WEIGHTS)
    statistics = run_pass(model, validate=64)
    assert statistics["float-bns-kept"] == 3 and statistics["bns-kept"] == 3


def test_float_weights_fold_on_request_with_the_error_reported() -> None:
    model = load_onnx_text(FLOAT_WEIGHTS)
    reference = Executor(model)
    result = FuseBatchNorm(fold_float_weights=True, error_samples=32).run(model)
    assert isinstance(result, FloatFoldResult) and result.changed
    assert result.statistics["float-bns-folded"] == 3 and result.statistics["bns-kept"] == 0
    assert [node.op_type for node in model.graph] == ["Conv", "MatMul", "Add", "Gemm"]
    # The reported error is what the executor measures on the same inputs (drawn with seed 0).
    from hawqc.sim.inputs import draw_inputs

    inputs = draw_inputs(model, 32)
    before, after = reference.run(inputs), Executor(model).run(inputs)
    errors = {name: np.abs(after[name].astype(np.float64) - before[name]) for name in before}
    assert result.max_abs_error == max(float(e.max()) for e in errors.values())
    assert result.statistics["outputs-differing"] == sum(int(np.count_nonzero(e)) for e in errors.values())
    # Folding is not exact in float32 (so validation must refuse it), but close: a few ULPs.
    assert result.statistics["outputs-differing"] > 0
    assert 0 < result.max_rel_error < 1e-5
    assert 0 < result.statistics["max-error-ulps"] < 64


def test_translation_validation_rejects_the_float_fold() -> None:
    model = load_onnx_text(FLOAT_WEIGHTS)
    with pytest.raises(TranslationValidationError, match="fuse-bn"):
        run_pass(model, "fuse-bn{fold-float-weights=true}", validate=64)
