"""Semantic mode on the ops of convolutional networks, each against qonnx's execute_onnx, bit for bit.

Standard ops run through qonnx's executor (a fresh onnxruntime session per node, at the model's
opset); the graphs declare batch 1 and hawqc runs a larger batch, compared with qonnx on the whole
batch re-declared (or sample by sample where the batch rule matters). Convolutions are checked on
quantized data (small integers times powers of two), where every float32 sum is exact; pooling,
BatchNorm, Resize and the activations on float data too, with zeros of both signs, NaN and
infinities where onnxruntime's handling of them is part of the result.

Channels-last ops: qonnx runs its own channels-last Conv and MaxPool (with every attribute written
out, and no `ceil_mode`: qonnx 1.0.0 runs them at ONNX opset 1, see hawqc.sim.ops_conv); every
channels-last op is also checked against the standard op between two Transposes, run by qonnx.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir
import pytest
from conftest import data_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper

import hawqc
from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.sim import Executor
from hawqc.sim.qonnx_oracle import QonnxOracle

QONNX = "qonnx.custom_op.general"
FLOAT = TensorProto.FLOAT
RNG = np.random.default_rng(20261121)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------
# Graphs, data, comparison
# ---------------------------------------------------------------------------------------------------


def make_proto(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int | str] | None],
    outputs: dict[str, list[int | str] | None],
    initializers: dict[str, np.ndarray] | None = None,
    *,
    opset: int = 17,
    imports: dict[str, int] | None = None,
    output_types: dict[str, int] | None = None,
) -> onnx.ModelProto:
    output_types = output_types or {}
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info(n, FLOAT, s) for n, s in inputs.items()],
        [oh.make_tensor_value_info(n, output_types.get(n, FLOAT), s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()],
    )
    opsets = [oh.make_opsetid("", opset)] + [oh.make_opsetid(d, v) for d, v in (imports or {}).items()]
    model = oh.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    return model


def qonnx_run(proto: onnx.ModelProto, inputs: dict[str, np.ndarray] | np.ndarray, per_sample: bool) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QonnxOracle(proto).run(inputs, per_sample=per_sample)


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bytes: -0.0 differs from 0.0, NaN payloads count."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.tobytes() != want.tobytes():
        flat_got, flat_want = got.reshape(-1), want.reshape(-1)
        differ = flat_got.view(f"u{got.itemsize}") != flat_want.view(f"u{want.itemsize}")
        i = int(np.flatnonzero(differ)[0])
        raise AssertionError(
            f"{int(differ.sum())} of {got.size} elements differ, first at {i}: {flat_got[i]!r} vs {flat_want[i]!r}"
        )


def check(
    proto: onnx.ModelProto,
    inputs: dict[str, np.ndarray] | np.ndarray,
    per_sample: bool = False,
    oracle: onnx.ModelProto | None = None,
) -> dict[str, np.ndarray]:
    """hawqc on the whole batch against qonnx (on `oracle` if given: a graph of the same meaning)."""
    want = qonnx_run(oracle or proto, inputs, per_sample)
    got = Executor(ir.from_proto(proto)).run(inputs)
    for name, array in want.items():
        assert_identical(got[name], array)
    return got


def quantized(shape: tuple[int, ...], bits: int = 6, frac: int = 3, rng: np.random.Generator = RNG) -> np.ndarray:
    """Integers k / 2**frac with |k| < 2**(bits-1); about a tenth of the zeros are -0.0."""
    k = rng.integers(-(2 ** (bits - 1)) + 1, 2 ** (bits - 1), size=shape)
    x = (k / 2.0**frac).astype(np.float32)
    x[(x == 0) & (rng.random(shape) < 0.5)] = -0.0
    return x


def floats(shape: tuple[int, ...], specials: bool = False, rng: np.random.Generator = RNG) -> np.ndarray:
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    if specials:
        picks = rng.random(shape)
        x[picks < 0.1] = 0.0
        x[(picks >= 0.1) & (picks < 0.2)] = -0.0
        x[(picks >= 0.2) & (picks < 0.23)] = np.inf
        x[(picks >= 0.23) & (picks < 0.26)] = -np.inf
        x[(picks >= 0.26) & (picks < 0.28)] = np.nan
    return x


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> onnx.NodeProto:
    return oh.make_node(op, inputs, outputs or ["y"], name=f"{op.lower()}_under_test", **attrs)


def single(op: str, x_shape: list[int], attrs: dict | None = None, inits: dict | None = None,
           extra_inputs: list[str] | None = None, opset: int = 17, domain: str = "",
           imports: dict[str, int] | None = None) -> onnx.ModelProto:  # fmt: skip
    """One node reading x (and `extra_inputs`, initializers or "" for absent), output y of unknown shape."""
    n = oh.make_node(op, ["x", *(extra_inputs or [])], ["y"], name="under_test", domain=domain, **(attrs or {}))
    return make_proto([n], {"x": x_shape}, {"y": None}, inits, opset=opset, imports=imports)


def run_hawqc(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return Executor(ir.from_proto(proto)).run(x)["y"]


# ---------------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------------


@st.composite
def conv_cases(draw: st.DrawFn) -> tuple[dict, tuple[int, ...], tuple[int, ...], bool]:
    rank = draw(st.sampled_from([1, 2]))
    groups = draw(st.sampled_from(["one", "two", "depthwise", "multiplier"]))
    per_group = draw(st.integers(1, 3))
    group = {"one": 1, "two": 2, "depthwise": draw(st.integers(2, 5)), "multiplier": draw(st.integers(2, 4))}[groups]
    channels = group if groups in ("depthwise", "multiplier") else group * per_group
    out_channels = {"depthwise": channels, "multiplier": 2 * channels}.get(groups, group * draw(st.integers(1, 3)))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    strides = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    dilations = tuple(draw(st.integers(1, 2)) for _ in range(rank))
    spatial = tuple(draw(st.integers(k * d, 9)) for k, d in zip(kernel, dilations))
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    attrs: dict = {}
    if auto_pad == "NOTSET":
        pads = [draw(st.integers(0, k - 1)) for k in kernel] + [draw(st.integers(0, k)) for k in kernel]
        if draw(st.booleans()) or any(pads):
            attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
        dilations = (1,) * rank  # onnxruntime refuses SAME with dilations
    for name, values in (("strides", strides), ("dilations", dilations)):
        if any(v != 1 for v in values) or draw(st.booleans()):
            attrs[name] = list(values)
    if group != 1 or draw(st.booleans()):
        attrs["group"] = group
    if draw(st.booleans()):
        attrs["kernel_shape"] = list(kernel)
    x_shape = (1, channels, *spatial)
    w_shape = (out_channels, channels // group, *kernel)
    return attrs, x_shape, w_shape, draw(st.booleans())


@SETTINGS
@given(case=conv_cases())
def test_conv_matches_qonnx(case: tuple[dict, tuple[int, ...], tuple[int, ...], bool]) -> None:
    """1-D / 2-D, groups, depthwise (with multiplier), asymmetric pads, strides, dilations, auto_pad,
    attributes left out, bias or none; batch 4 against a graph declaring 1."""
    attrs, x_shape, w_shape, with_bias = case
    inits = {"w": quantized(w_shape)}
    if with_bias:
        inits["b"] = quantized((w_shape[0],))
    proto = single("Conv", list(x_shape), attrs, inits, ["w", "b"] if with_bias else ["w"])
    check(proto, quantized((4, *x_shape[1:])))


def test_conv_three_by_three_on_eight_bit_data() -> None:
    """Sums of 3x3x16 products of 8-bit values: exact in float32, so identical to onnxruntime."""
    inits = {"w": quantized((8, 16, 3, 3), bits=8, frac=7), "b": quantized((8,), bits=8, frac=4)}
    proto = single("Conv", [1, 16, 10, 10], {"pads": [1, 1, 1, 1], "strides": [2, 2]}, inits, ["w", "b"])
    check(proto, quantized((6, 16, 10, 10), bits=8, frac=4))


def test_conv_with_a_runtime_weight() -> None:
    # The oracle re-declares dim 0 of every graph input as the batch: keep it 6 for both.
    proto = make_proto(
        [node("Conv", ["x", "w"], group=2)], {"x": [6, 4, 5, 5], "w": [6, 2, 2, 2]}, {"y": None}
    )
    inputs = {"x": quantized((6, 4, 5, 5)), "w": quantized((6, 2, 2, 2))}
    want = qonnx_run(proto, inputs, per_sample=False)["y"]
    assert_identical(Executor(ir.from_proto(proto)).run(inputs)["y"], want)


def test_conv_errors_name_the_node() -> None:
    inits = {"w": quantized((4, 2, 3, 3))}
    mismatch = single("Conv", [1, 2, 5, 5], {"kernel_shape": [2, 2]}, inits, ["w"])
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(Conv\).*kernel_shape \[2, 2\]"):
        Executor(ir.from_proto(mismatch))
    bad_channels = single("Conv", [1, 3, 5, 5], {}, inits, ["w"])
    with pytest.raises(UserInputError, match=r"'under_test' \(Conv\).*channels"):
        Executor(ir.from_proto(bad_channels)).run(quantized((2, 3, 5, 5)))
    too_big = single("Conv", [1, 2, 2, 2], {}, inits, ["w"])
    with pytest.raises(UserInputError, match=r"'under_test' \(Conv\).*larger than the padded input"):
        Executor(ir.from_proto(too_big)).run(quantized((1, 2, 2, 2)))
    same_dilated = single("Conv", [1, 2, 5, 5], {"auto_pad": "SAME_UPPER", "dilations": [2, 2]}, inits, ["w"])
    with pytest.raises(UnsupportedModelError, match=r"'under_test'.*dilations"):
        Executor(ir.from_proto(same_dilated))


# ---------------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------------


def pool_data(shape: tuple[int, ...], kind: int) -> np.ndarray:
    if kind == 0:
        return quantized(shape, bits=3, frac=0)  # many ties, zeros of both signs
    return floats(shape, specials=kind == 2)


@st.composite
def pool_cases(draw: st.DrawFn) -> tuple[str, dict, tuple[int, ...], int, int]:
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    opset = draw(st.sampled_from([11, 17, 19]))
    rank = draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    dilated = (op == "MaxPool" or opset >= 19) and draw(st.booleans())
    dilations = [draw(st.integers(1, 2)) if dilated else 1 for _ in range(rank)]
    spatial = tuple(draw(st.integers(k * d, max(k * d, 8 if rank < 3 else 5))) for k, d in zip(kernel, dilations))
    attrs: dict = {"kernel_shape": kernel}
    if draw(st.booleans()):
        attrs["strides"] = [draw(st.integers(1, 3)) for _ in range(rank)]
    if draw(st.booleans()):
        attrs["pads"] = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    if dilated:
        attrs["dilations"] = dilations
    if draw(st.booleans()):
        attrs["ceil_mode"] = 1
    if op == "AveragePool" and draw(st.booleans()):
        attrs["count_include_pad"] = 1
    # Windows as large as the input (MLAS's "global" kernel) now and then.
    if draw(st.integers(0, 5)) == 0:
        attrs = {"kernel_shape": list(spatial)}
    data = draw(st.integers(0, 2 if op == "MaxPool" else 1))
    return op, attrs, (1, 3, *spatial), opset, data


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=pool_cases())
def test_pools_match_qonnx(case: tuple[str, dict, tuple[int, ...], int, int]) -> None:
    """MaxPool / AveragePool, ranks 1-3, ceil_mode, dilations, pads, count_include_pad, opsets 11 / 17
    / 19 (where onnxruntime switches from MLAS to its own loop), on ties, floats, NaN and infinities."""
    op, attrs, x_shape, opset, data = case
    proto = single(op, list(x_shape), attrs, opset=opset)
    check(proto, pool_data((3, *x_shape[1:]), data))


def test_average_pool_three_by_three_divides_like_onnxruntime() -> None:
    """A 3x3 average divides the sum by 9 (a reciprocal multiply rounds differently)."""
    for opset, attrs in itertools.product([11, 19], [{}, {"pads": [1, 1, 1, 1]}, {"strides": [2, 2], "ceil_mode": 1}]):
        proto = single("AveragePool", [1, 4, 9, 9], {"kernel_shape": [3, 3], **attrs}, opset=opset)
        check(proto, floats((5, 4, 9, 9)))


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_pool_auto_pad(op: str, auto_pad: str) -> None:
    proto = single(op, [1, 2, 7, 6], {"kernel_shape": [3, 2], "strides": [2, 2], "auto_pad": auto_pad})
    check(proto, pool_data((3, 2, 7, 6), 1))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("spatial", [(7,), (1, 1), (3, 5), (8, 8), (2, 3, 5)])
def test_global_pools(op: str, spatial: tuple[int, ...]) -> None:
    for data in (0, 1) if op == "GlobalAveragePool" else (0, 1, 2):
        check(single(op, [1, 3, *spatial]), pool_data((4, 3, *spatial), data))


def test_pool_errors_name_the_node() -> None:
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(MaxPool\).*kernel_shape"):
        Executor(ir.from_proto(single("MaxPool", [1, 2, 4, 4])))
    indices = oh.make_node("MaxPool", ["x"], ["y", "idx"], name="with_indices", kernel_shape=[2, 2])
    proto = make_proto([indices], {"x": [1, 2, 4, 4]}, {"y": None, "idx": None})
    with pytest.raises(UnsupportedModelError, match=r"'with_indices' \(MaxPool\).*Indices"):
        Executor(ir.from_proto(proto))
    with pytest.raises(UserInputError, match=r"'under_test' \(GlobalMaxPool\).*spatial dims"):
        Executor(ir.from_proto(single("GlobalMaxPool", [1, 2, 2, 2, 2, 2]))).run(np.zeros((1, 2, 2, 2, 2, 2), np.float32))


# ---------------------------------------------------------------------------------------------------
# BatchNormalization
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [9, 14, 15])
@pytest.mark.parametrize("epsilon", [None, 1e-3])
@pytest.mark.parametrize("x_shape", [[1, 6], [1, 6, 5], [1, 6, 4, 3]])
def test_batch_norm(opset: int, epsilon: float | None, x_shape: list[int]) -> None:
    """Float parameters and data: (1/sqrt(var+eps))*scale, bias-mean*a, x*a+b, each rounded."""
    c = x_shape[1]
    inits = {
        "scale": floats((c,)), "bias": floats((c,)), "mean": floats((c,)),
        "var": np.abs(floats((c,))) + np.float32(0.01),
    }  # fmt: skip
    attrs = {} if epsilon is None else {"epsilon": epsilon}
    proto = single("BatchNormalization", x_shape, attrs, inits, ["scale", "bias", "mean", "var"], opset=opset)
    check(proto, floats((5, *x_shape[1:]), specials=True))


def test_batch_norm_errors_name_the_node() -> None:
    inits = {k: np.ones(2, np.float32) for k in ("s", "b", "m", "v")}
    proto = single("BatchNormalization", [1, 2, 3], {"training_mode": 1}, inits, ["s", "b", "m", "v"])
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(BatchNormalization\).*training_mode"):
        Executor(ir.from_proto(proto))


# ---------------------------------------------------------------------------------------------------
# Channels-last ops (qonnx.custom_op.channels_last)
# ---------------------------------------------------------------------------------------------------


def channels_last_and_standard(
    op: str, spatial: tuple[int, ...], channels: int, attrs: dict, inits: dict, extra: list[str], opset: int = 17
) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The channels-last node, and the standard op between Transposes (what qonnx's rule says)."""
    rank = len(spatial)
    to_first = [0, rank + 1, *range(1, rank + 1)]
    to_last = [0, *range(2, rank + 2), 1]
    x_shape = [1, *spatial, channels]
    last = oh.make_node(op, ["x", *extra], ["y"], name="channels_last", domain=CHANNELS_LAST_DOMAIN, **attrs)
    proto = make_proto([last], {"x": x_shape}, {"y": None}, inits, opset=opset, imports={CHANNELS_LAST_DOMAIN: 1})
    standard_inits = dict(inits)
    if op == "Conv":  # qonnx transposes the weight of a channels-last Conv too
        standard_inits["w"] = np.ascontiguousarray(np.transpose(inits["w"], to_first))
    nodes = [
        oh.make_node("Transpose", ["x"], ["x_first"], perm=to_first),
        oh.make_node(op, ["x_first", *extra], ["y_first"], **attrs),
        oh.make_node("Transpose", ["y_first"], ["y"], perm=to_last),
    ]
    standard = make_proto(nodes, {"x": x_shape}, {"y": None}, standard_inits, opset=opset)
    return proto, standard


