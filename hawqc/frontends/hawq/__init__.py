"""HAWQ frontend: a CPU implementation of HAWQ's quantized modules (`modules`, `quant_functions`).

Models written against HAWQ's `quant_modules` run on these classes unchanged and HAWQ checkpoints
load into them.
"""

from hawqc.frontends.hawq.modules import (
    QuantAct,
    QuantAveragePool2d,
    QuantBnConv2d,
    QuantConv2d,
    QuantDropout,
    QuantLinear,
    QuantMaxPool2d,
    freeze_model,
    unfreeze_model,
)

__all__ = [
    "QuantAct",
    "QuantAveragePool2d",
    "QuantBnConv2d",
    "QuantConv2d",
    "QuantDropout",
    "QuantLinear",
    "QuantMaxPool2d",
    "freeze_model",
    "unfreeze_model",
]
