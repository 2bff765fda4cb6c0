"""Semantic mode, one op at a time: each against qonnx's execute_onnx, bit for bit, on a batch.

Also the executor's contract: input checking, errors that name the node, batch handling.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, numpy_helper

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.sim import Executor, execute
from hawqc.sim.qonnx_oracle import QonnxOracle

QONNX = "qonnx.custom_op.general"
FLOAT = TensorProto.FLOAT
ROUNDING_MODES = ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"]


def make_proto(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int | str]],
    outputs: dict[str, list[int | str] | None],
    initializers: dict[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    graph = oh.make_graph(
        nodes,
        "g",
        [oh.make_tensor_value_info(n, FLOAT, s) for n, s in inputs.items()],
        [oh.make_tensor_value_info(n, FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(QONNX, 1)])
    model.ir_version = 8
    return model


def qonnx_run(proto: onnx.ModelProto, x: np.ndarray, per_sample: bool = False) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QonnxOracle(proto).run(x, per_sample=per_sample)


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bytes: -0.0 differs from 0.0, NaN payloads count."""
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.tobytes() != want.tobytes():
        differ = got.reshape(-1).view(f"u{got.itemsize}") != want.reshape(-1).view(f"u{want.itemsize}")
        i = int(np.flatnonzero(differ)[0])
        raise AssertionError(
            f"{int(differ.sum())} of {got.size} elements differ, first at {i}: "
            f"{got.reshape(-1)[i]!r} vs {want.reshape(-1)[i]!r}"
        ) from None


def check_against_qonnx(proto: onnx.ModelProto, x: np.ndarray, per_sample: bool = False) -> np.ndarray:
    want = qonnx_run(proto, x, per_sample)
    got = Executor(ir.from_proto(proto)).run(x)
    assert set(got) == set(want)
    for name in want:
        assert_identical(got[name], want[name])
    return got[proto.graph.output[0].name]


def quant_node(
    *,
    op: str = "Quant",
    domain: str = QONNX,
    signed: int | None = 1,
    narrow: int | None = 0,
    rounding_mode: str | None = "ROUND",
    name: str = "q",
) -> onnx.NodeProto:
    attrs = {"signed": signed, "narrow": narrow, "rounding_mode": rounding_mode}
    present = {k: v for k, v in attrs.items() if v is not None}
    return oh.make_node(op, ["x", "scale", "zeropt", "bitwidth"], ["y"], name=name, domain=domain, **present)


def quant_proto(shape: list[int], scale, zeropt, bitwidth, **attrs) -> onnx.ModelProto:
    return make_proto(
        [quant_node(**attrs)],
        {"x": shape},
        {"y": shape},
        {
            "scale": np.asarray(scale, np.float32),
            "zeropt": np.asarray(zeropt, np.float32),
            "bitwidth": np.asarray(bitwidth, np.float32),
        },
    )


def run_quant(x: np.ndarray, scale, zeropt, bitwidth, **attrs) -> np.ndarray:
    proto = quant_proto([1, *x.shape[1:]], scale, zeropt, bitwidth, **attrs)
    return Executor(ir.from_proto(proto)).run(x)["y"]


# ---------------------------------------------------------------------------------------------------
# Quant: hand-computed values
# ---------------------------------------------------------------------------------------------------

TIES = np.array([[-2.5, -1.5, -0.5, -0.0, 0.0, 0.5, 1.5, 2.5, 0.7, -0.7, 1.2, -1.2]], np.float32)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("ROUND", [-2, -2, -0, -0, 0, 0, 2, 2, 1, -1, 1, -1]),
        ("CEIL", [-2, -1, -0, -0, 0, 1, 2, 3, 1, -0, 2, -1]),
        ("FLOOR", [-3, -2, -1, -0, 0, 0, 1, 2, 0, -1, 1, -2]),
        ("UP", [-3, -2, -1, -0, 0, 1, 2, 3, 1, -1, 2, -2]),
        ("DOWN", [-2, -1, -0, -0, 0, 0, 1, 2, 0, -0, 1, -1]),
        ("HALF_UP", [-3, -2, -1, -0, 0, 1, 2, 3, 1, -1, 1, -1]),
        ("HALF_DOWN", [-2, -1, -0, -0, 0, 0, 1, 2, 1, -1, 1, -1]),
    ],
)
def test_rounding_modes(mode: str, expected: list[float]) -> None:
    got = run_quant(TIES, 1.0, 0.0, 8, rounding_mode=mode.lower())  # modes are case-insensitive
    np.testing.assert_array_equal(got, np.array([expected], np.float32))