def test_channels_last_conv_and_max_pool_match_qonnx_itself() -> None:
    """qonnx's own channels-last Conv / MaxPool (every attribute written out, as qonnx requires)."""
    w = quantized((6, 3, 3, 4))  # [M, kH, kW, C]
    conv_attrs = {"kernel_shape": [3, 3], "pads": [1, 0, 1, 2], "strides": [1, 2], "dilations": [1, 1], "group": 1}
    proto, _ = channels_last_and_standard("Conv", (6, 7), 4, conv_attrs, {"w": w}, ["w"])
    check(proto, quantized((3, 6, 7, 4)))
    dw = quantized((4, 3, 3, 1))
    dw_attrs = {**conv_attrs, "group": 4, "pads": [1, 1, 1, 1], "strides": [1, 1]}
    proto, _ = channels_last_and_standard("Conv", (6, 7), 4, dw_attrs, {"w": dw}, ["w"])
    check(proto, quantized((3, 6, 7, 4)))
    pool_attrs = {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 1, 1, 1]}  # qonnx: even pads only
    proto, _ = channels_last_and_standard("MaxPool", (7, 6), 5, pool_attrs, {}, [])
    check(proto, pool_data((3, 7, 6, 5), 0))


CHANNELS_LAST_CASES = {
    "conv_defaults": ("Conv", {}, "conv"),
    "conv_depthwise_strided": ("Conv", {"group": 4, "strides": [2, 1], "pads": [0, 1, 1, 1]}, "depthwise"),
    "max_pool_ceil": ("MaxPool", {"kernel_shape": [3, 2], "strides": [2, 2], "ceil_mode": 1}, None),
    "average_pool": ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, None),
    "average_pool_include_pad": ("AveragePool", {"kernel_shape": [2, 3], "pads": [1, 1, 0, 1], "count_include_pad": 1}, None),
    "global_average_pool": ("GlobalAveragePool", {}, None),
    "global_max_pool": ("GlobalMaxPool", {}, None),
    "batch_norm": ("BatchNormalization", {"epsilon": 0.001}, "bn"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CHANNELS_LAST_CASES))
