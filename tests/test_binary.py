"""Binary and ternary networks: precision and hardware mode of BipolarQuant, qonnx's 1-bit
signed Quant and MultiThreshold, and the hls4ml lowering (thresholds, XNOR-popcount, conditional
negation, ternary weights) checked bit for bit through the C simulation on vitis, vivado and
catapult.

One project per (model, backend, io type), compiled once for the module; C simulations are cached by
content hash. Inputs are drawn in the input quantizer's range, plus exact zeros and -0.0, and, for
the threshold-edge models, every point of the input grid and beyond.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import binary_models  # noqa: E402
from binary_models import QONNX, _Builder  # noqa: E402
from conftest import data_model  # noqa: E402

from hawqc.backends.base import get_backend  # noqa: E402
from hawqc.backends.csim import compile_csim  # noqa: E402
from hawqc.errors import UnsupportedModelError  # noqa: E402
from hawqc.frontends.onnx import load_onnx  # noqa: E402
from hawqc.ir.precision import infer_types  # noqa: E402
from hawqc.passes.manager import PassManager  # noqa: E402
from hawqc.sim import Executor  # noqa: E402
from hawqc.sim.inputs import draw_inputs  # noqa: E402

REAL_BNN = data_model("bnn_model_fc_1layer.onnx")
BACKENDS = ("vitis", "vivado", "catapult")
SAMPLES = 256

BUILDERS = {
    "mlp_binary": lambda: binary_models.mlp("binary"),
    "mlp_bipolar1": lambda: binary_models.mlp("bipolar1", seed=4),
    "mlp_ternary": lambda: binary_models.mlp("ternary"),
    "gemm_binary": binary_models.gemm_binary,
    "conv_bnn": binary_models.conv_bnn,
    "edges_ternary": lambda: binary_models.threshold_edges("ternary"),
    "edges_binary": lambda: binary_models.threshold_edges("binary"),
    # Binary scales that are not powers of two: 0.3 everywhere in the Gemm form (every product of
    # two binary values is the one float32 number fl(0.09), whose few-term sums stay exact), 0.75
    # in the MLP (codes +-3: the 8-bit last layer's float32 sums stay exact too).
    "gemm_binary_03": lambda: binary_models.gemm_binary(scale=0.3),
    "mlp_binary_075": lambda: binary_models.mlp("binary", scale=0.75),
}
CASES = [
    *[("bnn_fc_1layer", backend, "io_parallel") for backend in BACKENDS],
    *[(model, backend, "io_parallel") for model in ("mlp_binary", "mlp_ternary", "conv_bnn") for backend in BACKENDS],
    *[(model, backend, "io_parallel") for model in ("edges_ternary", "edges_binary") for backend in ("vitis", "catapult")],
    ("mlp_bipolar1", "vivado", "io_parallel"),
    ("gemm_binary", "catapult", "io_parallel"),
    ("conv_bnn", "vitis", "io_stream"),
    ("mlp_binary", "vivado", "io_stream"),
    ("mlp_ternary", "catapult", "io_stream"),
    *[(model, backend, "io_parallel") for model in ("gemm_binary_03", "mlp_binary_075") for backend in BACKENDS],
]
# The product hls4ml must pick for the binary/ternary dense layers of a model (nnet_mult.h).
PRODUCTS = {
    "bnn_fc_1layer": {"both_binary"},
    "mlp_binary": {"both_binary"},
    "mlp_bipolar1": {"both_binary"},
    "gemm_binary": {"both_binary"},
    "mlp_ternary": {"weight_ternary"},
    "edges_ternary": {"weight_ternary"},
    "edges_binary": {"both_binary"},
}


def prepared(name: str, tmp: Path):
    path = REAL_BNN if name == "bnn_fc_1layer" else binary_models.save(BUILDERS[name](), tmp / f"{name}.onnx")
    model = load_onnx(path)
    PassManager.parse("default").run(model)
    return model


def inputs_for(name: str, model) -> np.ndarray:
    x = draw_inputs(model, SAMPLES, seed=11)[model.graph.inputs[0].name]
    x[:3] = 0.0
    x[3:6] = -0.0
    if name.startswith("edges"):
        grid = np.arange(-4.5, 4.625, 0.125, dtype=np.float32)
        x = np.concatenate([x, np.repeat(grid[:, None], x.shape[1], axis=1)])
    return x


class Reference:
    def __init__(self, name: str, tmp: Path) -> None:
        self.model = prepared(name, tmp)
        self.x = inputs_for(name, self.model)
        feed = {self.model.graph.inputs[0].name: self.x}
        out = self.model.graph.outputs[0].name
        self.hardware = Executor(self.model, mode="hardware").run(feed)[out]
        self.semantic = Executor(self.model).run(feed)[out]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> dict[str, Reference]:
    return {}


def reference(references: dict[str, Reference], name: str, tmp: Path) -> Reference:
    if name not in references:
        references[name] = Reference(name, tmp)
    return references[name]


@pytest.fixture(scope="module", params=CASES, ids=["-".join(case) for case in CASES])
def compiled(request, tmp_path_factory, references):
    name, backend, io_type = request.param
    ref = reference(references, name, tmp_path_factory.mktemp("models"))
    outdir = tmp_path_factory.mktemp(f"{name}-{backend}-{io_type}")
    project = get_backend(backend).lower(ref.model, outdir, io_type=io_type)
    return name, ref, project, compile_csim(project)


def test_c_simulation_equals_hardware_and_semantic_mode(compiled) -> None:
    _name, ref, _project, csim = compiled
    simulated = csim.predict(ref.x)
    expected = np.asarray(ref.hardware, dtype=np.float64).reshape(simulated.shape)
    assert np.array_equal(expected, simulated), f"{np.sum(expected != simulated)} values differ"
    # Power-of-two scales, integer thresholds on the grid: hardware mode is QONNX's meaning.
    assert np.array_equal(np.asarray(ref.semantic, dtype=np.float64).reshape(simulated.shape), simulated)
    assert len(np.unique(simulated)) > 1


def test_the_binary_and_ternary_kernels_are_the_ones_generated(compiled) -> None:
    name, _ref, project, _csim = compiled
    firmware = Path(project.outdir) / "firmware"
    parameters, code = (firmware / "parameters.h").read_text(), (firmware / "myproject.cpp").read_text()
    for product in PRODUCTS.get(name, set()):
        if project.backend == "catapult" and name.startswith("conv"):
            continue
        assert f"product::{product}<" in parameters
    assert "normalize_binary_tanh" in code or "normalize_ternary_tanh" in code


# ---- precision and hardware mode ------------------------------------------------------------


def _single(op: str, scale: float, shape=(1, 6), **attrs) -> onnx.ModelProto:
    b = _Builder(0)
    if op == "BipolarQuant":
        out = b.bipolar("x", scale)
    elif op == "Quant1":
        out = b.quant("x", 1, scale)
    else:
        raise ValueError(op)
    return b.model(list(shape), out)


def _ir(proto: onnx.ModelProto, tmp: Path):
    return load_onnx(binary_models.save(proto, tmp / "m.onnx"))


@pytest.mark.parametrize("op", ["BipolarQuant", "Quant1"])
def test_binary_quantizer_maps_zero_and_negative_zero_to_plus_scale(op: str, tmp_path: Path) -> None:
    model = _ir(_single(op, 0.25), tmp_path)
    x = np.array([[0.0, -0.0, -1e-30, 1e-30, -3.0, 7.0]], dtype=np.float32)
    semantic = Executor(model).run({"x": x})
    hardware = Executor(model, mode="hardware").run({"x": x})
    (name,) = semantic
    np.testing.assert_array_equal(semantic[name], [[0.25, 0.25, -0.25, 0.25, -0.25, 0.25]])
    np.testing.assert_array_equal(hardware[name], semantic[name])
    types = infer_types(model)
    assert types.intervals[name] == (Fraction(-1, 4), Fraction(1, 4))
    assert types.types[name].lsb_exponent == -2 and types.types[name].signed


@pytest.mark.parametrize("op", ["BipolarQuant", "Quant1"])
def test_binary_quantizer_with_a_scale_that_is_not_a_power_of_two_has_wider_codes(op: str, tmp_path: Path) -> None:
    """s = 0.3 is the float32 number m * 2^e with m odd (24 bits): the codes are +-m."""
    model = _ir(_single(op, 0.3), tmp_path)
    types = infer_types(model)
    name = model.graph.outputs[0].name
    s = Fraction(float(np.float32(0.3)))
    assert types.intervals[name] == (-s, s)
    assert s.denominator > 1 and s.numerator % 2 == 1  # s = m / 2^k with m odd
    assert types.types[name].width == s.numerator.bit_length() + 1 and not types.inexact


def test_binary_quantizer_with_a_negative_scale_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedModelError, match=r"binary quantizer scale \[-0\.3.* is not positive"):
        infer_types(_ir(_single("BipolarQuant", -0.3), tmp_path))


def test_a_binary_scale_whose_float32_sums_round_is_declared_and_the_c_simulation_is_exact(tmp_path: Path) -> None:
    """Binary activations of scale 0.3 into an 8-bit dense layer: float32 rounds those sums, so
    semantic mode differs; precision inference declares it, and the C simulation equals hardware mode.
    (Without integer-requant: the default pipeline takes such a model to integers, tested in
    tests/test_float_scale_exports.py; here the binary scale stays in the data.)"""
    model = load_onnx(binary_models.save(binary_models.mlp("binary", scale=0.3), tmp_path / "mlp03.onnx"))
    PassManager.parse("cleanup,exact-requant,fold-quant,fuse-bn,channels-last,gemm-to-matmul,cleanup").run(model)
    x = inputs_for("mlp_binary_03", model)
    feed = {model.graph.inputs[0].name: x}
    out = model.graph.outputs[0].name
    hardware = Executor(model, mode="hardware")
    assert out in hardware.precision.float_inexact
    exact, semantic = hardware.run(feed)[out], Executor(model).run(feed)[out]
    assert not np.array_equal(exact, semantic)
    project = get_backend("vitis").lower(model, tmp_path / "project", io_type="io_parallel")
    simulated = compile_csim(project).predict(x)
    assert np.array_equal(np.asarray(exact, dtype=np.float64).reshape(simulated.shape), simulated)


def test_the_interval_of_a_binary_quantizer_follows_its_input(tmp_path: Path) -> None:
    """A binary quantizer of a non-negative value is +s only (a Relu in front)."""
    b = _Builder(0)
    out = b.bipolar(b.node("Relu", [b.quant("x", 4, 0.5)]), 2.0)
    model = _ir(b.model([1, 3], out), tmp_path)
    assert infer_types(model).intervals[out] == (Fraction(2), Fraction(2))


def _threshold_model(thresholds, out_scale: float, out_bias: float) -> onnx.ModelProto:
    b = _Builder(0)
    x = b.quant("x", 5, 0.25)
    out = b.node(
        "MultiThreshold", [x, b.const(np.asarray(thresholds, dtype=np.float32))],
        domain=QONNX, out_scale=out_scale, out_bias=out_bias, data_layout="NC",
    )  # fmt: skip
    return b.model([1, len(thresholds)], out)


def test_multithreshold_counts_inputs_equal_to_a_threshold(tmp_path: Path) -> None:
    """`v >= t`: an input exactly at a threshold passes it, in both modes; the interval per channel
    counts the thresholds below the input's range (always passed) and above it (never)."""
    model = _ir(_threshold_model(binary_models.TERNARY_EDGES, 1.0, -1.0), tmp_path)
    grid = np.repeat(np.arange(-4.5, 4.625, 0.125, dtype=np.float32)[:, None], 8, axis=1)
    semantic = Executor(model).run({"x": grid})
    hardware = Executor(model, mode="hardware").run({"x": grid})
    (name,) = semantic
    np.testing.assert_array_equal(hardware[name], semantic[name])
    at = np.where(grid[:, 0] == -0.25)[0][0]
    assert semantic[name][at, 0] == 0 and semantic[name][at - 2, 0] == -1  # -0.25 passes -0.25
    assert infer_types(model).intervals[name] == (Fraction(-1), Fraction(1))
    # Channel 2 ([-inf, 0.5]) never outputs -1; channel 4 ([-10, 10]) is always 0.
    assert semantic[name][:, 2].min() == 0 and set(semantic[name][:, 4]) == {0.0}


