"""examples/brevitas_digits: the committed Brevitas export (float per-channel weight scales, a float
input scale, BatchNorm left unfused) has the structure its README documents, compiles on vitis to a
design whose C simulation equals hardware mode and whose hardware mode equals the file's exact
meaning, classifies the digits' test split as documented when compiled, and make_model.py run again
trains and exports a model of the same structure that classifies as documented.

The retrained bytes are not compared with the committed file: they depend on the CPU's kernels
(their summation order), and the file was written on another CPU than most that run these tests. The
retrained model is compiled and verified too, whatever its numbers (README, "Retrained models").
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from conftest import REPO, load_example
from onnx import numpy_helper

from hawqc.flow.driver import CompileOptions, compile_model

EXAMPLE = REPO / "examples" / "brevitas_digits"
COMMITTED = EXAMPLE / "digits_cnn_brevitas.onnx"
# Measured for the committed file (README): 0.9889 (444 of 449 test images), in Brevitas, in the
# file's float32 semantics, in its exact meaning and in the compiled design alike. Chance is 0.1; a
# wrong requantization, interface or output map falls far below the bound.
MIN_TEST_ACCURACY = 0.97
# The committed file's accuracy, and how far below it a retrained model may land. Training again on
# another CPU sums in another order and ends with other numbers: AVX2 and ATen's scalar kernels
# (ATEN_CPU_CAPABILITY) gave 0.9889 too; seeds 0-9 (a larger change) gave 0.9733 to 0.9911. Three
# points (13 of 449 images) covers that spread and is far less than a broken export loses.
DOCUMENTED_ACCURACY = 0.9889
RETRAINED_TOLERANCE = 0.03
VERIFY_SAMPLES = 300


make_model = load_example(EXAMPLE / "make_model.py", "brevitas_digits_make_model")
compiled_accuracy = load_example(EXAMPLE / "compiled_accuracy.py", "brevitas_digits_compiled_accuracy")


@pytest.fixture(scope="module")
def committed() -> onnx.ModelProto:
    return onnx.load(COMMITTED)


@pytest.fixture(scope="module")
def retrained(tmp_path_factory):
    """One training run at the defaults (about 2 s on one thread) and its export (about 5 s)."""
    trained = make_model.train()
    path = tmp_path_factory.mktemp("retrained") / "digits_cnn_brevitas.onnx"
    make_model.export(trained.net, path)
    return trained, path


def _skeleton(model: onnx.ModelProto) -> tuple:
    """The model without its trained numbers: nodes with their attributes, initializers' names,
    types and shapes."""
    nodes = [(n.op_type, n.name, tuple(n.input), tuple(n.output), tuple(a.SerializeToString() for a in n.attribute))
             for n in model.graph.node]  # fmt: skip
    inits = {i.name: (i.data_type, tuple(i.dims)) for i in model.graph.initializer}
    return nodes, inits, [i.SerializeToString() for i in model.graph.input], [o.name for o in model.graph.output]


def _is_power_of_two(values: np.ndarray) -> np.ndarray:
    mantissa, _ = np.frexp(values.astype(np.float64))
    return mantissa == 0.5


def test_committed_file_has_the_advertised_structure(committed) -> None:
    """Brevitas's export as the README describes it: Quant on the input, weights and activations,
    BatchNormalization unfused, per-channel weight scales, no scale a power of two."""
    ops = Counter(node.op_type for node in committed.graph.node)
    # Quants: the input, 3 weights, 2 activations (the QuantLinear's float bias is not quantized).
    assert ops == {"Quant": 6, "Conv": 2, "BatchNormalization": 2, "Relu": 2, "MaxPool": 2, "Reshape": 1, "Gemm": 1}
    assert ("qonnx.custom_op.general", 2) in {(o.domain, o.version) for o in committed.opset_import}
    assert committed.producer_name == "pytorch"
    inits = {init.name: numpy_helper.to_array(init) for init in committed.graph.initializer}
    quants = [node for node in committed.graph.node if node.op_type == "Quant"]
    scales = {}
    for node in quants:
        assert inits[node.input[2]] == 0  # zero point
        assert inits[node.input[3]] == 8  # bit width
        scales[node.name] = inits[node.input[1]]
    # The input's quantizer reads the graph input and is signed (Int8ActPerTensorFloat).
    source = next(node for node in quants if node.input[0] == committed.graph.input[0].name)
    assert next(a.i for a in source.attribute if a.name == "signed") == 1
    # Two per-channel weight scales [8, 1, 1, 1] (Int8WeightPerChannelFloat), every value different.
    per_channel = [s for s in scales.values() if s.shape == (make_model.CHANNELS, 1, 1, 1)]
    assert len(per_channel) == 2 and all(len(np.unique(s)) == make_model.CHANNELS for s in per_channel)
    # Float scales: not one of them is a power of two (what issue 14's integer-requant is for).
    assert not any(_is_power_of_two(s).any() for s in scales.values()), scales
    # BatchNormalization with trained parameters and statistics, and a float bias on the Gemm.
    for node in (n for n in committed.graph.node if n.op_type == "BatchNormalization"):
        assert all(node_input in inits for node_input in node.input[1:])
        assert not np.allclose(inits[node.input[1]], 1) and len(np.unique(inits[node.input[4]])) == make_model.CHANNELS
    gemm = next(node for node in committed.graph.node if node.op_type == "Gemm")
    assert inits[gemm.input[2]].shape == (make_model.CLASSES,)


def test_committed_file_compiles_and_verifies_against_its_exact_meaning(committed, tmp_path) -> None:
    """C simulation == hardware mode == the exact meaning on every drawn sample (vitis); the input
    port takes 8-bit codes, the output is integers with an affine map, the requantizations are
    dyadic multipliers narrower than HAWQ's 31 bits."""
    result = compile_model(COMMITTED, tmp_path / "proj", CompileOptions(backend="vitis", verify_samples=VERIFY_SAMPLES))
    verify = result.verify
    assert verify.passed and verify.bit_exact, verify.summary()
    assert verify.samples == VERIFY_SAMPLES
    assert verify.exact is not None and verify.exact.equal and verify.exact.samples == VERIFY_SAMPLES, verify.summary()
    report = result.report.as_dict()
    interfaces = report["interfaces"]
    assert "8-bit signed codes" in interfaces["inputs"][committed.graph.input[0].name]["host"]
    assert "integers v" in interfaces["outputs"][committed.graph.output[0].name]["host"]
    widths = [entry["multiplier_bits"] for entry in report["requantizations"]]
    assert len(widths) == 2 and all(0 < width < 31 for width in widths), widths