def test_signed_unsigned_narrow_bounds() -> None:
    x = np.array([[-1000.0, -128, -127, 0, 127, 253, 254, 255, 1000]], np.float32)
    clip = lambda lo, hi: np.clip(x, lo, hi)  # noqa: E731
    np.testing.assert_array_equal(run_quant(x, 1, 0, 8, signed=1, narrow=0), clip(-128, 127))
    np.testing.assert_array_equal(run_quant(x, 1, 0, 8, signed=1, narrow=1), clip(-127, 127))
    np.testing.assert_array_equal(run_quant(x, 1, 0, 8, signed=0, narrow=0), clip(0, 255))
    # qonnx's code narrows unsigned ranges too (the spec says narrow applies only when signed).
    np.testing.assert_array_equal(run_quant(x, 1, 0, 8, signed=0, narrow=1), clip(0, 254))


def test_one_bit_signed_quant_is_bipolar_like_qonnx() -> None:
    x = np.array([[-3.0, -0.1, -0.0, 0.0, 0.1, 3.0]], np.float32)
    got = run_quant(x, 0.5, 0.0, 1, signed=1, narrow=0)
    np.testing.assert_array_equal(got, np.array([[-0.5, -0.5, 0.5, 0.5, 0.5, 0.5]], np.float32))
    unsigned = run_quant(x, 1.0, 0.0, 1, signed=0, narrow=0)
    np.testing.assert_array_equal(unsigned, np.array([[0, 0, 0, 0, 0, 1]], np.float32))


def test_per_channel_scale_and_zeropt() -> None:
    x = np.array([[1.0, 1.0, 1.0], [10.0, 10.0, 10.0]], np.float32)
    got = run_quant(x, [1.0, 0.5, 0.25], [0.0, 1.0, -2.0], 4, signed=1, narrow=0)
    # channel 1: 1/0.5 + 1 = 3 -> (3 - 1) * 0.5 = 1;  10/0.5 + 1 = 21 -> 7 -> 3
    # channel 2: 1/0.25 - 2 = 2 -> 1;  10/0.25 - 2 = 38 -> 7 -> 2.25
    np.testing.assert_array_equal(got, np.array([[1, 1, 1], [7, 3, 2.25]], np.float32))


def test_absent_attributes_take_spec_defaults() -> None:
    x = np.array([[-300.0, -127.5, 0.5, 1.5, 300]], np.float32)
    bare = run_quant(x, 1, 0, 8, signed=None, narrow=None, rounding_mode=None)
    explicit = run_quant(x, 1, 0, 8, signed=1, narrow=0, rounding_mode="ROUND")
    assert_identical(bare, explicit)


@pytest.mark.parametrize("op", ["Quant", "IntQuant"])
@pytest.mark.parametrize("domain", [QONNX, "onnx.brevitas", "hawq2qonnx", "finn.custom_op.general"])
def test_quant_names_and_domains(op: str, domain: str) -> None:
    x = np.linspace(-3, 3, 13, dtype=np.float32).reshape(1, -1)
    assert_identical(run_quant(x, 0.5, 0, 3, op=op, domain=domain), run_quant(x, 0.5, 0, 3))


def test_quant_parameters_may_be_runtime_inputs() -> None:
    node = quant_node()
    proto = make_proto(
        [node], {"x": [1, 4], "scale": [], "zeropt": [], "bitwidth": []}, {"y": [1, 4]}
    )
    x = np.array([[-1.3, 0.25, 0.75, 9.0]], np.float32)
    args = {"scale": np.float32(0.5), "zeropt": np.float32(1), "bitwidth": np.float32(4)}
    got = Executor(ir.from_proto(proto)).run({"x": x, **{k: np.asarray(v) for k, v in args.items()}})["y"]
    assert_identical(got, run_quant(x, 0.5, 1, 4))


