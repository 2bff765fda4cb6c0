"""integer-requant's rule per op (`op_key`): what each op does to a value taken to integers."""

from __future__ import annotations

from hawqc.ir.ops.keys import onnx_op
from hawqc.ir.ops.quantizer import BIPOLAR_QUANTIZER, INTEGER_QUANTIZERS, TRUNC
from hawqc.passes.integer_requant.rules_arithmetic import batch_normalization, relu, rescale
from hawqc.passes.integer_requant.rules_dense import conv, gemm, matmul
from hawqc.passes.integer_requant.rules_moves import average_pool, cast, concat, identity, move, pool_max
from hawqc.passes.integer_requant.rules_quantizers import quant, trunc

RULES = {
    **{key: quant for key in INTEGER_QUANTIZERS},
    onnx_op("Mul"): rescale,
    onnx_op("Div"): rescale,
    onnx_op("Add"): rescale,
    onnx_op("Sub"): rescale,
    onnx_op("BatchNormalization"): batch_normalization,
    onnx_op("Relu"): relu,
    onnx_op("MatMul"): matmul,
    onnx_op("Gemm"): gemm,
    onnx_op("Conv"): conv,
    onnx_op("MaxPool"): pool_max,
    onnx_op("AveragePool"): average_pool,
    onnx_op("GlobalAveragePool"): average_pool,
    TRUNC: trunc,
    BIPOLAR_QUANTIZER: quant,
    onnx_op("GlobalMaxPool"): pool_max,
    onnx_op("Reshape"): move,
    onnx_op("Flatten"): move,
    onnx_op("Transpose"): move,
    onnx_op("Squeeze"): move,
    onnx_op("Unsqueeze"): move,
    onnx_op("Concat"): concat,
    onnx_op("Identity"): identity,
    onnx_op("Cast"): cast,
    onnx_op("Dropout"): identity,
}
