"""Element-wise activations and QONNX Trunc: LeakyRelu, Clip, Sigmoid, Softmax, Round, Trunc.

Measured against onnxruntime 1.31 (which qonnx's `execute_onnx` runs standard ops with):
- LeakyRelu is `x >= 0 ? x : alpha * x` in float32 (so -0.0 stays -0.0), alpha default 0.01;
- Clip is `min(max(x, lo), hi)` with std::max / std::min (ties and NaN keep x; with lo > hi every
  value becomes hi); an absent bound is the lowest / highest FINITE value of the dtype, not an
  infinity: onnxruntime clamps +-inf to +-FLT_MAX even without bounds;
- Round is round-half-to-even (numpy's `round`);
- Sigmoid and Softmax use MLAS's own exponential, which numpy's does not reproduce (a numpy
  formula differed in 20-25% of float32 results, measured). They run through a one-node
  onnxruntime session built once at planning, at the model's opset, so opset < 13 Softmax keeps
  its flatten-to-2-D meaning. onnxruntime computes them row by row, so results do not depend on
  the batch size (measured).
Trunc repeats qonnx 1.0.0's `trunc_v1` / `trunc_v2` operation by operation, in the same dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.quantizer import code_bounds, quantizer
from hawqc.ir.ops.reading import (
    check_input_count,
    refusal,
    standard_opset,
)
from hawqc.sim import quant

if TYPE_CHECKING:  # hawqc.sim.ops imports this module to fill its op table
    from hawqc.sim.ops import Kernel, NodeSpec

# The IR version of the one-node models handed to onnxruntime (1.31 reads up to 10 safely).
ONNXRUNTIME_IR_VERSION = 8


# ---------------------------------------------------------------------------------------------------
# Element-wise arithmetic
# ---------------------------------------------------------------------------------------------------


def leaky_relu(x: np.ndarray, alpha: float) -> np.ndarray:
    return np.where(x >= 0, x, x.dtype.type(alpha) * x)


def clip(x: np.ndarray, low: np.generic, high: np.generic) -> np.ndarray:
    """onnxruntime's Clip: std::min(std::max(x, low), high)."""
    y = np.where(x < low, low, x)
    return np.where(high < y, high, y).astype(x.dtype, copy=False)


def build_leaky_relu(spec: NodeSpec) -> Kernel:
    """`LeakyRelu` (X), attribute alpha (default 0.01)."""
    check_input_count(spec.node, 1, 1)
    alpha = spec.node.attributes.get_float("alpha", 0.01)

    def leaky_relu_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (leaky_relu(args[0], alpha),)

    return leaky_relu_kernel


def _limits(dtype: np.dtype) -> tuple[np.generic, np.generic]:
    info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
    return dtype.type(info.min), dtype.type(info.max)


def build_clip(spec: NodeSpec) -> Kernel:
    """`Clip`: bounds as attributes min / max (opset < 11) or inputs 1, 2 (opset 11+), both optional."""
    node = spec.node
    if standard_opset(node) < 11:
        check_input_count(node, 1, 1)
        given = (node.attributes.get_float("min", None), node.attributes.get_float("max", None))

        def attribute_bounds(args: Sequence[np.ndarray | None]) -> tuple[float | None, float | None]:
            return given

        bounds = attribute_bounds
    else:
        check_input_count(node, 1, 3)

        def input_bounds(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray | None, np.ndarray | None]:
            low = args[1] if len(args) > 1 else None
            high = args[2] if len(args) > 2 else None
            for bound in (low, high):
                if bound is not None and bound.size != 1:
                    raise ValueError(f"a Clip bound must be a scalar, got shape {list(bound.shape)}")
            return low, high

        bounds = input_bounds

    def clip_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        lowest, highest = _limits(x.dtype)
        low, high = bounds(args)
        low = lowest if low is None else x.dtype.type(np.asarray(low).reshape(()))
        high = highest if high is None else x.dtype.type(np.asarray(high).reshape(()))
        return (clip(x, low, high),)

    return clip_kernel


def build_round(spec: NodeSpec) -> Kernel:
    """`Round`: halves to even, as onnxruntime and numpy both do."""
    check_input_count(spec.node, 1, 1)

    def round_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (np.round(args[0]),)

    return round_kernel


# ---------------------------------------------------------------------------------------------------
# Sigmoid, Softmax: onnxruntime itself
# ---------------------------------------------------------------------------------------------------


class _OnnxruntimeNode:
    """One standard node run by an onnxruntime session made once (at planning)."""

    def __init__(self, node: ir.Node, opset: int, dtype: np.dtype) -> None:
        import onnx.helper as oh
        import onnxruntime
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        attributes = {name: attr.value for name, attr in node.attributes.items()}
        elem_type = oh.np_dtype_to_tensor_dtype(dtype)
        graph = oh.make_graph(
            [oh.make_node(node.op_type, ["x"], ["y"], **attributes)],
            "one_node",
            [oh.make_tensor_value_info("x", elem_type, None)],
            [oh.make_tensor_value_info("y", elem_type, None)],
        )
        model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
        model.ir_version = ONNXRUNTIME_IR_VERSION
        try:
            self._session = onnxruntime.InferenceSession(
                model.SerializeToString(), providers=["CPUExecutionProvider"]
            )
        except (
            ort_errors.Fail,
            ort_errors.InvalidGraph,
            ort_errors.InvalidArgument,
            ort_errors.NotImplemented,
        ) as error:
            raise refusal(node, f"onnxruntime cannot run it: {str(error).splitlines()[0]}") from None
        self.dtype = dtype

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"x": np.ascontiguousarray(x, dtype=self.dtype)})[0]


