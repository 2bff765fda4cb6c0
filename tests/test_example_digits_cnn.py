"""examples/digits_cnn: the committed QONNX CNN is what make_model.py writes from its numbers, has the
structure its README documents (Conv, BatchNorm, ReLU, max pooling, a residual Add, a dense head),
runs in hawqc's executor bit-identically to qonnx and to the PyTorch network it came from, and
classifies the digits' test split; make_model.py run again writes a model of that structure which classifies as documented and compiles to a C simulation equal to hardware
mode bit for bit.

The retrained bytes are not compared with the committed file: they depend on the CPU's kernels
(their summation order), and the file was written on another CPU than most that run these tests.
Only what holds on every CPU is compared bit for bit: the file rebuilt from its own numbers, and
each machine's network against the file it writes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from conftest import REPO, load_example
from onnx import numpy_helper

import hawqc
from hawqc.flow.driver import CompileOptions, compile_model
from hawqc.sim.executor import Executor
from hawqc.sim.qonnx_oracle import QonnxOracle
from hawqc.sim.quant import int_quant, quant_bounds, rounding_function

EXAMPLE = REPO / "examples" / "digits_cnn"
COMMITTED = EXAMPLE / "digits_cnn.onnx"
# Measured: 0.9822 (441 of 449 test images) for the committed file. The margin is for the test's
# sake only; the file's accuracy is fixed and a kernel that gets Conv, BatchNorm or MaxPool wrong
# loses far more than 2 points.
MIN_TEST_ACCURACY = 0.96
# The committed file's accuracy (README), and how far below it a retrained model may land. Training
# again on another CPU sums in another order and ends with other numbers. Emulated here (seed 0) with
# AVX2 kernels, ATen's scalar ones (ATEN_CPU_CAPABILITY=default), MKL's reproducibility modes
# (MKL_CBWR) and oneDNN held to AVX or SSE4.1: 0.9822 to 0.9844; seeds 1-5 (a larger change) gave
# 0.9844 to 0.9911. Two points (9 of 449 images) is far more than that spread and far less than a
# broken layer loses.
DOCUMENTED_ACCURACY = 0.9822
RETRAINED_TOLERANCE = 0.02


make_model = load_example(EXAMPLE / "make_model.py", "digits_cnn_make_model")


@pytest.fixture(scope="module")
def trained():
    """One training run at the defaults (about 4 s on one thread), shared by the tests below."""
    return make_model.train_and_build()


@pytest.fixture(scope="module")
def committed() -> onnx.ModelProto:
    return onnx.load(COMMITTED)


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its trained numbers: initializers keep name, type and shape only."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for init in copy.graph.initializer:
        init.ClearField("raw_data")
        init.ClearField("float_data")
    return copy


def _network_of(model: onnx.ModelProto):
    """make_model.py's network holding the file's numbers: weights, biases, BatchNorm parameters
    and statistics, activation scales (the weight scales follow from the weights)."""
    inits = {init.name: numpy_helper.to_array(init).copy() for init in model.graph.initializer}  # writable
    net = make_model.DigitsCNN()
    with torch.no_grad():
        for layer in ("conv1", "conv2", "fc"):
            getattr(net, layer).weight.copy_(torch.from_numpy(inits[f"{layer}_weight"]))
            getattr(net, layer).bias.copy_(torch.from_numpy(inits[f"{layer}_bias"]))
        for name in ("bn1", "bn2"):
            bn = getattr(net, name)
            for attribute, suffix in (("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
                                      ("running_var", "var")):  # fmt: skip
                getattr(bn, attribute).copy_(torch.from_numpy(inits[f"{name}_{suffix}"]))
    net.act_scales = {point: inits[f"{point}_quant_scale"] for point in net.POINTS}
    return net.eval()


def test_committed_file_is_what_make_model_writes_from_its_numbers(committed) -> None:
    """The writer, byte for byte, on every CPU: no training, only the file's own numbers (and the
    weights' power-of-two scales computed from them: log2(max |w| / 31) lies at least 0.002 from an
    integer for every scale here, so no CPU's log2 rounds one across a power of two)."""
    assert make_model.build_qonnx(_network_of(committed)).SerializeToString() == COMMITTED.read_bytes()


def test_retrained_model_has_the_committed_structure(trained, committed) -> None:
    """Names, operators, attributes, initializers' types and shapes: everything but the numbers."""
    assert _skeleton(trained.model) == _skeleton(committed)


def test_retrained_model_classifies_as_documented(trained) -> None:
    logits = Executor(ir.from_proto(trained.model)).run(trained.data.x_test)["global_out"]
    assert make_model.accuracy(logits, trained.data.y_test) >= DOCUMENTED_ACCURACY - RETRAINED_TOLERANCE