def test_channels_last_ops_mean_the_transposed_standard_op(case: str) -> None:
    op, attrs, params = CHANNELS_LAST_CASES[case]
    channels, spatial = 4, (7, 6)
    inits: dict[str, np.ndarray] = {}
    extra: list[str] = []
    if params == "conv":
        inits, extra = {"w": quantized((5, 3, 2, channels)), "b": quantized((5,))}, ["w", "b"]
    elif params == "depthwise":
        inits, extra = {"w": quantized((channels, 2, 3, 1))}, ["w"]
    elif params == "bn":
        inits = {"s": floats((channels,)), "b": floats((channels,)), "m": floats((channels,)),
                 "v": np.abs(floats((channels,)))}  # fmt: skip
        extra = ["s", "b", "m", "v"]
    proto, standard = channels_last_and_standard(op, spatial, channels, attrs, inits, extra)
    x = quantized((3, *spatial, channels)) if op == "Conv" else floats((3, *spatial, channels))
    check(proto, x, oracle=standard)


# ---------------------------------------------------------------------------------------------------
# Concat, Resize, Pad, Transpose, Squeeze, Unsqueeze, Dropout
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [1, 2, -1, -2])
def test_concat(axis: int) -> None:
    nodes = [node("Relu", ["a"], ["ra"]), node("Concat", ["ra", "b", "c"], axis=axis)]
    proto = make_proto(nodes, {"a": [1, 2, 3], "b": [1, 2, 3]}, {"y": None}, {"c": floats((1, 2, 3))})
    inputs = {"a": floats((4, 2, 3), specials=True), "b": floats((4, 2, 3))}
    # The constant has the declared batch (1) in dim 0: every sample gets it, as one by one.
    got = check(proto, inputs, per_sample=True)
    assert got["y"].shape[0] == 4


