"""Per-layer trace on a verify mismatch: a bug planted in one layer of the written project is named."""

from __future__ import annotations

import json
import re
import shlex

import numpy as np
import pytest
from conftest import JET_TAGGER

from hawqc.backends.csim_trace import instrument_bridge, instrument_top_function, layer_values
from hawqc.backends.project import TracePoint
from hawqc.errors import BackendError
from hawqc.flow.driver import CompileOptions, compile_model, verify_project
from hawqc.flow.mismatch_trace import reproduce_command

TOP = """void myproject(input_t x[4], result_t out[2]) {
    layer2_t layer2_out[3];
    nnet::dense<input_t, layer2_t, config2>(x, layer2_out, w2, b2); // fc1

    // act
    nnet::relu<layer2_t, layer3_t, relu_config3>(layer2_out, layer3_out);
    nnet::copy(layer3_out, out);

}
"""


def test_instrumenting_puts_hls4ml_save_calls_after_each_layer_block():
    points = (TracePoint("fc1", "layer2_t", "layer2_out", "N_LAYER_2", 3), TracePoint("act", "result_t", "out", "2", 2))
    lines = instrument_top_function(TOP, points).split("\n")
    fc1 = lines.index('    nnet::save_layer_output<layer2_t>(layer2_out, "fc1", N_LAYER_2);')
    act = lines.index('    nnet::save_layer_output<result_t>(out, "act", 2);')
    # After the layer's own call(s), inside the guard hls4ml's writer uses, before the next layer.
    assert lines[fc1 - 2].endswith("// fc1") and lines[fc1 - 1] == "#ifndef __SYNTHESIS__" and lines[fc1 + 1] == "#endif"
    assert lines[act - 2].strip() == "nnet::copy(layer3_out, out);"
    bridge = instrument_bridge("void allocate_trace_storage(size_t element_size) {\n    nnet::trace_type_size = element_size;\n}", points)
    assert '("fc1", (void *) malloc(N_LAYER_2 * element_size))' in bridge and '("act",' in bridge
    with pytest.raises(BackendError, match="'missing'"):
        instrument_top_function(TOP, (TracePoint("missing", "t", "v", "1", 1),))


def test_reproducer_replaces_the_data_flags():
    command = ("hawqc", "m.onnx", "-o", "proj", "--verify", "100", "--seed=3", "--backend", "vivado", "--force")
    text = reproduce_command(command, __import__("pathlib").Path("proj/mismatch"), __import__("pathlib").Path("proj/mismatch/input.npy"))
    assert shlex.split(text) == [
        "hawqc", "m.onnx", "--backend", "vivado", "-o", "proj/mismatch/project", "--force", "--inputs", "proj/mismatch/input.npy",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The jet tagger's project with one weight of its second dense layer changed on disk."""
    outdir = tmp_path_factory.mktemp("planted") / "proj"
    result = compile_model(JET_TAGGER, outdir, CompileOptions())
    values = layer_values(result.project)
    second_dense = [p.name for p in result.project.plan.layers if p.op == "Dense"][1]
    layer_dict = result.project.plan.by_name[second_dense].layer
    shape = f"//Numpy array shape [{layer_dict['n_in']}, {layer_dict['n_out']}]"
    (weights,) = [p for p in outdir.glob("firmware/weights/w*.h") if p.read_text().startswith(shape)]
    text = weights.read_text()
    head, first, rest = re.match(r"(.*?= \{)([^,]+)(,.*)", text, re.S).groups()
    weights.write_text(f"{head}{float(first) + 1}{rest}")  # any change; a wrap in the weight type still changes it
    verified = verify_project(result.model, result.project, 40, 0, result.report, command=("hawqc", str(JET_TAGGER), "-o", str(outdir), "--verify", "40"))
    return result, verified, second_dense, values


def test_the_first_differing_layer_is_the_planted_one(planted):
    result, verified, second_dense, values = planted
    assert not verified.bit_exact and not verified.passed
    trace = verified.trace
    assert trace is not None and trace.sample == verified.first_mismatch
    assert trace.first_layer == second_dense
    assert trace.first.value == values[second_dense] and trace.first.differing_elements >= 1
    # Every layer before it was compared and agrees; it is the first in plan (topological) order.
    order = [c.layer for c in trace.layers]
    before = order[: order.index(second_dense)]
    assert len(before) >= 2 and all(c.differing_elements == 0 for c in trace.layers[: len(before)])
    assert "first differing layer" in verified.summary() and second_dense in verified.summary()


def test_the_mismatching_input_and_layer_values_are_saved(planted):
    result, verified, second_dense, _ = planted
    directory = result.outdir / "mismatch"
    from hawqc.sim.inputs import draw_inputs

    drawn = draw_inputs(result.model, 40, 0)[result.project.input_name]
    saved = np.load(directory / "input.npy")
    np.testing.assert_array_equal(saved, drawn[verified.first_mismatch : verified.first_mismatch + 1])
    layers = np.load(directory / "layers.npz")
    assert np.any(layers[f"{second_dense}.csim"] != layers[f"{second_dense}.hardware"])
    on_disk = json.loads((directory / "trace.json").read_text())
    assert on_disk["first_layer"] == second_dense
    assert f"--inputs {directory / 'input.npy'}" in on_disk["command"] and "--verify" not in on_disk["command"]
    assert result.report.verify["trace"]["first_layer"] == second_dense
    # The user's project itself is left untraced (the trace ran on a copy).
    assert "save_layer_output" not in (result.outdir / "firmware" / "myproject.cpp").read_text()


def test_traced_values_equal_hardware_mode_on_catapult_io_stream(tmp_path):
    """The trace reads the right buffers on the other writer and stream interfaces too: on a correct
    project every compared layer equals hardware mode's value for it."""
    from hawqc.backends.csim_trace import trace_layers
    from hawqc.sim import Executor
    from hawqc.sim.inputs import draw_inputs

    result = compile_model(JET_TAGGER, tmp_path / "proj", CompileOptions(backend="catapult", io_type="io_stream"))
    x = draw_inputs(result.model, 5, 1)[result.project.input_name]
    values = Executor(result.model, mode="hardware").run({result.project.input_name: x}, keep_intermediates=True)
    traced = trace_layers(result.project, x)
    compared = layer_values(result.project)
    assert len(compared) >= 4
    for layer, value in compared.items():
        np.testing.assert_array_equal(traced[layer], np.asarray(values[value], np.float64).reshape(5, -1), err_msg=layer)
