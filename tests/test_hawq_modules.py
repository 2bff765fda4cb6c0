"""hawqc's CPU implementation of HAWQ's modules: names, state_dict keys, exact integer arithmetic, QAT."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
from torch import nn

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
from hawqc.frontends.hawq.quant_functions import (
    AsymmetricQuantFunction,
    SymmetricQuantFunction,
    asymmetric_linear_quantization_params,
    batch_frexp,
    fixedpoint_fn,
    fixedpoint_requantize,
    requantization_ratio,
    round_dyadic_sum,
    symmetric_linear_quantization_params,
)


def _t(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


# --- models built from the modules, the way HAWQ model files build them ----------------------


class TinyResidualCNN(nn.Module):
    """The spec's typical block, a folded-BN conv, a residual requantization, pools and a dense head."""

    def __init__(self, per_channel: bool = True):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.conv1 = QuantConv2d(6, 32, per_channel=per_channel)
        self.conv1.set_param(nn.Conv2d(1, 4, 3, padding=1))
        self.act1 = QuantAct(6, quant_mode="asymmetric")
        self.convbn = QuantBnConv2d(6, 32, per_channel=per_channel)
        self.convbn.set_param(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.act_residual = QuantAct(6)
        self.pool = QuantMaxPool2d(kernel_size=2, stride=2)
        self.avg = QuantAveragePool2d(kernel_size=2, stride=2)
        self.act_pooled = QuantAct(6)
        self.dropout = QuantDropout(0.1)
        self.fc = QuantLinear(6, 32, per_channel=per_channel)
        self.fc.set_param(nn.Linear(4, 3))

    def forward(self, x):
        x, s = self.quant_input(x)
        x, ws = self.conv1(x, s)
        x = torch.relu(x)
        x, s = self.act1(x, s, ws)
        identity, identity_scale = x, s
        x, ws = self.convbn((x, s))
        x = x + identity
        x, s = self.act_residual(x, s, ws, identity, identity_scale)
        x = self.pool((x, s))
        x, s = self.avg(x)
        x, s = self.act_pooled(x, s)
        x, s = self.dropout((x, s))
        return self.fc(x.flatten(1), s)


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.fc1 = QuantLinear(6, 32, per_channel=True)
        self.fc1.set_param(nn.Linear(4, 16))
        self.act1 = QuantAct(8, quant_mode="asymmetric")
        self.fc2 = QuantLinear(6, 32, per_channel=True)
        self.fc2.set_param(nn.Linear(16, 3))

    def forward(self, x):
        x, s = self.quant_input(x)
        x = torch.relu(self.fc1(x, s))
        x, s = self.act1(x, s, self.fc1.fc_scaling_factor)
        return self.fc2(x, s)


def _calibrated(model: nn.Module, x: torch.Tensor, steps: int = 3) -> nn.Module:
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(x)
    return model.eval()


# --- names ----------------------------------------------------------------------------------


def test_state_dict_keys_are_hawqs():
    act = QuantAct()
    assert sorted(act.state_dict()) == sorted(
        ["x_min", "x_max", "act_scaling_factor", "pre_weight_scaling_factor", "identity_weight_scaling_factor"]
    )
    linear = QuantLinear()
    linear.set_param(nn.Linear(3, 2))
    assert sorted(linear.state_dict()) == sorted(["weight", "bias", "fc_scaling_factor", "weight_integer", "bias_integer"])
    conv = QuantConv2d()
    conv.set_param(nn.Conv2d(2, 3, 3))
    assert sorted(conv.state_dict()) == sorted(
        ["weight", "bias", "conv_scaling_factor", "weight_integer", "bias_integer", "conv.weight", "conv.bias"]
    )
    convbn = QuantBnConv2d()
    convbn.set_param(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3))
    assert sorted(convbn.state_dict()) == sorted(
        [
            "convbn_scaling_factor",
            "weight_integer",
            "bias_integer",
            "conv.weight",
            "bn.weight",
            "bn.bias",
            "bn.running_mean",
            "bn.running_var",
            "bn.num_batches_tracked",
        ]
    )
    for pool in (QuantAveragePool2d(), QuantMaxPool2d(), QuantDropout()):
        assert list(pool.state_dict()) == []