def test_ternary_quantizer_rounds_its_thresholds_half_to_even(tmp_path: Path) -> None:
    """A 2-bit signed narrow Quant (ROUND) sends +-0.5 to 0 and +-1.5 to +-1, in both modes."""
    b = _Builder(0)
    out = b.quant(b.quant("x", 5, 0.25), 2, 1.0, narrow=True)
    model = _ir(b.model([1, 6], out), tmp_path)
    x = np.array([[-1.5, -0.5, 0.5, 0.75, 1.5, 3.0]], dtype=np.float32)
    semantic = Executor(model).run({"x": x})[out]
    np.testing.assert_array_equal(semantic, [[-1, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(Executor(model, mode="hardware").run({"x": x})[out], semantic)


def test_real_brevitas_bnn_hardware_mode_equals_semantic_mode() -> None:
    model = prepared("bnn_fc_1layer", Path("."))
    x = np.random.default_rng(0).normal(0, 1, (2000, 3)).astype(np.float32)
    x[:10] = 0.0
    out = model.graph.outputs[0].name
    semantic = Executor(model).run({"x.1": x})[out]
    np.testing.assert_array_equal(Executor(model, mode="hardware").run({"x.1": x})[out], semantic)
    assert set(np.unique(semantic)) == {-1.0, 1.0}


# ---- lowering refusals -------------------------------------------------------------------------


def test_thresholds_to_levels_hls4ml_has_no_layer_for_are_refused(tmp_path: Path) -> None:
    """Levels {0, 1} (out_scale 1, out_bias 0) are neither {-k, k} nor {-k, 0, k}."""
    model = _ir(_threshold_model([[0.5]] * 3, 1.0, 0.0), tmp_path)
    PassManager.parse("default").run(model)
    with pytest.raises(UnsupportedModelError, match=r"MultiThreshold.*levels \[0\.0, 1\.0\]"):
        get_backend("vitis").lower(model, tmp_path / "p")
    assert not (tmp_path / "p" / "firmware").exists()


def test_catapult_streams_thresholds_of_features_only(tmp_path: Path) -> None:
    model = prepared("conv_bnn", tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"MultiThreshold.*io_stream on catapult"):
        get_backend("catapult").lower(model, tmp_path / "p", io_type="io_stream")
