"""HAWQ modules with binary (`weight_bit=1`) and ternary (`weight_bit=2`) weights:
hawqc's 1-bit rule (sign codes, scale mean|w|, straight-through training), HAWQ's 2-bit codes, the
forms `hawqc.lift` gives them (a 1-bit signed Quant, a 2-bit signed narrow Quant), and the hls4ml
kernels those become (weight_binary, weight_ternary). The bit-exact chain HAWQ == semantic ==
hardware == C simulation on three backends is tests/test_hawq_chain.py's chain `binary`.
"""

from __future__ import annotations

import json

import hawq_binary_models
import hawq_chain_models
import numpy as np
import onnx_ir as ir
import pytest
import torch
from torch import nn

import hawqc
from hawqc.backends.base import get_backend
from hawqc.backends.hls4ml_config_file import load_hls4ml_config
from hawqc.backends.vendor_build import read_project
from hawqc.flow.driver import DEFAULT_PIPELINE
from hawqc.frontends.hawq import QuantAct, QuantBnConv2d, QuantLinear, freeze_model
from hawqc.frontends.hawq.lift import OUTPUT_SCALE_KEY
from hawqc.frontends.hawq.quant_functions import (
    BinaryQuantFunction,
    symmetric_linear_quantization_params,
)
from hawqc.passes.manager import PassManager
from hawqc.report.layer_table import build_table
from hawqc.sim.executor import Executor


def _linear(weight: torch.Tensor, bits: int, per_channel: bool, percentile: float = 0) -> QuantLinear:
    layer = QuantLinear(weight_bit=bits, bias_bit=32, per_channel=per_channel, weight_percentile=percentile)
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
    layer.set_param(linear)
    return layer


WEIGHT = torch.tensor([[0.5, -0.25, 0.0, -0.0, 1.0], [-2.0, 0.1, -0.3, 0.2, 0.0]])


def test_one_bit_weights_are_signs_with_mean_magnitude_scales() -> None:
    for per_channel, scale in ((True, [0.35, 0.52]), (False, [0.435])):
        layer = _linear(WEIGHT, 1, per_channel)
        layer(torch.ones(1, 5) * 0.5, torch.tensor([0.5]))
        # x >= 0 -> +1: 0.0 and -0.0 are +1, as QONNX's BipolarQuant / 1-bit signed Quant have it.
        assert layer.weight_integer.tolist() == [[1, -1, 1, 1, 1], [-1, 1, -1, 1, 1]]
        np.testing.assert_allclose(layer.fc_scaling_factor.numpy(), scale, rtol=1e-6)


def test_one_bit_forward_is_the_sign_layer_and_trains_straight_through() -> None:
    torch.manual_seed(0)
    layer = _linear(torch.randn(4, 6), 1, per_channel=True)
    x_int = torch.randint(-8, 8, (3, 6)).float()
    out = layer(x_int * 0.25, torch.tensor([0.25]))
    signs = torch.where(layer.weight >= 0, 1.0, -1.0)
    expected = (x_int @ signs.T + layer.bias_integer) * layer.fc_scaling_factor * 0.25
    torch.testing.assert_close(out.detach(), expected.detach(), rtol=0, atol=1e-6)
    out.sum().backward()
    assert layer.weight.grad is not None and torch.count_nonzero(layer.weight.grad) > 0
    # The codes' gradient is 1 / s (straight through, as for every other width).
    w = torch.tensor([[0.3, -0.2]], requires_grad=True)
    BinaryQuantFunction.apply(w, torch.tensor([0.25])).sum().backward()
    assert w.grad.tolist() == [[4.0, 4.0]]


def test_one_bit_symmetric_quantization_is_refused_not_infinite() -> None:
    with pytest.raises(ValueError, match="at least 2 bits"):
        symmetric_linear_quantization_params(1, torch.tensor([-1.0]), torch.tensor([1.0]))
    act = QuantAct(1)
    with pytest.raises(ValueError, match="at least 2 bits"):
        act(torch.ones(2, 3))


def test_two_bit_weights_are_hawqs_ternary_codes_unless_a_percentile_clips() -> None:
    torch.manual_seed(1)
    weight = torch.randn(8, 40)
    layer = _linear(weight, 2, per_channel=True)
    layer(torch.ones(1, 40), torch.tensor([1.0]))
    assert set(layer.weight_integer.unique().tolist()) == {-1.0, 0.0, 1.0}
    np.testing.assert_array_equal(layer.fc_scaling_factor.numpy(), weight.abs().amax(dim=1).numpy())
    clipped = _linear(weight, 2, per_channel=True, percentile=90)
    clipped(torch.ones(1, 40), torch.tensor([1.0]))
    assert -2.0 in clipped.weight_integer.unique().tolist()


