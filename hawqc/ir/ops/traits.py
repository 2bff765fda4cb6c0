"""Traits of op types: what a pass, an analysis or a backend may assume about an op without knowing
it, in one table. A reader asks `has_trait(node, Trait.X)` or takes `ops_with(Trait.X)`; nobody
writes a set of op names of their own.

Adding an op means one row here (and one entry in each per-op table that computes it: precision
inference, semantic and hardware mode, the planner).
"""

from __future__ import annotations

import enum

import onnx_ir as ir

from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.ops.keys import OpKey, onnx_op, op_key, qonnx_op


class Trait(enum.Flag):
    # Applies one function per element, with ONNX (numpy) broadcasting of all inputs: relaying out
    # every input alike relays out the result. For QONNX quantizers, input 0 is the data and the
    # others are parameters that broadcast against it.
    ELEMENTWISE = enum.auto()
    # Normalizes along one axis (Softmax and its kin): relaying out moves the axis.
    ALONG_AXIS = enum.auto()
    # Rearranges its input 0, every element kept exactly once (a new shape or order of the same
    # values): Identity, Reshape, Flatten, Squeeze, Unsqueeze, Transpose.
    REARRANGES = enum.auto()
    # Every output element is a copy of some input element (no arithmetic, no new value).
    SELECTS = enum.auto()
    # Its output is input 0 under a new shape, every element in the same (row-major) order:
    # Reshape, Flatten, Squeeze, Unsqueeze (not Identity: the same shape; not Transpose: a new order).
    NEW_SHAPE = enum.auto()
    # Moves values without arithmetic, but may add constants (Pad's border).
    MOVES_DATA = enum.auto()
    # Every output element is an input element or zero (Relu).
    SELECTS_OR_ZERO = enum.auto()
    # In inference, the identity (Dropout).
    INFERENCE_IDENTITY = enum.auto()
    # A standard op whose meaning depends on where the channel axis is (axis 1); it has a
    # channels-last twin in `CHANNELS_LAST_DOMAIN` (qonnx's Conv, MaxPool and BatchNormalization,
    # and hawqc's AveragePool, GlobalAveragePool and GlobalMaxPool), which means the standard op on
    # input 0 transposed to channels-first, its result transposed back.
    CHANNELS_FIRST = enum.auto()
    # The channels-last twin of a CHANNELS_FIRST op.
    CHANNELS_LAST = enum.auto()
    # Its result is new arithmetic (not a value moved, selected or clamped): a float one needs a
    # type of its own.
    ARITHMETIC = enum.auto()
    # Its result is not a function of its inputs, or it holds subgraphs: never evaluated at compile time.
    NEVER_FOLD = enum.auto()
    # A dense or convolution layer with weights (what BOPs count, what BatchNorm folds into).
    LAYER = enum.auto()
    # A QONNX quantizer (`hawqc.ir.ops.quantizer` reads it).
    QUANTIZER = enum.auto()
    # Its output has the shape of input 0, the other inputs being parameters (QONNX's quantizers and
    # MultiThreshold; what onnx's shape inference, which does not know them, is told).
    KEEPS_INPUT_SHAPE = enum.auto()
    # Inputs that differ only in the sign of zeros at input 0 give outputs that differ at most in the
    # sign of zeros (IEEE rounds one real value one way; only an exact zero takes a sign from its
    # operands, and 0 * inf, 0 / 0 give the same NaN for both zeros). `hawqc.ir.ops.zero_sign`.
    CARRIES_ZERO_SIGN = enum.auto()
    # The same at every input (sums, products, concatenations).
    CARRIES_ZERO_SIGN_AT_EVERY_INPUT = enum.auto()


_T = Trait
_Z0 = _T.CARRIES_ZERO_SIGN
_ZN = _T.CARRIES_ZERO_SIGN | _T.CARRIES_ZERO_SIGN_AT_EVERY_INPUT
_REARRANGE = _T.REARRANGES | _T.SELECTS | _T.MOVES_DATA | _Z0

