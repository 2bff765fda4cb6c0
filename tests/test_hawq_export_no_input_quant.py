"""`--hawq-export-semantics hawq --input-precision fixed<W,I>` on HAWQ exports without an input
QuantAct (the first layer given its input scale `s_in` by hand, as HAWQ's jet-tagging scripts do):
the file is `input -> Div(input, s_in) -> MatMul / Conv -> ...`, and `--input-precision` gives the
input the type it lacks (`hawqc.passes.hawq_export_input`).

Two input scales: `s_in` the input type's LSB (every `x / s_in` an integer: the Div becomes a Mul,
nothing to round), and a calibrated `s_in` (not a power of two: HAWQ rounds the first layer's float
accumulator, and `integer-requant` makes that rounding a proven dyadic requantization). The reference
is the HAWQ model (`hawq_export_files`: hawqc's modules, the first layer as upstream HAWQ computes it)
on inputs drawn on the input type's grid; the compiled model in hardware mode and the C simulation
(vitis and vivado for the MLP, vitis for the CNN) equal it exactly.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import onnx_ir as ir
import pytest
import torch
from hawq_export_files import INPUT_SCALE, export_cnn, export_mlp, hawq_first_layer, to_hawq_export

import hawqc
from hawqc.backends.csim import compile_csim
from hawqc.cli import main
from hawqc.errors import UnsupportedModelError
from hawqc.flow.driver import CompileOptions, compile_model
from hawqc.flow.hawq_export import read_as_hawq
from hawqc.ir.input_precision import parse_input_precision
from hawqc.ir.interfaces import output_affines
from hawqc.ir.layout import layout_permutations
from hawqc.passes.input_precision import InputPrecision
from hawqc.passes.read_as_hawq import find_hawq_export
from hawqc.sim.exact import ExactExecutor
from hawqc.sim.executor import Executor

SAMPLES = 1000
CALIBRATED_SCALE = float(np.float32(3.3 / 127))  # as HAWQ's symmetric calibration of a +-3.3 input gives it
# name: (model, s_in, the input type given on the command line)
CASES = {
    "mlp-lsb": (export_mlp, INPUT_SCALE, "fixed<8,3>"),  # s_in = 2^-5, the type's LSB
    "mlp-calibrated": (export_mlp, CALIBRATED_SCALE, "fixed<10,3>"),
    "mlp-coarser": (export_mlp, INPUT_SCALE, "fixed<10,3>"),  # s_in = 2^-5 above the LSB 2^-7: rounded too
    "cnn-lsb": (export_cnn, INPUT_SCALE, "fixed<8,3>"),
    "cnn-calibrated": (export_cnn, CALIBRATED_SCALE, "fixed<10,3>"),
}


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("hawq_no_input_quant")
    out = {}
    for name, (make, scale, fixed) in CASES.items():
        net, shape = make(round_trip_scales=False, input_quant=False, input_scale=scale)
        path = folder / f"{name}.onnx"
        onnx.save(to_hawq_export(net, shape), path)
        out[name] = {"net": net, "shape": shape, "path": path, "fixed": fixed}
    return out


def _grid_inputs(shape: tuple[int, ...], fixed: str, seed: int = 3) -> np.ndarray:
    """Inputs on the input type's grid, inside its range (its two ends included)."""
    spec = parse_input_precision(fixed)
    low, high = (-(2 ** (spec.bit_width - 1)), 2 ** (spec.bit_width - 1) - 1) if spec.signed else (0, 2**spec.bit_width - 1)
    codes = np.random.default_rng(seed).integers(low, high + 1, size=(SAMPLES, *shape[1:]))
    codes[0], codes[1] = low, high
    return (codes * 2.0**spec.scale_exponent).astype(np.float32)