def test_constructor_defaults_are_hawqs():
    act = QuantAct()
    assert (act.activation_bit, act.act_range_momentum, act.full_precision_flag, act.running_stat) == (4, 0.95, False, True)
    assert (act.quant_mode, act.fix_flag, act.act_percentile, act.fixed_point_quantization) == ("symmetric", False, 0, False)
    for cls in (QuantLinear, QuantConv2d, QuantBnConv2d):
        layer = cls()
        assert (layer.weight_bit, layer.bias_bit, layer.full_precision_flag, layer.quant_mode) == (4, None, False, "symmetric")
        assert (layer.per_channel, layer.fix_flag, layer.weight_percentile) == (False, False, 0)
    convbn = QuantBnConv2d()
    assert (convbn.fix_BN, convbn.fix_BN_threshold) == (False, None)
    assert (QuantAveragePool2d().kernel_size, QuantAveragePool2d().stride) == (7, 1)
    assert (QuantMaxPool2d().kernel_size, QuantMaxPool2d().stride) == (3, 2)
    convbn.set_param(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    assert convbn.bn.momentum == 0.99


# --- helper formulas on hand-worked examples ------------------------------------------------


def test_batch_frexp_exact_values_and_round_half_up_at_a_tie():
    m, e = batch_frexp(torch.tensor([0.75, 1.0, 1 / 3], dtype=torch.float64))
    assert m.tolist() == [3 * 2**29, 2**30, 1431655765]  # 2/3 * 2^31 = 1431655765.33
    assert e.tolist() == [31, 30, 32]
    # mantissa * 2^31 = 2^30 + 0.5 and 2^30 + 2.5: half up gives +1 and +3 (half even would not)
    ties = torch.tensor([(2**30 + 0.5) / 2**31, (2**30 + 2.5) / 2**31], dtype=torch.float64)
    m, e = batch_frexp(ties)
    assert m.tolist() == [2**30 + 1, 2**30 + 3]
    assert e.tolist() == [31, 31]
    # a mantissa just below 1 rounds up to 2^31 and is kept (not renormalized)
    m, e = batch_frexp(torch.tensor([1 - 2**-33], dtype=torch.float64))
    assert (m.item(), e.item()) == (2**31, 31)


def test_symmetric_and_asymmetric_clamps_round_half_to_even():
    x = _t(-10.0, -1.2, 0.26, 1.25, 1.75, 100.0)
    scale = _t(0.5)
    assert SymmetricQuantFunction.apply(x, 4, scale).tolist() == [-8, -2, 1, 2, 4, 7]
    assert AsymmetricQuantFunction.apply(x, 4, scale).tolist() == [0, 0, 1, 2, 4, 15]
    assert SymmetricQuantFunction.apply(_t(-1.1, 1.1), 2, _t(1.0)).tolist() == [-1, 1]  # [-2, 1]: not narrow
    assert SymmetricQuantFunction.apply(_t(-3.0, 3.0), 2, _t(1.0)).tolist() == [-2, 1]


def test_quantization_scales_per_tensor_and_per_channel():
    weight = _t([1.0, -3.0], [0.5, -0.2])
    rows_min, rows_max = weight.min(dim=1).values, weight.max(dim=1).values
    per_channel = symmetric_linear_quantization_params(4, rows_min, rows_max, per_channel=True)
    assert torch.equal(per_channel, _t(3.0, 0.5) / 7)
    per_tensor = symmetric_linear_quantization_params(4, rows_min, rows_max, per_channel=False)
    assert torch.equal(per_tensor, _t(3.0) / 7)
    assert SymmetricQuantFunction.apply(weight, 4, per_channel).tolist() == [[2, -7], [7, -3]]
    scale, zero_point = asymmetric_linear_quantization_params(4, _t(0.0), _t(3.0))
    assert torch.equal(scale, _t(3.0) / 15) and zero_point.item() == 0
    assert symmetric_linear_quantization_params(8, _t(0.0), _t(0.0)).item() == pytest.approx(1e-8 / 127)


def test_requantization_ratio_rounds_the_product_to_float32():
    s_a = torch.tensor([0.1], dtype=torch.float32)
    s_w = torch.tensor([0.3], dtype=torch.float32)
    s_new = torch.tensor([0.7], dtype=torch.float32)
    expected = float(torch.tensor(float(s_a) * float(s_w), dtype=torch.float32)) / float(s_new)
    assert requantization_ratio(s_a, s_w, s_new).item() == expected
    assert expected != (float(s_a) * float(s_w)) / float(s_new)  # the float32 step matters here


def test_fixedpoint_without_identity_hand_worked():
    # s_a * s_w = 0.125, s_new = 0.375: ratio 1/3, m = 1431655765, e = 32
    z_int = _t(3.0, -3.0, 10.0, 100.0, 7.0)
    out = fixedpoint_requantize(z_int * 0.125, 8, "symmetric", _t(0.375), _t(0.5), _t(0.25))
    assert out.tolist() == [1, -1, 3, 33, 2]
    assert fixedpoint_requantize(z_int * 0.125, 4, "symmetric", _t(0.375), _t(0.5), _t(0.25)).tolist() == [1, -1, 3, 7, 2]
    assert fixedpoint_requantize(z_int * 0.125, 4, "asymmetric", _t(0.375), _t(0.5), _t(0.25)).tolist() == [1, 0, 3, 15, 2]
    # ratio 1/2 (m = 2^30, e = 31): exact halves round to even
    halves = _t(3.0, 5.0, -3.0, 1.0) * 0.125
    assert fixedpoint_requantize(halves, 8, "symmetric", _t(0.25), _t(0.5), _t(0.25)).tolist() == [2, 2, -2, 0]


def test_fixedpoint_with_identity_adds_the_branches_before_rounding():
    # main branch: s_a * s_w = 0.125 -> ratio 0.25 to s_new = 0.5; identity: 0.25 * 1 -> ratio 0.5
    main_int = _t(1.0, 2.0, 3.0, 6.0, 2.0)
    identity_int = _t(1.0, 1.0, 1.0, 0.0, 0.0)
    identity = identity_int * 0.25
    z = main_int * 0.125 + identity
    out = fixedpoint_requantize(z, 8, "symmetric", _t(0.5), _t(0.5), _t(0.25), identity, _t(0.25), _t(1.0))
    # exact sums 0.75, 1.0, 1.25, 1.5, 0.5 -> one rounding, half to even
    assert out.tolist() == [1, 1, 1, 2, 0]
    via_function = fixedpoint_fn.apply(z, 8, "symmetric", _t(0.5), 1, _t(0.5), _t(0.25), identity, _t(0.25), _t(1.0))
    assert torch.equal(out, via_function)


def test_fixedpoint_per_channel_scales_on_a_4d_tensor():
    s_w = _t(0.25, 0.5)
    z_int = torch.tensor([[[[3.0]], [[3.0]]]])
    z = z_int * (0.5 * s_w).reshape(1, -1, 1, 1)
    # ratios 0.125 / 0.5 = 0.25 and 0.25 / 0.5 = 0.5: 3 * 0.25 = 0.75 -> 1, 3 * 0.5 = 1.5 -> 2
    out = fixedpoint_requantize(z, 8, "symmetric", _t(0.5), _t(0.5), s_w)
    assert out.flatten().tolist() == [1, 2]


def test_round_dyadic_sum_is_exact_on_both_paths():
    rng = random.Random(5)
    cases = []
    for _ in range(300):
        z1, z2 = rng.randint(-(2**20), 2**20), rng.randint(-(2**20), 2**20)
        m1, m2 = rng.randint(2**30, 2**31), rng.randint(2**30, 2**31)
        e1, e2 = rng.randint(0, 60), rng.randint(0, 60)
        cases.append((z1, m1, e1, z2, m2, e2))
    cases += [(3, 2**30, 31, 0, 1, 0), (5, 2**30, 31, -5, 2**30, 31), (1, 2**31, 70, 1, 1, 0), (2**40, 2**31, 65, 1, 3, -2)]
    columns = list(zip(*cases))
    tensors = [torch.tensor(c, dtype=torch.int64) for c in columns]
    got = round_dyadic_sum([tuple(tensors[0:3]), tuple(tensors[3:6])]).tolist()
    expected = [round(Fraction(z1 * m1) / 2**e1 + Fraction(z2 * m2) / Fraction(2) ** e2) for z1, m1, e1, z2, m2, e2 in cases]
    assert got == expected


def test_integer_average_pooling_truncates():
    pool = QuantAveragePool2d(kernel_size=2, stride=2)
    scale = _t(0.5)
    x_int = torch.tensor([[[[1.0, 2.0, -1.0, -2.0], [3.0, 4.0, -3.0, -4.0]]]])
    out, out_scale = pool(x_int * 0.5, scale)
    assert torch.equal(out_scale, scale)
    assert (out / 0.5).flatten().tolist() == [2.0, -2.0]  # trunc(2.5 + 0.01), trunc(-2.5 + 0.01)
    even, _ = pool((torch.full((1, 1, 2, 2), 3.0) * 0.5, scale))
    assert (even / 0.5).flatten().tolist() == [3.0]


# --- module behaviour -----------------------------------------------------------------------


def test_quant_act_running_range_momentum_and_eval_is_frozen():
    act = QuantAct(8, act_range_momentum=0.5)
    act.train()
    act(_t(-1.0, 2.0))
    assert (act.x_min.item(), act.x_max.item()) == (-1.0, 2.0)
    act(_t(-3.0, 4.0))
    assert (act.x_min.item(), act.x_max.item()) == (-2.0, 3.0)
    assert act.act_scaling_factor.item() == pytest.approx(3.0 / 127)
    act.eval()
    act(_t(-30.0, 40.0))
    assert (act.x_min.item(), act.x_max.item()) == (-2.0, 3.0)
    running_max = QuantAct(8, act_range_momentum=-1)
    running_max(_t(-1.0, 2.0))
    running_max(_t(-0.5, 5.0))
    assert (running_max.x_min.item(), running_max.x_max.item()) == (-1.0, 5.0)
    fixed = QuantAct(8)
    fixed(_t(-1.0, 2.0))
    fixed.fix()
    fixed(_t(-10.0, 20.0))
    assert (fixed.x_min.item(), fixed.x_max.item()) == (-1.0, 2.0)


def test_quant_act_fixed_point_quantization_skips_the_dyadic_path():
    x = _t(0.45, 0.9, 1.7)
    dyadic = QuantAct(4)
    plain = QuantAct(4, fixed_point_quantization=True)
    for act in (dyadic, plain):
        act(torch.tensor([-2.0, 2.0]))
        act.eval()
    # previous scales whose product (1/3) is not a multiple of the new scale
    out_plain, scale = plain(x, _t(1.0), _t(1.0 / 3))
    assert torch.equal(out_plain, torch.clamp(torch.round(x / scale), -8, 7) * scale)
    out_dyadic, _ = dyadic(x, _t(1.0), _t(1.0 / 3))
    expected = fixedpoint_requantize(x, 4, "symmetric", scale, _t(1.0), _t(1.0 / 3)) * scale
    assert torch.equal(out_dyadic, expected)
    assert not torch.equal(out_dyadic, out_plain)


def test_eval_outputs_are_integer_multiples_of_their_scales_and_in_range():
    torch.manual_seed(1)
    x = torch.randn(16, 1, 4, 4) * 3
    model = _calibrated(TinyResidualCNN(), x)
    x_q, s = model.quant_input(x)
    assert _integers(x_q, s).abs().max() <= 128 and _integers(x_q, s).min() >= -128
    conv_out, ws = model.conv1(x_q, s)
    assert _integers(conv_out, (ws * s).reshape(1, -1, 1, 1)) is not None
    assert model.conv1.weight_integer.min() >= -32 and model.conv1.weight_integer.max() <= 31
    assert torch.equal(model.conv1.weight_integer, torch.round(model.conv1.weight_integer))
    act_out, act_scale = model.act1(torch.relu(conv_out), s, ws)
    unsigned = _integers(act_out, act_scale)
    assert unsigned.min() >= 0 and unsigned.max() <= 63
    assert torch.equal(model.act1.act_scaling_factor, act_scale)
    residual_scale = model.act_residual.act_scaling_factor
    model(x)
    assert torch.equal(model.act_residual.act_scaling_factor, residual_scale)  # eval does not move ranges


def _integers(values: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The integers q with values == float32(q * scale), asserting there are such integers."""
    step = scale.to(torch.float64)
    q = torch.round(values.to(torch.float64) / step)
    assert torch.equal((q * step).to(values.dtype), values)
    return q


def test_typical_block_runs_and_eval_is_deterministic():
    torch.manual_seed(2)
    x = torch.randn(8, 1, 4, 4)
    model = _calibrated(TinyResidualCNN(), x)
    first = model(x)
    assert first.shape == (8, 3)
    assert torch.equal(first, model(x))
    assert torch.equal(model(x[:3]), first[:3])  # per-sample: batch statistics play no part in eval


def test_tuple_inputs_equal_explicit_scales():
    torch.manual_seed(3)
    conv = QuantConv2d(4, 16, per_channel=True)
    conv.set_param(nn.Conv2d(2, 3, 3))
    linear = QuantLinear(4, 16)
    linear.set_param(nn.Linear(5, 2))
    scale = _t(0.25)
    x = torch.randint(-4, 4, (2, 2, 5, 5)).float() * 0.25
    assert torch.equal(conv((x, scale))[0], conv(x, scale)[0])
    v = torch.randint(-4, 4, (3, 5)).float() * 0.25
    assert torch.equal(linear((v, scale)), linear(v, scale))
    assert torch.equal(QuantMaxPool2d(2, 2)((x, scale))[0], F.max_pool2d(x, 2, 2))


def test_linear_and_conv_compute_the_integer_formula():
    torch.manual_seed(4)
    linear = QuantLinear(5, 16, per_channel=True)
    linear.set_param(nn.Linear(6, 4))
    s_prev = _t(0.125)
    x_int = torch.randint(-8, 8, (3, 6)).float()
    out = linear(x_int * s_prev, s_prev)
    s_w = linear.fc_scaling_factor
    w_int = torch.clamp(torch.round(linear.weight / s_w.reshape(-1, 1)), -16, 15)
    b_int = torch.clamp(torch.round(linear.bias / (s_w * s_prev)), -(2**15), 2**15 - 1)
    assert torch.equal(linear.weight_integer, w_int) and torch.equal(linear.bias_integer, b_int)
    accumulator = x_int.double() @ w_int.double().T + b_int.double()
    assert torch.equal(out, (accumulator * (s_w * s_prev).double()).float())


def test_bias_without_bias_bit_is_quantized_unbounded():
    linear = QuantLinear(4)
    linear.set_param(nn.Linear(2, 1))
    with torch.no_grad():
        linear.weight.copy_(_t([1.0, -1.0]))
        linear.bias.fill_(1000.0)
    linear(torch.zeros(1, 2), _t(1.0))
    assert linear.bias_integer.item() == 7000  # 1000 / (1/7), no clamp


def test_folded_and_unfolded_batchnorm():
    torch.manual_seed(6)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.copy_(_t(1.5, 0.5, -2.0))
        bn.bias.copy_(_t(0.1, -0.2, 0.3))
        bn.running_mean.copy_(_t(0.2, -0.1, 0.05))
        bn.running_var.copy_(_t(0.5, 2.0, 1.0))
    unfolded = QuantBnConv2d(6, 32, per_channel=True)
    unfolded.set_param(conv, bn)
    folded = QuantBnConv2d(6, 32, per_channel=True, fix_BN=True)
    folded.set_param(*_copies(conv, bn))
    s_prev = _t(0.25)
    x = torch.randint(-8, 8, (4, 2, 5, 5)).float() * s_prev

    # training, unfolded: batch statistics normalize, running statistics move by momentum 0.99
    unfolded.train()
    running_mean = bn.running_mean.clone()
    out, out_scale = unfolded(x, s_prev)
    assert torch.allclose(out.mean(dim=(0, 2, 3)), bn.bias.detach(), atol=1e-5)
    assert out_scale.shape == (3,)
    s_w = conv.weight.detach().reshape(3, -1).abs().amax(dim=1) / 31
    w_q = torch.clamp(torch.round(conv.weight.detach() / s_w.reshape(-1, 1, 1, 1)), -32, 31) * s_w.reshape(-1, 1, 1, 1)
    conv_q = F.conv2d(x, w_q, conv.bias.detach(), padding=1)
    assert not torch.equal(bn.running_mean, running_mean)
    assert torch.allclose(bn.running_mean, 0.99 * running_mean + 0.01 * conv_q.mean(dim=(0, 2, 3)), atol=1e-3)

    # eval: both modules fold with the running statistics, and match the folding formula
    folded.bn.running_mean.copy_(bn.running_mean)
    folded.bn.running_var.copy_(bn.running_var)
    unfolded.eval()
    folded.eval()
    y_unfolded, scale_unfolded = unfolded(x, s_prev)
    y_folded, scale_folded = folded(x, s_prev)
    assert torch.equal(y_unfolded, y_folded) and torch.equal(scale_unfolded, scale_folded)

    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w_fold = conv.weight * factor.reshape(-1, 1, 1, 1)
    b_fold = (conv.bias - bn.running_mean) * factor + bn.bias
    s_w = w_fold.detach().reshape(3, -1).abs().amax(dim=1) / 31
    assert torch.equal(scale_folded, s_w)
    w_int = torch.clamp(torch.round(w_fold / s_w.reshape(-1, 1, 1, 1)), -32, 31)
    b_int = torch.round(b_fold / (s_w * s_prev))
    assert torch.equal(folded.weight_integer, w_int.detach()) and torch.equal(folded.bias_integer, b_int.detach())
    accumulator = F.conv2d((x / s_prev).double(), w_int.double(), b_int.double(), padding=1)
    assert torch.equal(y_folded, (accumulator * (s_w * s_prev).double().reshape(1, -1, 1, 1)).float())


def _copies(conv: nn.Conv2d, bn: nn.BatchNorm2d):
    conv_copy, bn_copy = nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3)
    conv_copy.load_state_dict(conv.state_dict())
    bn_copy.load_state_dict(bn.state_dict())
    return conv_copy, bn_copy


def test_fix_bn_threshold_switches_to_folded_training():
    convbn = QuantBnConv2d(4, 32, fix_BN_threshold=3)
    convbn.set_param(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    convbn.train()
    x = torch.randn(2, 1, 2, 2)
    modes = []
    for _ in range(3):
        convbn(x, _t(0.1))
        modes.append(convbn.fix_BN)
    assert modes == [False, True, True]
    freeze_model(convbn)
    assert convbn.fix_flag and convbn.fix_BN


def test_qat_reduces_the_loss_through_straight_through_estimators():
    torch.manual_seed(7)
    inputs = torch.randn(128, 4)
    targets = (inputs[:, 0] + inputs[:, 1] > 0).long() + (inputs[:, 2] > 0.5).long()
    model = TinyMLP().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)

    def loss_now():
        return F.cross_entropy(model(inputs), targets)

    initial = loss_now().item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_now()
        loss.backward()
        optimizer.step()
    assert model.fc1.weight.grad is not None and model.fc1.weight.grad.abs().sum() > 0
    assert model.fc1.bias.grad.abs().sum() > 0
    assert loss_now().item() < 0.8 * initial


def test_qat_gradients_flow_through_conv_requantization_and_pools():
    torch.manual_seed(8)
    model = TinyResidualCNN().train()
    loss = model(torch.randn(4, 1, 4, 4)).pow(2).sum()
    loss.backward()
    assert model.conv1.weight.grad.abs().sum() > 0
    assert model.convbn.conv.weight.grad.abs().sum() > 0
    assert model.convbn.bn.weight.grad.abs().sum() > 0


# --- checkpoints ----------------------------------------------------------------------------


def test_state_dict_round_trip_gives_identical_eval_outputs(tmp_path):
    torch.manual_seed(9)
    x = torch.randn(6, 1, 4, 4) * 2
    trained = _calibrated(TinyResidualCNN(), x)
    expected = trained(x)
    path = tmp_path / "checkpoint.pth"
    torch.save(trained.state_dict(), path)
    torch.manual_seed(10)
    fresh = TinyResidualCNN()
    fresh.load_state_dict(torch.load(path, weights_only=True))
    fresh.eval()
    assert torch.equal(fresh(x), expected)
    per_tensor = _calibrated(TinyResidualCNN(per_channel=False), x)
    assert per_tensor.conv1.conv_scaling_factor.shape == (1,)
    reloaded = TinyResidualCNN(per_channel=False)
    reloaded.load_state_dict(per_tensor.state_dict())  # [1]-shaped scales load into fresh [C] buffers
    assert torch.equal(reloaded.eval()(x), per_tensor(x))


def test_checkpoints_without_or_with_extra_derived_buffers_load_strictly():
    torch.manual_seed(11)
    x = torch.randn(5, 4)
    source = _calibrated(TinyMLP(), x)
    expected = source(x)
    state = source.state_dict()
    older = {k: v for k, v in state.items() if not k.endswith(("weight_integer", "bias_integer", "fc_scaling_factor"))}
    newer = dict(state, **{"fc1.prev_act_scaling_factor": torch.ones(1), "fc1.correct_output_scale": torch.ones(16)})
    for checkpoint in (older, newer):
        target = TinyMLP()
        target.load_state_dict(checkpoint)
        assert torch.equal(target.eval()(x), expected)
    with pytest.raises(RuntimeError, match="fc1.unrelated"):
        TinyMLP().load_state_dict(dict(state, **{"fc1.unrelated": torch.ones(1)}))
    with pytest.raises(RuntimeError, match="fc1.weight"):
        TinyMLP().load_state_dict({k: v for k, v in state.items() if k != "fc1.weight"})


def test_percentile_ranges():
    values = torch.arange(1.0, 101.0)
    symmetric = QuantAct(8, act_percentile=99)
    symmetric(values)
    assert (symmetric.x_min.item(), symmetric.x_max.item()) == (2.0, 99.0)
    unsigned = QuantAct(8, act_percentile=99, quant_mode="asymmetric")
    unsigned(values)
    assert (unsigned.x_min.item(), unsigned.x_max.item()) == (0.0, 99.0)
    linear = QuantLinear(4, 32, per_channel=True, weight_percentile=90)
    linear.set_param(nn.Linear(10, 1))
    with torch.no_grad():
        linear.weight.copy_(torch.arange(1.0, 11.0).reshape(1, 10))
    linear(torch.zeros(1, 10), _t(1.0))
    assert torch.equal(linear.fc_scaling_factor, _t(9.0) / 7)  # the 9th of 10 values; 10 saturates
    assert linear.weight_integer.flatten().tolist()[-2:] == [7.0, 7.0]


def test_full_precision_flag_skips_quantization():
    x = _t(0.123, -4.56)
    act = QuantAct(4, full_precision_flag=True)
    out, _ = act(x)
    assert torch.equal(out, x)
    linear = QuantLinear(4, 32, full_precision_flag=True)
    reference = nn.Linear(2, 3)
    linear.set_param(reference)
    assert torch.equal(linear(x.reshape(1, 2), None), reference(x.reshape(1, 2)))