def test_unknown_rounding_mode_names_the_node() -> None:
    proto = quant_proto([1, 2], 1.0, 0.0, 8, rounding_mode="STOCHASTIC", name="act_quant")
    with pytest.raises(UnsupportedModelError, match=r"act_quant.*Quant.*STOCHASTIC"):
        Executor(ir.from_proto(proto))


def test_non_scalar_bitwidth_is_refused() -> None:
    proto = quant_proto([1, 2], 1.0, 0.0, [8, 8], name="wq")
    with pytest.raises(UnsupportedModelError, match="wq"):
        Executor(ir.from_proto(proto))


# ---------------------------------------------------------------------------------------------------
# Quant: random graphs against qonnx
# ---------------------------------------------------------------------------------------------------


@st.composite
def quant_cases(draw: st.DrawFn, mode: str) -> tuple[onnx.ModelProto, np.ndarray]:
    bitwidth = draw(st.integers(1, 16))
    signed = draw(st.integers(0, 1))
    narrow = draw(st.integers(0, 1))
    mode = draw(st.sampled_from([mode, mode.lower(), mode.capitalize()]))
    layout = draw(st.sampled_from(["2d", "4d"]))
    channels = draw(st.integers(1, 6))
    batch = draw(st.integers(1, 8))
    shape = [batch, channels] if layout == "2d" else [batch, channels, 2, 2]
    param_shape = draw(
        st.sampled_from([[], [1]] + ([[channels], [1, channels]] if layout == "2d" else [[1, channels, 1, 1]]))
    )
    size = int(np.prod(param_shape, dtype=np.int64))
    power_of_two = draw(st.booleans())
    if power_of_two:
        scale_st = st.integers(-8, 4).map(lambda e: 2.0**e)
    else:
        scale_st = st.floats(0.0009765625, 8.0, width=32)
    scale = np.array(draw(st.lists(scale_st, min_size=size, max_size=size)), np.float32).reshape(param_shape)
    zp_st = st.one_of(st.integers(-3, 3).map(float), st.floats(-3, 3, width=32))
    zeropt = np.array(draw(st.lists(zp_st, min_size=size, max_size=size)), np.float32).reshape(param_shape)

    # Inputs near the integer grid: exact ties (k + 1/2) * scale, grid points, just off them, and
    # values far outside the representable range; plus plain random floats, zeros and infinities.
    n = int(np.prod(shape))
    limit = 2 ** min(bitwidth, 16) + 4
    grid = draw(st.lists(st.integers(-limit, limit), min_size=n, max_size=n))
    frac = draw(st.lists(st.sampled_from([0.0, 0.5, -0.5, 0.25, 0.4999, 0.5001]), min_size=n, max_size=n))
    specials = st.one_of(
        st.floats(-1e4, 1e4, width=32), st.sampled_from([0.0, -0.0, 1e30, -1e30, np.inf, -np.inf])
    )
    positions = draw(st.lists(st.integers(0, n - 1), max_size=max(1, n // 4), unique=True))
    special = {i: draw(specials) for i in positions}
    on_grid = (np.array(grid, np.float32) + np.array(frac, np.float32)).reshape(shape)
    x = (on_grid - np.broadcast_to(zeropt, shape)) * np.broadcast_to(scale, shape)
    x = x.astype(np.float32)
    flat = x.reshape(-1)
    for i, value in special.items():
        flat[i] = value
    proto = make_proto(
        [quant_node(signed=signed, narrow=narrow, rounding_mode=mode)],
        {"x": shape},
        {"y": shape},
        {"scale": scale, "zeropt": zeropt, "bitwidth": np.float32(bitwidth)},
    )
    return proto, x


@pytest.mark.parametrize("mode", ROUNDING_MODES)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_quant_matches_qonnx(mode: str, data: st.DataObject) -> None:
    """Random single-Quant graphs; 15 per rounding mode so that every mode is exercised."""
    proto, x = data.draw(quant_cases(mode))
    check_against_qonnx(proto, x)


@pytest.mark.parametrize("bitwidth", [24, 32])
def test_wide_quant_bounds_round_like_qonnx(bitwidth: int) -> None:
    # In float32, 2**31 - 1 is 2**31: the clamp bound of a 32-bit Quant is what qonnx computes.
    x = np.array([[3e9, 2147483647.0, 2147483648.0, -3e9, 16777217.0, 16777215.5]], np.float32)
    for signed in (0, 1):
        check_against_qonnx(quant_proto([6, 1], 1.0, 0.0, bitwidth, signed=signed), x.reshape(6, 1))


def test_bipolar_quant_matches_qonnx() -> None:
    node = oh.make_node("BipolarQuant", ["x", "scale"], ["y"], domain=QONNX)
    proto = make_proto([node], {"x": [1, 6]}, {"y": [1, 6]}, {"scale": np.float32(0.25)})
    x = np.array([[-2.0, -1e-30, -0.0, 0.0, 1e-30, 2.0], [np.nan, -np.inf, np.inf, 1, -1, 0]], np.float32)
    check_against_qonnx(proto, x)


# ---------------------------------------------------------------------------------------------------
# Standard ops against qonnx (onnxruntime)
# ---------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(1234)


def dyadic(shape: tuple[int, ...], bits: int = 6, frac: int = 4) -> np.ndarray:
    """Values k / 2**frac: products and sums of a few of them are exact in float32."""
    k = RNG.integers(-(2 ** (bits - 1)), 2 ** (bits - 1), size=shape)
    return (k / 2.0**frac).astype(np.float32)


def test_matmul() -> None:
    w = dyadic((8, 5))
    proto = make_proto([oh.make_node("MatMul", ["x", "w"], ["y"])], {"x": [1, 8]}, {"y": [1, 5]}, {"w": w})
    check_against_qonnx(proto, dyadic((7, 8)))


@pytest.mark.parametrize(
    "attrs",
    [{}, {"transB": 1}, {"alpha": 0.5, "beta": 2.0}, {"transA": 1}, {"beta": 0.0}, {"alpha": 2.0, "transB": 1}],
)
@pytest.mark.parametrize("bias", ["none", "row", "matrix", "scalar"])
def test_gemm(attrs: dict[str, float], bias: str) -> None:
    batch, k, n = 4, 6, 3
    a_shape = [k, batch] if attrs.get("transA") else [batch, k]
    w = dyadic((n, k) if attrs.get("transB") else (k, n))
    inits = {"w": w}
    inputs = ["x", "w"]
    if bias != "none":
        inits["c"] = dyadic({"row": (n,), "matrix": (batch, n), "scalar": ()}[bias])
        inputs.append("c")
    node = oh.make_node("Gemm", inputs, ["y"], **attrs)
    proto = make_proto([node], {"x": a_shape}, {"y": [batch, n]}, inits)
    # transA puts the batch in dim 1, so this graph only runs at its declared shape.
    check_against_qonnx(proto, dyadic(tuple(a_shape)))


@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 1.0), (0.3, 0.7), (1.0, 0.7), (0.3, 0.0)])
def test_gemm_alpha_and_bias_round_once_like_onnxruntime(alpha: float, beta: float) -> None:
    """Exact products (dyadic A, B) but an inexact alpha and a float C: onnxruntime computes
    fl(alpha * acc + fl(beta * C)) with one FMA, which an unfused float32 form misses ~30% of the time."""
    w = dyadic((16, 32))
    c = RNG.standard_normal(32).astype(np.float32)
    node = oh.make_node("Gemm", ["x", "w", "c"], ["y"], alpha=alpha, beta=beta)
    proto = make_proto([node], {"x": [1, 16]}, {"y": [1, 32]}, {"w": w, "c": c})
    check_against_qonnx(proto, dyadic((64, 16)), per_sample=True)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("const_shape", [(), (1, 4), (4,)])