def _input_dtype(node: ir.Node) -> np.dtype:
    value = node.inputs[0]
    if value is None or value.dtype is None:
        return np.dtype(np.float32)
    return value.dtype.numpy()


def build_sigmoid(spec: NodeSpec) -> Kernel:
    """`Sigmoid`, through onnxruntime (see the module docstring)."""
    node = spec.node
    check_input_count(node, 1, 1)
    session = _OnnxruntimeNode(node, standard_opset(node), _input_dtype(node))

    def sigmoid(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        return (session(args[0]),)

    return sigmoid


def build_softmax(spec: NodeSpec) -> Kernel:
    """`Softmax`, through onnxruntime: axis default -1 (opset 13+) or 1 with the old meaning
    (the input flattened to 2-D at the axis, normalized over the second dim)."""
    node = spec.node
    check_input_count(node, 1, 1)
    opset = standard_opset(node)
    axis = node.attributes.get_int("axis", -1 if opset >= 13 else 1)
    session = _OnnxruntimeNode(node, opset, _input_dtype(node))
    declared = spec.declared_batch

    def softmax(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x = args[0]
        if not -x.ndim <= axis < max(x.ndim, 1):
            raise ValueError(f"axis {axis} is out of range for rank {x.ndim}")
        if declared is not None and x.ndim > 0 and axis % x.ndim == 0 and x.shape[0] != declared:
            raise ValueError(
                f"it normalizes over dim 0 (the batch), so it only runs at the declared batch size "
                f"({declared}), not {x.shape[0]}"
            )
        return (session(x),)

    return softmax


# ---------------------------------------------------------------------------------------------------
# QONNX Trunc
# ---------------------------------------------------------------------------------------------------


def trunc_v1(
    x: np.ndarray,
    scale: np.ndarray,
    zeropt: np.ndarray,
    in_bit_width: np.ndarray,
    out_bit_width: np.ndarray,
    rounding: quant.RoundingFn,
) -> np.ndarray:
    """qonnx 1.0.0 `trunc_v1`: round to the input grid, drop `in - out` low bits, rescale."""
    y = x / scale
    y = y + zeropt
    y = np.round(y)
    y = y / (2.0 ** (in_bit_width - out_bit_width))
    y = rounding(y)
    y = y - zeropt
    return y * scale


def trunc_v2(
    x: np.ndarray,
    scale: np.ndarray,
    zeropt: np.ndarray,
    out_scale: np.ndarray,
    out_bit_width: np.ndarray,
    signed: int,
    narrow: int,
    rounding: quant.RoundingFn,
) -> np.ndarray:
    """qonnx 1.0.0 `trunc_v2`: round to the input grid, divide by the power of two nearest to
    out_scale / scale, clamp to the output bit width, round, rescale to out_scale."""
    y = x / scale
    y = y + zeropt
    y = np.round(y)
    trunc_scale = 2 ** np.round(np.log2(out_scale / scale))
    y = y / trunc_scale
    # qonnx's min_int / max_int on the bit-width tensor, in its dtype (no bipolar case here).
    low, high = code_bounds(out_bit_width, bool(signed), bool(narrow))
    y = np.where(y > high, high.astype(y.dtype), y)
    y = np.where(y < low, low.astype(y.dtype), y)
    y = rounding(y)
    y = y - zeropt / trunc_scale
    return y * out_scale


def build_trunc(spec: NodeSpec) -> Kernel:
    """QONNX `Trunc`: v1 (X, scale, zeropt, in_bitwidth, out_bitwidth) when its domain is imported
    at version 1 (or not at all), v2 (X, scale, zeropt, in_bitwidth, out_scale, out_bitwidth,
    attributes signed / narrow) from version 2, as qonnx picks them (the quantizer view's
    `layout`). rounding_mode defaults to FLOOR (qonnx's spec; its code requires the attribute)."""
    node = spec.node
    view = quantizer(node)
    assert view is not None, "the op table maps only Trunc here"
    check_input_count(node, view.expected_inputs, view.expected_inputs)
    rounding = quant.rounding_function(view.rounding_mode)
    if rounding is None:
        raise refusal(node, f"unknown rounding_mode '{view.rounding_mode_as_written}' (known: {', '.join(quant.ROUNDING_MODES)})")
    signed, narrow = int(view.signed), int(view.narrow)

    if view.layout == "Trunc v2":

        def trunc_v2_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
            x, scale, zeropt, _, out_scale, out_bit_width = args
            return (trunc_v2(x, scale, zeropt, out_scale, out_bit_width, signed, narrow, rounding),)

        return trunc_v2_kernel

    def trunc_v1_kernel(args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
        x, scale, zeropt, in_bit_width, out_bit_width = args
        return (trunc_v1(x, scale, zeropt, in_bit_width, out_bit_width, rounding),)

    return trunc_v1_kernel
