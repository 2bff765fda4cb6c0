"""Every backend, both io types, both strategies: the C simulation of the jet tagger and of the digits
CNN equals hardware mode bit for bit, and the project really uses the kernels asked for.

hls4ml's Resource strategy compiles different dense and convolution kernels from its Latency
strategy (`DenseResource_rf_leq_nin`, `..._rf_gt_nin_rem0` instead of `DenseLatency`; Catapult's
`dense_resource`), so each cell is its own C simulation. The reuse factors below take both Resource
branches: below the layer's input count, and a multiple of it (`rf > n_in`).

Cost (2 cores, cold cache): see the report of the branch that added this file; the latency cells of
the digits CNN are the projects tests/test_cnn_end_to_end.py compiles, so they come from the cache.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from hawqc.backends.hls_settings import settings_from_options
from hawqc.flow.driver import CompileOptions, compile_model

JET_TAGGER = REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx"
DIGITS_CNN = REPO / "examples" / "digits_cnn" / "digits_cnn.onnx"

# Resource settings per model: a model-wide reuse factor and per-layer ones (the settings file path).
# Jet tagger: 16-64-32-32-5; dense_1 has 16 inputs (32 = 2 x 16: rf > n_in), dense_4 has 32.
JET_RESOURCE = """\
strategy: resource
reuse_factor: 4
layers:
  dense_1_matmul_1: {reuse_factor: 32}
  dense_4_matmul: {reuse_factor: 32}
"""
# Digits CNN: conv1 is a 9x8 product (rf = n_in), conv2 72x8, fc_matmul 128x10 (hls4ml accepts no 9
# there). A convolution's rf > n_in aborts Vivado/Vitis's io_parallel kernel and is refused
# (tests/test_backend_options.py).
CNN_RESOURCE = """\
{"strategy": "resource", "reuse_factor": 9, "layers": {"fc_matmul": {"reuse_factor": 8}}}
"""
MODELS = {
    # model, settings file (name, text), verification samples
    "jet": (JET_TAGGER, ("jet.yml", JET_RESOURCE), 1000),
    "cnn": (DIGITS_CNN, ("cnn.json", CNN_RESOURCE), 32),
}
PRODUCT_CLASSES = ("Dense", "Conv2D")


def _layer_configs(parameters_h: str) -> dict[str, str]:
    """parameters.h cut into each layer's config text, by the `// <layer name>` line hls4ml writes."""
    parts = re.split(r"^// (\w+)\n", parameters_h, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["latency", "resource"])
@pytest.mark.parametrize("io_type", ["io_parallel", "io_stream"])
@pytest.mark.parametrize("backend", ["vivado", "vitis", "catapult"])
@pytest.mark.parametrize("model", list(MODELS))
def test_c_simulation_is_bit_exact_with_either_strategy(model, backend, io_type, strategy, tmp_path: Path) -> None:
    path, (config_name, config_text), samples = MODELS[model]
    config = tmp_path / config_name
    config.write_text(config_text)
    settings = settings_from_options(config_file=config) if strategy == "resource" else settings_from_options()
    options = CompileOptions(backend=backend, io_type=io_type, verify_samples=samples, settings=settings)
    result = compile_model(path, tmp_path / "prj", options)

    assert result.verify is not None and result.verify.bit_exact, result.verify.summary()
    configs = _layer_configs((tmp_path / "prj" / "firmware" / "parameters.h").read_text())
    products = [layer.name for layer in result.project.layers if layer.op in PRODUCT_CLASSES]
    assert products, [layer.op for layer in result.project.layers]
    for name in products:
        text = configs[name]
        assert f"strategy = nnet::{strategy};" in text, (name, text)
        assert f"reuse_factor = {settings.reuse_factor_of(name)};" in text, (name, text)
        if backend != "catapult":  # Vivado/Vitis name the kernel; Catapult branches on `strategy` inside dense()
            kernel = re.search(r"using kernel = nnet::(\w+)<", text)
            assert kernel is not None and kernel.group(1).startswith("DenseResource" if strategy == "resource" else "DenseLatency")
