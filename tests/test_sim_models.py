"""Semantic mode on whole models: quantized MLPs and real third-party exports, against qonnx.

On quantized graphs with power-of-two scales every result is exact in float32, so hawqc and qonnx
must agree bit for bit whatever order their matrix products sum in. On float graphs they need not:
see `test_three_layer_float_gemms`, which measures and bounds the difference instead.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir
import pytest
from conftest import JET_TAGGER, data_model
from onnx import TensorProto, numpy_helper

import hawqc
from hawqc.sim import Executor
from hawqc.sim.qonnx_oracle import QonnxOracle

QONNX = "qonnx.custom_op.general"


def assert_identical(got: np.ndarray, want: np.ndarray) -> None:
    """Same dtype, shape and bytes (so -0.0 differs from 0.0)."""
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    differ = got.reshape(-1).view(np.uint32) != want.reshape(-1).view(np.uint32)
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        raise AssertionError(
            f"{int(differ.sum())} of {got.size} elements differ, first at {i}: "
            f"{got.reshape(-1)[i]!r} vs {want.reshape(-1)[i]!r}"
        )


def qonnx_run(model: ir.Model | onnx.ModelProto, x: np.ndarray, per_sample: bool = True) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QonnxOracle(model).run(x, per_sample=per_sample)


# ---------------------------------------------------------------------------------------------------
# Quantized MLPs
# ---------------------------------------------------------------------------------------------------


def quant_mlp(
    sizes: list[int], *, linear: str, per_channel: bool, rounding: str, seed: int
) -> onnx.ModelProto:
    """Quant(8b) -> [MatMul(x, Quant(W, 6b)) + Quant(b) | Gemm(x, Quant(W), Quant(b), transB)]
    -> Relu -> Quant(8b unsigned) ... -> last layer -> Quant(10b signed); power-of-two scales."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}

    def quant(name: str, x: str, scale: np.ndarray, bits: int, signed: int, narrow: int, mode: str = "ROUND") -> str:
        inits[f"{name}_s"] = np.asarray(scale, np.float32)
        inits[f"{name}_z"] = np.zeros((), np.float32)
        inits[f"{name}_b"] = np.float32(bits)
        nodes.append(
            oh.make_node(
                "Quant", [x, f"{name}_s", f"{name}_z", f"{name}_b"], [name], name=name, domain=QONNX,
                signed=signed, narrow=narrow, rounding_mode=mode,
            )
        )
        return name

    act = quant("in_q", "x", np.float32(2.0**-3), 8, 1, 0)
    act_scale = np.float32(2.0**-3)
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        last = i == len(sizes) - 2
        if per_channel:
            w_scale = (2.0 ** -rng.integers(3, 7, size=n_out)).astype(np.float32)
        else:
            w_scale = np.float32(2.0**-4)
        gemm = linear == "gemm"
        inits[f"w{i}"] = (rng.standard_normal((n_out, n_in) if gemm else (n_in, n_out)) * 0.6).astype(np.float32)
        w_scale_shaped = w_scale.reshape(-1, 1) if gemm and per_channel else w_scale.reshape(1, -1) if per_channel else w_scale
        wq = quant(f"w{i}_q", f"w{i}", w_scale_shaped, 6, 1, 1)
        inits[f"b{i}"] = (rng.standard_normal(n_out) * 0.5).astype(np.float32)
        bq = quant(f"b{i}_q", f"b{i}", (act_scale * w_scale).astype(np.float32), 16, 1, 0)
        if gemm:
            nodes.append(oh.make_node("Gemm", [act, wq, bq], [f"z{i}"], name=f"fc{i}", transB=1))
        else:
            nodes.append(oh.make_node("MatMul", [act, wq], [f"m{i}"], name=f"fc{i}"))
            nodes.append(oh.make_node("Add", [f"m{i}", bq], [f"z{i}"], name=f"bias{i}"))
        if last:
            quant("y", f"z{i}", np.float32(2.0**-2), 10, 1, 0, rounding)
        else:
            nodes.append(oh.make_node("Relu", [f"z{i}"], [f"r{i}"], name=f"relu{i}"))
            act = quant(f"a{i}_q", f"r{i}", np.float32(2.0**-2), 8, 0, 0, rounding)
            act_scale = np.float32(2.0**-2)
    graph = oh.make_graph(
        nodes,
        "mlp",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, sizes[-1]])],
        [numpy_helper.from_array(a, n) for n, a in inits.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid(QONNX, 1)])
    model.ir_version = 8
    return model


