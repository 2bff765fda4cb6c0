"""The HAWQ lifter: HAWQ's eval-mode forward (integer outputs) == the lifted graph, bit for bit.

Every model here is built from hawqc's HAWQ modules, its activation ranges set by one training-mode
pass over calibration data, then frozen and run in eval mode on fresh random inputs. "Integer
outputs" are HAWQ's output divided by its scale and rounded (checked: float32(integer * scale) gives
HAWQ's output back).
"""

from __future__ import annotations

import itertools
import json
from fractions import Fraction

import numpy as np
import onnx_ir as ir
import pytest
import torch
from torch import nn

from hawqc.backends.base import get_backend
from hawqc.backends.csim import compile_csim
from hawqc.errors import UnsupportedModelError
from hawqc.flow.driver import DEFAULT_PIPELINE
from hawqc.frontends.hawq import (
    QuantAct,
    QuantAveragePool2d,
    QuantBnConv2d,
    QuantConv2d,
    QuantDropout,
    QuantLinear,
    QuantMaxPool2d,
    freeze_model,
)
from hawqc.frontends.hawq.lift import INEXACT_LAYERS_KEY, OUTPUT_SCALE_KEY, lift
from hawqc.frontends.hawq.quant_functions import batch_frexp
from hawqc.ir.dyadic import dyadic
from hawqc.ir.io import to_text
from hawqc.ir.shape_inference import infer_shapes
from hawqc.ir.verifier import verify
from hawqc.passes.manager import PassManager
from hawqc.sim.executor import Executor


def _linear(n_in: int, n_out: int, weight_bit: int, per_channel: bool = True, bias: bool = True) -> QuantLinear:
    layer = QuantLinear(weight_bit=weight_bit, bias_bit=32, per_channel=per_channel)
    layer.set_param(nn.Linear(n_in, n_out, bias=bias))
    return layer


def _conv(c_in: int, c_out: int, weight_bit: int = 6, **kwargs) -> QuantConv2d:
    layer = QuantConv2d(weight_bit=weight_bit, bias_bit=32, per_channel=True)
    layer.set_param(nn.Conv2d(c_in, c_out, 3, **kwargs))
    return layer


class JetTagger(nn.Module):
    """HAWQ's QThreeLayer shape: 16-64-32-32-5, ReLU, a QuantAct before every layer."""

    def __init__(self, weight_bits=(8, 5, 5, 5), act_bits=8, input_bits=8, asymmetric=True):
        super().__init__()
        self.quant_input = QuantAct(input_bits)
        sizes = (16, 64, 32, 32, 5)
        self.dense = nn.ModuleList(_linear(a, b, w) for (a, b), w in zip(itertools.pairwise(sizes), weight_bits))
        mode = "asymmetric" if asymmetric else "symmetric"
        self.acts = nn.ModuleList(QuantAct(act_bits, quant_mode=mode) for _ in range(3))
        self.relu = nn.ReLU()

    def forward(self, x):
        x, scale = self.quant_input(x)
        for layer, act in zip(self.dense[:-1], self.acts):
            x = self.relu(layer(x, scale))
            x, scale = act(x, scale, layer.fc_scaling_factor)
        return self.dense[-1](x, scale)