def test_concat_along_the_batch_runs_only_at_the_declared_batch() -> None:
    proto = make_proto([node("Concat", ["a", "b"], axis=0)], {"a": [2, 3], "b": [2, 3]}, {"y": None})
    inputs = {"a": floats((2, 3)), "b": floats((2, 3))}
    check(proto, inputs)
    with pytest.raises(UserInputError, match=r"'concat_under_test' \(Concat\) concatenates along dim 0"):
        Executor(ir.from_proto(proto)).run({"a": floats((3, 3)), "b": floats((3, 3))})


RESIZE_COORDINATES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
RESIZE_NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


@pytest.mark.parametrize(("coordinates", "nearest"), list(itertools.product(RESIZE_COORDINATES, RESIZE_NEAREST)))
def test_resize_nearest_scales_and_sizes(coordinates: str, nearest: str) -> None:
    """Odd sizes and non-integer scales, up and down; opset 13 with empty roi, 11 with roi and
    empty scales; absent attributes elsewhere (half_pixel / round_prefer_floor)."""
    attrs = {"mode": "nearest", "coordinate_transformation_mode": coordinates, "nearest_mode": nearest}
    x = floats((3, 2, 5, 7))
    for scales in ([1, 1, 1.7, 0.6], [1, 1, 2.5, 3], [1, 1, 0.75, 1.15]):
        inits = {"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)}
        check(single("Resize", [1, 2, 5, 7], attrs, inits, ["roi", "scales"], opset=13), x)
    inits = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32), "sizes": np.array([1, 2, 9, 4])}
    check(single("Resize", [1, 2, 5, 7], attrs, inits, ["roi", "scales", "sizes"], opset=11), x, per_sample=True)