def test_elementwise(op: str, const_shape: tuple[int, ...]) -> None:
    c = RNG.standard_normal(const_shape).astype(np.float32) + 3.0
    proto = make_proto([oh.make_node(op, ["x", "c"], ["y"])], {"x": [1, 4]}, {"y": [1, 4]}, {"c": c})
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    x[0] = [0.0, -0.0, np.inf, np.nan]
    check_against_qonnx(proto, x)


def test_elementwise_two_data_inputs() -> None:
    proto = make_proto(
        [oh.make_node("Mul", ["a", "b"], ["p"]), oh.make_node("Sub", ["p", "a"], ["y"])],
        {"a": [1, 3], "b": [1, 3]},
        {"y": [1, 3]},
    )
    a, b = RNG.standard_normal((2, 5, 3)).astype(np.float32)
    got = Executor(ir.from_proto(proto)).run({"a": a, "b": b})["y"]
    assert_identical(got, a * b - a)


def test_relu_keeps_negative_zero_and_nan_like_onnxruntime() -> None:
    proto = make_proto([oh.make_node("Relu", ["x"], ["y"])], {"x": [1, 6]}, {"y": [1, 6]})
    x = np.array([[-0.0, 0.0, np.nan, -1.0, 2.0, -np.inf]] * 2, np.float32)
    check_against_qonnx(proto, x)


