"""Tiny channels-last quantized CNNs through the hls4ml lowering.

Every model of `cnn_models.MODELS`, every backend, io_parallel and io_stream: the C simulation
equals hardware mode bit for bit on 256 drawn inputs, and on integer-only graphs the QONNX
semantics too. One project is compiled per (model, backend, io type) and shared by the tests that
read it; the C simulations are cached by content (`HAWQC_CACHE_DIR`). Then what hls4ml inserts and
retypes (checked, not trusted), and what the lowering refuses, with one-line errors naming the node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from cnn_models import MODELS, CnnBuilder, classic_cnn, depthwise_residual

from hawqc.backends.base import get_backend
from hawqc.backends.csim import compile_csim
from hawqc.errors import BackendError, UnsupportedModelError
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.precision import infer_types
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

BACKENDS = ("vivado", "vitis", "catapult")
IO_TYPES = ("io_parallel", "io_stream")
SAMPLES = 256
# Catapult has no io_parallel depthwise Conv1D (test_refusals covers it).
CASES = [
    (model, backend, io_type)
    for model in MODELS
    for backend in BACKENDS
    for io_type in IO_TYPES
    if not (model == "depthwise_1d" and backend == "catapult" and io_type == "io_parallel")
]


class Reference:
    """A model, its drawn inputs and its outputs in hardware (and, if integer-only, semantic) mode."""

    def __init__(self, name: str) -> None:
        build, self.integer_only = MODELS[name]
        self.model = build()
        self.x = draw_inputs(self.model, SAMPLES, seed=7)["x"]
        self.hardware = Executor(self.model, mode="hardware").run({"x": self.x})["y"]
        self.semantic = Executor(self.model).run({"x": self.x})["y"]


@pytest.fixture(scope="module")
def references() -> dict[str, Reference]:
    return {}


def reference(references: dict[str, Reference], name: str) -> Reference:
    if name not in references:
        references[name] = Reference(name)
    return references[name]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(case) for case in CASES])
def compiled(request, tmp_path_factory, references):
    name, backend, io_type = request.param
    ref = reference(references, name)
    project = get_backend(backend).lower(ref.model, tmp_path_factory.mktemp(f"{name}-{backend}-{io_type}"), io_type=io_type)
    return ref, project, compile_csim(project)


def _first_difference(expected: np.ndarray, simulated: np.ndarray) -> str:
    expected = np.asarray(expected, dtype=np.float64).reshape(simulated.shape)
    wrong = np.argwhere(expected != simulated)
    if not len(wrong):
        return ""
    first = tuple(wrong[0])
    return f"{len(wrong)} of {expected.size} values differ; first at {first}: {expected[first]!r} != {simulated[first]!r}"


def test_c_simulation_is_bit_exact(compiled) -> None:
    ref, _project, csim = compiled
    simulated = csim.predict(ref.x)
    assert simulated.shape == (SAMPLES, *ref.hardware.shape[1:])
    assert not _first_difference(ref.hardware, simulated)
    if ref.integer_only:
        assert not _first_difference(ref.semantic, simulated)
    # Not a trivial model: the outputs vary.
    assert len(np.unique(simulated)) > SAMPLES // 8


def test_float_requantization_differs_from_semantics_only_where_float32_rounds(references) -> None:
    """The float model is a real test of hardware mode: float32 semantics differ on some samples."""
    ref = reference(references, "float_requant")
    assert 0 < np.sum(ref.semantic != ref.hardware) < ref.hardware.size // 4


# ---- what hls4ml does to the planned layers ------------------------------------------------


def test_io_stream_copies_are_reported_with_the_type_they_copy(tmp_path: Path) -> None:
    model = depthwise_residual()
    project = get_backend("vivado").lower(model, tmp_path, io_type="io_stream")
    ops = {layer.name: layer for layer in project.layers}
    # The quantized input is read by the depthwise convolution and by the residual Add.
    clone = ops["clone_x"]
    assert clone.op == "Clone (inserted by hls4ml)"
    assert clone.precision == ops["x"].precision and clone.types == {"result": ops["x"].types["result"]}
    # The padding hawqc inserts itself (hls4ml's own would rewire the wrong reader of a branch).
    assert ops["conv6_pad"].op == "ZeroPadding2D"
    parallel = get_backend("vivado").lower(model, tmp_path / "parallel", io_type="io_parallel")
    assert not any("inserted" in layer.op or layer.op.startswith("ZeroPadding") for layer in parallel.layers)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("io_type", IO_TYPES)
def test_only_hawqcs_types_are_written(backend: str, io_type: str, tmp_path: Path) -> None:
    """Every typedef of defines.h is a type the report lists, or one no kernel here reads: the
    lookup-table type of activations, and Catapult's separable-convolution type of a depthwise one."""
    from hawqc.backends.hls4ml_checks import element_type, read_typedefs

    model = depthwise_residual()
    project = get_backend(backend).lower(model, tmp_path, io_type=io_type)
    reported = {text for layer in project.layers for text in layer.types.values()}
    for name, text in read_typedefs(tmp_path / "firmware" / "defines.h").items():
        assert element_type(text) in reported or name.endswith(("_table_t", "_dw_out_t")), (name, text)