_STANDARD: dict[str, Trait] = {
    **dict.fromkeys(("Identity", "Transpose"), _REARRANGE),
    **dict.fromkeys(("Reshape", "Flatten", "Squeeze", "Unsqueeze"), _REARRANGE | _T.NEW_SHAPE),
    "MaxPool": _T.SELECTS | _T.CHANNELS_FIRST | _Z0,
    "GlobalMaxPool": _T.SELECTS | _T.CHANNELS_FIRST | _Z0,
    "Resize": _T.SELECTS | _T.MOVES_DATA | _Z0,
    "Concat": _T.SELECTS | _ZN,
    "Pad": _T.MOVES_DATA | _Z0,
    "Relu": _T.ELEMENTWISE | _T.SELECTS_OR_ZERO | _Z0,
    "Dropout": _T.ELEMENTWISE | _T.INFERENCE_IDENTITY,
    "Conv": _T.CHANNELS_FIRST | _T.ARITHMETIC | _T.LAYER | _ZN,
    "AveragePool": _T.CHANNELS_FIRST | _T.ARITHMETIC | _Z0,
    "GlobalAveragePool": _T.CHANNELS_FIRST | _T.ARITHMETIC | _Z0,
    "BatchNormalization": _T.CHANNELS_FIRST | _T.ARITHMETIC | _Z0,
    "MatMul": _T.ARITHMETIC | _T.LAYER | _ZN,
    "Gemm": _T.LAYER | _ZN,
    **dict.fromkeys(("Add", "Sub", "Mul"), _T.ELEMENTWISE | _T.ARITHMETIC | _ZN),
    **dict.fromkeys(("Div", "LeakyRelu"), _T.ELEMENTWISE | _T.ARITHMETIC | _Z0),
    **dict.fromkeys(("Sigmoid", "Clip"), _T.ELEMENTWISE | _Z0),
    "Softmax": _T.ALONG_AXIS | _Z0,
    **dict.fromkeys(
        (
            "PRelu", "HardSigmoid", "HardSwish", "Tanh", "Round", "Floor", "Ceil", "Abs",
            "Neg", "Sign", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Elu", "Selu", "Celu", "Softplus",
            "Softsign", "Cast", "Not", "IsNaN", "IsInf", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Equal",
            "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Where", "BitShift",
        ),
        _T.ELEMENTWISE,
    ),  # fmt: skip
    **dict.fromkeys(("LogSoftmax", "Hardmax"), _T.ALONG_AXIS),
    **dict.fromkeys(
        ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan"),
        _T.NEVER_FOLD,
    ),
}
# Identity is also elementwise (one function per element).
_STANDARD["Identity"] |= _T.ELEMENTWISE

_CHANNELS_LAST: dict[str, Trait] = {
    op: (_STANDARD[op] & ~_T.CHANNELS_FIRST) | _T.CHANNELS_LAST for op, t in _STANDARD.items() if t & _T.CHANNELS_FIRST
}

_QONNX: dict[str, Trait] = {
    **dict.fromkeys(("Quant", "IntQuant", "BipolarQuant", "Trunc"), _T.QUANTIZER | _T.ELEMENTWISE | _T.KEEPS_INPUT_SHAPE),
    "MultiThreshold": _T.KEEPS_INPUT_SHAPE,
}

TRAITS: dict[OpKey, Trait] = {
    **{onnx_op(op): t for op, t in _STANDARD.items()},
    **{(CHANNELS_LAST_DOMAIN, op): t for op, t in _CHANNELS_LAST.items()},
    **{qonnx_op(op): t for op, t in _QONNX.items()},
}


def traits_of(node: ir.Node) -> Trait:
    return TRAITS.get(op_key(node), Trait(0))


def has_trait(node: ir.Node, trait: Trait) -> bool:
    """Whether the node's op has every one of the traits in `trait`."""
    return trait in traits_of(node)


def ops_with(trait: Trait, domain: str = "") -> frozenset[str]:
    """The op types of `domain` (canonical: "" for ONNX's) that have every one of the traits."""
    return frozenset(op for (d, op), t in TRAITS.items() if d == domain and trait in t)


def keys_with(trait: Trait) -> frozenset[OpKey]:
    """The (domain, op type) keys of every op that has every one of the traits."""
    return frozenset(key for key, t in TRAITS.items() if trait in t)
