"""`--hawq-export-semantics hawq` (hawqc.flow.hawq_export): a HAWQ export read as the integer
inference HAWQ runs, with the scales as HAWQ calibrates them (the ones exact-requant refuses).

The files come from `hawq_export_files` (the exporter's layout, made from hawqc's HAWQ modules), so
the HAWQ model is at hand: its eval-mode forward is the reference. The chain checked here:
HAWQ's integer codes (every requantized activation, and the last accumulator) == the normalized
graph in semantic mode == hardware mode == the C simulation (vitis, vivado, catapult for the MLP;
vitis for the CNN), exactly.
"""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from conftest import REPO
from hawq_export_files import export_cnn, export_mlp, round_trips, to_hawq_export

import hawqc
from hawqc.backends.csim import compile_csim
from hawqc.cli import main, opt_main
from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.flow.driver import CompileOptions, compile_model
from hawqc.flow.hawq_export import read_as_hawq
from hawqc.frontends.hawq.lift import OUTPUT_SCALE_KEY
from hawqc.frontends.hawq.quant_functions import batch_frexp, requantization_ratio
from hawqc.ir.layout import layout_permutations
from hawqc.sim.executor import Executor
from hawqc.sim.inputs import draw_inputs

SAMPLES = 2000


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, dict]:
    """The MLP and the CNN with HAWQ's own (unmodified) activation scales, and the older exporter's
    MLP without activation Quants."""
    folder = tmp_path_factory.mktemp("hawq_semantics")
    out = {}
    for name, make in (("mlp", export_mlp), ("cnn", export_cnn)):
        net, shape = make(round_trip_scales=False)
        path = folder / f"{name}.onnx"
        onnx.save(to_hawq_export(net, shape), path)
        out[name] = {"net": net, "path": path}
    # An input scale as HAWQ calibrates it too (not a power of two): read as the lifter's Div -> Quant(1).
    net, shape = export_mlp(round_trip_scales=False)
    net.quant_input.x_min.fill_(-3.3)
    net.quant_input.x_max.fill_(3.3)
    with torch.no_grad():
        net(torch.zeros(shape))  # recomputes the scales and integer biases downstream of the input
    path = folder / "mlp-input-scale.onnx"
    onnx.save(to_hawq_export(net, shape), path)
    out["mlp-input-scale"] = {"net": net, "path": path}
    old = folder / "mlp-old-branch.onnx"
    onnx.save(to_hawq_export(out["mlp"]["net"], (1, 16), activation_quants=False), old)
    out["mlp-old-branch"] = {"path": old}
    return out