def test_committed_file_verifies_on_the_test_digits(tmp_path) -> None:
    """`--inputs` with the real test images (standardized, NCHW): the host's codes through the C
    simulation, hardware mode and the exact meaning, equal on every image."""
    inputs = tmp_path / "x_test.npy"
    np.save(inputs, make_model.digits_split().x_test)
    verify = compile_model(COMMITTED, tmp_path / "proj", CompileOptions(backend="vitis", inputs=inputs)).verify
    assert verify.passed and verify.bit_exact and verify.samples == 449, verify.summary()
    assert verify.exact is not None and verify.exact.equal and verify.exact.samples == 449, verify.summary()


def test_committed_file_compiled_classifies_the_test_split() -> None:
    """The design (hardware mode on the host's codes, outputs mapped to real units) equals the exact
    meaning on every test image and classifies as documented."""
    data = make_model.digits_split()
    result = compiled_accuracy.compiled_accuracy(COMMITTED, data.x_test, data.y_test)
    assert result.hardware_equals_exact
    assert result.hardware >= MIN_TEST_ACCURACY and result.float32 >= MIN_TEST_ACCURACY


def test_retrained_model_has_the_committed_structure(retrained, committed) -> None:
    """Names, operators, attributes, initializers' types and shapes: everything but the numbers."""
    _, path = retrained
    assert _skeleton(onnx.load(path)) == _skeleton(committed)


def test_retrained_model_classifies_as_documented(retrained) -> None:
    """Brevitas in PyTorch and the exported file in hawqc's semantic executor."""
    trained, path = retrained
    exported = make_model.file_logits(path, trained.data.x_test)
    assert trained.brevitas_accuracy >= DOCUMENTED_ACCURACY - RETRAINED_TOLERANCE
    assert make_model.accuracy(exported, trained.data.y_test) >= DOCUMENTED_ACCURACY - RETRAINED_TOLERANCE


def test_retrained_model_compiles_and_verifies_against_its_exact_meaning(retrained, tmp_path) -> None:
    """Whatever numbers this CPU trains: some need a requantization offset wider than 24 bits (which
    hawqc once refused, README), all compile exactly."""
    _, path = retrained
    result = compile_model(path, tmp_path / "proj", CompileOptions(backend="vitis", verify_samples=100))
    assert result.verify.passed and result.verify.exact.equal, result.verify.summary()