def test_a_final_reshape_is_dropped_or_repacked(tmp_path: Path) -> None:
    """io_parallel keeps data flat: hls4ml drops a final reshape (remove_final_reshape); io_stream
    replaces it by a Repack of the stream (reshape_stream), reported under its own name."""
    model = MODELS["depthwise_1d"][0]()
    parallel = get_backend("vivado").lower(model, tmp_path / "parallel", io_type="io_parallel")
    stream = get_backend("vivado").lower(model, tmp_path / "stream", io_type="io_stream")
    assert parallel.layers[-1].op == "MaxPooling1D" and parallel.output_shape == (12,)
    assert (stream.layers[-1].name, stream.layers[-1].op) == ("repack_flatten14", "Reshape")
    assert stream.output_shape == (12,)


def test_a_copy_into_another_type_is_caught(tmp_path: Path, monkeypatch) -> None:
    from hls4ml.backends.fpga.passes.clone import CloneOutput

    original = CloneOutput.transform

    def retyping_transform(self, model, node):
        done = original(self, model, node)
        for layer in model.get_layers():
            if layer.class_name == "Clone":
                variable = next(iter(layer.variables.values()))
                variable.type = variable.type.__class__(variable.type.name + "_x", variable.type.precision.__class__(width=3, integer=1))
        return done

    monkeypatch.setattr(CloneOutput, "transform", retyping_transform)
    with pytest.raises(BackendError, match=r"Clone 'clone_x' copies a value of type"):
        get_backend("vivado").lower(depthwise_residual(), tmp_path, io_type="io_stream")


def test_a_rewired_input_is_caught(tmp_path: Path, monkeypatch) -> None:
    from hls4ml.backends.fpga.passes.clone import CloneOutput

    original = CloneOutput.transform

    def rewiring_transform(self, model, node):
        done = original(self, model, node)
        residual = model.graph.get("add16")
        if residual is not None:
            residual.inputs[0] = residual.inputs[1]
        return done

    monkeypatch.setattr(CloneOutput, "transform", rewiring_transform)
    with pytest.raises(BackendError, match=r"hls4ml wired layer 'add16' .* to \['relu11', 'relu11'\]; hawqc planned \['x', 'relu11'\]"):
        get_backend("vivado").lower(depthwise_residual(), tmp_path, io_type="io_stream")


def _branch_into_padded_conv1d() -> ir.Model:
    """The quantized input read first by a Relu, then by a padded Conv1D; the two joined by an Add."""
    g = CnnBuilder((8, 2), seed=8)
    x = g.quant("x", 8, -4)
    other = g.quant(g.node("Relu", [x]), 8, -4, signed=False)
    conv = g.quant(g.conv(x, 2, 2, (3,), pads=[1, 1]), 8, -3)
    return g.build(g.node("Add", [other, conv]))


def test_hls4ml_padding_is_not_trusted(tmp_path: Path, monkeypatch) -> None:
    """hls4ml 1.3.0 pads a Conv1D in io_stream by inserting ZeroPadding1D before the input's first
    reader (insert_node without `before`): here the Relu would read the padded stream and the
    convolution the unpadded one. hawqc pads explicitly; a padding hls4ml inserts is refused."""
    from hawqc.backends.hls4ml_planner import Planner

    model = _branch_into_padded_conv1d()
    project = get_backend("vivado").lower(model, tmp_path / "ok", io_type="io_stream")
    assert [layer.op for layer in project.layers if "Padding" in layer.op] == ["ZeroPadding1D"]
    monkeypatch.setattr(Planner, "zero_padding", lambda self, node, x, prev, window, channels: (prev, window))
    with pytest.raises(BackendError, match=r"hls4ml added layer 'zp1d_conv\d+' \(ZeroPadding1D\)"):
        get_backend("vivado").lower(model, tmp_path / "bad", io_type="io_stream")


def test_branched_brevitas_model_lowers_in_io_stream(tmp_path: Path) -> None:
    """The Brevitas model of tests/data (256x256x3, depthwise and pointwise convolutions,
    LeakyRelu, MaxPool, Resize, Concat) through the pipeline and the lowering, without compiling
    (its C simulation takes minutes: test_cnn_end_to_end runs it)."""
    from conftest import data_model

    from hawqc.ir.io import read_model
    from hawqc.passes.manager import PassManager

    model = read_model(data_model("branched_model_ch_last.onnx"))
    PassManager.parse("hls4ml-prepare").run(model)
    project = get_backend("vitis").lower(model, tmp_path, io_type="io_stream")
    ops = [layer.op for layer in project.layers]
    for op in ("DepthwiseConv2D", "Conv2D", "LeakyReLU", "MaxPooling2D", "Resize(nearest)", "Concatenate"):
        assert op in ops
    assert ops.count("Clone (inserted by hls4ml)") == 1 and ops.count("ZeroPadding2D") == ops.count("DepthwiseConv2D")
    assert project.input_shape == (256, 256, 3) and project.output_shape == (256, 256, 2)


