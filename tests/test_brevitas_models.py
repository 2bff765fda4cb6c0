"""Brevitas's real exports (tests/data/brevitas/, catalogue in tests/brevitas_models.py): hawqc reads
them, its verifier accepts them, and its semantic executor computes what qonnx computes.

These models have float scales that are not powers of two, so a dense layer's float32 sums are not
exact: numpy (hawqc's semantic mode) and onnxruntime's MLAS (qonnx's) add the products in different
orders and differ in the last bit (hawqc/sim/ops.py, "Linear algebra"). Measured here: the first
Gemm or Conv of every model differs on every sample; the requantizing Quant after it absorbs almost
all of that, so a quantized output differs in the sign of a zero (an exact cancellation summed in
another order) and, rarely, by one code where a sum lay within an ulp of a rounding tie; a float
output (a last QuantLinear without an output quantizer) differs by a few ulps. So the test below
asserts exactly that bound, and the bit-for-bit comparison is an expected failure until semantic
mode adds products in onnxruntime's order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from functools import cache

import numpy as np
import onnx
import pytest
from brevitas_models import BREVITAS_DATA, BREVITAS_MODELS, ISSUE_14_FEATURES, BrevitasModel

import hawqc
from hawqc.ir.ops.quantizer import quantizer
from hawqc.sim import Executor
from hawqc.sim.qonnx_oracle import QonnxOracle

SAMPLES = 200
# Of the elements of a quantized output, how many may differ from qonnx by one code (a float32 sum
# within an ulp of a rounding tie): none seen on these models at 200 samples; a bound, not a target.
MAX_CODE_FLIP_RATE = 0.01
# A float output: |hawqc - qonnx| relative to the output's largest magnitude, for all but the samples
# where a code flipped upstream (cnn_cat: 1 sample in 200, 9e-4 relative).
FLOAT_OUTPUT_RTOL = 1e-5
MAX_FLOAT_OUTLIER_RATE = 0.02
FLOAT_OUTLIER_RTOL = 1e-2


def _ids(models):
    return [m.name for m in models]


def draw_inputs(model: BrevitasModel, shape: tuple[int, ...], seed: int = 14) -> np.ndarray:
    """Seeded inputs in the range the model was calibrated on, and somewhat beyond it (so that the
    input quantizer saturates on some): images in [-0.2, 1.2), features ~ N(0, 1.5)."""
    rng = np.random.default_rng(seed)
    if model.is_cnn:
        return rng.uniform(-0.2, 1.2, (SAMPLES, *shape[1:])).astype(np.float32)
    return rng.normal(0.0, 1.5, (SAMPLES, *shape[1:])).astype(np.float32)


@cache
def hawqc_and_qonnx(model: BrevitasModel) -> tuple[object, np.ndarray, np.ndarray]:
    """(the loaded model, hawqc's semantic output, qonnx's execute_onnx output) on `SAMPLES` inputs,
    computed once per model for the two comparisons. qonnx runs one sample at a time: the
    torch.export exporter writes the batch (1) into its Reshape's target shape, so the file runs at
    batch 1 only."""
    loaded = hawqc.load(model.path)
    shape = tuple(loaded.graph.inputs[0].shape)
    x = draw_inputs(model, shape)
    output = loaded.graph.outputs[0].name
    got = Executor(loaded).run(x)[output]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = QonnxOracle(loaded).run(x, per_sample=True)[output]
    return loaded, got, want


def test_catalogue_lists_every_file_and_covers_issue_14() -> None:
    on_disk = {p.stem for p in BREVITAS_DATA.glob("*.onnx")}
    assert on_disk == {m.name for m in BREVITAS_MODELS}
    covered = frozenset().union(*(m.features for m in BREVITAS_MODELS))
    assert ISSUE_14_FEATURES <= covered, sorted(ISSUE_14_FEATURES - covered)


@pytest.mark.parametrize("model", BREVITAS_MODELS, ids=_ids(BREVITAS_MODELS))
def test_file_is_small_and_self_contained(model: BrevitasModel) -> None:
    """Committed files stay small, and hold their weights (the torch.export exporter writes them to a
    `.onnx.data` file beside the model; make_models.py folds them back in)."""
    assert model.path.stat().st_size < 100_000
    proto = onnx.load(model.path, load_external_data=False)
    assert not [t.name for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert proto.producer_name == "pytorch"


@pytest.mark.parametrize("model", BREVITAS_MODELS, ids=_ids(BREVITAS_MODELS))
def test_loads_and_verifies(model: BrevitasModel) -> None:
    """hawqc.load normalizes, infers shapes and runs the verifier (it raises on a verifier error);
    the scales are the float values Brevitas computed, not powers of two (the point of these files)."""
    loaded = hawqc.load(model.path)
    scales = [quantizer(n).scale for n in loaded.graph if quantizer(n) is not None]
    scales = np.concatenate([np.abs(s).reshape(-1) for s in scales if s is not None])
    assert scales.size and not np.all(np.log2(scales) == np.round(np.log2(scales)))


@pytest.mark.parametrize("model", BREVITAS_MODELS, ids=_ids(BREVITAS_MODELS))
def test_semantic_mode_equals_qonnx_up_to_summation_order(model: BrevitasModel) -> None:
    loaded, got, want = hawqc_and_qonnx(model)
    assert got.dtype == want.dtype and got.shape == want.shape
    if model.quantized_output:
        (last,) = [n for n in loaded.graph if n.outputs[0] is loaded.graph.outputs[0]]
        step = np.broadcast_to(quantizer(last).scale, got.shape[1:])
        codes_apart = np.abs(got - want) / step
        # `==` takes -0.0 == 0.0: a zero's sign is all that differs elsewhere.
        assert np.all((got == want) | (np.abs(codes_apart - 1) < 1e-3)), np.max(codes_apart)
        assert np.mean(got != want) <= MAX_CODE_FLIP_RATE
    else:
        magnitude = float(np.max(np.abs(want)))
        apart = np.max(np.abs(got - want).reshape(SAMPLES, -1), axis=1) / magnitude
        assert np.mean(apart > FLOAT_OUTPUT_RTOL) <= MAX_FLOAT_OUTLIER_RATE, np.sort(apart)[-5:]
        assert np.all(apart <= FLOAT_OUTLIER_RTOL), np.max(apart)


@pytest.mark.xfail(
    reason="float32 sums of products of non-dyadic scales: numpy and onnxruntime's MLAS add in different orders "
    "(hawqc/sim/ops.py, 'Linear algebra'); semantic mode != qonnx in the last bit (issue 14)",
    strict=False,
)
@pytest.mark.parametrize("model", BREVITAS_MODELS, ids=_ids(BREVITAS_MODELS))
def test_semantic_mode_equals_qonnx_bit_for_bit(model: BrevitasModel) -> None:
    _, got, want = hawqc_and_qonnx(model)
    differ = got.reshape(-1).view(np.uint32) != want.reshape(-1).view(np.uint32)
    assert not differ.any(), f"{int(differ.sum())} of {differ.size} elements differ"


@pytest.mark.slow
def test_make_models_still_runs(tmp_path) -> None:
    """The script that wrote the files still runs with the pinned Brevitas and writes, for two of the
    models, files with the committed files' ops. Not their bytes: the calibrated scales come from
    float32 kernels, which differ by CPU."""
    pytest.importorskip("brevitas")
    pytest.importorskip("onnxoptimizer")  # Brevitas's exporter refuses to run without it
    names = ["mlp_w4a4_per_channel_int32bias", "cnn_trunc_avgpool"]
    script = BREVITAS_DATA / "make_models.py"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--samples", "8", "--only", *names],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for name in names:
        assert f"{name}.onnx" in run.stdout
        written = onnx.load(tmp_path / f"{name}.onnx")
        committed = onnx.load(BREVITAS_DATA / f"{name}.onnx")
        assert [n.op_type for n in written.graph.node] == [n.op_type for n in committed.graph.node]
        assert not (tmp_path / f"{name}.onnx.data").exists()
