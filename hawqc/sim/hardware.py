"""Hardware mode: the graph computed with the fixed-point types that precision inference chose.

What the generated C++ computes, exactly (hawqc's exactness contract: C simulation == hardware mode):
- every value is a fixed-point number of its type in `hawqc.ir.precision.infer_types`. Those types
  are wide enough by construction (intervals from the actual weights), so sums, products and data
  movement are plain exact arithmetic; they are computed in float64, which is exact while every
  type (and every accumulator) is at most 53 bits wide, and in numpy's `longdouble` when some type
  is wider and the platform's long double holds it (x86-64: 64-bit significand; e.g. HAWQ's
  double requantization of a 26-bit accumulator by a 31-bit factor needs 57 bits). A graph wider
  than that is refused (`work_dtype`), never computed approximately;
- a value produced by a QONNX `Quant` is cast into that Quant's `FixedType` the way ap_fixed /
  ac_fixed assignment does it: one rounding (`round_codes`, every ap_fixed quantization mode), then
  saturation (`saturate_codes`, every overflow mode). The graph input is converted by its Quant
  exactly so, as the C bridge converts a float into the input type;
- float constants (Mul's k, BatchNorm's scale and offset, LeakyRelu's alpha, Clip's bounds) are
  the exact dyadic numbers their float32 values are;
- an average over a window whose size is not a power of two is hls4ml's: the window sum in the
  accumulator type, divided by the size with the quotient truncated toward zero at the
  accumulator's LSB (`nnet_pooling.h`, `avg`; see `hawqc.ir.precision`). With power-of-two sizes
  the accumulator's LSB makes that division exact.
- a binary quantizer (`BipolarQuant`, 1-bit signed `Quant`) compares with 0 (`x >= 0 ? +s : -s`);
  a `MultiThreshold` counts the float32 thresholds the exact value reaches, then applies its
  (exact, dyadic) `out_scale` and `out_bias`, which is what hls4ml's threshold layers compute;
- float parts (`hawqc.ir.default_precision`): float weights and biases are the values precision
  inference rounded into the default precision, an unquantized input and every float activation
  it lists are cast into that type (`with_float_parts`, `cast_float_input`);
- fixed point has no negative zero: results are normalized to +0.0;
- `Cast` between float types means nothing in fixed point: the value passes unchanged (where a
  float32 Cast rounds in semantic mode, precision inference says so in `float_inexact`).

Constants (weights, quantized biases) are the same in both modes: the executor folds them with
semantic mode's QONNX arithmetic, which is what precision inference evaluates too.

The numeric kernels are the dtype-generic ones of semantic mode (`hawqc.sim.ops_conv`,
`hawqc.sim.ops_tensor`); the pure data-movement ops reuse semantic mode's builders unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.op_arithmetic import cast_target
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import OpKey, channels_last_op, onnx_op, op_key, qonnx_op
from hawqc.ir.ops.quantizer import BIPOLAR_QUANTIZER, INTEGER_QUANTIZERS, Quantizer, quantizer
from hawqc.ir.ops.traits import Trait, ops_with
from hawqc.ir.ops.window import Windows
from hawqc.ir.precision import PrecisionResult
from hawqc.ir.qtypes import FixedType
from hawqc.sim import ops, ops_conv, ops_threshold

# float64 holds every integer up to 2**53 exactly; numpy's longdouble up to 2**(nmant + 1), which
# is 2**64 on x86-64 (80-bit extended), 2**113 on aarch64 Linux (quad) and 2**53 where long double
# is double (then nothing wider than float64 runs).
FLOAT64_EXACT_BITS = 53
LONGDOUBLE_EXACT_BITS = np.finfo(np.longdouble).nmant + 1

HardwareBuilder = Callable[[ops.NodeSpec, PrecisionResult], ops.Kernel]


# ---------------------------------------------------------------------------------------------------
# Casting into a fixed-point type
# ---------------------------------------------------------------------------------------------------


def round_codes(codes: np.ndarray, mode: str) -> np.ndarray:
    """Round real codes (value / LSB, exact float64) to integers the way ap_fixed's quantization
    mode `mode` does (ac_fixed's modes of the same names agree).

    `x + 0.5` is exact in float64 while |x| < 2**52 (longdouble: 2**63 on x86-64); beyond, every
    such float is an integer already and is kept as it is (only an unquantized input far outside
    any type's range gets there).
    """
    if mode == "TRN":  # toward -inf
        return np.floor(codes)
    if mode == "TRN_ZERO":  # toward zero
        return np.trunc(codes)
    if mode == "RND_CONV":  # ties to even: rint is IEEE round-half-even, exact
        return np.rint(codes)
    magnitude = np.abs(codes)
    if mode == "RND":  # ties toward +inf
        rounded = np.floor(codes + 0.5)
    elif mode == "RND_MIN_INF":  # ties toward -inf
        rounded = np.ceil(codes - 0.5)
    elif mode == "RND_INF":  # ties away from zero
        rounded = np.copysign(np.floor(magnitude + 0.5), codes)
    elif mode == "RND_ZERO":  # ties toward zero
        rounded = np.copysign(np.ceil(magnitude - 0.5), codes)
    else:
        raise ValueError(f"unknown rounding mode {mode!r}")
    return np.where(magnitude < 2.0 ** np.finfo(codes.dtype).nmant, rounded, codes)


def saturate_codes(codes: np.ndarray, fixed: FixedType) -> np.ndarray:
    """Bring integer codes into the type's range the way its overflow mode does."""
    # Through the array's own float type: float() would round a bound wider than 53 bits.
    low, high = codes.dtype.type(fixed.min_int), codes.dtype.type(fixed.max_int)
    if fixed.saturation in ("SAT", "SAT_SYM"):  # FixedType.min_int gives up -2**(w-1) for SAT_SYM
        return np.clip(codes, low, high)
    if fixed.saturation == "SAT_ZERO":
        return np.where((codes < low) | (codes > high), 0.0, codes)
    if fixed.saturation == "WRAP":
        base = -(2.0 ** (fixed.width - 1)) if fixed.signed else 0.0
        return np.mod(codes - base, 2.0**fixed.width) + base
    raise ValueError(f"unknown saturation mode {fixed.saturation!r}")


def _exact_float(x: np.ndarray) -> np.ndarray:
    """`x` as float64, or as it is if it is already longdouble (the wide path)."""
    x = np.asarray(x)
    return x if x.dtype == np.longdouble else x.astype(np.float64)


def cast(x: np.ndarray, fixed: FixedType) -> np.ndarray:
    """Assign `x` (float64 or longdouble, any values) to a variable of type `fixed`: round, then
    saturate."""
    codes = np.ldexp(_exact_float(x), -fixed.lsb_exponent)
    codes = saturate_codes(round_codes(codes, fixed.rounding), fixed)
    return np.ldexp(codes, fixed.lsb_exponent) + 0.0


def work_dtype(precision: PrecisionResult, names: set[str]) -> np.dtype:
    """The float type that computes the values `names` exactly: float64 while every type and
    accumulator is at most 53 bits wide, else longdouble if it is wide enough here, else a refusal
    naming the widest value."""
    widest, where = 0, ""
    for kind, table in (("type", precision.types), ("accumulator", precision.accumulators)):
        for name in sorted(names & table.keys()):
            fixed = table[name]
            if fixed.width > widest:
                widest, where = fixed.width, f"value '{name}' has {kind} {fixed} ({fixed.width} bits)"
    if widest <= FLOAT64_EXACT_BITS:
        return np.dtype(np.float64)
    if widest <= LONGDOUBLE_EXACT_BITS:
        return np.dtype(np.longdouble)
    raise UnsupportedModelError(
        f"hardware mode: {where}; this platform computes exactly only up to "
        f"{max(FLOAT64_EXACT_BITS, LONGDOUBLE_EXACT_BITS)} bits (numpy's longdouble)"
    )


# ---------------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------------


def _float64(array: np.ndarray | None) -> np.ndarray | None:
    if array is None or not np.issubdtype(array.dtype, np.floating):
        return array
    return array.astype(np.float64)


def _constant(spec: ops.NodeSpec, index: int) -> np.ndarray | None:
    return _float64(spec.constants[index]) if index < len(spec.constants) else None


def _elementwise(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> HardwareBuilder:
    def build(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
        a_const, b_const = _constant(spec, 0), _constant(spec, 1)

        def binary(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            a = a_const if a_const is not None else args[0]
            b = b_const if b_const is not None else args[1]
            return (fn(a, b) + 0.0,)

        return binary

    return build


def build_quant(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    fixed = precision.types[spec.node.outputs[0].name]

    def quant(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (cast(args[0], fixed),)

    return quant


def build_bipolar_quant(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    """BipolarQuant, or qonnx's 1-bit signed Quant: `+s` where x >= 0, else `-s` (precision
    inference has checked the scale: one positive number; and the zero point: 0). A NaN input is
    -s, as in semantic mode."""
    scale = np.float64(_quantizer(spec.node).scale.reshape(-1)[0])  # type: ignore[union-attr]

    def bipolar(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        return (np.where(x >= 0, scale, -scale).astype(_exact_float(x).dtype),)

    return bipolar


def build_quantizer(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    """Quant / IntQuant: a cast into the inferred type, except qonnx's 1-bit signed (bipolar) case."""
    if _quantizer(spec.node).is_bipolar:
        return build_bipolar_quant(spec, precision)
    return build_quant(spec, precision)


def _quantizer(node: ir.Node) -> Quantizer:
    view = quantizer(node)
    assert view is not None, "the hardware table maps only quantizers to quantizer builders"
    return view


def build_multithreshold(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    """`out_scale * count + out_bias` on the exact value (`ops_threshold.multithreshold` in the
    working float type: the count and the attributes are exact there, and so are the comparisons
    of exact values with the float32 thresholds)."""
    node = spec.node
    thresholds = spec.constants[1] if len(spec.constants) > 1 else None
    if thresholds is None:
        raise UnsupportedModelError(f"{describe(node)}: the thresholds must be a constant")
    out_scale = np.float64(np.float32(node.attributes.get_float("out_scale", 1.0)))
    out_bias = np.float64(np.float32(node.attributes.get_float("out_bias", 0.0)))
    data_layout = node.attributes.get_string("data_layout", "")

    def multithreshold(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = _exact_float(args[0])
        axis = ops_threshold.channel_axis_of(data_layout, x.ndim)
        counts = ops_threshold.multithreshold(x, thresholds.astype(x.dtype), 1.0, 0.0, axis)
        return (counts * x.dtype.type(out_scale) + x.dtype.type(out_bias) + 0.0,)

    return multithreshold


def build_matmul(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    weights = _constant(spec, 1)

    def matmul(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (np.matmul(args[0], weights) + 0.0,)

    return matmul


def build_conv(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    weights, bias = _constant(spec, 1), _constant(spec, 2)
    windows = Windows.read(spec.node, weights.shape[1:-1])

    def conv(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        y = ops_conv.conv_channels_last(
            x, weights, bias, strides=windows.strides, pads=windows.pads_for(x.shape[1:-1]),
            dilations=windows.dilations, group=windows.group,
        )  # fmt: skip
        return (y + 0.0,)

    return conv


def _pool_windows(node: ir.Node) -> tuple[Windows, tuple[int, ...]]:
    """A pool's window attributes and its kernel (required)."""
    windows = Windows.read(node)
    if windows.kernel is None:
        raise UnsupportedModelError(f"{describe(node)}: missing attribute 'kernel_shape'")
    return windows, windows.kernel


def build_max_pool(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    node = spec.node
    if node.op_type == "GlobalMaxPool":

        def global_max_pool(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            x = args[0]
            return (ops_conv.max_pool_channels_last(x, kernel=x.shape[1:-1]),)

        return global_max_pool
    windows, kernel = _pool_windows(node)

    def max_pool(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        y = ops_conv.max_pool_channels_last(
            x, kernel=kernel, strides=windows.strides, pads=windows.pads_for(x.shape[1:-1]),
            dilations=windows.dilations, ceil_mode=windows.ceil_mode,
        )  # fmt: skip
        return (y,)

    return max_pool


def divide_truncating(sums: np.ndarray, counts: np.ndarray, lsb_exponent: int) -> np.ndarray:
    """hls4ml's average: the window sums (codes at 2**lsb_exponent, exact) divided by the window
    sizes, the quotient truncated toward zero at the same LSB (ap_fixed `/`: an integer sdiv)."""
    codes = np.ldexp(sums, -lsb_exponent).astype(np.int64)
    sizes = np.broadcast_to(counts, codes.shape).astype(np.int64)
    quotient = np.sign(codes) * (np.abs(codes) // sizes)
    return np.ldexp(quotient.astype(_exact_float(sums).dtype), lsb_exponent) + 0.0


def build_average_pool(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    node = spec.node
    lsb = precision.accumulators[node.outputs[0].name].lsb_exponent
    if node.op_type == "GlobalAveragePool":

        def global_average_pool(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            x = args[0]
            sums, counts = ops_conv.sum_pool_channels_last(x, kernel=x.shape[1:-1])
            return (divide_truncating(sums, counts, lsb),)

        return global_average_pool
    windows, kernel = _pool_windows(node)

    def average_pool(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        sums, counts = ops_conv.sum_pool_channels_last(
            x, kernel=kernel, strides=windows.strides, pads=windows.pads_for(x.shape[1:-1]),
            ceil_mode=windows.ceil_mode, count_include_pad=windows.count_include_pad, dilations=windows.dilations,
        )  # fmt: skip
        return (divide_truncating(sums, counts, lsb),)

    return average_pool


def build_batch_norm(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    """Unfused BatchNormalization: `x * a + b` with semantic mode's float32 a and b, exactly."""
    view = batch_norm(spec.node)
    assert view is not None, "the hardware table maps only BatchNormalization here"
    a, b = view.coefficients(tuple(spec.constants[1:5]))  # type: ignore[misc]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)

    def batch_normalization(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (ops_conv.batch_norm(args[0], a64, b64, channel_axis=-1) + 0.0,)

    return batch_normalization


def build_relu(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    def relu(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        return (np.where(x > 0, x, 0.0),)

    return relu


def build_leaky_relu(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    attr = spec.node.attributes.get("alpha")
    alpha = np.float64(np.float32(0.01 if attr is None else attr.as_float()))

    def leaky_relu(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        return (np.where(x < 0, x * alpha, x) + 0.0,)

    return leaky_relu


def build_clip(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    node = spec.node
    limits = []
    for index, name, default in ((1, "min", -np.inf), (2, "max", np.inf)):
        value = _constant(spec, index)
        if value is not None:
            limits.append(np.float64(value.reshape(())))
        elif name in node.attributes:
            limits.append(np.float64(np.float32(node.attributes[name].as_float())))
        else:
            limits.append(np.float64(default))
    low, high = limits

    def clip(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (np.minimum(np.maximum(args[0], low), high) + 0.0,)

    return clip


def build_concat(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    axis = spec.node.attributes.get_int("axis")
    constants = [_float64(c) for c in spec.constants]

    def concat(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        parts = [c if c is not None else a for c, a in zip(constants, args)]
        return (np.concatenate(parts, axis=axis),)

    return concat


def build_cast(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    """A float Cast: the exact value passes unchanged (see the module docstring)."""
    cast_target(spec.node)  # the same refusal of non-float targets as semantic mode

    def cast_unchanged(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (args[0],)

    return cast_unchanged


def _semantic(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
    """Pure data movement (and Resize / Pad): semantic mode's kernels are dtype-generic."""
    return ops.builder_for(spec.node)(spec)


# Ops whose semantic kernels only move values (Resize nearest and Pad copy values or insert the pad
# constant): dtype-generic, so exact on float64 as they are.
DATA_MOVEMENT_OPS = ops_with(Trait.MOVES_DATA)

HARDWARE_TABLE: dict[OpKey, HardwareBuilder] = {
    **dict.fromkeys(INTEGER_QUANTIZERS, build_quantizer),
    BIPOLAR_QUANTIZER: build_bipolar_quant,
    qonnx_op("MultiThreshold"): build_multithreshold,
    onnx_op("MatMul"): build_matmul,
    onnx_op("Add"): _elementwise(np.add),
    onnx_op("Sub"): _elementwise(np.subtract),
    onnx_op("Mul"): _elementwise(np.multiply),
    # Division by a power of two (precision inference refuses any other divisor) is exact.
    onnx_op("Div"): _elementwise(np.divide),
    onnx_op("Relu"): build_relu,
    onnx_op("LeakyRelu"): build_leaky_relu,
    onnx_op("Clip"): build_clip,
    onnx_op("Concat"): build_concat,
    onnx_op("Cast"): build_cast,
    **{onnx_op(op): _semantic for op in sorted(DATA_MOVEMENT_OPS)},
    channels_last_op("Conv"): build_conv,
    channels_last_op("MaxPool"): build_max_pool,
    channels_last_op("GlobalMaxPool"): build_max_pool,
    channels_last_op("AveragePool"): build_average_pool,
    channels_last_op("GlobalAveragePool"): build_average_pool,
    channels_last_op("BatchNormalization"): build_batch_norm,
}


def with_float_parts(builder: HardwareBuilder) -> HardwareBuilder:
    """`builder` computing with the rounded float weights and casting the float activations of
    precision inference's `float_parts` (unchanged when the model has none)."""

    def build(spec: ops.NodeSpec, precision: PrecisionResult) -> ops.Kernel:
        parts = precision.float_parts
        if parts is None:
            return builder(spec, precision)
        inputs = spec.node.inputs
        constants = tuple(
            precision.constants[v.name] if v is not None and v.name in parts.constants else known
            for v, known in zip(inputs, spec.constants)
        )
        kernel = builder(dataclasses.replace(spec, constants=constants), precision)
        casts = [precision.types[v.name] if v is not None and v.name in parts.casts else None for v in spec.node.outputs]
        if not any(casts):
            return kernel

        def cast_outputs(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            return tuple(r if f is None else cast(r, f) for r, f in zip(kernel(args), casts))

        return cast_outputs

    return build


def cast_float_input(precision: PrecisionResult, name: str, array: np.ndarray) -> np.ndarray:
    """An unquantized graph input as the C bridge converts it into the default precision."""
    parts = precision.float_parts
    if parts is None or name not in parts.inputs:
        return array
    return cast(array, precision.types[name])


def builder_for(node: ir.Node) -> HardwareBuilder:
    """The hardware builder of a node's op, or UnsupportedModelError naming the node."""
    builder = HARDWARE_TABLE.get(op_key(node))
    if builder is None:
        raise UnsupportedModelError(f"{describe(node)} has no hardware-mode rule")
    return with_float_parts(builder)