def test_catapult_pooling_accumulators_are_hawqcs(tmp_path: Path) -> None:
    """Catapult widens every pooling accum_t by log2(pool size) bits on both sides; hawqc
    configures a narrower one so that the written type is the one it chose."""
    model = classic_cnn()
    pool_input = infer_types(model).types["quant12_out"]
    for backend in ("vivado", "catapult"):
        project = get_backend(backend).lower(model, tmp_path / backend)
        pool = next(layer for layer in project.layers if layer.op == "MaxPooling2D")
        spelled = pool_input.ap_cpp() if backend == "vivado" else pool_input.ac_cpp()
        assert pool.types["accum"] == spelled.replace(" ", "")


def test_catapult_average_pooling_reads_an_exact_widening(tmp_path: Path) -> None:
    model = depthwise_residual()
    accum = infer_types(model).accumulators["y"]
    for io_type in IO_TYPES:
        layers = get_backend("catapult").lower(model, tmp_path / io_type, io_type=io_type).layers
        widen = next(layer for layer in layers if layer.name == "averagepool21_widen")
        assert widen.op.startswith("Activation(linear)")
        assert widen.precision == str(accum.union(accum.covering(2, 2, accum.lsb_exponent)))
    # Vivado's kernels use the accumulator type: no cast.
    layers = get_backend("vivado").lower(model, tmp_path / "vivado").layers
    assert not any(layer.name.endswith("_widen") for layer in layers)


# ---- refusals ------------------------------------------------------------------------------------


def _conv_model(**attrs) -> ir.Model:
    g = CnnBuilder((6, 6, 4), seed=9)
    out_channels = attrs.pop("out_channels", 4)
    y = g.conv(g.quant("x", 8, -4), out_channels, 4, tuple(attrs.pop("kernel", (3, 3))), **attrs)
    return g.build(g.quant(y, 8, -2))


def _pool_model(op: str, **attrs) -> ir.Model:
    g = CnnBuilder((6, 6, 2), seed=9)
    return g.build(g.node(op, [g.quant("x", 8, -4, signed=attrs.pop("signed", True))], CHANNELS_LAST_DOMAIN, **attrs))


def _resize_model(scale: float, **attrs) -> ir.Model:
    g = CnnBuilder((4, 4, 2), seed=9)
    scales = g.const(np.array([1, scale, scale, 1]), "scales")
    return g.build(g.node("Resize", [g.quant("x", 8, -4), "", scales], **attrs))


REFUSALS = {
    "grouped": (lambda: _conv_model(group=2), "vivado", "io_parallel", r"'conv\d+' .*grouped convolution \(group 2 of 4"),
    "dilated": (lambda: _conv_model(dilations=[2, 2]), "vitis", "io_parallel", r"'conv\d+' .*dilations \[2, 2\]"),
    "depth multiplier": (
        lambda: _conv_model(group=4, out_channels=8),
        "vivado",
        "io_stream",
        r"'conv\d+' .*depth multiplier 2",
    ),
    "streaming pool stride": (
        lambda: _pool_model("MaxPool", kernel_shape=[3, 3], strides=[1, 1]),
        "vivado",
        "io_stream",
        r"'maxpool\d+' .*strides equal to the kernel",
    ),
    "streaming signed max padding": (
        lambda: _pool_model("MaxPool", kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1]),
        "vitis",
        "io_stream",
        r"'maxpool\d+' .*padded signed max pooling in io_stream",
    ),
    "catapult non-power-of-two average": (
        lambda: _pool_model("AveragePool", kernel_shape=[3, 3], strides=[3, 3]),
        "catapult",
        "io_parallel",
        r"'averagepool\d+' .*average over \[9\] positions on catapult",
    ),
    "catapult parallel depthwise 1-D": (
        lambda: MODELS["depthwise_1d"][0](),
        "catapult",
        "io_parallel",
        r"'conv\d+' .*io_parallel depthwise convolution exists only in 2-D",
    ),
    "resize by 1.5": (lambda: _resize_model(1.5), "vivado", "io_parallel", r"'resize\d+' .*4 -> 6 is not an integer"),
    "resize rounding half up": (
        lambda: _resize_model(2, coordinate_transformation_mode="asymmetric", nearest_mode="round_prefer_ceil"),
        "vivado",
        "io_stream",
        r"'resize\d+' .*asymmetric/round_prefer_ceil reads input indices \[0, 1, 1, 2",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(case: str, tmp_path: Path) -> None:
    build, backend, io_type, message = REFUSALS[case]
    with pytest.raises(UnsupportedModelError, match=message) as error:
        get_backend(backend).lower(build(), tmp_path, io_type=io_type)
    assert "\n" not in str(error.value)


def test_non_power_of_two_average_lowers_where_hardware_mode_defines_it(tmp_path: Path) -> None:
    """A 3x3 average is inexact in float32 but hardware mode defines it (hls4ml's truncating
    average); Vivado lowers it, with the accumulator precision inferred."""
    model = _pool_model("AveragePool", kernel_shape=[3, 3], strides=[3, 3])
    assert "y" in infer_types(model).inexact
    project = get_backend("vivado").lower(model, tmp_path)
    assert project.layers[-1].op == "AveragePooling2D"
