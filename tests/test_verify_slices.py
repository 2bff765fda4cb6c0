"""Verification in bounded memory: slices sized from the model, drawn a slice at a time, results
identical to one batch; `--verify N` fills the project's test bench (capped)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from cnn_models import CnnBuilder
from conftest import JET_TAGGER, REPO, run_cli

from hawqc.backends import csim
from hawqc.cli import main
from hawqc.flow import user_data
from hawqc.flow.driver import CompileOptions, compile_model, verify_project
from hawqc.frontends.load import load_model
from hawqc.passes.manager import PassManager
from hawqc.sim import executor as executor_module
from hawqc.sim import slicing
from hawqc.sim.inputs import draw_input_slices, draw_inputs, input_range

DIGITS_CNN = REPO / "examples" / "digits_cnn" / "digits_cnn.onnx"
FLOAT_MLP = REPO / "examples" / "binary_digits" / "digits_mlp_float.onnx"


def legacy_draw_inputs(model: ir.Model, count: int, seed: int = 0) -> dict[str, np.ndarray]:
    """`draw_inputs` as it was before verification drew in slices, kept to pin its samples."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for value in model.graph.inputs:
        shape = (count, *[d if isinstance(d, int) else 1 for d in list(value.shape)[1:]])
        bounds = input_range(model, value)
        if bounds is None:
            inputs[value.name] = rng.standard_normal(shape).astype(np.float32)
            continue
        low, high, lsb = (np.broadcast_to(b, shape) for b in bounds)
        samples = rng.uniform(low, high, size=shape)
        grid = np.round(samples / lsb) * lsb
        ties = np.clip(grid + 0.5 * lsb, low, high)
        kind = rng.integers(0, 3, size=(count,) + (1,) * (len(shape) - 1))
        samples = np.where(kind == 0, grid, np.where(kind == 1, ties, samples))
        if count >= 2:
            samples[0], samples[1] = low[0], high[0]
        inputs[value.name] = samples.astype(np.float32)
    return inputs


def compiled_model(path: Path) -> ir.Model:
    model = load_model(path)
    PassManager.parse("default").run(model)
    return model


def read_dat(path: Path) -> np.ndarray:
    return np.array([[float(v) for v in line.split()] for line in path.read_text().splitlines()])


# --- drawing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [JET_TAGGER, DIGITS_CNN, FLOAT_MLP], ids=lambda p: p.stem)
@pytest.mark.parametrize("count", [1, 2, 3, 50])
def test_drawing_in_slices_gives_the_samples_drawn_at_once(path, count):
    model = compiled_model(path)
    name = model.graph.inputs[0].name
    at_once = draw_inputs(model, count, seed=7)[name]
    assert at_once.tobytes() == legacy_draw_inputs(model, count, seed=7)[name].tobytes()
    for size in (1, 2, 7, count):
        slices = list(draw_input_slices(model, count, 7, size))
        assert [len(s) for s in slices] == [min(size, count - start) for start in range(0, count, size)]
        joined = np.concatenate(slices)
        assert joined.dtype == at_once.dtype and joined.tobytes() == at_once.tobytes(), size


def test_a_huge_count_is_drawn_a_slice_at_a_time():
    model = compiled_model(JET_TAGGER)
    first = next(draw_input_slices(model, 10**15, 0, 4))  # at once it would be 64 PB
    assert first.shape == (4, 16)
    assert np.all(first[0] == -8.0) and np.all(first[1] == 7.9375)  # the two ends, as at once


# --- slice sizes ---------------------------------------------------------------------------------


def image_model(side: int) -> ir.Model:
    """Conv 3x3 (3 -> 16 channels, same size) -> Relu -> Quant on a side x side image."""
    g = CnnBuilder((side, side, 3))
    y = g.conv(g.quant("x", 8, -4), 16, 3, (3, 3), pads=[1, 1, 1, 1])
    return g.build(g.quant(g.node("Relu", [y]), 8, -3, signed=False))


def test_slices_are_sized_from_the_shapes_of_the_model():
    jet, small, large = compiled_model(JET_TAGGER), image_model(8), image_model(256)
    # One 256x256 sample: three 16-channel maps and the 3x3x3 patches of 65,536 positions, 16 bytes each.
    values = 3 * 256 * 256 * 16 + 256 * 256 * 27
    assert slicing.sample_bytes(large) >= values * 16
    assert slicing.sample_bytes(small) * 1000 < slicing.sample_bytes(large)
    assert slicing.slice_size(large) * slicing.sample_bytes(large) <= slicing.SLICE_BYTES
    assert slicing.slice_size(large) < 20 < slicing.slice_size(small) < slicing.slice_size(jet)
    assert slicing.slice_size(large, budget=1) == 1  # at least one sample


# --- verifying in slices -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jet_project(tmp_path_factory):
    return compile_model(JET_TAGGER, tmp_path_factory.mktemp("sliced") / "proj", CompileOptions())


