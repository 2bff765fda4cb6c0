"""examples/digits_cnn/hawq_model.py: the HAWQ digits CNN (QuantBnConv2d, max pooling, a residual
block requantized with its identity, per-channel weights) trains, lifts to the committed QONNX file,
classifies the digits' test split, and its lifted graph, made channels-last by hawqc's default
pipeline, gives HAWQ's eval-mode integer outputs bit for bit in hardware mode. (The C simulations of
the three backends are compared with hardware mode by `hawqc --verify`; see the example's README.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir
import pytest
import torch
from conftest import REPO, load_example

from hawqc.driver import DEFAULT_PIPELINE
from hawqc.ir.io import read_model, write_model
from hawqc.ir.layout import layout_permutations
from hawqc.ir.shape_inference import infer_shapes
from hawqc.passes.manager import PassManager
from hawqc.sim.executor import Executor

EXAMPLE = REPO / "examples" / "digits_cnn"
COMMITTED = EXAMPLE / "digits_cnn_hawq.onnx"
# Measured for the committed file: 0.9822 (441 of 449 test images; the float network gets the
# same). Chance is 0.1; wrong weights, a wrong fold or a wrong requantization fall far below.
MIN_TEST_ACCURACY = 0.96


hawq_model = load_example(EXAMPLE / "hawq_model.py", "digits_cnn_hawq_model")


@pytest.fixture(scope="module")
def trained():
    """One training run at the defaults (about 8 s on one thread), shared by the tests below."""
    return hawq_model.train()


@pytest.fixture(scope="module")
def committed() -> ir.Model:
    return read_model(COMMITTED)


def _quant_bits(graph: ir.Model) -> dict[str, tuple[int, int]]:
    """(bit width, signed) of every Quant node, by node name."""
    bits = {}
    for node in graph.graph:
        if node.op_type == "Quant":
            width = int(node.inputs[3].const_value.numpy())
            bits[node.name] = (width, node.attributes["signed"].value)
    return bits


def _structure(graph: ir.Model) -> tuple:
    return (
        [(node.name, node.op_type) for node in graph.graph],
        _quant_bits(graph),
        {name: tuple(value.shape) for name, value in graph.graph.initializers.items()},
    )


def _compiled(graph: ir.Model) -> tuple[ir.Model, tuple[int, ...]]:
    """The graph after hawqc's default pipeline (channels-last), and the input permutation it made."""
    graph = ir.from_proto(ir.to_proto(graph))  # a copy: the pipeline rewrites in place
    infer_shapes(graph)
    PassManager.parse(DEFAULT_PIPELINE).run(graph)
    return graph, layout_permutations(graph)["x"]


def _hawq_integer_outputs(model, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    integers = np.round(out.astype(np.float64) / scale.astype(np.float64))
    # HAWQ's output is float32(integer * scale): these integers are the only ones that give it back.
    np.testing.assert_array_equal((integers * scale.astype(np.float64)).astype(np.float32), out)
    return integers


def test_committed_file_is_what_hawq_model_writes(trained, committed, tmp_path) -> None:
    written = tmp_path / "digits_cnn_hawq.onnx"
    write_model(trained.graph, written)
    if hawq_model.platform() == hawq_model.REFERENCE_PLATFORM:
        assert written.read_bytes() == COMMITTED.read_bytes()
    else:
        # Other CPU kernels sum in other orders and train slightly different numbers (see platform()).
        assert _structure(read_model(written)) == _structure(committed)


def test_committed_file_has_the_advertised_structure(committed) -> None:
    ops = Counter(node.op_type for node in committed.graph)
    # Quants: input, 3 weights, 3 biases, 2 requantizations. Cast (to double) and Mul: act1 and each
    # residual branch; Mul also the input's codes. Add: the branches' sum, the linear bias.
    assert ops == {
        "Quant": 9, "Mul": 4, "Cast": 3, "Add": 2, "Conv": 2, "Relu": 2, "MaxPool": 1, "Flatten": 1, "MatMul": 1
    }  # fmt: skip
    bits = _quant_bits(committed)
    assert [bits[f"{layer}_weight"] for layer in ("conv1", "conv2", "fc")] == [(8, 1), (6, 1), (6, 1)]
    assert [bits[f"{layer}_bias"] for layer in ("conv1", "conv2", "fc")] == [(32, 1)] * 3
    assert bits["quant_input_quant"] == (8, 1)
    assert bits["act1_quant"] == (8, 0) and bits["act_residual_quant"] == (6, 0)
    nodes = {node.name: node for node in committed.graph}
    inits = committed.graph.initializers
    # The residual requantization: the block input (the max pool) is its own branch with its own
    # dyadic factor; the block's convolution branch has one factor per output channel (per-channel
    # weights), and the two are added before the one rounding.
    assert nodes["act_residual_identity_to_double"].inputs[0] is nodes["pool_maxpool"].outputs[0]
    factor = inits["act_residual_dyadic"].const_value.numpy()
    assert factor.size == hawq_model.CHANNELS and len(np.unique(factor)) > 1
    assert inits["act_residual_identity_dyadic"].const_value.numpy().size == 1
    assert nodes["act_residual_quant"].inputs[0] is nodes["act_residual_residual_add0"].outputs[0]
    # The input scale is the power of two hardware mode needs.
    assert float(inits["quant_input_scale"].const_value.numpy()) == 2.0**hawq_model.INPUT_SCALE_EXPONENT


def test_committed_file_classifies_the_test_split(trained, committed) -> None:
    data = hawq_model.make_model.digits_split()
    graph, perm = _compiled(committed)
    codes = Executor(graph, mode="hardware").run(np.ascontiguousarray(data.x_test.transpose(perm)))["output"]
    accuracy = float(((codes * hawq_model.output_scale(committed)).argmax(1) == data.y_test).mean())
    assert accuracy >= MIN_TEST_ACCURACY
    assert trained.quantized_accuracy >= MIN_TEST_ACCURACY


def test_hawq_forward_equals_the_compiled_graph_in_hardware_mode_bit_for_bit(trained) -> None:
    # The test split, plus random images at up to 3x the pixel range: those saturate the input
    # quantizer and push the activations into their clamps.
    rng = np.random.default_rng(11)
    noise = rng.uniform(-0.5, 3.0, size=(300, 1, hawq_model.IMAGE, hawq_model.IMAGE)).astype(np.float32)
    for x in (trained.data.x_test, noise):
        expected = _hawq_integer_outputs(trained.model, x, hawq_model.output_scale(trained.graph))
        graph, perm = _compiled(trained.graph)
        assert perm == (0, 2, 3, 1)  # NCHW -> NHWC
        hardware = Executor(graph, mode="hardware").run(np.ascontiguousarray(x.transpose(perm)))["output"]
        np.testing.assert_array_equal(hardware, expected)
    assert len(np.unique(expected.argmax(1))) > 1  # not a constant model