def _hawq_accumulator(net: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    """HAWQ's last integer accumulator: its float output divided by the last layer's scale."""
    with torch.no_grad():
        output = net(torch.from_numpy(x)).numpy()
    acts = [module for kind, module in net.export_steps() if kind == "act"]
    last = [module for kind, module in net.export_steps() if kind == "linear"][-1]
    scale = np.float64(np.float32((last.fc_scaling_factor.reshape(-1)[:1] * acts[-1].act_scaling_factor.reshape(-1)[:1]).item()))
    accumulator = np.round(output.astype(np.float64) / scale)
    np.testing.assert_array_equal((accumulator * scale).astype(np.float32), output)
    return accumulator


def _read(exports, name: str, samples: int = 0):
    model = hawqc.load(exports[name]["path"])
    InputPrecision(type=exports[name]["fixed"]).run(model)
    return model, read_as_hawq(model, source=name, samples=samples)


@pytest.mark.parametrize("name", ["mlp-calibrated", "cnn-lsb"])
def test_the_export_divides_the_input_by_the_scale_given_by_hand(exports, name):
    """The layout: nothing on the input, the first layer's Div(input, s_in) reads it."""
    graph = onnx.load(exports[name]["path"]).graph
    readers = [node for node in graph.node if "input" in node.input]
    assert [node.op_type for node in readers] == ["Div"]
    divisor = next(node for node in graph.node if node.output[0] == readers[0].input[1])
    assert onnx.numpy_helper.to_array(divisor.attribute[0].t) == np.float32(CASES[name][1])


def test_the_reference_first_layer_is_the_modules_where_every_quotient_is_an_integer(exports):
    """The test's HAWQ first layer (upstream's rounding of the accumulator) agrees with hawqc's own
    modules (which round each x / s_in) where the input is on s_in's grid, and not elsewhere."""
    net = exports["mlp-lsb"]["net"]
    x = torch.from_numpy(_grid_inputs((1, 16), "fixed<8,3>"))
    with torch.no_grad():
        assert torch.equal(hawq_first_layer(net.fc1, x, net.input_scale), net.fc1(x, net.input_scale))
        finer = torch.from_numpy(_grid_inputs((1, 16), "fixed<10,3>"))
        assert not torch.equal(hawq_first_layer(net.fc1, finer, net.input_scale), net.fc1(finer, net.input_scale))


@pytest.mark.parametrize("name", list(CASES))
def test_the_normalized_graphs_exact_meaning_is_hawq(exports, name):
    model, reading = _read(exports, name)
    x = _grid_inputs(exports[name]["shape"], exports[name]["fixed"])
    accumulator = _hawq_accumulator(exports[name]["net"], x)
    (exact,) = ExactExecutor(model).run(x).values()
    np.testing.assert_array_equal(exact.to_float64(), accumulator)
    assert len(np.unique(accumulator)) > 20  # the inputs exercise the layers
    rounded = name != "mlp-lsb" and name != "cnn-lsb"
    # s_in the LSB: `Quant(x, s_in) -> Div(s_in)`, the very graph of an input QuantAct, read as one.
    assert reading.input_act == (name in ("mlp-lsb", "cnn-lsb")) and reading.first_layers_rounded == int(rounded)
    assert reading.input_scale == CASES[name][1]
    ops = [node.op_type for node in model.graph]
    # s_in the LSB: x / s_in is an exact Mul, no rounding; a power of two above it: Div and Quant(1);
    # calibrated: HAWQ's rounding spelled so that integer-requant takes the Div to integers.
    assert ("Div" in ops) == rounded
    first_core = next(node for node in model.graph if node.op_type in ("MatMul", "Conv"))
    after = [use for use, _ in first_core.outputs[0].uses()][0]
    after = [use for use, _ in after.outputs[0].uses()][0] if after.op_type == "Add" else after
    expected = {"lsb": "Relu", "coarser": "Quant", "calibrated": "Cast"}[name.split("-")[1]]
    assert after.op_type == expected


def test_the_summary_says_the_input_had_no_quantact(exports):
    _, reading = _read(exports, "mlp-calibrated", samples=50)
    line = reading.summary()
    assert f"no input QuantAct (input scale {CALIBRATED_SCALE!r} given by hand)" in line
    assert "given by hand): the float accumulator of 1 first layer rounded, as HAWQ does;" in line and "of 50 samples" in line


@pytest.mark.parametrize(
    ("name", "backend"),
    [
        ("mlp-lsb", "vitis"), ("mlp-lsb", "vivado"), ("mlp-calibrated", "vitis"), ("mlp-calibrated", "vivado"),
        ("mlp-coarser", "vitis"), ("cnn-lsb", "vitis"), ("cnn-calibrated", "vitis"),
    ],
)  # fmt: skip
def test_c_simulation_is_hawq(exports, tmp_path, name, backend):
    options = CompileOptions(
        backend=backend, verify_samples=200, hawq_export_semantics="hawq", input_precision=exports[name]["fixed"]
    )
    result = compile_model(exports[name]["path"], tmp_path / "proj", options)
    assert result.verify.bit_exact and result.verify.samples == 200, result.verify.summary()
    if "calibrated" in name:  # integer-requant: hardware mode is checked against the exact meaning
        assert result.verify.exact.equal and result.verify.modes is None, result.verify.summary()
    else:  # integer-only: hardware mode equals semantic mode, nothing declared inexact
        assert result.verify.modes.equal and not result.verify.modes.declared_inexact, result.verify.summary()
    x = _grid_inputs(exports[name]["shape"], exports[name]["fixed"], seed=4)
    accumulator = _hawq_accumulator(exports[name]["net"], x)
    permutations = layout_permutations(result.model)  # the CNN's input is channels-last in the project
    input_perm = permutations.get(result.model.graph.inputs[0].name)
    x = x if input_perm is None else np.ascontiguousarray(x.transpose(input_perm))
    output = result.model.graph.outputs[0].name
    hardware = np.asarray(Executor(result.model, mode="hardware").run(x)[output], dtype=np.float64)
    simulated = np.asarray(compile_csim(result.project).predict(x), dtype=np.float64).reshape(hardware.shape)  # a cache hit
    np.testing.assert_array_equal(simulated, hardware)
    # integer-requant (calibrated s_in) delivers the last accumulator without its bias: v + b.
    affine = output_affines(result.model).get(output)
    np.testing.assert_array_equal(hardware if affine is None else affine.decode_float(hardware), accumulator)
    assert (affine is not None) == ("calibrated" in name)
    # Nothing is left for exact-requant: every requantization is HAWQ's dyadic one already.
    exact_requant = [r.statistics for r in result.records if r.name == "exact-requant"]
    assert exact_requant and not any(any(statistics.values()) for statistics in exact_requant)


def test_without_input_precision_one_line_names_the_option(exports, tmp_path, capsys):
    out = tmp_path / "proj"
    code = main([str(exports["mlp-calibrated"]["path"]), "-o", str(out), "--hawq-export-semantics", "hawq"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "--hawq-export-semantics hawq: the graph input 'input' is divided by the first layer's input scale" in err
    assert "with no quantizer before it" in err and "give the input its fixed-point type with --input-precision (hawqc-opt: the pass" in err
    assert not out.exists()


def test_the_pass_alone_names_the_input_precision_pass(exports):
    with pytest.raises(UnsupportedModelError, match=r"type with the pass input-precision\{type=\.\.\.\} before read-as-hawq$"):
        find_hawq_export(hawqc.load(exports["cnn-lsb"]["path"]))


def test_a_reader_of_the_input_that_is_not_a_layer_is_refused_naming_it():
    """HAWQ's rounding goes on each first layer's accumulator, before its Mul(s_w * s_in): a
    MatMul reading the divided input without one (here a dead one) has no such place."""
    text = """
    <ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
    g (float[1,2] x) => (float[1,2] y)
       <float lsb = {0.125}, float s_in = {0.3}, float z = {0}, float b4 = {4}, float b8 = {8},
        float[2,2] w1 = {3,-2,7,5}, float[2] b1 = {10,-7}, float k1 = {0.0371}, float s_a = {0.29},
        float[2,2] w2 = {1,2,3,4}, float k2 = {0.0107}>
    {
       xq = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (x, lsb, z, b4)
       d = Div (xq, s_in)
       m = MatMul (d, w1)
       [stray] stray = MatMul (d, w2)
       a = Add (m, b1)
       r = Mul (a, k1)
       h = Relu (r)
       q = qonnx.custom_op.general.Quant <signed: int = 0, narrow: int = 0, rounding_mode: string = "ROUND"> (h, s_a, z, b8)
       c = Div (q, s_a)
       m2 = MatMul (c, w2)
       y = Mul (m2, k2)
    }
    """
    model = ir.from_proto(onnx.parser.parse_model(text))
    with pytest.raises(UnsupportedModelError, match=r"^node 'stray' \(MatMul\): reads the graph input but is not a HAWQ-export layer"):
        find_hawq_export(model)
