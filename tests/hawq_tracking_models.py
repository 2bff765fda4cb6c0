"""HAWQ models whose QuantActs track their range in eval mode, as upstream HAWQ's do.

Upstream HAWQ's `QuantAct.forward` moves `x_min` / `x_max` whenever `running_stat` is set, in eval
mode too; only `fix()` (HAWQ's `freeze_model`) stops it. hawqc's own QuantAct tracks in training
mode only, so `TrackingQuantAct` (class name `QuantAct`, which is how the lifter recognizes it)
restores upstream's behaviour for tests/test_hawq_lift_copy.py.
"""

from __future__ import annotations

import hawq_chain_models
from torch import nn

from hawqc.frontends.hawq import modules


class QuantAct(modules.QuantAct):
    """Upstream HAWQ's QuantAct: tracks its range on every forward while `running_stat` is set."""

    def forward(
        self,
        x,
        pre_act_scaling_factor=None,
        pre_weight_scaling_factor=None,
        identity=None,
        identity_scaling_factor=None,
        identity_weight_scaling_factor=None,
    ):
        if self.running_stat and not self.training:  # training mode tracks in the base class
            self._update_range(x[0] if isinstance(x, tuple) else x)
        return super().forward(x, pre_act_scaling_factor, pre_weight_scaling_factor, identity, identity_scaling_factor,
                               identity_weight_scaling_factor)  # fmt: skip


TrackingQuantAct = QuantAct


def track_in_eval_mode(model: nn.Module) -> nn.Module:
    """Every QuantAct of `model` becomes a tracking one, its range unfrozen (running_stat set)."""
    for module in model.modules():
        if isinstance(module, modules.QuantAct):
            module.__class__ = TrackingQuantAct
            module.unfix()
    return model


def calibrated_tracking_cnn(seed: int = 3) -> nn.Module:
    """The chain CNN (every module kind, a residual, BatchNorm folded and unfolded), calibrated,
    then unfrozen with tracking QuantActs: a model as a user holds it after training."""
    return track_in_eval_mode(hawq_chain_models.build("cnn", seed))


def tracking_cnn() -> nn.Module:
    """Factory for `--model-factory tests/hawq_tracking_models.py:tracking_cnn` (untrained)."""
    return track_in_eval_mode(hawq_chain_models.ChainCNN())
