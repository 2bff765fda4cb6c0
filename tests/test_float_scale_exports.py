"""Real exports with float scales compile exactly (issue 14): Brevitas's `export_qonnx` files,
FINN/QONNX-zoo-shaped MLPs, and HAWQ models lifted with a calibrated input scale. For each: the
C simulation equals hardware mode, and hardware mode equals the original model's exact meaning on
every sample; float32 semantics' difference is reported, not required."""

from __future__ import annotations

import brevitas_models
import finn_models
import float_scale_models
import numpy as np
import onnx
import pytest

from hawqc.flow.driver import CompileOptions, compile_model
from hawqc.flow.exact_meaning import ExactMeaning
from hawqc.frontends.load import load_model
from hawqc.ir.io import copy_model
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_input_slices

BREVITAS = {model.name: model.path for model in brevitas_models.BREVITAS_MODELS}
# Distinct MLPs (the int8 defaults exist in three exports of one network).
BREVITAS_MLPS = ("mlp_int8_defaults", "mlp_ternary", "mlp_w2a2_hardtanh", "mlp_w4a4_per_channel_int32bias", "mlp_binary_bn")


@pytest.mark.parametrize("name", sorted(BREVITAS))
def test_brevitas_export_hardware_mode_equals_the_exact_meaning(name):
    meaning = float_scale_models.hardware_against_exact(load_model(BREVITAS[name], None))
    assert meaning.comparison.samples == 200 and meaning.comparison.equal, meaning.comparison.summary()


@pytest.mark.parametrize("name", sorted(BREVITAS))
def test_brevitas_export_compiles_on_vitis_bit_exact(name, tmp_path):
    result = compile_model(BREVITAS[name], tmp_path / "proj", CompileOptions(backend="vitis", verify_samples=100))
    verify = result.verify
    assert verify.bit_exact and verify.exact is not None and verify.exact.equal and verify.passed, verify.summary()
    assert result.report.requantizations and result.report.interfaces["inputs"]
    assert all(1 <= r["multiplier_bits"] <= 24 for r in result.report.requantizations)


@pytest.mark.parametrize("backend", ["vivado", "catapult"])
@pytest.mark.parametrize("name", BREVITAS_MLPS)
def test_brevitas_mlps_compile_on_the_other_backends(name, backend, tmp_path):
    result = compile_model(BREVITAS[name], tmp_path / "proj", CompileOptions(backend=backend, verify_samples=100))
    assert result.verify.passed and result.verify.exact.equal, result.verify.summary()


FINN = {
    "tfc_w1a1": {}, "tfc_w1a2": {}, "tfc_w2a2": {}, "kws_mlp_w3a3": {},
    # Its input has no quantizer: binary-valued features, given a type.
    "unsw_nb15_mlp_w2a2": {"input_precision": "fixed<2,2>"},
}  # fmt: skip


@pytest.fixture(scope="module")
def finn_files(tmp_path_factory):
    directory = tmp_path_factory.mktemp("finn")
    files = {}
    for name in FINN:
        proto, _ = finn_models.build(name)
        onnx.save(proto, directory / f"{name}.onnx")
        files[name] = directory / f"{name}.onnx"
    return files


@pytest.mark.parametrize("name", sorted(FINN))
def test_finn_shaped_model_compiles_on_vitis_bit_exact(name, finn_files, tmp_path):
    options = CompileOptions(backend="vitis", verify_samples=200, **FINN[name])
    result = compile_model(finn_files[name], tmp_path / "proj", options)
    verify = result.verify
    assert verify.bit_exact and verify.passed, verify.summary()
    if verify.exact is not None:  # a model that integer-requant took to integers
        assert verify.exact.equal
    # w1a1's activations are binary: thresholds, no requantization.
    assert bool(result.report.requantizations) == (name != "tfc_w1a1")


def test_a_computed_reshape_and_a_binary_input_become_a_port_of_signs(finn_files, tmp_path):
    result = compile_model(finn_files["tfc_w1a1"], tmp_path / "proj", CompileOptions(verify_samples=10))
    (port,) = result.report.interfaces["inputs"].values()
    assert port["bipolar"] and port["pre_scale"] == "2" and port["pre_offset"] == "-1"
    assert "code = +1 where x * 2 + -1 >= 0" in port["host"]


def _hawq_mlp_with_a_calibrated_input():
    import hawq_chain_models
    import torch

    torch.manual_seed(0)
    model = hawq_chain_models.ChainMLP()
    model.quant_input.unfix()  # calibrate the input's range too: its scale is no power of two
    model.quant_input.x_min.fill_(0)
    model.quant_input.x_max.fill_(0)
    return hawq_chain_models.calibrate(model, 0)


def test_a_lifted_hawq_mlp_with_a_calibrated_input_equals_hawq_on_its_codes(tmp_path):
    import torch

    import hawqc
    from hawqc.ir.io import write_model
    from hawqc.ir.qtypes import power_of_two_exponent

    model = _hawq_mlp_with_a_calibrated_input()
    s_in = float(model.quant_input.act_scaling_factor)
    assert power_of_two_exponent(s_in) is None
    lifted = hawqc.lift(model, torch.zeros(1, *model.INPUT_SHAPE))
    write_model(lifted, tmp_path / "lifted.onnx")
    result = compile_model(tmp_path / "lifted.onnx", tmp_path / "proj", CompileOptions(verify_samples=200))
    assert result.verify.passed and result.verify.exact.equal, result.verify.summary()
    (port,) = result.report.interfaces["inputs"].values()
    assert port["pre_scale"] != "1"  # the lifter's Div(x, s_in): the host divides
    # HAWQ quantizes its input in float32 (x / s rounded); given those codes, the design computes
    # exactly HAWQ's integer arithmetic (the lifted graph in semantic mode is HAWQ's).
    lowered = result.model
    meaning = ExactMeaning(copy_model(lifted), lowered)
    x = meaning.host_values(next(draw_input_slices(lowered, 300, 1, 300)))
    hawq = Executor(lifted).run(x)[lifted.graph.outputs[0].name]
    codes = np.clip(np.round(x / np.float32(s_in)), -128, 127).astype(np.float32)
    hardware = Executor(lowered, mode="hardware").run(codes)[lowered.graph.outputs[0].name]
    real = np.frompyfunc(float, 1, 1)(meaning.real_outputs(hardware)).astype(np.float64)
    assert np.array_equal(real.reshape(hawq.shape), hawq.astype(np.float64))
