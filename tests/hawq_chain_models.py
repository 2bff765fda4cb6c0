"""Tiny HAWQ models that, between them, use every module of `hawqc.frontends.hawq` in every mode
the bit-exact chain (tests/test_hawq_chain.py) checks.

`ChainMLP` (symmetric, signed 8-bit input):
    QuantAct (plain, symmetric) -> QuantLinear per-tensor weights -> QuantDropout
    -> QuantAct symmetric requantization (one dyadic factor, signed codes)
    -> QuantLinear per-channel -> ReLU -> QuantAct unsigned requantization (a factor per channel)
    -> QuantLinear per-channel -> ReLU -> QuantAct fixed_point_quantization (plain quantization of
       the float activation, unsigned) -> QuantLinear without bias.
`ChainCNN` (unsigned 8-bit input, HAWQ's "asymmetric" mode):
    QuantAct (plain, unsigned) -> QuantConv2d per-tensor 3x3 -> ReLU -> QuantAct unsigned
    -> QuantBnConv2d folded (fix_BN=True) -> ReLU -> QuantAct symmetric -> QuantMaxPool2d
    -> residual block: QuantBnConv2d trained unfolded (fix_BN=False; eval folds it with the running
       statistics the unfolded training produced) + a 1x1 QuantConv2d downsample as the identity
       -> QuantAct with identity (one dyadic factor per branch, one rounding)
    -> QuantDropout -> QuantAveragePool2d (integer average of signed codes, truncated toward zero)
    -> flatten -> QuantLinear.

Calibration (`calibrate`): BatchNorm statistics and affine parameters drawn at random, then 200
training-mode batches: every QuantAct tracks its range from data (HAWQ's running min/max), so the
scales, hence the requantization ratios, are not powers of two and HAWQ's dyadic mantissas `m` use
all of their 31 bits (the case float32 cannot hold in one constant). That many batches because the
unfolded QuantBnConv2d moves its running statistics by 1% a batch (HAWQ's momentum 0.99): with a
few, eval mode (folded with the running statistics) sees activations far from the ranges tracked
in training (the residual codes all but negative, the output nearly constant). Then `freeze_model`
and eval mode. (About 2 s with one torch thread.)

The input QuantAct is the exception: its range is fixed (`fix_input_scale`) so that its scale is a
power of two. The lifted graph quantizes its real-valued input with `x / s_in`; hardware mode (the
exact arithmetic of the fixed-point types the backends generate) and the C simulation can only do
that division exactly for a power-of-two `s_in` (see hawqc/frontends/hawq/lift.py). The jet tagger
and digits examples do the same. All other scales are calibrated.
"""

from __future__ import annotations

import torch
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
from hawqc.frontends.hawq.quant_functions import batch_frexp, requantization_ratio

BIAS_BITS = 32


def _linear(n_in: int, n_out: int, weight_bit: int, *, per_channel: bool, bias: bool = True) -> QuantLinear:
    layer = QuantLinear(weight_bit=weight_bit, bias_bit=BIAS_BITS, per_channel=per_channel)
    layer.set_param(nn.Linear(n_in, n_out, bias=bias))
    return layer


def _conv(c_in: int, c_out: int, kernel: int, weight_bit: int, *, per_channel: bool, padding: int = 0) -> QuantConv2d:
    layer = QuantConv2d(weight_bit=weight_bit, bias_bit=BIAS_BITS, per_channel=per_channel)
    layer.set_param(nn.Conv2d(c_in, c_out, kernel, padding=padding))
    return layer


def _bn_conv(c_in: int, c_out: int, weight_bit: int, *, fix_bn: bool) -> QuantBnConv2d:
    layer = QuantBnConv2d(weight_bit=weight_bit, bias_bit=BIAS_BITS, per_channel=True, fix_BN=fix_bn)
    layer.set_param(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out))
    return layer


def fix_power_of_two_scale(act: QuantAct, exponent: int) -> None:
    """Fix a QuantAct's range so that its scale is exactly 2^exponent (see the module docstring):
    symmetric `s = max|x| / (2^(b-1) - 1)`, unsigned `s = (max - min) / (2^b - 1)` with min 0."""
    if act.quant_mode == "symmetric":
        top = (2 ** (act.activation_bit - 1) - 1) * 2.0**exponent
        act.x_min.fill_(-top)
    else:
        top = (2**act.activation_bit - 1) * 2.0**exponent
        act.x_min.fill_(0.0)
    act.x_max.fill_(top)
    act.fix()  # training-mode calibration passes leave it alone


class ChainMLP(nn.Module):
    INPUT_SHAPE = (16,)
    INPUT_EXPONENT = -5

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        fix_power_of_two_scale(self.quant_input, self.INPUT_EXPONENT)
        self.fc1 = _linear(16, 12, 8, per_channel=False)
        self.dropout = QuantDropout(0.25)
        self.act1 = QuantAct(7)  # symmetric: signed codes, no ReLU before it
        self.fc2 = _linear(12, 10, 6, per_channel=True)
        self.act2 = QuantAct(6, quant_mode="asymmetric")
        self.fc3 = _linear(10, 8, 5, per_channel=True)
        self.act_fixed = QuantAct(6, quant_mode="asymmetric", fixed_point_quantization=True)
        self.fc4 = _linear(8, 5, 7, per_channel=True, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x):
        x, s = self.quant_input(x)
        x = self.fc1(x, s)
        x, _ = self.dropout(x, None)
        x, s = self.act1(x, s, self.fc1.fc_scaling_factor)
        x = self.relu(self.fc2(x, s))
        x, s = self.act2(x, s, self.fc2.fc_scaling_factor)
        x = self.relu(self.fc3(x, s))
        x, s = self.act_fixed(x, s, self.fc3.fc_scaling_factor)
        return self.fc4(x, s)


