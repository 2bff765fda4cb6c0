"""examples/jet_tagger/hawq_model.py: the HAWQ jet tagger (QThreeLayer, mixed precision) trains and
lifts to a QONNX graph of the committed file's structure, which classifies the synthetic jets as
documented, compiles to a C simulation equal to hardware mode bit for bit, and in hardware mode gives
HAWQ's eval-mode integer outputs bit for bit, for two per-layer bit configurations. The committed file
classifies the test jets and hawqc's reader and writer give its bytes back.

The retrained bytes are not compared with the committed file: they depend on the CPU's kernels
(their summation order), and the file was written on another CPU than most that run these tests.
(tests/test_hawq_chain.py's `jet_8553` chain is this training too, compared with HAWQ through the C
simulations of all three backends.)"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx_ir as ir
import pytest
import torch
from conftest import REPO, load_example, verify_on_vitis

from hawqc.ir.io import read_model, write_model
from hawqc.sim.executor import Executor

EXAMPLE = REPO / "examples" / "jet_tagger"
COMMITTED = EXAMPLE / "jet_tagger_hawq.onnx"
# Measured for the committed file: 0.5775 (1155 of 2000 test jets; the float network gets 0.5705).
# The classes overlap by design (make_model.py), so chance is 0.2 and a broken requantization or
# wrong weights fall far below this bound.
MIN_TEST_ACCURACY = 0.55
# How far below the committed files' accuracy (README: 0.5775 for 8/5/5/5 and for 6/6/4/7) a
# retrained model may land. Training again on another CPU sums in another order and ends with other
# numbers. Emulated here (seed 0) with AVX2 kernels, ATen's scalar ones (ATEN_CPU_CAPABILITY=default),
# MKL's reproducibility modes (MKL_CBWR) and oneDNN held to AVX or SSE4.1: 0.5695 to 0.5800 (8/5/5/5),
# 0.5720 to 0.5760 (6/6/4/7). (Other seeds are no guide: they draw other jets.) Four points is five
# times the largest drop seen (0.8, AVX2); a broken requantization or wrong weights fall towards
# chance, 0.2.
DOCUMENTED_ACCURACY = 0.5775
RETRAINED_TOLERANCE = 0.04
# Drawn by the driver's own `--verify`, as test_hawq_chain compiles the same graph: one C simulation
# for both (cached by content in HAWQC_CACHE_DIR).
VERIFY_SAMPLES = 64


hawq_model = load_example(EXAMPLE / "hawq_model.py", "jet_tagger_hawq_model")


@pytest.fixture(scope="module")
def trained():
    """One training run at the defaults (weights 8/5/5/5; about 6 s on one thread)."""
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
        Counter(node.op_type for node in graph.graph),
        _quant_bits(graph),
        [tuple(value.shape) for value in graph.graph.initializers.values()],
    )


def test_committed_file_reads_and_writes_back_byte_for_byte(committed, tmp_path) -> None:
    """hawqc's writer, which wrote the file, gives it back from what its reader read."""
    written = tmp_path / "jet_tagger_hawq.onnx"
    write_model(committed, written)
    assert written.read_bytes() == COMMITTED.read_bytes()


def test_retrained_graph_has_the_committed_structure(trained, committed, tmp_path) -> None:
    """Operators, bit widths, initializer shapes: everything but the trained numbers."""
    written = tmp_path / "jet_tagger_hawq.onnx"
    write_model(trained.graph, written)
    assert _structure(read_model(written)) == _structure(committed)


@pytest.mark.slow
def test_retrained_graph_compiles_and_verifies_bit_exact(trained, tmp_path) -> None:
    """Whatever numbers this CPU trained: C simulation == hardware mode == semantic mode (vitis)."""
    verify_on_vitis(trained.graph, tmp_path, VERIFY_SAMPLES)