def test_identity_flatten_reshape_at_declared_shape() -> None:
    nodes = [
        oh.make_node("Identity", ["x"], ["i"]),
        oh.make_node("Flatten", ["i"], ["f"]),  # axis absent: 1
        oh.make_node("Reshape", ["f", "s1"], ["r1"]),  # 0 copies, -1 infers
        oh.make_node("Flatten", ["r1"], ["f2"], axis=-2),
        oh.make_node("Reshape", ["f2", "s2"], ["y"], allowzero=0),
    ]
    inits = {"s1": np.array([0, 3, -1], np.int64), "s2": np.array([2, -1], np.int64)}
    proto = make_proto(nodes, {"x": [2, 3, 2, 2]}, {"y": [2, 12]}, inits)
    check_against_qonnx(proto, RNG.standard_normal((2, 3, 2, 2)).astype(np.float32))


def test_reshape_allowzero_keeps_a_zero_dim() -> None:
    nodes = [oh.make_node("Reshape", ["x", "s"], ["y"], allowzero=1)]
    proto = make_proto(nodes, {"x": [0, 4]}, {"y": [4, 0]}, {"s": np.array([4, 0], np.int64)})
    got = Executor(ir.from_proto(proto)).run(np.zeros((0, 4), np.float32))["y"]
    assert got.shape == (4, 0)


def test_constant_nodes_are_folded_into_the_plan() -> None:
    nodes = [
        oh.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32([1, 2, 3]))),
        oh.make_node("Constant", [], ["k"], value_float=0.5),
        oh.make_node("Mul", ["c", "k"], ["ck"]),
        oh.make_node("Add", ["x", "ck"], ["y"]),
    ]
    proto = make_proto(nodes, {"x": [1, 3]}, {"y": [1, 3]})
    check_against_qonnx(proto, np.ones((4, 3), np.float32))


# ---------------------------------------------------------------------------------------------------
# The batch rule: N samples at once give what N runs of one sample give, stacked
# ---------------------------------------------------------------------------------------------------


def test_reshape_and_flatten_keep_the_batch() -> None:
    nodes = [
        oh.make_node("Reshape", ["x", "to3d"], ["a"]),  # [1, 16] -> [1, 4, 4]: dim 0 is the batch
        oh.make_node("Reshape", ["a", "tominus"], ["b"]),  # [-1, 2, 8]
        oh.make_node("Flatten", ["b"], ["c"], axis=0),  # one sample: [1, 16]
        oh.make_node("Reshape", ["c", "tozero"], ["d"]),  # [0, 4, 4]
        oh.make_node("Flatten", ["d"], ["y"]),
    ]
    inits = {
        "to3d": np.array([1, 4, 4], np.int64),
        "tominus": np.array([-1, 2, 8], np.int64),
        "tozero": np.array([0, 4, 4], np.int64),
    }
    proto = make_proto(nodes, {"x": [1, 16]}, {"y": [1, 16]}, inits)
    x = RNG.standard_normal((9, 16)).astype(np.float32)
    got = check_against_qonnx(proto, x, per_sample=True)
    assert got.shape == (9, 16)