def test_resize_defaults_opset10_and_absent_roi() -> None:
    x = floats((3, 2, 5, 7))
    bare = single("Resize", [1, 2, 5, 7], {}, {"scales": np.array([1, 1, 1.5, 0.7], np.float32)}, ["", "scales"], opset=19)
    check(bare, x)
    opset10 = single("Resize", [1, 2, 5, 7], {"mode": "nearest"}, {"s": np.array([1, 1, 2.6, 0.5], np.float32)}, ["s"], opset=10)
    check(opset10, x)
    channels = single("Resize", [1, 2, 5, 7], {}, {"s": np.array([1, 2, 1, 1], np.float32)}, ["", "s"], opset=13)
    check(channels, x)


def test_resize_errors_name_the_node() -> None:
    linear = single("Resize", [1, 1, 2, 2], {"mode": "linear"}, {"s": np.ones(4, np.float32)}, ["", "s"])
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(Resize\).*mode 'linear'"):
        Executor(ir.from_proto(linear))
    batch = single("Resize", [1, 1, 2, 2], {}, {"s": np.array([2, 1, 1, 1], np.float32)}, ["", "s"])
    with pytest.raises(UserInputError, match=r"'under_test' \(Resize\) resizes dim 0"):
        Executor(ir.from_proto(batch)).run(floats((3, 1, 2, 2)))


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [2, 11, 18])
def test_pad(mode: str, opset: int) -> None:
    pads = [0, 1, 2, 0, 0, 2, 1, -1]  # asymmetric, with a crop at the end of the last dim
    x = floats((3, 3, 4, 5), specials=True)
    if opset < 11:
        proto = single("Pad", [1, 3, 4, 5], {"mode": mode, "pads": pads, "value": -1.5}, opset=opset)
    elif opset < 18:
        inits = {"pads": np.array(pads, np.int64), "value": np.float32(-0.0)}
        proto = single("Pad", [1, 3, 4, 5], {"mode": mode}, inits, ["pads", "value"], opset=opset)
    else:  # axes: only dims 2 and -1, constant value absent
        inits = {"pads": np.array([2, 1, 0, -1], np.int64), "axes": np.array([2, -1], np.int64)}
        proto = single("Pad", [1, 3, 4, 5], {"mode": mode}, inits, ["pads", "", "axes"], opset=opset)
    check(proto, x)


