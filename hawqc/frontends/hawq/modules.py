"""A CPU implementation of HAWQ's quantized modules, with HAWQ's names, constructor arguments,
`set_param`, buffers, state_dict keys and forward signatures (upstream HAWQ's
`utils/quantization_utils/quant_modules.py`, github.com/Zhen-Dong/HAWQ), so a
HAWQ model definition runs on them unchanged and a HAWQ checkpoint loads.

Deliberate differences from upstream HAWQ (each keeps the semantics HAWQ intends):
- eval mode is deterministic: running activation ranges, BatchNorm statistics and the
  `fix_BN_threshold` counter only move in training mode, and `QuantBnConv2d` runs its folded
  (integer) path in eval mode whatever `fix_BN` says;
- integer arithmetic is exact (see `quant_functions`): inputs of weighted layers are recovered as
  integers `round(x / s)` and accumulated in float64, which upstream does in float32;
- the residual requantization rounds once, after adding the two branches' dyadic terms (the spec);
- unfolded BatchNorm training adds the convolution's bias at the output scale (upstream scales
  it by the weight scale), so the running mean matches what folding subtracts;
- a bias without `bias_bit` is quantized at the accumulator scale without clamping (upstream fails);
- a weighted layer whose state_dict lacks the derived buffers (`weight_integer`, `bias_integer`,
  the scaling factors: all recomputed on every forward), or carries the newer
  `prev_act_scaling_factor` / `correct_output_scale`, still loads with `strict=True`;
- `full_precision_flag=True` gives the float layer; its returned weight scale is None;
- `weight_bit=1` (which upstream divides by zero) gives binary sign weights with scale `mean|w|`
  (see `quant_functions`); `weight_bit=2` is HAWQ's formula, whose codes are ternary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn import Module, Parameter

from hawqc.frontends.hawq.quant_functions import (
    AsymmetricQuantFunction,
    BinaryQuantFunction,
    SymmetricQuantFunction,
    asymmetric_linear_quantization_params,
    binary_weight_quantization_params,
    fixedpoint_fn,
    get_percentile_min_max,
    ste_round,
    symmetric_linear_quantization_params,
    transfer_float_averaging_to_int_averaging,
)

_QUANT_MODES = ("symmetric", "asymmetric")


def _split_pair(x, scale):
    """HAWQ passes activations as `(x, scale)` tuples; the tuple's scale wins over the argument."""
    if isinstance(x, tuple):
        return x[0], x[1]
    return x, scale


def _check_quant_mode(module: Module) -> None:
    if module.quant_mode not in _QUANT_MODES:
        raise ValueError(f"{type(module).__name__}: unknown quant_mode {module.quant_mode!r}, expected one of {_QUANT_MODES}")


def _check_symmetric_weights(module: Module) -> None:
    _check_quant_mode(module)
    if module.quant_mode != "symmetric":
        raise ValueError(f"{type(module).__name__}: HAWQ quantizes weights symmetrically only (quant_mode='symmetric')")


def _require_scale(module: Module, scale) -> torch.Tensor:
    if scale is None:
        raise ValueError(
            f"{type(module).__name__} needs the scaling factor of its input activation "
            "(pass it as the second argument or as an (x, scale) tuple)"
        )
    return torch.as_tensor(scale)