def test_one_bit_batchnorm_convolution_trains_unfolded_and_folds_to_signs() -> None:
    torch.manual_seed(2)
    layer = QuantBnConv2d(weight_bit=1, bias_bit=32, per_channel=True, fix_BN=False)
    layer.set_param(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3))
    layer.train()
    out, scale = layer(torch.randn(4, 2, 5, 5), torch.tensor([0.1]))
    out.sum().backward()
    assert layer.conv.weight.grad is not None and scale.shape == (3,)
    freeze_model(layer)
    layer.eval()
    layer(torch.randn(1, 2, 5, 5), torch.tensor([0.1]))
    assert set(layer.weight_integer.unique().tolist()) <= {-1.0, 1.0}


# ---- lifted forms and kernels -------------------------------------------------------------------


@pytest.fixture(scope="module")
def binary_chain():
    torch.set_num_threads(1)
    model = hawq_binary_models.build(seed=3)
    x = hawq_chain_models.random_inputs(model, 300, seed=5)
    return model, x, hawqc.lift(model, x[:1])


def _weight_quants(graph) -> dict[str, tuple[int, int, int]]:
    """Weight quantizer name -> (bits, signed, narrow)."""
    return {
        node.name: (int(node.inputs[3].const_value.numpy()), node.attributes.get_int("signed", 1),
                    node.attributes.get_int("narrow", 0))
        for node in graph.graph
        if node.op_type == "Quant" and node.name.endswith("_weight")
    }  # fmt: skip


def test_lift_writes_binary_and_ternary_weight_quantizers(binary_chain) -> None:
    _model, _x, graph = binary_chain
    assert _weight_quants(graph) == {
        "fc1_weight": (8, 1, 0),
        "fc2_weight": (1, 1, 0),  # qonnx's 1-bit signed Quant: x >= 0 ? +1 : -1, the codes themselves
        "fc3_weight": (2, 1, 1),  # ternary: 2-bit signed narrow
        "fc4_weight": (8, 1, 0),
    }


def test_a_clipped_two_bit_layer_stays_a_wide_quant_and_exact() -> None:
    """weight_percentile < 100 can give code -2: not ternary, so not narrow (which would clamp it)."""
    torch.manual_seed(4)
    model = hawq_binary_models.BinaryTernaryMLP()
    model.fc3.weight_percentile = 80
    model = hawq_chain_models.calibrate(model, seed=4)
    assert -2.0 in model.fc3.weight_integer.unique().tolist()
    x = hawq_chain_models.random_inputs(model, 200, seed=6)
    graph = hawqc.lift(model, x[:1])
    assert _weight_quants(graph)["fc3_weight"] == (2, 1, 0)
    scale = np.asarray(json.loads(graph.metadata_props[OUTPUT_SCALE_KEY]))
    with torch.no_grad():
        expected = np.round(model(x).numpy().astype(np.float64) / scale)
    np.testing.assert_array_equal(Executor(graph).run(x.numpy())["output"], expected)


def test_binary_and_ternary_layers_lower_to_hls4mls_kernels(binary_chain, tmp_path) -> None:
    _model, _x, graph = binary_chain
    graph = ir.from_proto(ir.to_proto(graph))  # a copy: the pipeline rewrites in place
    PassManager.parse(DEFAULT_PIPELINE).run(graph)
    project = get_backend("vivado").lower(graph, tmp_path / "p")
    parameters = (tmp_path / "p" / "firmware" / "parameters.h").read_text()
    assert parameters.count("product::weight_binary<") == 1
    assert parameters.count("product::weight_ternary<") == 1
    # hls4ml writes the binary weight type as a Python object tag; the project still reads back
    # (the layer table, `hawqc build`) without constructing objects from the file.
    config_text = (tmp_path / "p" / "hls4ml_config.yml").read_text()
    assert "!!python/object:hls4ml" in config_text
    assert load_hls4ml_config(config_text)["Backend"] == "Vivado"
    assert read_project(tmp_path / "p").backend == "Vivado"
    dense = [row["op"] for row in build_table(graph, project)["layers"] if row["op"].startswith("Dense")]
    assert dense == ["Dense", "Dense (weight_binary)", "Dense (weight_ternary)", "Dense"]