def test_symbolic_batch_dim() -> None:
    proto = make_proto([oh.make_node("Relu", ["x"], ["y"])], {"x": ["N", 3]}, {"y": ["N", 3]})
    got = execute(ir.from_proto(proto), -np.ones((5, 3), np.float32))
    assert got["y"].shape == (5, 3)


# ---------------------------------------------------------------------------------------------------
# The API and its errors
# ---------------------------------------------------------------------------------------------------


def relu_model(inputs: dict[str, list[int | str]] | None = None) -> ir.Model:
    inputs = inputs or {"x": [1, 3]}
    nodes = [oh.make_node("Relu", [next(iter(inputs))], ["y"])]
    return ir.from_proto(make_proto(nodes, inputs, {"y": [1, 3]}))


def test_names_and_bare_array() -> None:
    ex = Executor(relu_model())
    assert ex.input_names == ("x",)
    assert ex.output_names == ("y",)
    x = np.array([[-1.0, 0.5, 2.0]], np.float64)  # converted to the declared float32
    out = ex.run(x)["y"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[0, 0.5, 2]])


def test_unsupported_op_names_the_node() -> None:
    node = oh.make_node("Hardmax", ["x"], ["y"], name="head_hardmax")
    proto = make_proto([node], {"x": [1, 3]}, {"y": [1, 3]})
    with pytest.raises(UnsupportedModelError, match=r"head_hardmax.*Hardmax"):
        Executor(ir.from_proto(proto))