def _weight_range(weight: torch.Tensor, per_channel: bool, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(min, max) of a weight per output channel (rows of the flattened weight) or over the tensor,
    optionally at a percentile (HAWQ's `weight_percentile`; 0 = the true min/max)."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    if per_channel:
        if percentile == 0:
            return rows.min(dim=1).values, rows.max(dim=1).values
        length = rows.shape[1]
        lower = max(1, math.ceil(length * (100 - percentile) * 0.01))
        upper = max(1, math.ceil(length * percentile * 0.01))
        return torch.kthvalue(rows, k=lower, dim=1).values, torch.kthvalue(rows, k=upper, dim=1).values
    if percentile == 0:
        return rows.min().reshape(1), rows.max().reshape(1)
    low, high = get_percentile_min_max(rows.reshape(-1), 100 - percentile, percentile, output_tensor=True)
    return low.reshape(1), high.reshape(1)


def quantize_weight(weight: torch.Tensor, bits: int, per_channel: bool, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, integer codes) of a weight: HAWQ's symmetric quantization, or for 1 bit binary sign
    codes with scale `mean|w|` (the percentile does not apply: the sign ignores the range)."""
    if bits == 1:
        scale = binary_weight_quantization_params(weight, per_channel)
        return scale, BinaryQuantFunction.apply(weight, scale)
    w_min, w_max = _weight_range(weight, per_channel, percentile)
    scale = symmetric_linear_quantization_params(bits, w_min, w_max, per_channel)
    return scale, SymmetricQuantFunction.apply(weight, bits, scale)


def _integer_input(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The integers behind a quantized activation `x = q * s`, in float64 (straight-through)."""
    step = scale.detach().to(torch.float64).reshape(1, -1, *([1] * (x.dim() - 2)))
    return ste_round.apply(x.to(torch.float64) / step)


class _DerivedBuffersMixin:
    """Loading rules for buffers that every forward recomputes from the parameters.

    A checkpoint's copy replaces the local one whatever its shape (a per-tensor scale is [1], a
    per-channel one [C]); a checkpoint without it (older HAWQ) or with extra derived buffers
    (newer HAWQ) loads under `strict=True`.
    """

    _derived_buffers: tuple[str, ...] = ()
    _tolerated_extra_keys: tuple[str, ...] = ("prev_act_scaling_factor", "correct_output_scale")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for name in self._derived_buffers:
            key = prefix + name
            if key in state_dict and self._buffers.get(name) is not None:
                self._buffers[name] = torch.zeros_like(state_dict[key])
        missing_before = len(missing_keys)
        unexpected_before = len(unexpected_keys)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        derived = {prefix + name for name in self._derived_buffers}
        extra = {prefix + name for name in self._tolerated_extra_keys}
        missing_keys[missing_before:] = [k for k in missing_keys[missing_before:] if k not in derived]
        unexpected_keys[unexpected_before:] = [k for k in unexpected_keys[unexpected_before:] if k not in extra]


def _store(module: Module, name: str, value: torch.Tensor | None) -> None:
    """Keep a detached copy of a value computed in forward in its buffer (no autograd history
    inside a module's state, so the module can be copied and saved)."""
    setattr(module, name, None if value is None else value.detach().clone())


class _WeightQuantizer:
    """Shared arguments of HAWQ's weighted modules."""

    def _init_weight_quantization(
        self, weight_bit, bias_bit, full_precision_flag, quant_mode, per_channel, fix_flag, weight_percentile
    ):
        self.full_precision_flag = full_precision_flag
        self.weight_bit = weight_bit
        self.quant_mode = quant_mode
        self.per_channel = per_channel
        self.fix_flag = fix_flag
        self.weight_percentile = weight_percentile
        self.bias_bit = bias_bit
        self.quantize_bias = bias_bit is not None

    def fix(self):
        self.fix_flag = True

    def unfix(self):
        self.fix_flag = False

    def _quantize_weight_and_bias(self, weight, bias, prev_act_scaling_factor):
        """(weight scale, weight integers, bias integers or None, accumulator scale s_w * s_a)."""
        weight_scale, weight_integer = quantize_weight(weight, self.weight_bit, self.per_channel, self.weight_percentile)
        accumulator_scale = (weight_scale.reshape(1, -1) * prev_act_scaling_factor.detach().reshape(1, -1)).reshape(-1)
        bias_integer = None
        if bias is not None:
            bias_integer = SymmetricQuantFunction.apply(bias, self.bias_bit, accumulator_scale)
        return weight_scale, weight_integer, bias_integer, accumulator_scale


class QuantLinear(_DerivedBuffersMixin, _WeightQuantizer, Module):
    """HAWQ's quantized linear layer; built empty, then `set_param(linear)`.

    forward(x, prev_act_scaling_factor) -> tensor `(x_int @ W_int^T + b_int) * s_w * s_a`.
    """

    _derived_buffers = ("fc_scaling_factor", "weight_integer", "bias_integer")

    def __init__(
        self,
        weight_bit=4,
        bias_bit=None,
        full_precision_flag=False,
        quant_mode="symmetric",
        per_channel=False,
        fix_flag=False,
        weight_percentile=0,
    ):
        super().__init__()
        self._init_weight_quantization(
            weight_bit, bias_bit, full_precision_flag, quant_mode, per_channel, fix_flag, weight_percentile
        )
        self.counter = 0

    def set_param(self, linear: nn.Linear) -> None:
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.register_buffer("fc_scaling_factor", torch.zeros(self.out_features))
        self.weight = Parameter(linear.weight.data.clone())
        self.register_buffer("weight_integer", torch.zeros_like(self.weight))
        if linear.bias is None:
            self.bias = None
            self.register_buffer("bias_integer", None)
        else:
            self.bias = Parameter(linear.bias.data.clone())
            self.register_buffer("bias_integer", torch.zeros_like(self.bias))

    def extra_repr(self) -> str:
        return (
            f"in_features={getattr(self, 'in_features', None)}, out_features={getattr(self, 'out_features', None)}, "
            f"weight_bit={self.weight_bit}, bias_bit={self.bias_bit}, per_channel={self.per_channel}, "
            f"full_precision_flag={self.full_precision_flag}"
        )

    def forward(self, x, prev_act_scaling_factor=None):
        x, prev_act_scaling_factor = _split_pair(x, prev_act_scaling_factor)
        if self.full_precision_flag:
            return F.linear(x, self.weight, self.bias)
        _check_symmetric_weights(self)
        prev = _require_scale(self, prev_act_scaling_factor)
        scale, weight_integer, bias_integer, accumulator_scale = self._quantize_weight_and_bias(
            self.weight, self.bias, prev
        )
        _store(self, "fc_scaling_factor", scale)
        _store(self, "weight_integer", weight_integer)
        _store(self, "bias_integer", bias_integer)
        accumulator = F.linear(
            _integer_input(x, prev),
            weight_integer.to(torch.float64),
            None if bias_integer is None else bias_integer.to(torch.float64),
        )
        return (accumulator * accumulator_scale.to(torch.float64).reshape(1, -1)).to(x.dtype)


def _conv_output(module: Module, conv: nn.Conv2d, x, prev, weight_integer, bias_integer, accumulator_scale):
    accumulator = F.conv2d(
        _integer_input(x, prev),
        weight_integer.to(torch.float64),
        None if bias_integer is None else bias_integer.to(torch.float64),
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
    )
    return (accumulator * accumulator_scale.to(torch.float64).reshape(1, -1, 1, 1)).to(x.dtype)


def _check_zero_padding(module: Module, conv: nn.Conv2d) -> None:
    if conv.padding_mode != "zeros":
        raise ValueError(f"{type(module).__name__}: padding_mode {conv.padding_mode!r} is not supported (only 'zeros')")


class QuantConv2d(_DerivedBuffersMixin, _WeightQuantizer, Module):
    """HAWQ's quantized convolution; built empty, then `set_param(conv)`.

    forward(x, pre_act_scaling_factor) -> (out, conv_scaling_factor). Like HAWQ it keeps the
    original `conv` as a submodule (its stride/padding/dilation/groups; its `conv.weight` and
    `conv.bias` are in the state_dict) and trains its own `weight` and `bias`.
    """

    _derived_buffers = ("conv_scaling_factor", "weight_integer", "bias_integer")

    def __init__(
        self,
        weight_bit=4,
        bias_bit=None,
        full_precision_flag=False,
        quant_mode="symmetric",
        per_channel=False,
        fix_flag=False,
        weight_percentile=0,
    ):
        super().__init__()
        self._init_weight_quantization(
            weight_bit, bias_bit, full_precision_flag, quant_mode, per_channel, fix_flag, weight_percentile
        )

    def set_param(self, conv: nn.Conv2d) -> None:
        _check_zero_padding(self, conv)
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.kernel_size = conv.kernel_size
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups
        self.conv = conv
        self.register_buffer("conv_scaling_factor", torch.zeros(self.out_channels))
        self.weight = Parameter(conv.weight.data.clone())
        self.register_buffer("weight_integer", torch.zeros_like(self.weight))
        if conv.bias is None:
            self.bias = None
            self.register_buffer("bias_integer", None)
        else:
            self.bias = Parameter(conv.bias.data.clone())
            self.register_buffer("bias_integer", torch.zeros_like(self.bias))

    def extra_repr(self) -> str:
        return (
            f"weight_bit={self.weight_bit}, bias_bit={self.bias_bit}, per_channel={self.per_channel}, "
            f"full_precision_flag={self.full_precision_flag}"
        )

    def forward(self, x, pre_act_scaling_factor=None):
        x, pre_act_scaling_factor = _split_pair(x, pre_act_scaling_factor)
        if self.full_precision_flag:
            conv = self.conv
            return F.conv2d(x, self.weight, self.bias, conv.stride, conv.padding, conv.dilation, conv.groups), None
        _check_symmetric_weights(self)
        prev = _require_scale(self, pre_act_scaling_factor)
        scale, weight_integer, bias_integer, accumulator_scale = self._quantize_weight_and_bias(
            self.weight, self.bias, prev
        )
        _store(self, "conv_scaling_factor", scale)
        _store(self, "weight_integer", weight_integer)
        _store(self, "bias_integer", bias_integer)
        out = _conv_output(self, self.conv, x, prev, weight_integer, bias_integer, accumulator_scale)
        return out, self.conv_scaling_factor


class QuantBnConv2d(_DerivedBuffersMixin, _WeightQuantizer, Module):
    """HAWQ's convolution with BatchNorm, folded or not; built empty, then `set_param(conv, bn)`.

    Folded (`fix_BN`, and always in eval mode): `W' = W * gamma / sqrt(var + eps)`,
    `b' = (b - mean) * gamma / sqrt(var + eps) + beta` with the running statistics, quantized and
    applied as in `QuantConv2d`. Unfolded (training with `fix_BN=False`): the convolution with
    quantized `W`, then BatchNorm with the batch statistics, which also update the running ones
    HAWQ's way (`running = momentum * running + (1 - momentum) * batch`, momentum 0.99).
    forward(x, pre_act_scaling_factor) -> (out, weight scaling factor).
    """

    _derived_buffers = ("convbn_scaling_factor", "weight_integer", "bias_integer")

    def __init__(
        self,
        weight_bit=4,
        bias_bit=None,
        full_precision_flag=False,
        quant_mode="symmetric",
        per_channel=False,
        fix_flag=False,
        weight_percentile=0,
        fix_BN=False,
        fix_BN_threshold=None,
    ):
        super().__init__()
        self._init_weight_quantization(
            weight_bit, bias_bit, full_precision_flag, quant_mode, per_channel, fix_flag, weight_percentile
        )
        self.fix_BN = fix_BN
        self.training_BN_mode = fix_BN
        self.fix_BN_threshold = fix_BN_threshold
        self.counter = 1

    def set_param(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        _check_zero_padding(self, conv)
        self.out_channels = conv.out_channels
        self.register_buffer("convbn_scaling_factor", torch.zeros(self.out_channels))
        self.register_buffer("weight_integer", torch.zeros_like(conv.weight.data))
        self.register_buffer("bias_integer", torch.zeros_like(bn.bias.data))
        self.conv = conv
        self.bn = bn
        self.bn.momentum = 0.99

    def extra_repr(self) -> str:
        return (
            f"weight_bit={self.weight_bit}, bias_bit={self.bias_bit}, per_channel={self.per_channel}, "
            f"fix_BN={self.fix_BN}, fix_BN_threshold={self.fix_BN_threshold}"
        )

    def fix(self):
        self.fix_flag = True
        self.fix_BN = True

    def unfix(self):
        self.fix_flag = False
        self.fix_BN = self.training_BN_mode

    def folded_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W', b'): the convolution with the running BatchNorm folded in (float, before quantization)."""
        bn = self.bn
        factor = bn.weight / torch.sqrt(bn.running_var.detach() + bn.eps)
        weight = self.conv.weight * factor.reshape(-1, 1, 1, 1)
        bias = self.conv.bias if self.conv.bias is not None else torch.zeros_like(bn.running_mean)
        return weight, (bias - bn.running_mean.detach()) * factor + bn.bias

    def _advance_fold_schedule(self) -> None:
        if self.fix_flag:
            return
        self.counter += 1
        if self.fix_BN_threshold is None or self.counter < self.fix_BN_threshold:
            self.fix_BN = self.training_BN_mode
        else:
            self.fix_BN = True

    def forward(self, x, pre_act_scaling_factor=None):
        x, pre_act_scaling_factor = _split_pair(x, pre_act_scaling_factor)
        _check_symmetric_weights(self)
        if self.training:
            self._advance_fold_schedule()
        if self.training and not self.fix_BN:
            return self._forward_unfolded(x)
        weight, bias = self.folded_parameters()
        if self.full_precision_flag:
            conv = self.conv
            return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups), None
        prev = _require_scale(self, pre_act_scaling_factor)
        scale, weight_integer, bias_integer, accumulator_scale = self._quantize_weight_and_bias(weight, bias, prev)
        _store(self, "convbn_scaling_factor", scale)
        _store(self, "weight_integer", weight_integer)
        _store(self, "bias_integer", bias_integer)
        out = _conv_output(self, self.conv, x, prev, weight_integer, bias_integer, accumulator_scale)
        return out, self.convbn_scaling_factor

    def _forward_unfolded(self, x):
        conv, bn = self.conv, self.bn
        scale, weight_integer = quantize_weight(conv.weight, self.weight_bit, self.per_channel, self.weight_percentile)
        # The bias is added at the output's scale: the running mean must be the mean of what the
        # folded layer will compute, `b' = (b - mean) * gamma / sqrt(var + eps) + beta`.
        conv_output = F.conv2d(
            x, weight_integer, None, conv.stride, conv.padding, conv.dilation, conv.groups
        ) * scale.reshape(1, -1, 1, 1)
        if conv.bias is not None:
            conv_output = conv_output + conv.bias.reshape(1, -1, 1, 1)
        batch_mean = conv_output.mean(dim=(0, 2, 3))
        batch_var = conv_output.var(dim=(0, 2, 3))
        with torch.no_grad():
            bn.running_mean.mul_(bn.momentum).add_((1 - bn.momentum) * batch_mean.detach())
            bn.running_var.mul_(bn.momentum).add_((1 - bn.momentum) * batch_var.detach())
        factor = bn.weight / torch.sqrt(batch_var + bn.eps)
        output = factor.reshape(1, -1, 1, 1) * (conv_output - batch_mean.reshape(1, -1, 1, 1)) + bn.bias.reshape(
            1, -1, 1, 1
        )
        return output, (scale.reshape(-1) * factor.reshape(-1)).detach()


class QuantAct(Module):
    """HAWQ's activation quantizer, which also requantizes accumulators to its own scale.

    forward(x, pre_act_scaling_factor=None, pre_weight_scaling_factor=None, identity=None,
    identity_scaling_factor=None, identity_weight_scaling_factor=None) -> (x_q, act_scaling_factor).
    Without a previous scale (the input layer) or with `fixed_point_quantization`: plain
    quantization `clamp(round(x / s)) * s`; otherwise the dyadic integer requantization of
    `fixedpoint_fn` (with the identity branch when `identity` is given).
    """

    def __init__(
        self,
        activation_bit=4,
        act_range_momentum=0.95,
        full_precision_flag=False,
        running_stat=True,
        quant_mode="symmetric",
        fix_flag=False,
        act_percentile=0,
        fixed_point_quantization=False,
    ):
        super().__init__()
        self.activation_bit = activation_bit
        self.act_range_momentum = act_range_momentum
        self.full_precision_flag = full_precision_flag
        self.running_stat = running_stat
        self.quant_mode = quant_mode
        self.fix_flag = fix_flag
        self.act_percentile = act_percentile
        self.fixed_point_quantization = fixed_point_quantization
        self.register_buffer("x_min", torch.zeros(1))
        self.register_buffer("x_max", torch.zeros(1))
        self.register_buffer("act_scaling_factor", torch.zeros(1))
        self.register_buffer("pre_weight_scaling_factor", torch.ones(1))
        self.register_buffer("identity_weight_scaling_factor", torch.ones(1))

    def extra_repr(self) -> str:
        return (
            f"activation_bit={self.activation_bit}, quant_mode={self.quant_mode}, "
            f"full_precision_flag={self.full_precision_flag}, x_min={self.x_min.item():.4g}, x_max={self.x_max.item():.4g}"
        )

    def fix(self):
        """Freeze the activation range."""
        self.running_stat = False
        self.fix_flag = True

    def unfix(self):
        self.running_stat = True
        self.fix_flag = False

    @torch.no_grad()
    def _update_range(self, x: torch.Tensor) -> None:
        if self.act_percentile == 0:
            batch_min, batch_max = x.min(), x.max()
        else:
            # Asymmetric (unsigned) ranges sit after a ReLU: their lower end stays at 0.
            lower = 100 - self.act_percentile if self.quant_mode == "symmetric" else 0
            batch_min, batch_max = get_percentile_min_max(
                x.detach().reshape(-1), lower, self.act_percentile, output_tensor=True
            )
        if torch.equal(self.x_min, self.x_max):  # first batch: nothing to average with yet
            self.x_min += batch_min
            self.x_max += batch_max
        elif self.act_range_momentum == -1:
            self.x_min.copy_(torch.minimum(self.x_min, batch_min))
            self.x_max.copy_(torch.maximum(self.x_max, batch_max))
        else:
            momentum = self.act_range_momentum
            self.x_min.copy_(self.x_min * momentum + batch_min * (1 - momentum))
            self.x_max.copy_(self.x_max * momentum + batch_max * (1 - momentum))

    def forward(
        self,
        x,
        pre_act_scaling_factor=None,
        pre_weight_scaling_factor=None,
        identity=None,
        identity_scaling_factor=None,
        identity_weight_scaling_factor=None,
    ):
        if isinstance(x, tuple):
            x, pre_act_scaling_factor = x[0], x[1]
        _check_quant_mode(self)
        if isinstance(pre_act_scaling_factor, list):
            raise NotImplementedError("QuantAct: multi-branch (channel concatenation) requantization is not supported")
        if self.training and self.running_stat:
            self._update_range(x)
        if self.full_precision_flag:
            return x, self.act_scaling_factor
        symmetric = self.quant_mode == "symmetric"
        if symmetric:
            scale = symmetric_linear_quantization_params(self.activation_bit, self.x_min, self.x_max, False)
        else:
            scale, _zero_point = asymmetric_linear_quantization_params(self.activation_bit, self.x_min, self.x_max, True)
        self.act_scaling_factor = scale.detach().reshape(1).to(self.act_scaling_factor.dtype)
        scale = self.act_scaling_factor
        if pre_act_scaling_factor is None or self.fixed_point_quantization:
            quantize = SymmetricQuantFunction if symmetric else AsymmetricQuantFunction
            integers = quantize.apply(x, self.activation_bit, scale)
        else:
            pre_act = torch.as_tensor(pre_act_scaling_factor)
            if pre_weight_scaling_factor is None:
                pre_weight_scaling_factor = self.pre_weight_scaling_factor
            if identity is None:
                integers = fixedpoint_fn.apply(
                    x, self.activation_bit, self.quant_mode, scale, 0, pre_act, pre_weight_scaling_factor
                )
            else:
                if identity_scaling_factor is None:
                    raise ValueError("QuantAct: an identity branch needs its identity_scaling_factor")
                if identity_weight_scaling_factor is None:
                    identity_weight_scaling_factor = self.identity_weight_scaling_factor
                integers = fixedpoint_fn.apply(
                    x,
                    self.activation_bit,
                    self.quant_mode,
                    scale,
                    1,
                    pre_act,
                    pre_weight_scaling_factor,
                    identity,
                    torch.as_tensor(identity_scaling_factor),
                    identity_weight_scaling_factor,
                )
        return integers * scale.reshape(-1).to(x.dtype), self.act_scaling_factor


class QuantAveragePool2d(Module):
    """HAWQ's integer average pooling: `trunc(avgpool(round(x / s)) + 0.01) * s`.

    forward(x, x_scaling_factor=None) -> (x, scale); without a scale, float pooling and scale None.
    The pooling runs in float64 (sums of integers exact, one rounding of the division).
    """

    def __init__(self, kernel_size=7, stride=1, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.final_pool = nn.AvgPool2d(kernel_size=kernel_size, stride=stride, padding=padding)

    def set_param(self, pool: nn.AvgPool2d) -> None:
        self.final_pool = pool

    def forward(self, x, x_scaling_factor=None):
        x, x_scaling_factor = _split_pair(x, x_scaling_factor)
        if x_scaling_factor is None:
            return self.final_pool(x), None
        scale = torch.as_tensor(x_scaling_factor).reshape(-1)
        integers = _integer_input(x, scale)
        averaged = transfer_float_averaging_to_int_averaging.apply(self.final_pool(integers))
        step = scale.detach().to(torch.float64).reshape(1, -1, 1, 1)
        return (averaged * step).to(x.dtype), scale


class QuantMaxPool2d(Module):
    """Max pooling; the scale passes through. forward(x, x_scaling_factor=None) -> (x, scale)."""

    def __init__(self, kernel_size=3, stride=2, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pool = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, padding=padding)

    def forward(self, x, x_scaling_factor=None):
        x, x_scaling_factor = _split_pair(x, x_scaling_factor)
        return self.pool(x), x_scaling_factor


class QuantDropout(Module):
    """Dropout; the scale passes through. forward(x, x_scaling_factor=None) -> (x, scale)."""

    def __init__(self, p=0):
        super().__init__()
        self.dropout = nn.Dropout(p)

    def forward(self, x, x_scaling_factor=None):
        x, x_scaling_factor = _split_pair(x, x_scaling_factor)
        return self.dropout(x), x_scaling_factor


_FIXABLE = (QuantAct, QuantLinear, QuantConv2d, QuantBnConv2d)


def freeze_model(model: Module) -> None:
    """Fix every activation range and fold every BatchNorm (HAWQ's inference preparation)."""
    for module in model.modules():
        if isinstance(module, _FIXABLE):
            module.fix()


def unfreeze_model(model: Module) -> None:
    for module in model.modules():
        if isinstance(module, _FIXABLE):
            module.unfix()