class ChainCNN(nn.Module):
    INPUT_SHAPE = (2, 6, 6)
    INPUT_EXPONENT = -6

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8, quant_mode="asymmetric")
        fix_power_of_two_scale(self.quant_input, self.INPUT_EXPONENT)
        self.conv1 = _conv(2, 4, 3, 8, per_channel=False, padding=1)
        self.act1 = QuantAct(8, quant_mode="asymmetric")
        self.conv2 = _bn_conv(4, 4, 6, fix_bn=True)
        self.act2 = QuantAct(7)
        self.pool = QuantMaxPool2d(kernel_size=2, stride=2)
        self.conv3 = _bn_conv(4, 4, 6, fix_bn=False)
        self.downsample = _conv(4, 4, 1, 6, per_channel=True)
        self.act_residual = QuantAct(7)
        self.dropout = QuantDropout(0.25)
        self.avg = QuantAveragePool2d(kernel_size=2, stride=1)
        self.fc = _linear(16, 5, 6, per_channel=True)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x, s = self.quant_input(x)
        x, ws = self.conv1(x, s)
        x, s = self.act1(self.relu1(x), s, ws)
        x, ws = self.conv2(x, s)
        x, s = self.act2(self.relu2(x), s, ws)
        x, s = self.pool(x, s)
        identity, identity_ws = self.downsample(x, s)
        y, ws = self.conv3(x, s)
        x, s_out = self.act_residual(y + identity, s, ws, identity, s, identity_ws)
        x, s_out = self.dropout(x, s_out)
        x, s_out = self.avg(x, s_out)
        return self.fc(torch.flatten(x, 1), s_out)


def calibration_inputs(model: nn.Module, batches: int, batch: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Random calibration batches; an unsigned input model gets nonnegative data."""
    shape = (batch, *model.INPUT_SHAPE)
    if model.quant_input.quant_mode == "symmetric":
        return [torch.randn(shape, generator=generator) * 1.3 for _ in range(batches)]
    return [torch.rand(shape, generator=generator) * 3.0 for _ in range(batches)]


def calibrate(model: nn.Module, seed: int, batches: int = 200, batch: int = 32) -> nn.Module:
    """Random BatchNorm statistics, activation ranges from training-mode batches, then frozen, eval."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # QuantDropout's masks in training mode
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                c = module.num_features
                module.running_mean.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)
                module.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                module.bias.copy_(torch.rand(c, generator=generator) * 0.4 - 0.2)
        model.train()
        for x in calibration_inputs(model, batches, batch, generator):
            model(x)
    freeze_model(model)
    return model.eval()


def round_scale_up_to_power_of_two(act: QuantAct) -> None:
    """Replace a calibrated QuantAct's scale with the next power of two (its range grows a little)."""
    exponent = int(torch.ceil(torch.log2(act.act_scaling_factor)).item())
    fix_power_of_two_scale(act, exponent)


def build(name: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = {"mlp": ChainMLP, "cnn": ChainCNN}[name]()
    calibrated = calibrate(model, seed)
    if name == "mlp":
        # A fixed_point_quantization QuantAct quantizes HAWQ's float activation plainly: the lifted
        # graph divides by its scale like an input's, which hardware mode and the backends compute
        # exactly only for a power of two (a calibrated scale is refused there: "division by a
        # constant that is not a power of two"). The accumulator scale feeding it stays calibrated.
        round_scale_up_to_power_of_two(calibrated.act_fixed)
    if name == "cnn":
        # freeze_model folds every BatchNorm for good (fix_BN=True); HAWQ's unfolded variant keeps
        # fix_BN=False and folds only because eval mode does: put conv3 back in that state.
        calibrated.conv3.unfix()
    return calibrated


def random_inputs(model: nn.Module, samples: int, seed: int) -> torch.Tensor:
    """Inputs across and beyond the input quantizer's range (some saturate it)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (samples, *model.INPUT_SHAPE)
    if model.quant_input.quant_mode == "symmetric":
        return torch.randn(shape, generator=generator) * 1.5
    return torch.rand(shape, generator=generator) * 4.5 - 0.3


def dyadic_mantissas(model: nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """HAWQ's dyadic mantissas `m` (31 bits) of every requantizing QuantAct in one eval forward on x,
    one tensor per branch (main, and identity for a residual), by module path: read from the scales
    the modules pass each other, through HAWQ's own `requantization_ratio` and `batch_frexp`."""
    found: dict[str, list[torch.Tensor]] = {}

    def record(path):
        def hook(module, args, kwargs, output):
            names = ("x", "pre_act_scaling_factor", "pre_weight_scaling_factor", "identity",
                     "identity_scaling_factor", "identity_weight_scaling_factor")  # fmt: skip
            bound = dict(zip(names, args)) | kwargs
            if bound.get("pre_act_scaling_factor") is None or module.fixed_point_quantization:
                return  # plain quantization: no dyadic factor
            new_scale = output[1]
            branches = [(bound["pre_act_scaling_factor"], bound["pre_weight_scaling_factor"])]
            if bound.get("identity") is not None:
                branches.append((bound["identity_scaling_factor"], bound["identity_weight_scaling_factor"]))
            new = new_scale.reshape(1, -1)
            ratios = [requantization_ratio(a.reshape(1, -1), w.reshape(1, -1), new) for a, w in branches]
            found[path] = [batch_frexp(ratio)[0] for ratio in ratios]

        return hook

    handles = [
        module.register_forward_hook(record(path), with_kwargs=True)
        for path, module in model.named_modules()
        if isinstance(module, QuantAct)
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return found
