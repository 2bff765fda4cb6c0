"""A tiny HAWQ ResNet, written the way upstream HAWQ's `utils/models/q_resnet.py` writes its
ResNet18 (`Q_ResNet18`, `Q_ResBlockBn`), for the two blocks that lifted graphs could not lower
(tests/test_hawq_resnet_blocks.py):

- a residual whose identity branch is a QuantAct's output, not a convolution's: `Q_ResBlockBn`
  without `resize_identity` adds the block's input (the ReLU of the previous QuantAct) and passes
  its scale (`scaling_factor_int32`) as the identity's, with no identity weight scale; `block2`
  adds the QuantAct's output itself (no ReLU between);
- `QuantAveragePool2d` followed by a `QuantAct`: `final_pool` then `quant_act_output`, which
  requantizes the pooled codes (no weight scale), the tuple `(x, scale)` passed as one argument.

Both cast a Quant's result to double in the lifted graph (`..._to_double`).

    quant_input -> init convbn (QuantBnConv2d 3x3) -> MaxPool2d(3, 2, 1) -> quant_act_int32 -> ReLU
    -> block1 (identity: the ReLU of quant_act_int32) -> block2 (identity: block2.quant_act itself)
    -> final_pool (QuantAveragePool2d 2x2) -> quant_act_output -> view -> quant_output (QuantLinear)
"""

from __future__ import annotations

import hawq_chain_models
import torch
from torch import nn

from hawqc.frontends.hawq import QuantAct, QuantAveragePool2d, QuantBnConv2d, QuantLinear

CHANNELS = 4
BIAS_BITS = 32


def _convbn(c_in: int, c_out: int, weight_bit: int) -> QuantBnConv2d:
    layer = QuantBnConv2d(weight_bit=weight_bit, bias_bit=BIAS_BITS, per_channel=True)
    layer.set_param(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))
    return layer


class ResBlockBn(nn.Module):
    """`Q_ResBlockBn` without `resize_identity`; `identity_from_act` adds `quant_act`'s output
    instead of the block's input (the identity then comes straight from a QuantAct)."""

    def __init__(self, identity_from_act: bool):
        super().__init__()
        self.identity_from_act = identity_from_act
        self.quant_act = QuantAct(8)
        self.quant_convbn1 = _convbn(CHANNELS, CHANNELS, 6)
        self.quant_act1 = QuantAct(7, quant_mode="asymmetric")
        self.quant_convbn2 = _convbn(CHANNELS, CHANNELS, 6)
        self.quant_act_int32 = QuantAct(8)

    def forward(self, x, scaling_factor_int32=None):
        identity, identity_scaling_factor = x, scaling_factor_int32
        x, act_scaling_factor = self.quant_act(x, scaling_factor_int32)
        if self.identity_from_act:
            identity, identity_scaling_factor = x, act_scaling_factor
        x, weight_scaling_factor = self.quant_convbn1(x, act_scaling_factor)
        x = nn.ReLU()(x)
        x, act_scaling_factor = self.quant_act1(x, act_scaling_factor, weight_scaling_factor)
        x, weight_scaling_factor = self.quant_convbn2(x, act_scaling_factor)
        x = x + identity
        x, act_scaling_factor = self.quant_act_int32(
            x, act_scaling_factor, weight_scaling_factor, identity, identity_scaling_factor, None
        )
        x = nn.ReLU()(x)
        return x, act_scaling_factor


class TinyResNet(nn.Module):
    INPUT_SHAPE = (2, 8, 8)
    INPUT_EXPONENT = -5

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        hawq_chain_models.fix_power_of_two_scale(self.quant_input, self.INPUT_EXPONENT)
        self.quant_init_block_convbn = _convbn(2, CHANNELS, 8)
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.quant_act_int32 = QuantAct(8)
        self.act = nn.ReLU()
        self.block1 = ResBlockBn(identity_from_act=False)
        self.block2 = ResBlockBn(identity_from_act=True)
        self.final_pool = QuantAveragePool2d(kernel_size=2, stride=2)
        self.quant_act_output = QuantAct(8)
        self.quant_output = QuantLinear(weight_bit=6, bias_bit=BIAS_BITS, per_channel=True)
        self.quant_output.set_param(nn.Linear(CHANNELS * 2 * 2, 5))

    def forward(self, x):
        x, act_scaling_factor = self.quant_input(x)
        x, weight_scaling_factor = self.quant_init_block_convbn(x, act_scaling_factor)
        x = self.pool(x)
        x, act_scaling_factor = self.quant_act_int32(x, act_scaling_factor, weight_scaling_factor)
        x = self.act(x)
        x, act_scaling_factor = self.block1(x, act_scaling_factor)
        x, act_scaling_factor = self.block2(x, act_scaling_factor)
        x = self.final_pool(x, act_scaling_factor)
        x, act_scaling_factor = self.quant_act_output(x, act_scaling_factor)
        x = x.view(x.size(0), -1)
        return self.quant_output(x, act_scaling_factor)


def build(seed: int, *, power_of_two: bool) -> TinyResNet:
    """Calibrated (hawq_chain_models.calibrate), frozen, eval mode. `power_of_two`: every QuantAct's
    scale rounded up to a power of two, so that every requantization ratio is one too."""
    torch.manual_seed(seed)
    model = hawq_chain_models.calibrate(TinyResNet(), seed)
    if power_of_two:
        for module in model.modules():
            if isinstance(module, QuantAct) and module is not model.quant_input:
                hawq_chain_models.round_scale_up_to_power_of_two(module)
    return model