def test_committed_file_has_the_mixed_precision_of_the_paper(committed) -> None:
    ops = Counter(node.op_type for node in committed.graph)
    # 4 layers: weight and bias Quants; the input Quant; 3 requantizations of Cast(double) -> Mul
    # -> Quant; the input's `Mul(1 / s)` to codes.
    assert ops == {"Quant": 12, "MatMul": 4, "Add": 4, "Mul": 4, "Relu": 3, "Cast": 3}
    bits = _quant_bits(committed)
    assert [bits[f"dense_{i}_weight"] for i in range(1, 5)] == [(8, 1), (5, 1), (5, 1), (5, 1)]
    assert [bits[f"dense_{i}_bias"] for i in range(1, 5)] == [(32, 1)] * 4
    assert bits["quant_input_quant"] == (8, 1)
    assert [bits[f"quant_act_{i}_quant"] for i in range(1, 4)] == [(8, 0)] * 3
    # Per-channel weights: each output channel has its own requantization factor, a double.
    for i in range(1, 4):
        factor = committed.graph.initializers[f"quant_act_{i}_dyadic"].const_value.numpy()
        assert factor.dtype == np.float64
        assert factor.size == hawq_model.LAYERS[i] and len(np.unique(factor)) > 1
    # The input scale is the power of two hardware mode needs.
    assert float(committed.graph.initializers["quant_input_scale"].const_value.numpy()) == 2.0**-4


def _accuracy(graph: ir.Model, data) -> float:
    """The graph in hardware mode on the test jets."""
    codes = Executor(graph, mode="hardware").run(data.test_x)["output"]
    return float(((codes * hawq_model.output_scale(graph)).argmax(1) == data.test_y).mean())


def test_committed_file_classifies_the_test_split(committed) -> None:
    assert _accuracy(committed, hawq_model.dataset(0)) >= MIN_TEST_ACCURACY


def test_retrained_model_classifies_as_documented(trained) -> None:
    """HAWQ's integer-only eval mode and the lifted graph in hardware mode (equal: see below)."""
    assert _accuracy(trained.graph, hawq_model.dataset(0)) >= DOCUMENTED_ACCURACY - RETRAINED_TOLERANCE
    assert trained.quantized_accuracy >= DOCUMENTED_ACCURACY - RETRAINED_TOLERANCE


def _hawq_integer_outputs(model, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
    integers = np.round(out.astype(np.float64) / scale.astype(np.float64))
    # HAWQ's output is float32(integer * scale): these integers are the only ones that give it back.
    np.testing.assert_array_equal((integers * scale.astype(np.float64)).astype(np.float32), out)
    return integers


def _check_hardware_mode_is_hawq(trained, samples: int = 2000) -> None:
    rng = np.random.default_rng(7)
    # Jets as the model sees them, plus a quarter at 3x the spread: those saturate the 8-bit input
    # quantizer and push the hidden activations into their clamps.
    x = rng.normal(0.0, 1.1, size=(samples, 16)).astype(np.float32)
    x[: samples // 4] *= 3
    expected = _hawq_integer_outputs(trained.model, x, hawq_model.output_scale(trained.graph))
    hardware = Executor(trained.graph, mode="hardware").run(x)["output"]
    np.testing.assert_array_equal(hardware, expected)
    assert len(np.unique(expected.argmax(1))) == 5  # a trained model, not a constant one


def test_hawq_forward_equals_hardware_mode_bit_for_bit(trained) -> None:
    _check_hardware_mode_is_hawq(trained)


def test_second_bit_configuration_lifts_and_matches_hawq() -> None:
    bits = (6, 6, 4, 7)
    other = hawq_model.train(bits)
    quant = _quant_bits(other.graph)
    assert [quant[f"dense_{i}_weight"][0] for i in range(1, 5)] == list(bits)
    # Activations feeding each layer: weight bits + 3, capped at 8.
    assert [quant[f"quant_act_{i}_quant"][0] for i in range(1, 4)] == [8, 7, 8]
    assert other.quantized_accuracy >= DOCUMENTED_ACCURACY - RETRAINED_TOLERANCE
    _check_hardware_mode_is_hawq(other)