def _inputs(path, seed: int = 3) -> np.ndarray:
    """Inputs inside the file's input quantizer's range (on the grid, on ties, between), and a
    quarter at 4x its range (saturating it)."""
    x = next(iter(draw_inputs(hawqc.load(path), SAMPLES, seed=seed).values())).copy()
    x[: SAMPLES // 4] *= 4
    return x


def _hawq_integers(net: torch.nn.Module, x: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """HAWQ's eval-mode forward: each requantizing QuantAct's integer codes (by module name), the
    last layer's integer accumulator, and HAWQ's float32 output."""
    codes: dict[str, np.ndarray] = {}
    hooks = [
        module.register_forward_hook(
            lambda m, args, out, name=name: codes.__setitem__(
                name, np.round(out[0].numpy().astype(np.float64) / out[1].numpy().astype(np.float64))
            )
        )
        for name, module in net.named_modules()
        if type(module).__name__ == "QuantAct"
    ]
    try:
        with torch.no_grad():
            output = net(torch.from_numpy(x)).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    accumulator_scale = np.float64(_last_accumulator_scale(net))
    accumulator = np.round(output.astype(np.float64) / accumulator_scale)
    # HAWQ's output is fl32(accumulator * scale): these integers are the only ones that give it back.
    np.testing.assert_array_equal((accumulator * accumulator_scale).astype(np.float32), output)
    return codes, accumulator, output


def _last_accumulator_scale(net: torch.nn.Module) -> np.float32:
    acts = [module for kind, module in net.export_steps() if kind == "act"]
    last = [module for kind, module in net.export_steps() if kind == "linear"][-1]
    return np.float32((last.fc_scaling_factor.reshape(-1)[:1] * acts[-1].act_scaling_factor.reshape(-1)[:1]).item())


@pytest.fixture(scope="module")
def readings(exports) -> dict[str, tuple]:
    out = {}
    for name in ("mlp", "cnn", "mlp-input-scale"):
        model = hawqc.load(exports[name]["path"])
        reading = read_as_hawq(model, source=name, samples=SAMPLES)
        out[name] = (model, reading)
    return out


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_hawq_scales_do_not_round_trip_and_compile_to_the_files_exact_meaning_by_default(exports, name):
    """The premise: with HAWQ's scales the file's float32 semantics is not an integer network. The
    default (`file`) compiles the file's exact meaning (integer-requant); `hawq` reads it as HAWQ's
    integer requantization instead."""
    net = exports[name]["net"]
    act = net.act1
    low, high = (0, 2**act.activation_bit - 1) if act.quant_mode == "asymmetric" else (-128, 127)
    assert not round_trips(float(act.act_scaling_factor), low, high)
    result = compile_model(
        exports[name]["path"], exports[name]["path"].parent / f"exact-{name}", CompileOptions(verify_samples=50)
    )
    assert result.verify.passed and result.verify.exact.equal, result.verify.summary()


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_factors_are_hawqs_batch_frexp_of_its_ratio(exports, readings, name):
    # HAWQ's (m, e) for each requantizing QuantAct: the act before the layer it follows, that
    # layer's weight scale, its own scale.
    expected, previous, layer = [], None, None
    for kind, module in exports[name]["net"].export_steps():
        if kind in ("linear", "conv"):
            layer = module
        elif kind == "act" and layer is None:
            previous = module
        elif kind == "act":
            weight_scale = getattr(layer, "fc_scaling_factor", None)
            weight_scale = layer.conv_scaling_factor if weight_scale is None else weight_scale
            ratio = requantization_ratio(previous.act_scaling_factor, weight_scale, module.act_scaling_factor)
            m, e = batch_frexp(ratio)
            expected.append((int(m.reshape(-1)[0]), int(e.reshape(-1)[0])))
            previous, layer = module, None
    reading = readings[name][1]
    assert [(r.mantissa, r.exponent) for r in reading.requantizations] == expected
    assert len(expected) == {"mlp": 2, "cnn": 1}[name]


@pytest.mark.parametrize("name", ["mlp", "cnn", "mlp-input-scale"])
def test_normalized_graph_in_semantic_mode_is_hawq(exports, readings, name):
    model, reading = readings[name]
    x = _inputs(exports[name]["path"])
    codes, accumulator, output = _hawq_integers(exports[name]["net"], x)
    values = Executor(model).run(x, keep_intermediates=True)
    hidden = [n for n, m in exports[name]["net"].named_modules() if type(m).__name__ == "QuantAct"][1:]
    for act, requantization in zip(hidden, reading.requantizations, strict=True):
        np.testing.assert_array_equal(values[requantization.codes], codes[act], err_msg=act)
        assert len(np.unique(codes[act])) > 20  # the inputs exercise the layer
    graph_output = values[model.graph.outputs[0].name]
    np.testing.assert_array_equal(graph_output, accumulator)
    # The output scale recorded as the lifter does: HAWQ's float output is fl32(code * scale).
    scale = np.float32(json.loads(model.metadata_props[OUTPUT_SCALE_KEY])[0])
    assert np.array_equal((graph_output * scale).view(np.uint32), output.view(np.uint32))
    # Integer-only: no Div but a non-power-of-two input scale's; each requantization multiplies in
    # double by exactly HAWQ's m * 2^-e.
    divs = [node for node in model.graph if node.op_type == "Div"]
    assert [div.inputs[0] for div in divs] == ([model.graph.inputs[0]] if name == "mlp-input-scale" else [])
    factors = [
        node.inputs[1].const_value.numpy()
        for node in model.graph
        if node.op_type == "Mul" and node.inputs[0].producer() is not None and node.inputs[0].producer().op_type == "Cast"
    ]
    assert [f.dtype for f in factors] == [np.float64] * len(reading.requantizations)
    assert [float(f) for f in factors] == [math.ldexp(r.mantissa, -r.exponent) for r in reading.requantizations]
    # The input: HAWQ's clamp(round(x / s_in)) as the lifter writes it.
    first = model.graph.inputs[0].uses()[0][0]
    assert first.op_type == ("Div" if name == "mlp-input-scale" else "Quant")
    assert (reading.input_scale == 2.0**-5) == (name != "mlp-input-scale")


def test_the_files_float32_arithmetic_differs_and_is_counted(exports, readings):
    """The measured K: the file as written (semantic mode) against HAWQ's integers, counted
    independently here from HAWQ's own forward."""
    model, reading = readings["mlp"]
    x = next(iter(draw_inputs(model, SAMPLES, seed=0).values()))
    _, _, output = _hawq_integers(exports["mlp"]["net"], x)
    file_output = next(iter(Executor(hawqc.load(exports["mlp"]["path"])).run(x).values()))
    differing = int((file_output != output).reshape(SAMPLES, -1).any(axis=1).sum())
    assert reading.samples == SAMPLES
    assert reading.samples_with_other_outputs == differing > 0
    assert 0 <= reading.samples_with_other_codes <= differing


def test_the_measurement_runs_in_slices_with_the_same_counts(exports, readings, monkeypatch):
    """A memory budget of one sample: every sample a slice of its own, the counts of one batch."""
    from hawqc.sim import slicing

    monkeypatch.setattr(slicing, "SLICE_BYTES", 1)
    batches = []
    real_run = Executor.run
    monkeypatch.setattr(Executor, "run", lambda self, inputs, **kw: batches.append(len(next(iter(inputs.values())))) or real_run(self, inputs, **kw))
    sliced = read_as_hawq(hawqc.load(exports["mlp"]["path"]), source="mlp", samples=40)
    whole = readings["mlp"][1]
    assert batches == [1] * 80 and sliced.samples == 40
    monkeypatch.setattr(slicing, "SLICE_BYTES", 1 << 40)
    once = read_as_hawq(hawqc.load(exports["mlp"]["path"]), source="mlp", samples=40)
    assert (sliced.samples_with_other_codes, sliced.samples_with_other_outputs) == (once.samples_with_other_codes, once.samples_with_other_outputs)
    assert whole.samples_with_other_outputs > 0


def test_mlp_cli_compiles_bit_exact_and_reports_the_reading(exports, tmp_path, capsys):
    out = tmp_path / "proj"
    argv = [str(exports["mlp"]["path"]), "-o", str(out), "--verify", "300", "--hawq-export-semantics", "hawq"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if "hawq export" in line)
    assert "2 requantizations read as HAWQ's integer requantization (m / 2^e)" in line
    assert "of 300 samples" in line
    assert "1000/1000" not in printed and "300/300 samples bit-exact" in printed
    report = json.loads((out / "hawqc_report.json").read_text())
    assert report["hawq_export"]["semantics"] == "hawq"
    assert report["hawq_export"]["samples"] == 300
    assert [r["quant"] for r in report["hawq_export"]["requantizations"]] == ["/act1/Quant_25", "/act2/Quant_46"]
    # Integer-only: hardware mode equals semantic mode with nothing declared inexact.
    assert report["verify"]["hardware_vs_semantic"]["equal"] and report["verify"]["hardware_vs_semantic"]["declared_inexact"] == []


@pytest.mark.parametrize(("name", "backend"), [("mlp", "vitis"), ("mlp", "vivado"), ("mlp", "catapult"), ("cnn", "vitis")])
def test_c_simulation_is_hawq(exports, tmp_path, name, backend):
    options = CompileOptions(backend=backend, verify_samples=200, hawq_export_semantics="hawq")
    result = compile_model(exports[name]["path"], tmp_path / "proj", options)
    assert result.verify.bit_exact and result.verify.samples == 200
    assert result.verify.modes.equal and not result.verify.modes.declared_inexact, result.verify.summary()
    # Nothing is left for exact-requant: every requantization is HAWQ's dyadic one already.
    exact_requant = [r.statistics for r in result.records if r.name == "exact-requant"]
    assert exact_requant and not any(any(statistics.values()) for statistics in exact_requant)
    x = _inputs(exports[name]["path"], seed=4)
    _, accumulator, _ = _hawq_integers(exports[name]["net"], x)
    permutations = layout_permutations(result.model)  # the CNN's input is channels-last in the project
    input_perm = permutations.get(result.model.graph.inputs[0].name)
    x = x if input_perm is None else np.ascontiguousarray(x.transpose(input_perm))
    simulated = compile_csim(result.project).predict(x)  # a cache hit
    output = result.model.graph.outputs[0].name
    hardware = Executor(result.model, mode="hardware").run(x)[output]
    assert output not in permutations  # [batch, classes]: no layout of its own
    np.testing.assert_array_equal(np.asarray(hardware, dtype=np.float64), accumulator)
    np.testing.assert_array_equal(np.asarray(simulated, dtype=np.float64).reshape(hardware.shape), hardware)


def test_hawqc_opt_prints_the_normalized_graph_and_the_line(exports, capsys):
    assert opt_main([str(exports["cnn"]["path"]), "--hawq-export-semantics", "hawq", "-p", "cleanup"]) == 0
    captured = capsys.readouterr()
    assert "hawqc-opt: hawq export: 1 requantization read as HAWQ's integer requantization" in captured.err
    assert " = Cast <to: int = 11>" in captured.out and " = Div " not in captured.out


def test_default_is_the_files_semantics(exports):
    """Without the option nothing is reread: the file loads as written (its Divs and float Muls)."""
    model = hawqc.load(exports["mlp"]["path"])
    assert [node.op_type for node in model.graph].count("Div") == 3
    assert CompileOptions().hawq_export_semantics == "file"


def test_a_file_without_the_pattern_is_one_line_naming_the_option(exports, tmp_path, capsys):
    # The lifted jet tagger: already HAWQ's integer form, no Div/Mul rescales.
    jet = REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx"
    code = main([str(jet), "-o", str(tmp_path / "proj"), "--hawq-export-semantics", "hawq"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--hawq-export-semantics hawq: no HAWQ-export requantization" in err and "without the option" in err
    assert not (tmp_path / "proj").exists()
    # The older exporter (no activation Quants): not this pattern either.
    with pytest.raises(UserInputError, match="hawq_export_semantics='hawq'"):
        read_as_hawq(hawqc.load(exports["mlp-old-branch"]["path"]), source="old")


def test_unknown_semantics_is_refused(exports, tmp_path):
    with pytest.raises(UserInputError, match="^hawq_export_semantics must be one of file, hawq"):
        compile_model(exports["mlp"]["path"], tmp_path / "proj", CompileOptions(hawq_export_semantics="float"))


def test_a_reading_div_by_another_scale_is_refused(exports):
    model = hawqc.load(exports["mlp"]["path"])
    div = next(node for node in model.graph if node.op_type == "Div" and node.name.startswith("/fc2/"))
    divisor = div.inputs[1].const_value.numpy()
    div.inputs[1].const_value = ir.tensor(divisor * np.float32(1.5))
    with pytest.raises(UnsupportedModelError, match=r"node '/fc2/Div_\d+' .*not by the activation scale"):
        read_as_hawq(model, samples=0)