def test_pad_errors_name_the_node() -> None:
    wrap = single("Pad", [1, 2], {"mode": "wrap"}, {"p": np.array([0, 1, 0, 1], np.int64)}, ["p"], opset=13)
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(Pad\).*mode 'wrap'"):
        Executor(ir.from_proto(wrap))
    batch = single("Pad", [1, 2], {}, {"p": np.array([1, 0, 0, 0], np.int64)}, ["p"])
    with pytest.raises(UserInputError, match=r"'under_test' \(Pad\) pads dim 0"):
        Executor(ir.from_proto(batch)).run(floats((2, 2)))


def test_transpose() -> None:
    x = floats((4, 2, 3, 5))
    check(single("Transpose", [1, 2, 3, 5], {"perm": [0, 3, 1, 2]}), x)
    # Without perm the dims reverse, the batch too: literal ONNX at the declared batch only.
    reverse = single("Transpose", [4, 2, 3, 5])
    check(reverse, x)
    with pytest.raises(UserInputError, match=r"'under_test' \(Transpose\) moves dim 0"):
        Executor(ir.from_proto(reverse)).run(floats((2, 2, 3, 5)))


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_and_unsqueeze(opset: int) -> None:
    def axes(values: list[int]) -> tuple[dict, dict, list[str]]:
        if opset < 13:
            return {"axes": values}, {}, []
        return {}, {"axes": np.array(values, np.int64)}, ["axes"]

    x = floats((3, 1, 4, 1))
    attrs, inits, extra = axes([-1, 1])
    check(single("Squeeze", [1, 1, 4, 1], attrs, inits, extra, opset=opset), x)
    check(single("Squeeze", [1, 1, 4, 1], opset=opset), floats((1, 1, 4, 1)))  # no axes: every 1, the batch too
    attrs, inits, extra = axes([1, -1])
    check(single("Unsqueeze", [1, 1, 4, 1], attrs, inits, extra, opset=opset), x)


