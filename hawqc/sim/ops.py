"""The op table of semantic mode: for each supported op, a builder that turns a node into a kernel.

A builder runs once, when the executor plans the graph: it reads the node's attributes (absent ones
take their ONNX / QONNX defaults), checks them, and precomputes what depends only on constants. The
kernel it returns runs on every `Executor.run` with numpy arrays and does nothing but arithmetic.

Every kernel works on a whole batch at once: dim 0 of a data tensor is the batch. Where ONNX's
meaning of an op depends on the batch size it was exported with (Reshape to a constant shape,
Flatten at axis 0), the builder applies the batch rule described at `_batch_dim0`.

Standard ops repeat onnxruntime's float32 results, which is what qonnx's `execute_onnx` runs them
with; the "Linear algebra" section says where that holds only on quantized data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir.diagnostics import describe
from hawqc.ir.ops.keys import OpKey, channels_last_op, onnx_op, op_key, qonnx_op
from hawqc.ir.ops.quantizer import quantizer
from hawqc.ir.ops.reading import check_input_count
from hawqc.sim import ops_activation, ops_conv, ops_tensor, quant
from hawqc.sim.ops_threshold import build_multithreshold

Kernel = Callable[[Sequence[np.ndarray | None]], tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class NodeSpec:
    """What a builder knows about a node when the executor plans it.

    `constants[i]` is the value of input i if it is known before any run (an initializer, a
    `Constant`, or a node folded from those), else None (a data tensor, or an absent optional input).
    `declared_batch` is dim 0 that the graph declares for its data input (usually 1), or None when
    unknown or when the node is being folded on constants, where no batch is involved.
    """

    node: ir.Node
    constants: tuple[np.ndarray | None, ...]
    declared_batch: int | None


Builder = Callable[[NodeSpec], Kernel]


# ---------------------------------------------------------------------------------------------------
# QONNX quantizers
# ---------------------------------------------------------------------------------------------------


def _quant_bounds(spec: NodeSpec, bitwidth: np.ndarray, signed: int, narrow: int) -> quant.QuantBounds:
    if bitwidth.size != 1:
        raise UnsupportedModelError(
            f"{describe(spec.node)}: the bit width must be a scalar, got shape {list(bitwidth.shape)}"
        )
    return quant.quant_bounds(bitwidth, signed, narrow)


def build_quant(spec: NodeSpec) -> Kernel:
    """`Quant` / `IntQuant` (X, scale, zeropt, bitwidth).

    qonnx 1.0.0 requires `signed` and `narrow`; real exports sometimes omit them, and we then use
    the QONNX spec's defaults (signed=1, narrow=0: the quantizer view's), which qonnx's own code
    would refuse to run.
    """
    check_input_count(spec.node, 4, 4)
    node = spec.node
    view = quantizer(node)
    assert view is not None, "the op table maps only Quant and IntQuant here"
    signed, narrow = int(view.signed), int(view.narrow)
    rounding = quant.rounding_function(view.rounding_mode)
    if rounding is None:
        known = ", ".join(name for name in quant.ROUNDING_MODES if name != "HALF_EVEN")
        raise UnsupportedModelError(
            f"{describe(node)}: unknown rounding_mode '{view.rounding_mode_as_written}' (known: {known})"
        )
    _, scale, zeropt, bitwidth = spec.constants
    if bitwidth is not None:
        bounds = _quant_bounds(spec, bitwidth, signed, narrow)
        if scale is not None and zeropt is not None:
            # The common case: only X changes from run to run.
            def quant_const_params(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
                return (quant.int_quant(args[0], scale, zeropt, bounds, rounding),)

            return quant_const_params

        def quant_const_bitwidth(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            return (quant.int_quant(args[0], args[1], args[2], bounds, rounding),)

        return quant_const_bitwidth

    def quant_any(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        bounds = _quant_bounds(spec, args[3], signed, narrow)
        return (quant.int_quant(args[0], args[1], args[2], bounds, rounding),)

    return quant_any


def build_bipolar_quant(spec: NodeSpec) -> Kernel:
    """`BipolarQuant` (X, scale)."""
    check_input_count(spec.node, 2, 2)

    def bipolar(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (quant.bipolar_quant(args[0], args[1]),)

    return bipolar


# ---------------------------------------------------------------------------------------------------
# Linear algebra
# ---------------------------------------------------------------------------------------------------
# onnxruntime's MLAS kernels and numpy's BLAS sum the K products of a dot product in different
# orders (and MLAS fuses multiply-adds). On quantized data with power-of-two (or dyadic) scales every
# product and partial sum is exact in float32, so the order cannot matter and results are identical.
# On arbitrary float data the two can differ in the last bit. Measured on three_layer_pytorch
# (float Gemms, K = 16..64): at batch <= 100 about half the outputs differ, by at most 6e-8 in
# absolute value; at batch >= 300 numpy (OpenBLAS 0.3.31) and MLAS happened to agree bit for bit. onnxruntime is not
# batch-invariant itself: its outputs at batch 1 differ from its outputs at batch 300 in the same way.


def build_matmul(spec: NodeSpec) -> Kernel:
    """`MatMul` (A, B): numpy's matmul has ONNX's broadcasting rules. The operands are made C-ordered
    (`ops_conv.c_ordered`), so that a result does not depend on how its operands happen to be stored."""
    check_input_count(spec.node, 2, 2)
    const_b = spec.constants[1]
    b_stored = None if const_b is None else ops_conv.c_ordered(const_b)

    def matmul(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        b = b_stored if b_stored is not None else ops_conv.c_ordered(args[1])
        return (np.matmul(ops_conv.c_ordered(args[0]), b),)

    return matmul


def build_gemm(spec: NodeSpec) -> Kernel:
    """`Gemm` (A, B, C?): Y = alpha * A' B' + beta * C, ONNX defaults alpha = beta = 1, no transposes.

    onnxruntime writes fl(beta * C) into Y, then MLAS adds alpha * (A' B') to it with one fused
    multiply-add per element: fl(alpha * acc + fl(beta * C)). With alpha = 1 (every export we have
    seen) that is plain float32 `acc + C`. With another alpha we evaluate the FMA in float64 (alpha *
    acc is exact there) and round once more to float32; measured identical to onnxruntime on 64,000
    float results, where the unfused float32 form differed in 28% of them. (The float64 step can
    differ from a true FMA only by double rounding, about once in 2**29 results.)
    """
    check_input_count(spec.node, 2, 3)
    node = spec.node
    alpha = np.float32(node.attributes.get_float("alpha", 1.0))
    beta = np.float32(node.attributes.get_float("beta", 1.0))
    trans_a = bool(node.attributes.get_int("transA", 0))
    trans_b = bool(node.attributes.get_int("transB", 0))
    const_c = spec.constants[2] if len(spec.constants) > 2 else None
    # beta * C is the same for every run when C is constant: compute it once.
    scaled_c = None if const_c is None else (const_c if beta == 1 else beta * const_c)
    # B' stored C-ordered once when constant: `Gemm(transB=1)` then gives the bits of `MatMul` with
    # the transposed weight stored (what gemm-to-matmul writes).
    const_b = spec.constants[1]
    b_stored = None if const_b is None else ops_conv.c_ordered(const_b.T if trans_b else const_b)

    def gemm(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        a = ops_conv.c_ordered(args[0].T if trans_a else args[0])
        b = b_stored if b_stored is not None else ops_conv.c_ordered(args[1].T if trans_b else args[1])
        acc = np.matmul(a, b)
        c = scaled_c
        if beta == 0:
            c = None
        elif c is None and len(args) > 2 and args[2] is not None:
            c = args[2] if beta == 1 else beta * args[2]
        if c is None:
            return (acc if alpha == 1 else alpha * acc,)
        if alpha == 1:
            return (acc + c,)
        fused = acc.astype(np.float64) * np.float64(alpha) + c.astype(np.float64)
        return (fused.astype(np.result_type(acc, c)),)

    return gemm


# ---------------------------------------------------------------------------------------------------
# Element-wise
# ---------------------------------------------------------------------------------------------------


def _binary(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Builder:
    """Builder of an element-wise binary op with numpy (= ONNX multidirectional) broadcasting."""

    def build(spec: NodeSpec) -> Kernel:
        check_input_count(spec.node, 2, 2)

        def binary(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            return (fn(args[0], args[1]),)

        return binary

    return build


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: true division on floats, division truncated toward zero on integers (as C does)."""
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return (np.abs(a) // np.abs(b)) * (np.sign(a) * np.sign(b))
    return np.divide(a, b)


def build_relu(spec: NodeSpec) -> Kernel:
    """`Relu`: onnxruntime keeps -0.0 and NaN as they are, which `np.maximum(x, 0)` would not."""
    check_input_count(spec.node, 1, 1)

    def relu(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        return (np.where(x < 0, x.dtype.type(0), x),)

    return relu


def build_identity(spec: NodeSpec) -> Kernel:
    check_input_count(spec.node, 1, 1)

    def identity(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (args[0],)

    return identity


# ---------------------------------------------------------------------------------------------------
# Shape
# ---------------------------------------------------------------------------------------------------
# The batch rule. A graph is exported for one batch size B (dim 0 of its input, usually 1) and run
# here on N samples at once; the result must be what N runs of one sample each would give, stacked
# along dim 0. Ops that only map or mix within a sample need nothing. Two need care:
# - Reshape to a constant shape whose dim 0 is B: that dim 0 means "the batch", so when the tensor
#   being reshaped arrives with another dim 0 (N), dim 0 of the target becomes N. A dim 0 of -1 or
#   0 (copy) already follows the batch by ONNX's own rules, and other dims are never touched.
# - Flatten at axis 0 when B is 1: one sample flattens to [1, size], so N samples give [N, size],
#   which is Flatten at axis 1.
# Nodes folded on constants (weights) follow ONNX literally: they carry no batch.


def _batch_dim0(target: np.ndarray, data: np.ndarray, declared_batch: int | None) -> np.ndarray:
    if (
        declared_batch is not None
        and target.size > 0
        and target[0] == declared_batch
        and data.ndim > 0
        and data.shape[0] != declared_batch
    ):
        target = target.copy()
        target[0] = data.shape[0]
    return target


def _reshape_target(spec: NodeSpec, data: np.ndarray, shape: np.ndarray, allowzero: bool) -> list[int]:
    """ONNX Reshape's target: 0 copies the input's dim (unless allowzero), -1 is left to numpy."""
    if shape.ndim != 1:
        raise UserInputError(f"{describe(spec.node)}: the shape input must be 1-D, got {list(shape.shape)}")
    target = _batch_dim0(shape.astype(np.int64), data, spec.declared_batch)
    dims = [int(d) for d in target]
    if not allowzero:
        for i, d in enumerate(dims):
            if d == 0:
                if i >= data.ndim:
                    raise UserInputError(
                        f"{describe(spec.node)}: shape {list(shape)} copies dim {i} of a rank-{data.ndim} input"
                    )
                dims[i] = data.shape[i]
    return dims


def build_reshape(spec: NodeSpec) -> Kernel:
    """`Reshape` (data, shape), attribute allowzero (default 0), with the batch rule above."""
    check_input_count(spec.node, 2, 2)
    allowzero = bool(spec.node.attributes.get_int("allowzero", 0))

    def reshape(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        data, shape = args[0], args[1]
        dims = _reshape_target(spec, data, shape, allowzero)
        try:
            return (data.reshape(dims),)
        except ValueError:
            raise UserInputError(
                f"{describe(spec.node)}: cannot reshape a tensor of shape {list(data.shape)} to {dims}"
            ) from None

    return reshape


def build_flatten(spec: NodeSpec) -> Kernel:
    """`Flatten` (input), attribute axis (default 1, negative counts from the end)."""
    check_input_count(spec.node, 1, 1)
    axis = spec.node.attributes.get_int("axis", 1)
    per_sample_axis0 = axis == 0 and spec.declared_batch == 1

    def flatten(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        a = axis + x.ndim if axis < 0 else axis
        if not 0 <= a <= x.ndim:
            raise UserInputError(f"{describe(spec.node)}: axis {axis} is out of range for rank {x.ndim}")
        if per_sample_axis0 and x.ndim > 0:
            a = 1
        outer = int(np.prod(x.shape[:a], dtype=np.int64))
        inner = int(np.prod(x.shape[a:], dtype=np.int64))
        return (x.reshape(outer, inner),)

    return flatten


# ---------------------------------------------------------------------------------------------------
# Constant
# ---------------------------------------------------------------------------------------------------


def constant_value(node: ir.Node) -> np.ndarray:
    """The value of a `Constant` node (evaluated once, at planning)."""
    attrs = node.attributes
    if "value" in attrs:
        return attrs["value"].as_tensor().numpy()
    if "value_float" in attrs:
        return np.array(attrs["value_float"].as_float(), dtype=np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"].as_floats(), dtype=np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"].as_int(), dtype=np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"].as_ints(), dtype=np.int64)
    raise UnsupportedModelError(f"{describe(node)}: only tensor, float(s) and int(s) values are supported")


def build_constant(spec: NodeSpec) -> Kernel:
    value = constant_value(spec.node)

    def constant(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (value,)

    return constant


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------

OP_TABLE: dict[OpKey, Builder] = {
    qonnx_op("Quant"): build_quant,
    qonnx_op("IntQuant"): build_quant,
    qonnx_op("BipolarQuant"): build_bipolar_quant,
    qonnx_op("MultiThreshold"): build_multithreshold,
    onnx_op("MatMul"): build_matmul,
    onnx_op("Gemm"): build_gemm,
    onnx_op("Add"): _binary(np.add),
    onnx_op("Sub"): _binary(np.subtract),
    onnx_op("Mul"): _binary(np.multiply),
    onnx_op("Div"): _binary(_divide),
    onnx_op("Relu"): build_relu,
    onnx_op("Identity"): build_identity,
    onnx_op("Flatten"): build_flatten,
    onnx_op("Reshape"): build_reshape,
    onnx_op("Constant"): build_constant,
    # Convolutional networks (hawqc.sim.ops_conv, ops_tensor, ops_activation).
    onnx_op("Conv"): ops_conv.build_conv,
    onnx_op("MaxPool"): ops_conv.build_max_pool,
    onnx_op("AveragePool"): ops_conv.build_average_pool,
    onnx_op("GlobalAveragePool"): ops_conv.build_global_average_pool,
    onnx_op("GlobalMaxPool"): ops_conv.build_global_max_pool,
    onnx_op("BatchNormalization"): ops_conv.build_batch_norm,
    channels_last_op("Conv"): ops_conv.build_conv_channels_last,
    channels_last_op("MaxPool"): ops_conv.build_max_pool_channels_last,
    channels_last_op("BatchNormalization"): ops_conv.build_batch_norm_channels_last,
    # hawqc's extensions of qonnx's channels-last domain, by the same rule.
    channels_last_op("AveragePool"): ops_conv.build_average_pool_channels_last,
    channels_last_op("GlobalAveragePool"): ops_conv.build_global_average_pool_channels_last,
    channels_last_op("GlobalMaxPool"): ops_conv.build_global_max_pool_channels_last,
    onnx_op("Concat"): ops_tensor.build_concat,
    onnx_op("Resize"): ops_tensor.build_resize,
    onnx_op("Pad"): ops_tensor.build_pad,
    onnx_op("Transpose"): ops_tensor.build_transpose,
    onnx_op("Squeeze"): ops_tensor.build_squeeze,
    onnx_op("Unsqueeze"): ops_tensor.build_unsqueeze,
    onnx_op("Dropout"): ops_tensor.build_dropout,
    onnx_op("Cast"): ops_tensor.build_cast,
    onnx_op("LeakyRelu"): ops_activation.build_leaky_relu,
    onnx_op("Clip"): ops_activation.build_clip,
    onnx_op("Sigmoid"): ops_activation.build_sigmoid,
    onnx_op("Softmax"): ops_activation.build_softmax,
    onnx_op("Round"): ops_activation.build_round,
    qonnx_op("Trunc"): ops_activation.build_trunc,
}


def builder_for(node: ir.Node) -> Builder:
    """The builder of a node's op, or UnsupportedModelError naming the node."""
    builder = OP_TABLE.get(op_key(node))
    if builder is None:
        supported = ", ".join(sorted({op for _, op in OP_TABLE}))
        raise UnsupportedModelError(
            f"{describe(node)} is not supported by the semantic executor (supported ops: {supported})"
        )
    return builder