def mlp_inputs(n: int, features: int, seed: int) -> np.ndarray:
    """Wide-ranging inputs, with exact rounding ties of the input Quant (odd multiples of 2**-4)
    and values at or near zero."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, features)) * 6).astype(np.float32)
    ties = (rng.integers(-300, 300, size=(n, features)) * 2 + 1) * np.float32(2.0**-4)
    pick = rng.random((n, features))
    x = np.where(pick < 0.25, ties, x)
    x = np.where((pick >= 0.25) & (pick < 0.3), np.float32(-0.0), x)
    x = np.where((pick >= 0.3) & (pick < 0.35), rng.standard_normal((n, features)) * 1e-3, x)
    return x.astype(np.float32)


@pytest.mark.parametrize(
    ("linear", "per_channel", "rounding"),
    [("matmul", False, "ROUND"), ("matmul", True, "HALF_UP"), ("gemm", False, "FLOOR"), ("gemm", True, "ROUND")],
)
def test_quantized_mlp_matches_qonnx(linear: str, per_channel: bool, rounding: str) -> None:
    proto = quant_mlp([16, 64, 32, 5], linear=linear, per_channel=per_channel, rounding=rounding, seed=7)
    model = ir.from_proto(proto)
    x = mlp_inputs(12, 16, seed=3)
    got = Executor(model).run({"x": x})["y"]
    assert_identical(got, qonnx_run(proto, x, per_sample=True)["y"])
    assert_identical(got, qonnx_run(proto, x, per_sample=False)["y"])
    # The batch is only a vectorization: one sample at a time gives the same bits.
    one_by_one = np.concatenate([Executor(model).run(x[i : i + 1])["y"] for i in range(len(x))])
    assert_identical(got, one_by_one)
    assert np.unique(got).size > 5, "the test model should not saturate"


def test_quantized_mlp_large_batch_matches_qonnx_subset() -> None:
    proto = quant_mlp([16, 64, 32, 32, 5], linear="matmul", per_channel=True, rounding="ROUND", seed=11)
    x = mlp_inputs(3000, 16, seed=5)
    got = Executor(ir.from_proto(proto)).run(x)["y"]
    assert_identical(got[::100], qonnx_run(proto, x[::100])["y"])
    assert_identical(got, qonnx_run(proto, x, per_sample=False)["y"])


# ---------------------------------------------------------------------------------------------------
# Real exports
# ---------------------------------------------------------------------------------------------------


def test_brevitas_bnn_fc_1layer() -> None:
    """Old Brevitas export: domain onnx.brevitas, BipolarQuant, a bias Quant whose input is a graph
    input shadowed by an initializer."""
    raw = ir.load(data_model("bnn_model_fc_1layer.onnx"))
    loaded = hawqc.load(data_model("bnn_model_fc_1layer.onnx"))  # normalized and verified
    ex = Executor(raw)
    assert ex.input_names == ("x.1",)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3)).astype(np.float32)
    x[:40] *= np.float32(1e-6)
    x[40:50] = np.float32(0.0)
    x[50:60] = np.float32(-0.0)
    x[60:70] = rng.choice(np.float32([1e-38, -1e-38, 1e-45, -1e-45]), size=(10, 3))
    got = ex.run(x)["12"]
    assert_identical(got, qonnx_run(raw, x)["12"])
    assert_identical(Executor(loaded).run(x)["12"], got)
    assert len(np.unique(got, axis=0)) > 1


THREE_LAYER = data_model("three_layer_pytorch.onnx")


def test_three_layer_with_its_softmax() -> None:
    """The whole model, its final Softmax included (semantic mode runs Softmax through
    onnxruntime). On exactly representable weights and inputs the logits are exact, so the
    probabilities must be qonnx's bit for bit."""
    proto = onnx.load(THREE_LAYER)
    for init in proto.graph.initializer:
        w = (np.round(numpy_helper.to_array(init) * 16) / 16).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
    out = proto.graph.output[0].name
    x = (np.round(np.random.default_rng(3).standard_normal((40, 16)) * 8) / 8).astype(np.float32)
    got = Executor(ir.from_proto(proto)).run(x)[out]
    assert_identical(got, qonnx_run(proto, x, per_sample=True)[out])