def test_squeeze_errors_name_the_node() -> None:
    bare = single("Squeeze", [1, 1, 4], opset=13)
    with pytest.raises(UserInputError, match=r"'under_test' \(Squeeze\) squeezes dim 0"):
        Executor(ir.from_proto(bare)).run(floats((3, 1, 4)))
    missing = single("Unsqueeze", [1, 4], opset=11)
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(Unsqueeze\).*axes"):
        Executor(ir.from_proto(missing))


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_with_and_without_mask(opset: int) -> None:
    mask_type = TensorProto.FLOAT if opset < 10 else TensorProto.BOOL
    n = oh.make_node("Dropout", ["x"], ["y", "mask"], name="drop", **({"ratio": 0.3} if opset < 12 else {}))
    proto = make_proto([n], {"x": [1, 3, 4]}, {"y": None, "mask": None}, output_types={"mask": mask_type}, opset=opset)
    check(proto, floats((2, 3, 4), specials=True))
    check(single("Dropout", [1, 3, 4], opset=opset), floats((2, 3, 4)))


def test_dropout_in_training_mode_is_refused() -> None:
    proto = single("Dropout", [1, 3], {}, {"r": np.float32(0.5), "t": np.array(True)}, ["r", "t"], opset=13)
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(Dropout\).*training_mode"):
        Executor(ir.from_proto(proto))


# ---------------------------------------------------------------------------------------------------
# Activations, Round, Trunc
# ---------------------------------------------------------------------------------------------------


def test_leaky_relu() -> None:
    x = floats((4, 37), specials=True)
    check(single("LeakyRelu", [1, 37], {"alpha": 0.1015625}), x)
    check(single("LeakyRelu", [1, 37]), x)  # alpha 0.01


@pytest.mark.parametrize(
    ("opset", "low", "high"),
    [(6, -1.5, 2.0), (6, None, 0.0), (6, None, None), (11, -1.5, None), (13, None, 2.0), (13, None, None),
     (13, 0.0, 1.0), (13, -0.0, -0.0), (13, 1.0, -1.0)],
)  # fmt: skip
def test_clip(opset: int, low: float | None, high: float | None) -> None:
    """Absent bounds clamp infinities to the largest finite floats (onnxruntime's limits)."""
    x = floats((3, 40), specials=True)
    if opset < 11:
        attrs = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        proto = single("Clip", [1, 40], attrs, opset=opset)
    else:
        inits = {k: np.float32(v) for k, v in (("lo", low), ("hi", high)) if v is not None}
        proto = single("Clip", [1, 40], {}, inits, ["lo" if low is not None else "", "hi" if high is not None else ""], opset=opset)
    check(proto, x)


def test_sigmoid_through_onnxruntime() -> None:
    x = floats((7, 3, 33), specials=True)
    got = check(single("Sigmoid", [1, 3, 33]), x, per_sample=True)["y"]
    # numpy's exp is not onnxruntime's: the formula alone would not be bit-identical.
    assert got.tobytes() != (1 / (1 + np.exp(-x))).astype(np.float32).tobytes()


@pytest.mark.parametrize(("opset", "axis"), [(11, None), (11, 2), (13, None), (13, 1), (13, -2)])
def test_softmax_through_onnxruntime(opset: int, axis: int | None) -> None:
    """Opset 11 flattens to 2-D at the axis (default 1); opset 13 normalizes one axis (default -1)."""
    attrs = {} if axis is None else {"axis": axis}
    check(single("Softmax", [1, 3, 4, 5], attrs, opset=opset), floats((5, 3, 4, 5)), per_sample=True)


def test_softmax_over_the_batch_runs_only_at_the_declared_batch() -> None:
    proto = single("Softmax", [1, 4], {"axis": 0})
    with pytest.raises(UserInputError, match=r"'under_test' \(Softmax\).*dim 0"):
        Executor(ir.from_proto(proto)).run(floats((3, 4)))


def test_round_halves_to_even() -> None:
    x = np.array([[-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 0.49999997, np.nan, np.inf, -np.inf]], np.float32)
    check(single("Round", [1, 12]), np.concatenate([x, floats((1, 12))]))


