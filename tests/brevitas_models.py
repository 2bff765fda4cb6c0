"""The Brevitas exports of tests/data/brevitas/: which file covers which Brevitas feature.

The files are written by `tests/data/brevitas/make_models.py` with Brevitas's own exporter
(`brevitas.export.export_qonnx`); its README says which versions. Tests pick models from
`BREVITAS_MODELS` by feature (`with_feature("QuantCat")`) instead of naming files, so that a model
added for a new feature reaches every test that asks for that feature.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BREVITAS_DATA = Path(__file__).resolve().parent / "data" / "brevitas"

# The features issue 14 asks the Brevitas models to cover; every one is in at least one file
# (tests/test_brevitas_models.py checks it).
# Quantizers, as Brevitas names them.
INT8_WEIGHT_PER_TENSOR = "Int8WeightPerTensorFloat"
INT8_WEIGHT_PER_CHANNEL = "Int8WeightPerChannelFloat"
INT8_ACT = "Int8ActPerTensorFloat"
UINT8_ACT = "Uint8ActPerTensorFloat"
BINARY = "binary (SignedBinary*PerTensorConst, float scale)"
TERNARY = "ternary (SignedTernary*PerTensorConst, float scale)"
INT32_BIAS = "Int32Bias"
# Layers.
QUANT_IDENTITY_INPUT = "QuantIdentity input"
QUANT_RELU = "QuantReLU"
QUANT_HARDTANH = "QuantHardTanh"
QUANT_LINEAR = "QuantLinear"
QUANT_CONV2D = "QuantConv2d"
FLOAT_BIAS = "float bias"
NO_BIAS = "no bias"
BATCHNORM1D = "BatchNorm1d"
BATCHNORM2D = "BatchNorm2d"
TRUNC_AVG_POOL = "TruncAvgPool2d (Trunc)"
QUANT_ELTWISE_ADD = "QuantEltwiseAdd"
QUANT_CAT = "QuantCat"
# Bit widths other than 8 (8 is everywhere).
BITS_2 = "2-bit"
BITS_3 = "3-bit"
BITS_4 = "4-bit"
# How the file was written.
DYNAMO_EXPORT = "torch.export exporter (export_qonnx default on PyTorch >= 2.9)"
TORCHSCRIPT_EXPORT = "TorchScript exporter (export_qonnx(..., dynamo=False))"
QONNX_CLEANUP = "qonnx cleanup_model after the export"
RAW_EXPORT = "export_qonnx's file as written, no cleanup"

ISSUE_14_FEATURES = frozenset({
    INT8_WEIGHT_PER_TENSOR, INT8_WEIGHT_PER_CHANNEL, INT8_ACT, UINT8_ACT, BINARY, TERNARY, INT32_BIAS,
    QUANT_IDENTITY_INPUT, QUANT_RELU, QUANT_HARDTANH, QUANT_LINEAR, QUANT_CONV2D, FLOAT_BIAS, NO_BIAS,
    BATCHNORM2D, TRUNC_AVG_POOL, QUANT_ELTWISE_ADD, QUANT_CAT, BITS_2, BITS_4, QONNX_CLEANUP, RAW_EXPORT,
})


@dataclass(frozen=True)
class BrevitasModel:
    """One exported file and what it covers."""

    name: str
    features: frozenset[str]
    # True where the graph output is a quantizer's (codes times a scale), False where it is a float
    # layer's (a QuantLinear without an output quantizer: accumulator times scales plus a float bias).
    quantized_output: bool

    @property
    def path(self) -> Path:
        return BREVITAS_DATA / f"{self.name}.onnx"

    @property
    def is_cnn(self) -> bool:
        return QUANT_CONV2D in self.features


def _model(name: str, *features: str, quantized_output: bool = True) -> BrevitasModel:
    return BrevitasModel(name, frozenset(features), quantized_output)


_MLP_DEFAULTS = (QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_LINEAR, INT8_WEIGHT_PER_TENSOR, FLOAT_BIAS, NO_BIAS, QUANT_RELU, UINT8_ACT)

BREVITAS_MODELS: tuple[BrevitasModel, ...] = (
    _model("mlp_int8_defaults", *_MLP_DEFAULTS, DYNAMO_EXPORT, RAW_EXPORT),
    _model("mlp_int8_defaults_cleanup", *_MLP_DEFAULTS, DYNAMO_EXPORT, QONNX_CLEANUP),
    _model("mlp_int8_defaults_torchscript", *_MLP_DEFAULTS, TORCHSCRIPT_EXPORT, RAW_EXPORT),
    _model(
        "mlp_w4a4_per_channel_int32bias", QUANT_IDENTITY_INPUT, INT8_ACT, UINT8_ACT, QUANT_LINEAR,
        INT8_WEIGHT_PER_CHANNEL, INT32_BIAS, QUANT_RELU, BITS_4, BITS_3, DYNAMO_EXPORT, QONNX_CLEANUP,
    ),
    _model(
        "mlp_w2a2_hardtanh", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_LINEAR, INT8_WEIGHT_PER_TENSOR, NO_BIAS,
        QUANT_HARDTANH, BITS_2, BITS_4, DYNAMO_EXPORT, QONNX_CLEANUP,
    ),
    _model(
        "mlp_binary_bn", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_LINEAR, BINARY, NO_BIAS, BATCHNORM1D,
        DYNAMO_EXPORT, QONNX_CLEANUP,
    ),
    _model("mlp_ternary", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_LINEAR, TERNARY, FLOAT_BIAS, NO_BIAS, DYNAMO_EXPORT, RAW_EXPORT),
    _model(
        "cnn_conv_bn", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_CONV2D, INT8_WEIGHT_PER_CHANNEL, NO_BIAS, BATCHNORM2D,
        QUANT_RELU, UINT8_ACT, QUANT_LINEAR, INT8_WEIGHT_PER_TENSOR, FLOAT_BIAS, DYNAMO_EXPORT, QONNX_CLEANUP,
        quantized_output=False,
    ),
    _model(
        "cnn_trunc_avgpool", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_CONV2D, INT8_WEIGHT_PER_TENSOR, FLOAT_BIAS,
        INT32_BIAS, QUANT_RELU, UINT8_ACT, BITS_4, TRUNC_AVG_POOL, QUANT_LINEAR, NO_BIAS, DYNAMO_EXPORT,
        QONNX_CLEANUP, quantized_output=False,
    ),
    _model(
        "cnn_residual_add", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_CONV2D, INT8_WEIGHT_PER_TENSOR, FLOAT_BIAS,
        QUANT_RELU, UINT8_ACT, QUANT_ELTWISE_ADD, QUANT_LINEAR, DYNAMO_EXPORT, QONNX_CLEANUP,
        quantized_output=False,
    ),
    _model(
        "cnn_cat", QUANT_IDENTITY_INPUT, INT8_ACT, QUANT_CONV2D, INT8_WEIGHT_PER_TENSOR, FLOAT_BIAS, NO_BIAS,
        QUANT_RELU, UINT8_ACT, QUANT_CAT, QUANT_LINEAR, DYNAMO_EXPORT, RAW_EXPORT, quantized_output=False,
    ),
)


def with_feature(feature: str) -> list[BrevitasModel]:
    """The models that cover `feature` (one of the names above)."""
    return [model for model in BREVITAS_MODELS if feature in model.features]