@pytest.mark.slow
def test_retrained_model_compiles_and_verifies_bit_exact(trained, tmp_path) -> None:
    """Whatever numbers this CPU trained: C simulation == hardware mode == QONNX's meaning, on the
    test split and random images up to 3x the pixel range (saturating the input quantizer). One
    backend: the committed file is compiled on all three by test_cnn_end_to_end."""
    noise = np.random.default_rng(5).uniform(-0.5, 3.0, size=(100, 1, make_model.IMAGE, make_model.IMAGE))
    inputs = tmp_path / "x.npy"
    np.save(inputs, np.concatenate([trained.data.x_test, noise.astype(np.float32)]))
    path = tmp_path / "digits_cnn.onnx"
    onnx.save(trained.model, path)
    verify = compile_model(path, tmp_path / "proj", CompileOptions(backend="vitis", inputs=inputs)).verify
    assert verify.samples == len(trained.data.x_test) + 100
    assert verify.bit_exact and verify.modes.equal, verify.summary()


def test_committed_file_has_the_advertised_structure(committed) -> None:
    graph = committed.graph
    assert committed.ir_version <= 10 and {(o.domain, o.version) for o in committed.opset_import} == {
        ("", 13),
        ("qonnx.custom_op.general", 1),
    }
    ops = Counter(node.op_type for node in graph.node)
    assert ops == {"Quant": 11, "Conv": 2, "BatchNormalization": 2, "Relu": 2, "MaxPool": 1, "Add": 1,
                   "Flatten": 1, "Gemm": 1}  # fmt: skip
    nodes = {node.name: node for node in graph.node}
    attributes = {name: {a.name for a in node.attribute} for name, node in nodes.items()}
    assert "pads" not in attributes["pool1"]
    assert not {"strides", "dilations", "group"} & attributes["conv1"]
    assert {"strides", "dilations", "group"} <= attributes["conv2"]
    # The residual Add reads the block's input (the MaxPool) and the block's output.
    assert nodes["residual_add"].input[0] == nodes["pool1"].output[0]
    assert [n.op_type for n in graph.node if nodes["residual_add"].output[0] in n.input] == ["Quant"]
    gemm = nodes["fc"]
    assert onnx.helper.get_attribute_value(next(a for a in gemm.attribute if a.name == "transB")) == 1
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    assert inits["fc_weight"].shape == (10, 128)  # PyTorch's [out, in]
    per_channel = inits["conv2_weight_quant_scale"]
    assert per_channel.shape == (8, 1, 1, 1) and len(np.unique(per_channel)) > 1
    assert inits["conv1_weight_quant_scale"].shape == ()
    # Every scale is a power of two; BatchNorm parameters are real trained values.
    for name, value in inits.items():
        if name.endswith("_scale") and name.startswith(("input", "conv", "act", "add", "fc", "logits")):
            assert np.all(np.log2(value) == np.round(np.log2(value))), name
    assert len(np.unique(inits["bn1_var"])) == 8 and not np.allclose(inits["bn2_scale"], 1)
    for bn in ("bn1", "bn2"):
        epsilon = next(a for a in nodes[bn].attribute if a.name == "epsilon")
        assert epsilon.f == np.float32(1e-5)


def test_committed_file_loads_and_classifies_the_test_split() -> None:
    data = make_model.digits_split()
    logits = Executor(hawqc.load(COMMITTED)).run(data.x_test)["global_out"]
    assert logits.shape == (len(data.y_test), 10)
    assert make_model.accuracy(logits, data.y_test) >= MIN_TEST_ACCURACY


def test_executor_equals_qonnx_bit_for_bit(committed) -> None:
    x = make_model.digits_split().x_test
    got = Executor(ir.from_proto(committed)).run(x)["global_out"]
    oracle = QonnxOracle(committed)
    per_sample = oracle.run(x[:8], per_sample=True)["global_out"]
    batched = oracle.run(x, per_sample=False)["global_out"]
    assert got.dtype == batched.dtype == np.float32
    np.testing.assert_array_equal(got[:8].view(np.uint32), per_sample.view(np.uint32))
    np.testing.assert_array_equal(got.view(np.uint32), batched.view(np.uint32))


def test_pytorch_eval_equals_the_written_file_bit_for_bit(trained) -> None:
    """The fake-quantized PyTorch network is the file's meaning, BatchNorm rounding included."""
    x = trained.data.x_test
    torch_logits = make_model.predict(trained.net, x, quantized=True)
    file_logits = Executor(ir.from_proto(trained.model)).run(x)["global_out"]
    np.testing.assert_array_equal(file_logits.view(np.uint32), torch_logits.view(np.uint32))


def test_fake_quant_is_qonnx_quant() -> None:
    """Ties round half to even, values clamp, zeros keep the sign qonnx gives them."""
    values = np.array([-40, -3, -2.5, -1.5, -0.5, -0.25, -0.0, 0.0, 0.25, 0.5, 1.5, 2.5, 31.5, 40], np.float32)
    scale = np.float32(0.5)
    for bits, signed, narrow in [(6, 1, 1), (8, 0, 0), (4, 1, 0)]:
        bounds = quant_bounds(np.float32(bits), signed, narrow)
        want = int_quant(values * scale, scale, np.float32(0), bounds, rounding_function("ROUND"))
        x = make_model.torch.from_numpy(values * scale)
        got = make_model.fake_quant(x, scale, bits, bool(signed), bool(narrow)).numpy()
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
