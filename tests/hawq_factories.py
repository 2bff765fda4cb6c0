"""Model factories for `hawqc model.pth --model-factory tests/hawq_factories.py:FUNCTION` in tests.

A factory builds the untrained model a state_dict loads into; `calibrated_tiny_mlp` is the trained
one the tests save (activation ranges set by one training-mode pass, input range a power of two so
hardware mode and the C simulation apply).
"""

from __future__ import annotations

import torch
from torch import nn

from hawqc.frontends.hawq import QuantAct, QuantLinear, freeze_model


def _linear(n_in: int, n_out: int, weight_bit: int) -> QuantLinear:
    layer = QuantLinear(weight_bit=weight_bit, bias_bit=32, per_channel=True)
    layer.set_param(nn.Linear(n_in, n_out))
    return layer


class TinyMLP(nn.Module):
    """16-8-5: QuantAct, QuantLinear, ReLU, QuantAct, QuantLinear."""

    def __init__(self):
        super().__init__()
        self.quant_input = QuantAct(8)
        self.fc1 = _linear(16, 8, 6)
        self.relu = nn.ReLU()
        self.act1 = QuantAct(8, quant_mode="asymmetric")
        self.fc2 = _linear(8, 5, 6)

    def forward(self, x):
        x, scale = self.quant_input(x)
        x = self.relu(self.fc1(x, scale))
        x, scale = self.act1(x, scale, self.fc1.fc_scaling_factor)
        return self.fc2(x, scale)


def tiny_mlp() -> nn.Module:
    return TinyMLP()


def calibrated_tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyMLP().train()
    with torch.no_grad():
        model(torch.randn(256, 16))
    # Input scale 2^-5: the graph input's Quant then has a power-of-two scale (hardware mode).
    top = (2 ** (model.quant_input.activation_bit - 1) - 1) * 2.0**-5
    model.quant_input.x_min.fill_(-top)
    model.quant_input.x_max.fill_(top)
    freeze_model(model)
    return model.eval()


def wider_mlp() -> nn.Module:
    """A model the tiny MLP's state_dict does not fit (other sizes, same keys)."""
    model = TinyMLP()
    model.fc1 = _linear(16, 9, 6)
    return model


def failing_factory() -> nn.Module:
    raise ValueError("no weights for you")


def not_a_module():
    return {"fc1": 1}