def _three_layer_logits() -> onnx.ModelProto:
    """three_layer_pytorch without its final Softmax: the Gemm/Relu logits only."""
    proto = onnx.load(THREE_LAYER)
    assert proto.graph.node[-1].op_type == "Softmax"
    logits = proto.graph.node[-1].input[0]
    del proto.graph.node[-1]
    del proto.graph.output[:]
    proto.graph.output.append(oh.make_tensor_value_info(logits, TensorProto.FLOAT, [789444, 5]))
    return proto


def test_three_layer_float_gemms() -> None:
    """A float (unquantized) model: matrix products sum in a different order in onnxruntime (MLAS)
    and numpy (OpenBLAS), so results may differ in the last bits. Measured here on 2 cores:
    at batch <= 100 about half of the logits differ by 1-2 ulp of the partial sums (|diff| <= 6e-8),
    at batch >= 300 numpy and MLAS happened to agree bit for bit; onnxruntime itself gives other
    bits at batch 1 than at batch 300. We bound the difference and check that it is rounding only."""
    proto = _three_layer_logits()
    out = proto.graph.output[0].name
    ex = Executor(ir.from_proto(proto))
    x = (np.random.default_rng(1).standard_normal((64, 16)) * 3).astype(np.float32)
    got = ex.run(x)[out]
    for per_sample in (True, False):
        want = qonnx_run(proto, x, per_sample=per_sample)[out]
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_three_layer_quantized_inputs_are_exact() -> None:
    """The same Gemms on exactly representable data (weights rounded to k / 16, inputs to k / 8):
    every sum is exact in float32 (checked against float64), so the summation order cannot show
    and qonnx agrees bit for bit."""
    proto = _three_layer_logits()
    weights = {}
    for init in proto.graph.initializer:
        w = (np.round(numpy_helper.to_array(init) * 16) / 16).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        weights[init.name] = w.astype(np.float64)
    out = proto.graph.output[0].name
    x = (np.round(np.random.default_rng(2).standard_normal((40, 16)) * 8) / 8).astype(np.float32)
    got = Executor(ir.from_proto(proto)).run(x)[out]
    exact = x.astype(np.float64)
    for layer, (w, b) in enumerate([("1", "2"), ("3", "4"), ("5", "6"), ("7", "8")]):
        exact = exact @ weights[w].T + weights[b]
        exact = np.maximum(exact, 0) if layer < 3 else exact
    np.testing.assert_array_equal(got.astype(np.float64), exact)
    assert_identical(got, qonnx_run(proto, x, per_sample=True)[out])




def test_bundled_jet_tagger() -> None:
    model = ir.load(JET_TAGGER)
    x = mlp_inputs(2000, 16, seed=9)
    got = Executor(model).run(x)["global_out"]
    assert_identical(got[:40], qonnx_run(model, x[:40], per_sample=True)["global_out"])
    assert_identical(got, qonnx_run(model, x, per_sample=False)["global_out"])