def trunc_proto(version: int | None, *, rounding: str | None = None, signed: int | None = None,
                narrow: int | None = None, scale: float = 0.25, out_scale: float = 1.0,
                in_bits: float = 8, out_bits: float = 4) -> onnx.ModelProto:  # fmt: skip
    attrs = {k: v for k, v in (("rounding_mode", rounding), ("signed", signed), ("narrow", narrow)) if v is not None}
    inits = {"scale": np.float32(scale), "zeropt": np.float32(0), "in_bits": np.float32(in_bits),
             "out_scale": np.float32(out_scale), "out_bits": np.float32(out_bits)}  # fmt: skip
    v2 = version is not None and version >= 2
    names = ["scale", "zeropt", "in_bits", "out_scale", "out_bits"] if v2 else ["scale", "zeropt", "in_bits", "out_bits"]
    if not v2:
        del inits["out_scale"]
    imports = {} if version is None else {QONNX: version}
    return single("Trunc", [1, 24], attrs, inits, names, domain=QONNX, imports=imports)


TRUNC_INPUT = np.concatenate([quantized((5, 24), bits=8, frac=2), floats((1, 24))])


# qonnx requires rounding_mode although its spec gives it the default FLOOR; hawqc takes the
# default, so the oracle of a Trunc without one is qonnx on the same node with FLOOR written out.


@pytest.mark.parametrize("version", [None, 1])
@pytest.mark.parametrize("rounding", [None, "ROUND", "CEIL", "HALF_UP", "DOWN"])
def test_trunc_v1(version: int | None, rounding: str | None) -> None:
    oracle = trunc_proto(version, rounding=rounding or "FLOOR")
    check(trunc_proto(version, rounding=rounding), TRUNC_INPUT, oracle=oracle)


@pytest.mark.parametrize("rounding", [None, "ROUND", "UP"])
@pytest.mark.parametrize(("signed", "narrow"), [(None, None), (0, 0), (1, 1)])
@pytest.mark.parametrize("out_scale", [1.0, 4.0, 0.9])
def test_trunc_v2(rounding: str | None, signed: int | None, narrow: int | None, out_scale: float) -> None:
    attrs = {"signed": signed, "narrow": narrow, "out_scale": out_scale}
    oracle = trunc_proto(2, rounding=rounding or "FLOOR", **attrs)
    check(trunc_proto(2, rounding=rounding, **attrs), TRUNC_INPUT, oracle=oracle)


def test_trunc_errors_name_the_node() -> None:
    with pytest.raises(UnsupportedModelError, match=r"'under_test' \(qonnx.custom_op.general.Trunc\).*STOCHASTIC"):
        Executor(ir.from_proto(trunc_proto(1, rounding="STOCHASTIC")))
    v1_inputs_at_v2 = trunc_proto(1)
    v1_inputs_at_v2.opset_import[1].version = 2
    with pytest.raises(UnsupportedModelError, match=r"'under_test'.*5 inputs, expected 6"):
        Executor(ir.from_proto(v1_inputs_at_v2))


# ---------------------------------------------------------------------------------------------------
# A real model: Brevitas, channels-last, Resize, Concat, LeakyRelu
# ---------------------------------------------------------------------------------------------------


def test_branched_model_ch_last_matches_qonnx() -> None:
    """branched_model_ch_last.onnx (256x256x3, 14 channels-last Convs) through hawqc.load and the
    executor, against qonnx's execute_onnx on the file. qonnx 1.0.0 cannot run the file as it is:
    it runs channels-last ops at ONNX opset 1, whose MaxPool refuses the `ceil_mode` attribute; the
    oracle therefore gets the file without that attribute, which is 0 there (its default)."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx

    path = data_model("branched_model_ch_last.onnx")
    proto = onnx.load(path)
    for n in proto.graph.node:
        if n.domain == CHANNELS_LAST_DOMAIN and n.op_type == "MaxPool":
            (ceil_mode,) = [a for a in n.attribute if a.name == "ceil_mode"]
            assert ceil_mode.i == 0
            n.attribute.remove(ceil_mode)
    executor = Executor(hawqc.load(path))
    x = np.random.default_rng(7).uniform(-1.2, 1.2, (2, 256, 256, 3)).astype(np.float32)
    got = executor.run(x)["global_out"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = ModelWrapper(proto)
        for i in range(len(x)):
            want = execute_onnx(wrapper, {"global_in": x[i : i + 1]})["global_out"]
            assert_identical(got[i : i + 1], want)
