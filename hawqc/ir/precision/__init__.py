"""Exact fixed-point types for every value of a quantized graph, from quant parameters and intervals.

The graphs are the ones the hls4ml lowering sees: channels-last (Conv, pools and BatchNormalization
in `CHANNELS_LAST_DOMAIN`), so the last axis of every activation is its channel (or feature) axis.
Each value gets an exact interval kept per feature along that last axis, as integers times one
power of two, so no rounding ever enters the analysis (`bounds`). The type of a value is the
narrowest one holding its interval at its LSB: never narrower than needed (no value can overflow
it), never wider. Where float32 semantics and the exact arithmetic can part, the value is in
`PrecisionResult.inexact` with the reason.

The rules, one per op, live with their family, each module documenting its own:
- `quantizers`: Quant, BipolarQuant, MultiThreshold, and quantizer parameters evaluated exactly;
- `constants`: the type of a constant operand (annotated by `fold-quant`, or plain);
- `dense`: MatMul and channels-last Conv, and their accumulators (`windows`: Conv/pool geometry);
- `pooling`: channels-last max and average pools;
- `elementwise`: Add, Sub, Mul, Div, Relu, LeakyRelu, Clip, BatchNormalization, Cast;
- `shapes`: Reshape and its kin, Transpose, Concat, Resize, Pad, Identity;
- `float_parts`: float inputs, constants and outputs in the model's default precision.
`rules` is the table from op key to rule; `analysis` the driver (`infer_types`, and `precision_of`,
the same computed once per IR state: every reader of a compiled model's types goes through it).
"""

from hawqc.ir.precision.analysis import FLOAT32_EXACT_INT, FLOAT64_EXACT_INT, Analysis, infer_types, precision_of
from hawqc.ir.precision.quantizers import (
    QuantParams,
    bipolar_scale,
    is_bipolar_quant,
    quant_params,
    quant_type,
    quantize_constant,
)
from hawqc.ir.precision.result import PrecisionResult

__all__ = [
    "FLOAT32_EXACT_INT",
    "FLOAT64_EXACT_INT",
    "Analysis",
    "PrecisionResult",
    "QuantParams",
    "bipolar_scale",
    "infer_types",
    "is_bipolar_quant",
    "precision_of",
    "quant_params",
    "quant_type",
    "quantize_constant",
]