def recorded_batches(monkeypatch, differ_at: tuple[int, ...] = ()) -> dict[str, list[int]]:
    """Record the batch sizes the executors and the C simulation get; make the C simulation's
    output differ at these sample indices (counted over all calls)."""
    batches: dict[str, list[int]] = {"executor": [], "csim": []}
    real_run, real_predict = executor_module.Executor.run, csim.CSim.predict

    def run(self, inputs, *args, **kwargs):
        batches["executor"].append(len(next(iter(inputs.values()))))
        return real_run(self, inputs, *args, **kwargs)

    def predict(self, x, **kwargs):
        out = real_predict(self, x, **kwargs)
        start = sum(batches["csim"])
        batches["csim"].append(len(x))
        for index in differ_at:
            if start <= index < start + len(x):
                out[index - start, 0] += 2.0**-10
        return out

    monkeypatch.setattr(executor_module.Executor, "run", run)
    monkeypatch.setattr(csim.CSim, "predict", predict)
    return batches


@pytest.mark.parametrize("differ_at", [(), (23, 41)], ids=["exact", "mismatch"])
def test_slices_give_the_result_of_one_batch(jet_project, monkeypatch, differ_at):
    result = jet_project
    tb = result.project.outdir / user_data.TB_DIR
    outcomes = []
    for slice_samples in (None, 7):
        batches = recorded_batches(monkeypatch, differ_at)
        verified = verify_project(result.model, result.project, 50, 3, result.report, slice_samples=slice_samples)
        files = {name: (tb / name).read_text() for name in (user_data.TB_INPUTS, user_data.TB_OUTPUTS)}
        outcomes.append((verified.as_dict(), files, batches))
        monkeypatch.undo()
    (whole, whole_files, whole_batches), (sliced, sliced_files, sliced_batches) = outcomes
    traced = [1] if differ_at else []  # the trace runs hardware mode on the first differing sample
    assert whole_batches["csim"] == [50] and whole_batches["executor"] == [50, 50, *traced]
    assert sliced_batches["csim"] == [7] * 7 + [1] and sliced_batches["executor"] == [7, 7] * 7 + [1, 1] + traced
    assert sliced == whole and sliced_files == whole_files
    if differ_at:
        assert sliced["mismatched_samples"] == 2 and sliced["first_mismatch"] == 23 and sliced["trace"]["sample"] == 23
        saved = np.load(result.project.outdir / "mismatch" / "input.npy")
        np.testing.assert_array_equal(saved, draw_inputs(result.model, 50, 3)[result.project.input_name][23:24])


def test_off_a_terminal_the_command_line_verifies_in_slices_too(tmp_path, capsys, monkeypatch):
    # A memory budget of one sample: each of the 12 samples is a slice of its own.
    monkeypatch.setattr(slicing, "SLICE_BYTES", 1)
    batches = recorded_batches(monkeypatch)
    code, out, _ = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--verify", "12")
    assert code == 0 and "verify: 12/12 samples bit-exact" in out
    assert batches["csim"] == [1] * 12 and batches["executor"] == [1] * 24


# --- the test bench of --verify N ----------------------------------------------------------------


def test_verify_fills_the_test_bench_with_the_drawn_samples(tmp_path):
    """In the project's layout (the digits CNN is NCHW in its file, NHWC in the project), as hls4ml's
    `<project>_test.cpp` reads them: the drawn inputs, and the C simulation's outputs."""
    result = compile_model(DIGITS_CNN, tmp_path / "proj", CompileOptions(verify_samples=30, seed=2))
    tb = tmp_path / "proj" / user_data.TB_DIR
    x = draw_inputs(result.model, 30, 2)[result.project.input_name]
    assert x.shape[1:] == (8, 8, 1)
    inputs, outputs = read_dat(tb / user_data.TB_INPUTS), read_dat(tb / user_data.TB_OUTPUTS)
    np.testing.assert_array_equal(inputs, x.reshape(30, -1).astype(np.float64))
    simulated = csim.compile_csim(result.project).predict(x)
    np.testing.assert_array_equal(outputs, simulated.reshape(30, -1))


def test_the_test_bench_of_a_large_count_is_capped(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(user_data, "TB_MAX_SAMPLES", 8)
    code, _, _ = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--verify", "30")
    assert code == 0
    tb = tmp_path / "proj" / user_data.TB_DIR
    inputs = read_dat(tb / user_data.TB_INPUTS)
    assert inputs.shape == (8, 16) and read_dat(tb / user_data.TB_OUTPUTS).shape == (8, 5)
    model = compiled_model(JET_TAGGER)
    np.testing.assert_array_equal(inputs, draw_inputs(model, 30, 0)[model.graph.inputs[0].name][:8])


def test_bench_samples_caps_samples_and_values():
    assert user_data.bench_samples(16, 30) == 30
    assert user_data.bench_samples(16, 10**9) == user_data.TB_MAX_SAMPLES
    assert user_data.bench_samples(256 * 256 * 3, 100) == user_data.TB_MAX_VALUES // (256 * 256 * 3)
    assert user_data.bench_samples(math.prod((2048, 2048, 3)), 100) == 1  # never none