class ConvNet(nn.Module):
    """Conv, BN-folded conv, max and average pooling, dropout, a residual block, flatten, linear."""

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.conv1 = _conv(2, 4, padding=1)
        self.act1 = QuantAct(6, quant_mode="asymmetric")
        self.pool = QuantMaxPool2d(kernel_size=2, stride=2)
        self.conv2 = QuantBnConv2d(weight_bit=5, bias_bit=32, per_channel=True)
        self.conv2.set_param(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.act2 = QuantAct(6, quant_mode="asymmetric")
        self.conv3 = _conv(4, 4, padding=1)
        self.act_residual = QuantAct(7)
        self.dropout = QuantDropout(0.2)
        self.avg = QuantAveragePool2d(kernel_size=2, stride=2)
        self.fc = _linear(16, 3, 6)
        self.relu = nn.ReLU()

    def forward(self, x):
        x, s = self.quant_input(x)
        x, ws = self.conv1(x, s)
        x, s = self.act1(self.relu(x), s, ws)
        x, s = self.pool(x, s)
        identity, s_identity = x, s
        x, ws = self.conv2(x, s)
        x, s = self.act2(self.relu(x), s, ws)
        x, ws = self.conv3(x, s)
        x, s = self.act_residual(x + identity, s, ws, identity, s_identity)
        x = self.relu(x)
        x, s = self.dropout(x, s)
        x, s = self.avg(x, s)
        x = torch.flatten(x, 1)
        return self.fc(x, s)


def _calibrated(model: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """Set the activation ranges with training-mode passes, then fold BN and freeze for eval."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(calibration)
    freeze_model(model)
    return model.eval()


def _integer_outputs(model: nn.Module, x: torch.Tensor, scale: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(x)
    if isinstance(out, tuple):
        out = out[0]
    out = out.numpy()
    integers = np.round(out.astype(np.float64) / scale.astype(np.float64))
    # The output is float32(integer * scale): the integers are the only ones that reproduce it.
    np.testing.assert_array_equal((integers * scale.astype(np.float64)).astype(np.float32), out)
    return integers


def _power_of_two_input(model: nn.Module, exponent: int = -5) -> nn.Module:
    """Fix the input QuantAct's range so that its scale is 2^exponent (hardware mode needs a
    power-of-two scale on the graph input's Quant)."""
    act = model.quant_input
    top = (2 ** (act.activation_bit - 1) - 1) * 2.0**exponent
    act.x_min.fill_(-top)
    act.x_max.fill_(top)
    return model


def _power_of_two_everywhere(model: JetTagger) -> JetTagger:
    """Weights and activation ranges chosen so that every scale, hence every requantization ratio,
    is a power of two: HAWQ's `m` is then 2^30 and float32 holds every product exactly."""
    _power_of_two_input(model)
    with torch.no_grad():
        for layer in model.dense:
            target = (2 ** (layer.weight_bit - 1) - 1) * 2.0**-7
            weight = layer.weight
            rows = weight.abs().amax(dim=1, keepdim=True)
            weight.mul_(target / rows).clamp_(-target, target)
            columns = weight.abs().argmax(dim=1)
            weight[torch.arange(weight.shape[0]), columns] = target
        for act in model.acts:
            act.x_min.fill_(0.0)
            act.x_max.fill_((2**act.activation_bit - 1) * 2.0**-4)
    return model


def _lift_checked(model: nn.Module, x: torch.Tensor, **kwargs):
    graph = lift(model, x[:1], **kwargs)
    infer_shapes(graph)
    verify(graph)
    return graph


def _expected(model: nn.Module, graph, x: torch.Tensor) -> np.ndarray:
    scale = np.asarray(json.loads(graph.metadata_props[OUTPUT_SCALE_KEY]), dtype=np.float32)
    return _integer_outputs(model, x, scale)


def _check_exact_in_both_modes(model: nn.Module, x: torch.Tensor):
    """Semantic mode == hardware mode == HAWQ's integer outputs, bit for bit, and precision inference
    declares nothing inexact (HAWQ's double requantization fits float64 here)."""
    graph = _lift_checked(model, x)
    expected = _expected(model, graph, x)
    hardware = Executor(graph, mode="hardware")
    assert not hardware.precision.inexact
    np.testing.assert_array_equal(hardware.run(x.numpy())["output"], expected)
    np.testing.assert_array_equal(Executor(graph).run(x.numpy())["output"], expected)
    return graph


def test_dyadic_factors_are_hawq_batch_frexp_and_exact_float64_constants():
    ratios = torch.tensor([0.0137 / 0.0211, 3.5e-4, 1.0, 2.0**-9, 0.999999999], dtype=torch.float64)
    m, e = batch_frexp(ratios)
    ours = dyadic(ratios.numpy())
    np.testing.assert_array_equal(ours.mantissa, m.numpy())
    np.testing.assert_array_equal(ours.exponent, e.numpy())
    factors = ours.as_float64()
    for k, (mi, ei) in enumerate(zip(m.tolist(), e.tolist())):
        assert Fraction(float(factors[k])) == Fraction(mi, 2**ei)
    # 0.0137 / 0.0211 needs all 31 bits of m: float32 cannot hold the factor, hence the double Mul.
    assert float(np.float32(factors[0])) != float(factors[0])


def test_requantization_is_a_double_multiply_with_a_float32_quant_result():
    torch.manual_seed(0)
    model = _power_of_two_input(_calibrated(JetTagger(), torch.randn(256, 16)))
    graph = _lift_checked(model, torch.randn(4, 16))
    for node in graph.graph:
        if node.op_type == "Cast":
            assert node.attributes["to"].as_int() == ir.DataType.DOUBLE
            (mul,) = [use for use, _ in node.outputs[0].uses()]
            assert mul.op_type == "Mul" and mul.outputs[0].dtype == ir.DataType.DOUBLE
            assert mul.inputs[1].const_value.dtype == ir.DataType.DOUBLE
            (quant,) = [use for use, _ in mul.outputs[0].uses()]
            assert quant.op_type == "Quant" and quant.outputs[0].dtype == ir.DataType.FLOAT
    assert sum(node.op_type == "Cast" for node in graph.graph) == 3
    assert graph.graph.outputs[0].dtype == ir.DataType.FLOAT and graph.graph.outputs[0].shape is not None


@pytest.mark.parametrize("weight_bits", [(8, 5, 5, 5), (6, 6, 4, 7)])
def test_jet_tagger_lifts_bit_exact_in_hardware_mode(weight_bits):
    torch.manual_seed(0)
    model = _power_of_two_input(_calibrated(JetTagger(weight_bits), torch.randn(512, 16)))
    _check_exact_in_both_modes(model, torch.randn(3000, 16) * 1.5)


def test_power_of_two_scales_lift_bit_exact_in_semantic_and_hardware_mode():
    torch.manual_seed(8)
    model = _power_of_two_everywhere(_calibrated(JetTagger(), torch.randn(256, 16)))
    x = torch.randn(3000, 16) * 1.5
    graph = _lift_checked(model, x)
    expected = _expected(model, graph, x)
    assert len(np.unique(expected)) > 100  # not a saturated, trivially equal output
    np.testing.assert_array_equal(Executor(graph).run(x.numpy())["output"], expected)
    np.testing.assert_array_equal(Executor(graph, mode="hardware").run(x.numpy())["output"], expected)


def test_symmetric_activations_and_per_tensor_weights():
    torch.manual_seed(2)
    model = JetTagger((6, 6, 6, 6), act_bits=6, asymmetric=False)
    for layer in model.dense:
        layer.per_channel = False
    model = _power_of_two_input(_calibrated(model, torch.randn(256, 16)))
    graph = _check_exact_in_both_modes(model, torch.randn(2000, 16))
    quants = [n for n in graph.graph if n.op_type == "Quant" and n.name.startswith("acts")]
    assert quants and all(n.attributes["signed"].as_int() == 1 for n in quants)


def test_requantization_rounds_ties_and_clamps_like_hawq():
    """3-bit activations on wide inputs: many values saturate, many sit next to .5 boundaries."""
    torch.manual_seed(3)
    model = _calibrated(JetTagger((4, 4, 4, 4), act_bits=3, input_bits=4), torch.randn(64, 16) * 0.3)
    model = _power_of_two_input(model, exponent=-2)
    _check_exact_in_both_modes(model, torch.randn(4000, 16) * 4)


def test_near_tie_requantizations_are_exact_in_semantic_mode():
    """The configuration where the earlier float32 form (`z*hi + z*lo`) rounded 10 of 20,000 jet
    inputs to the wrong side of a .5 tie: the double requantization gets every one right."""
    torch.manual_seed(9)
    model = _power_of_two_input(_calibrated(JetTagger((4, 4, 4, 4)), torch.randn(512, 16)))
    _check_exact_in_both_modes(model, torch.randn(20000, 16) * 2)


def test_first_layer_without_a_power_of_two_scale_gives_hawq_codes_in_semantic_mode():
    torch.manual_seed(4)
    model = _calibrated(JetTagger(), torch.randn(300, 16) * 1.37)
    assert np.frexp(float(model.quant_input.act_scaling_factor))[0] != 0.5
    x = torch.randn(2000, 16) * 3
    graph = _lift_checked(model, x)
    assert graph.graph.node(0).op_type == "Div"
    codes = Executor(graph).run(x.numpy(), keep_intermediates=True)["quant_input_quant_out"]
    with torch.no_grad():
        quantized, scale = model.quant_input(x)
    np.testing.assert_array_equal(codes, np.round(quantized.double().numpy() / scale.double().numpy()))
    assert np.abs(codes).max() == 128  # the clamp is exercised


def test_conv_bn_pool_residual_model_lifts_bit_exact_in_hardware_mode():
    torch.manual_seed(5)
    model = _power_of_two_input(_calibrated(ConvNet(), torch.randn(64, 2, 8, 8)))
    x = torch.randn(500, 2, 8, 8)
    graph = _lift_checked(model, x)
    ops = [n.op_type for n in graph.graph]
    for op in ("Conv", "MaxPool", "AveragePool", "Flatten", "MatMul", "Relu"):
        assert op in ops, op
    assert "Dropout" not in ops
    expected = _expected(model, graph, x)
    assert len(np.unique(expected)) > 50
    PassManager.parse("channels-last").run(graph)  # hardware mode runs channels-last graphs
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    np.testing.assert_array_equal(Executor(graph, mode="hardware").run(nhwc)["output"], expected)


def test_dequantized_output_is_hawq_float_output_bit_for_bit():
    torch.manual_seed(6)
    model = _power_of_two_everywhere(_calibrated(JetTagger(), torch.randn(256, 16)))
    x = torch.randn(1000, 16)
    graph = lift(model, x[:1], dequantize_output=True)
    assert OUTPUT_SCALE_KEY not in graph.metadata_props
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_array_equal(Executor(graph).run(x.numpy())["output"], expected)


def test_wide_first_layer_accumulator_is_named_in_a_warning_and_the_metadata():
    torch.manual_seed(7)
    model = _calibrated(JetTagger(input_bits=16), torch.randn(256, 16))
    with pytest.warns(UserWarning, match="module 'dense.0'"):
        graph = lift(model, torch.randn(1, 16))
    assert json.loads(graph.metadata_props[INEXACT_LAYERS_KEY]) == ["dense.0"]


class TupleStyleNet(nn.Module):
    """Upstream HAWQ's calling style: (x, scale) tuples into every module, view-flatten, F.relu,
    a QuantAct with fixed_point_quantization (plain quantization of the float activation)."""

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.conv = _conv(1, 3, stride=2)
        self.act = QuantAct(8)
        self.pool = QuantMaxPool2d(kernel_size=3, stride=1, padding=1)
        self.fc1 = _linear(27, 10, 6)
        self.act_fixed = QuantAct(6, quant_mode="asymmetric", fixed_point_quantization=True)
        self.fc2 = _linear(10, 4, 6)

    def forward(self, x):
        x = self.quant_input(x)
        x, weight_scale = self.conv(x)
        x = self.act(torch.nn.functional.relu(x), self.quant_input.act_scaling_factor, weight_scale)
        x, scale = self.pool(x)
        x = x.view(x.size(0), -1)
        x = torch.relu(self.fc1((x, scale)))
        x = self.act_fixed(x, scale, self.fc1.fc_scaling_factor)
        return self.fc2(x)


def test_upstream_calling_style_lifts_bit_exact_in_semantic_mode():
    torch.manual_seed(9)
    model = _calibrated(TupleStyleNet(), torch.randn(64, 1, 7, 7))
    x = torch.randn(1000, 1, 7, 7)
    graph = _lift_checked(model, x)
    ops = [n.op_type for n in graph.graph]
    assert ops.count("Div") == 2 and "Flatten" in ops and "MaxPool" in ops  # two plain quantizations
    expected = _expected(model, graph, x)
    assert len(np.unique(expected)) > 50
    # Plain quantizations are exact in float32; the one dyadic step (after the conv) has no
    # float32 near-tie on these (seeded) inputs, so the whole output matches.
    np.testing.assert_array_equal(Executor(graph).run(x.numpy())["output"], expected)


class _Tanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.block = nn.Sequential(_linear(4, 4, 6))

    def forward(self, x):
        x, s = self.quant_input(x)
        return torch.tanh(self.block[0](x, s))


def test_unsupported_function_is_named_with_its_node():
    model = _calibrated(_Tanh(), torch.randn(32, 4))
    with pytest.raises(UnsupportedModelError, match=r"^function 'tanh' \(traced node 'tanh'\) is not supported$"):
        lift(model, torch.randn(1, 4))


class _Mystery(nn.Module):
    def forward(self, x):
        return x * 2


class _WithUnknownModule(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.features = nn.Sequential(_linear(4, 4, 6), nn.ReLU(), _Mystery())

    def forward(self, x):
        x, s = self.quant_input(x)
        return self.features[2](self.features[1](self.features[0](x, s)))


def test_unsupported_module_is_named_by_its_path():
    model = _calibrated(_WithUnknownModule(), torch.randn(32, 4))
    with pytest.raises(UnsupportedModelError) as info:
        lift(model, torch.randn(1, 4))
    message = str(info.value)
    assert message == "module 'features.2' (_Mystery) is not supported"
    assert "\n" not in message


def test_lifted_jet_tagger_c_simulation_equals_hawq(tmp_path):
    """The whole chain on one backend: HAWQ eval forward == C simulation of the compiled project."""
    torch.manual_seed(0)
    model = _power_of_two_input(_calibrated(JetTagger((8, 5, 5, 5)), torch.randn(512, 16)))
    x = torch.randn(500, 16) * 1.5
    graph = _lift_checked(model, x)
    expected = _expected(model, graph, x)
    PassManager.parse(DEFAULT_PIPELINE).run(graph)
    project = get_backend("vitis").lower(graph, tmp_path / "proj", project_name="hawq_jet", io_type="io_parallel")
    np.testing.assert_array_equal(compile_csim(project).predict(x.numpy()), expected)


def test_full_precision_module_is_refused_by_path():
    model = _calibrated(JetTagger(), torch.randn(64, 16))
    model.dense[1].full_precision_flag = True  # its weight_integer buffer is stale: never lift it
    with pytest.raises(UnsupportedModelError, match=r"^module 'dense.1' \(QuantLinear\) runs in full precision"):
        lift(model, torch.randn(1, 16))


class DownsampleResidualNet(nn.Module):
    """A residual block whose identity branch is a 1x1 convolution (per-channel identity scales),
    then a 3x3 padded average pooling (windows of 9, padding counted)."""

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.conv1 = _conv(2, 3, padding=1)
        self.act1 = QuantAct(6, quant_mode="asymmetric")
        self.conv2 = _conv(3, 4, padding=1)
        self.downsample = QuantConv2d(weight_bit=6, bias_bit=32, per_channel=True)
        self.downsample.set_param(nn.Conv2d(3, 4, 1))
        self.act_residual = QuantAct(8)
        self.avg = QuantAveragePool2d(kernel_size=3, stride=1, padding=1)
        self.fc = _linear(4 * 6 * 6, 3, 6)

    def forward(self, x):
        x, s = self.quant_input(x)
        x, ws = self.conv1(x, s)
        x, s = self.act1(torch.relu(x), s, ws)
        identity, identity_weight_scale = self.downsample(x, s)
        y, ws = self.conv2(x, s)
        x, s_out = self.act_residual(y + identity, s, ws, identity, s, identity_weight_scale)
        x, s_out = self.avg(torch.relu(x), s_out)
        return self.fc(torch.flatten(x, 1), s_out)


def test_residual_with_a_downsampling_identity_and_3x3_average_pooling():
    torch.manual_seed(10)
    model = _power_of_two_input(_calibrated(DownsampleResidualNet(), torch.randn(64, 2, 6, 6)))
    x = torch.randn(400, 2, 6, 6)
    graph = _lift_checked(model, x)
    assert sum(n.name.startswith("act_residual_identity_dyadic") for n in graph.graph) >= 1
    expected = _expected(model, graph, x)
    assert len(np.unique(expected)) > 50
    PassManager.parse("channels-last").run(graph)
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    np.testing.assert_array_equal(Executor(graph, mode="hardware").run(nhwc)["output"], expected)


def test_state_dict_round_trip_lifts_to_the_same_graph(tmp_path):
    torch.manual_seed(11)
    trained = _calibrated(ConvNet(), torch.randn(32, 2, 8, 8))
    torch.save(trained.state_dict(), tmp_path / "model.pth")
    fresh = ConvNet()
    fresh.load_state_dict(torch.load(tmp_path / "model.pth"))
    freeze_model(fresh)
    example = torch.randn(1, 2, 8, 8)
    assert to_text(lift(fresh.eval(), example)) == to_text(lift(trained, example))