def test_unknown_custom_domain_is_unsupported() -> None:
    node = oh.make_node("Quant", ["x", "s", "z", "b"], ["y"], name="q9", domain="my.custom")
    proto = make_proto([node], {"x": [1, 3]}, {"y": [1, 3]}, {"s": 1.0, "z": 0.0, "b": 8.0})
    with pytest.raises(UnsupportedModelError, match=r"q9.*my\.custom"):
        Executor(ir.from_proto(proto))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"nope": np.zeros((1, 3), np.float32)}, "unknown input.*nope"),
        ({}, "missing input 'x'"),
        ({"x": np.zeros((1, 4), np.float32)}, r"shape \[1, 4\], expected \['N', 3\]"),
        ({"x": np.zeros((3,), np.float32)}, "shape"),
    ],
)
def test_bad_inputs(inputs: dict[str, np.ndarray], message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        Executor(relu_model()).run(inputs)


def test_bare_array_needs_a_single_input() -> None:
    ex = Executor(ir.from_proto(make_proto(
        [oh.make_node("Add", ["a", "b"], ["y"])], {"a": [1, 3], "b": [1, 3]}, {"y": [1, 3]}
    )))
    with pytest.raises(UserInputError, match="pass a dict"):
        ex.run(np.zeros((1, 3), np.float32))


def test_reshape_that_drops_the_batch_is_an_error_naming_the_node() -> None:
    nodes = [oh.make_node("Reshape", ["x", "s"], ["y"], name="squeeze_batch")]
    proto = make_proto(nodes, {"x": [1, 4]}, {"y": [4]}, {"s": np.array([4], np.int64)})
    ex = Executor(ir.from_proto(proto))
    assert ex.run(np.ones((1, 4), np.float32))["y"].shape == (4,)
    with pytest.raises(UserInputError, match="squeeze_batch"):
        ex.run(np.ones((3, 4), np.float32))


def test_modes() -> None:
    # Hardware mode needs fixed-point types (tests/test_sim_hardware.py); a float input has none.
    with pytest.raises(UnsupportedModelError, match=r"\(Relu\): graph input 'x' is used without a Quant"):
        Executor(relu_model(), mode="hardware")
    with pytest.raises(UserInputError, match="unknown executor mode"):
        Executor(relu_model(), mode="fast")


def test_graph_input_with_initializer_is_a_constant() -> None:
    proto = make_proto(
        [oh.make_node("Add", ["x", "b"], ["y"])], {"x": [1, 2], "b": [2]}, {"y": [1, 2]}, {"b": np.float32([1, 2])}
    )
    ex = Executor(ir.from_proto(proto))
    assert ex.input_names == ("x",)
    np.testing.assert_array_equal(ex.run(np.zeros((2, 2), np.float32))["y"], [[1, 2], [1, 2]])


def test_unsorted_graph_is_ordered() -> None:
    nodes = [oh.make_node("Relu", ["a"], ["y"]), oh.make_node("Identity", ["x"], ["a"])]
    proto = make_proto(nodes, {"x": [1, 3]}, {"y": [1, 3]})
    got = execute(ir.from_proto(proto), np.float32([[-1, 0, 1]]))["y"]
    np.testing.assert_array_equal(got, [[0, 0, 1]])


def test_cast_to_double_and_back_rounds_like_onnxruntime() -> None:
    """float32 -> double is exact, the double product keeps every bit, the cast back rounds to
    nearest even: the same bits as onnxruntime (through qonnx's executor)."""
    factor = np.array([0.6492890995260663, 3.5e-4], dtype=np.float64)  # 31-bit mantissas: not float32
    nodes = [
        oh.make_node("Cast", ["x"], ["wide"], to=TensorProto.DOUBLE, name="to_double"),
        oh.make_node("Mul", ["wide", "k"], ["product"], name="mul"),
        oh.make_node("Cast", ["product"], ["y"], to=TensorProto.FLOAT, name="to_float"),
    ]
    proto = make_proto(nodes, {"x": [1, 2]}, {"y": [1, 2]}, {"k": factor})
    x = np.random.default_rng(0).integers(-2**20, 2**20, (300, 2)).astype(np.float32)
    y = check_against_qonnx(proto, x)
    assert np.any(y.astype(np.float64) != x.astype(np.float64) * factor)  # the final cast did round


def test_quant_of_a_double_input_returns_float32_like_qonnx() -> None:
    nodes = [
        oh.make_node("Cast", ["x"], ["wide"], to=TensorProto.DOUBLE, name="to_double"),
        oh.make_node("Mul", ["wide", "k"], ["product"], name="mul"),
        oh.make_node("Quant", ["product", "s", "z", "b"], ["y"], name="q", domain=QONNX, signed=1, narrow=0,
                     rounding_mode="ROUND"),
    ]
    inits = {"k": np.float64(0.6492890995260663), "s": np.float32(1), "z": np.float32(0), "b": np.float32(8)}
    proto = make_proto(nodes, {"x": [1, 3]}, {"y": [1, 3]}, inits)
    x = np.random.default_rng(1).integers(-200, 200, (500, 3)).astype(np.float32)
    assert check_against_qonnx(proto, x).dtype == np.float32


def test_cast_to_an_integer_type_is_refused_by_name() -> None:
    proto = make_proto([oh.make_node("Cast", ["x"], ["y"], to=TensorProto.INT32, name="to_int")], {"x": [1, 2]}, {"y": [1, 2]})
    with pytest.raises(UnsupportedModelError, match=r"'to_int'.*INT32 are not supported"):
        Executor(ir.from_proto(proto))


# Sizes where numpy's matmul on a transposed view and on a C-ordered copy gave different bits (AMD
# EPYC, OpenBLAS): which ones depends on the CPU and the BLAS, so several are tried.
@pytest.mark.parametrize(("batch", "outputs", "inputs"), [(1, 64, 16), (20, 32, 64), (256, 5, 32)])
def test_gemm_with_a_transposed_weight_equals_matmul_on_the_weight_stored_transposed(batch: int, outputs: int, inputs: int) -> None:
    """The bits of a float product must not depend on how the weight is stored: gemm-to-matmul
    stores Gemm's transB weight transposed, and translation validation compares the two."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((outputs, inputs)).astype(np.float32)
    x = rng.standard_normal((batch, inputs)).astype(np.float32)

    def run(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
        graph = oh.make_graph(
            [node],
            "g",
            [oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, inputs])],
            [oh.make_tensor_value_info("y", TensorProto.FLOAT, [None, outputs])],
            [numpy_helper.from_array(weight, "w")],
        )
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
        return execute(ir.serde.deserialize_model(model), x)["y"]

    gemm = run(oh.make_node("Gemm", ["x", "w"], ["y"], transB=1), w)
    matmul = run(oh.make_node("MatMul", ["x", "w"], ["y"]), np.ascontiguousarray(w.T))
    np.testing.assert_array_equal(gemm.view(np.uint32), matmul.view(np.uint32))
