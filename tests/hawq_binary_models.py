"""A tiny HAWQ MLP with binary (`weight_bit=1`) and ternary (`weight_bit=2`) hidden layers between
8-bit first and last layers, the mixed precision of Loncar et al.'s networks, for the bit-exact
chain (tests/test_hawq_chain.py, chain `binary`) and tests/test_hawq_binary.py.

    QuantAct 8-bit (power-of-two scale) -> QuantLinear 16->24, 8-bit per channel -> ReLU
    -> QuantAct 4-bit unsigned -> QuantLinear 24->24, 1-bit per channel (sign, scale mean|w|) -> ReLU
    -> QuantAct 4-bit unsigned -> QuantLinear 24->16, 2-bit per tensor (ternary codes) -> ReLU
    -> QuantAct 4-bit unsigned -> QuantLinear 16->5, 8-bit per channel.

Calibrated like tests/hawq_chain_models.py (random data, running activation ranges, so every
requantization ratio is a full 31-bit dyadic mantissa), then frozen.
"""

from __future__ import annotations

import torch
from hawq_chain_models import BIAS_BITS, calibrate, fix_power_of_two_scale
from torch import nn

from hawqc.frontends.hawq import QuantAct, QuantLinear


def _linear(n_in: int, n_out: int, weight_bit: int, *, per_channel: bool) -> QuantLinear:
    layer = QuantLinear(weight_bit=weight_bit, bias_bit=BIAS_BITS, per_channel=per_channel)
    layer.set_param(nn.Linear(n_in, n_out))
    return layer


class BinaryTernaryMLP(nn.Module):
    INPUT_SHAPE = (16,)
    INPUT_EXPONENT = -5
    WEIGHT_BITS = (8, 1, 2, 8)

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        fix_power_of_two_scale(self.quant_input, self.INPUT_EXPONENT)
        self.fc1 = _linear(16, 24, 8, per_channel=True)
        self.act1 = QuantAct(4, quant_mode="asymmetric")
        self.fc2 = _linear(24, 24, 1, per_channel=True)
        self.act2 = QuantAct(4, quant_mode="asymmetric")
        self.fc3 = _linear(24, 16, 2, per_channel=False)
        self.act3 = QuantAct(4, quant_mode="asymmetric")
        self.fc4 = _linear(16, 5, 8, per_channel=True)
        self.relu = nn.ReLU()

    def forward(self, x):
        x, s = self.quant_input(x)
        x, s = self.act1(self.relu(self.fc1(x, s)), s, self.fc1.fc_scaling_factor)
        x, s = self.act2(self.relu(self.fc2(x, s)), s, self.fc2.fc_scaling_factor)
        x, s = self.act3(self.relu(self.fc3(x, s)), s, self.fc3.fc_scaling_factor)
        return self.fc4(x, s)


def build(seed: int) -> BinaryTernaryMLP:
    torch.manual_seed(seed)
    return calibrate(BinaryTernaryMLP(), seed)
