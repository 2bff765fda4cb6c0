"""Binary and ternary layers for the hls4ml lowering: thresholds, XNOR-popcount, conditional negation.

What hls4ml 1.3.0 computes (read from `templates/*/nnet_utils/nnet_mult.h`, `nnet_batchnorm.h`,
`nnet_dense_latency.h`, `backends/fpga/fpga_backend.py` and `fpga_layers.py`), and how the QONNX
meaning is mapped onto it exactly:

- **Thresholds** (`BatchNormalizationQuantizedTanh`, `normalize_binary_tanh`: `res = data >= t ? 1 : 0`
  into `ap_uint<1>`; `normalize_ternary_tanh`: `data > hi ? 1 : data <= lo ? -1 : 0` into `ap_int<2>`;
  the thresholds are stored in the input's type, per channel `ii % n_filt`). A QONNX
  `MultiThreshold` whose levels are `{-k, +k}` (one threshold) or `{-k, 0, +k}` (two), a
  `BipolarQuant` of an activation (threshold 0) and qonnx's 1-bit signed Quant become one. hls4ml
  derives its thresholds from a BatchNorm's scale and bias and floors them to the input's LSB
  (`set_thresholds`); `x >= t` on a grid of LSB q is `x >= ceil(t / q) * q`, so that floor would
  be wrong for a threshold between grid points. The planner computes the grid thresholds itself
  (ceil, and `- q` for the strict `>` and the `<=` of the ternary kernel) and hands them to the
  layer as ready weights. A threshold beyond the input's range (+-inf included: a BN with a zero
  scale) cannot be stored in the input's type: the input is first widened by an exact linear layer.
- **Encoding.** hls4ml's binary type is one bit where 0 MEANS -1 (`XnorPrecisionType`). A binary
  activation is produced in it only when every reader (through reshapes) is a Dense layer, the
  one kernel that gains from it; for any other reader the same threshold layer writes `ap_int<2>`
  codes -1/+1 (the ternary kernel with hi == lo), which are the numbers themselves. Levels `+-k`
  with k != 1 are kept as codes: the Dense or Conv that reads them multiplies its weights by k
  (exact: it only moves the binary point of dyadic weights); any other reader gets the numbers
  from a BatchNormalization with scale k after the threshold layer.
- **Products** (`product_type` picks them from the type classes): binary data and binary weights ->
  `both_binary`, `a == w` summed into `accum_t`, then `cast`: `2 * acc - n_in` into
  `ap_int<ceillog2(n_in) + 2>`. The bias is added to `acc` BEFORE that doubling, so the planner
  stores half the bias (exact), and uses XNOR only when the bias is an integer and `|bias| + n_in`
  fits that ap_int; otherwise the same weights go in as fixed point and the kernel is `data_binary`.
  Binary data and other weights -> `data_binary` (`a == 0 ? -w : w`), binary (+-1) weights ->
  `weight_binary` (`w == 0 ? -a : a`), ternary ({-1, 0, 1}) weights in `ap_int<2>` ->
  `weight_ternary`. Every one of them is exact; `cast`'s doubling also applies to any `ap_uint<1>`
  data with `ap_uint<1>` weights, which only the Xnor types spell here.
- Catapult's convolution kernels compare every weight with a double literal, which does not compile
  for `ac_int`: its convolutions keep +-1 / {-1, 0, 1} weights in fixed point (`mult`, exact).
- Catapult's streaming threshold kernels only compile for [features] inputs (refused on images).
- Convolutions never read the 1-bit type: hls4ml's convolution kernels pad with code 0, which
  would mean -1, and their `cast` doubles with the window size as `n_in`. They read `ap_int<2>`
  codes (padding 0 is the number 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol

import numpy as np
import onnx_ir as ir

from hawqc.backends import hls4ml_layers as layers
from hawqc.backends.hls4ml_binary_types import IntType, XnorType, int_type, xnor_type
from hawqc.backends.hls4ml_plan import Planned
from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.grid import exact_type
from hawqc.ir.ops.keys import onnx_op, op_key, qonnx_op
from hawqc.ir.ops.quantizer import quantizer
from hawqc.ir.ops.traits import Trait, ops_with
from hawqc.ir.qtypes import FixedType

if TYPE_CHECKING:
    from hawqc.backends.hls4ml_plan import Plan
    from hawqc.backends.hls4ml_target import Hls4mlTarget
    from hawqc.ir.precision import PrecisionResult


class Planner(Protocol):
    """What these rules use of the planner (`hls4ml_planner.Planner`), which calls them: its plan
    and types, and its plumbing for sources, constants and fused biases."""

    plan: Plan
    precision: PrecisionResult
    target: Hls4mlTarget
    io_type: str

    def add_layer(self, planned: Planned, value: ir.Value, shape: tuple[int, ...]) -> None: ...
    def name_for(self, node: ir.Node, value: ir.Value) -> str: ...
    def source(self, node: ir.Node, value: ir.Value | None) -> str: ...
    def typed(self, value: ir.Value, node: ir.Node) -> FixedType: ...
    def accumulator(self, value: ir.Value, node: ir.Node) -> FixedType: ...
    def constant(self, value: ir.Value | None) -> np.ndarray | None: ...
    def feature_dims(self, value: ir.Value, node: ir.Node) -> tuple[int, ...]: ...
    def fused_bias(self, value: ir.Value, channels: int) -> tuple[np.ndarray, FixedType | None, ir.Value]: ...

# hls4ml's Reshape: a new shape of the same elements in the same order.
RESHAPES = frozenset(onnx_op(op) for op in ops_with(Trait.NEW_SHAPE))


@dataclass(frozen=True)
class Coded:
    """A value held as codes: the number is `code * scale` (`ap_int<2>`), or `(2 * code - 1) * scale`
    (`XnorType`)."""

    xnor: bool
    scale: Fraction


def _is_reshape(node: ir.Node) -> bool:
    return op_key(node) in RESHAPES


def _is_matmul(node: ir.Node) -> bool:
    return op_key(node) == onnx_op("MatMul")


def _dense_readers_only(value: ir.Value) -> bool:
    """Whether every reader of `value`, looking through reshapes, is a MatMul reading it as data."""
    if value.is_graph_output():
        return False
    readers = list(value.uses())
    if not readers:
        return False
    for use in readers:
        node = use.node
        if _is_reshape(node) and use.idx == 0:
            if not _dense_readers_only(node.outputs[0]):
                return False
        elif not (_is_matmul(node) and use.idx == 0):
            return False
    return True


def _levels(node: ir.Node, count: int, out_scale: float, out_bias: float) -> Fraction:
    """k for levels {-k, k} (one threshold) or {-k, 0, k} (two), or a refusal naming the node."""
    s, b = Fraction(out_scale), Fraction(out_bias)
    levels = [b + s * c for c in range(count + 1)]
    k = levels[-1]
    wanted = [-k, k] if count == 1 else [-k, Fraction(0), k]
    if count not in (1, 2) or k <= 0 or levels != wanted:
        raise UnsupportedModelError(
            f"{describe(node)}: thresholds to levels {[float(v) for v in levels]}; hls4ml's threshold layers "
            "output {-k, +k} (one threshold) or {-k, 0, +k} (two)"
        )
    return k


def _ceil_to_grid(t: float, lsb: Fraction) -> Fraction:
    q = Fraction(t) / lsb
    return Fraction(-((-q.numerator) // q.denominator)) * lsb


def _value_kind(values: np.ndarray) -> str | None:
    """'binary' for +-1 only, 'ternary' for values in {-1, 0, 1}, else None."""
    unique = set(np.unique(values).tolist())
    if unique <= {-1.0, 1.0}:
        return "binary"
    if unique <= {-1.0, 0.0, 1.0}:
        return "ternary"
    return None


class BinaryLowering:
    """The planner's binary and ternary rules (see the module docstring); keeps which graph values
    are held as codes."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.coded: dict[str, Coded] = {}

    # ---- threshold layers ------------------------------------------------------------------------
    def lower(self, node: ir.Node) -> bool:
        """Lower `node` if it is a binary/ternary quantizer, a threshold, or a reshape of codes."""
        p = self.planner
        if _is_reshape(node) and node.inputs[0] is not None and node.inputs[0].name in self.coded:
            self.reshape_codes(node)
            return True
        multithreshold = op_key(node) == qonnx_op("MultiThreshold")
        view = quantizer(node)
        if not (multithreshold or (view is not None and view.is_bipolar)):
            return False
        out = node.outputs[0]
        if out.name in p.precision.constants:
            return True  # a binary weight: folded into the layer that reads it
        x = node.inputs[0]
        if multithreshold:
            data = p.constant(node.inputs[1])
            if data is None or data.ndim != 2:
                raise UnsupportedModelError(f"{describe(node)}: thresholds must be a constant [C, T]")
            thresholds = np.sort(np.asarray(data, dtype=np.float64), axis=1)
            out_scale = float(np.float32(node.attributes.get_float("out_scale", 1.0)))
            out_bias = float(np.float32(node.attributes.get_float("out_bias", 0.0)))
            k = _levels(node, thresholds.shape[1], out_scale, out_bias)
        else:
            thresholds = np.zeros((1, 1))
            # Precision inference has checked the scale: one positive number.
            k = Fraction(float(view.scale.reshape(-1)[0]))  # type: ignore[union-attr]
        if x is not None and x.is_graph_input():
            prev = self.sign_input(node, x)
        else:
            prev = p.source(node, x)
        if prev in self.coded_layers():
            raise UnsupportedModelError(f"{describe(node)}: thresholds on binary/ternary codes are not lowered")
        self.threshold_layer(node, prev, thresholds, k, out)
        return True

    def coded_layers(self) -> set[str]:
        return {self.planner.plan.value_layer[name] for name in self.coded if name in self.planner.plan.value_layer}

    def sign_input(self, node: ir.Node, x: ir.Value) -> str:
        """The graph input of a binary quantizer: the C bridge converts each float into
        ap_fixed<2,1,TRN,SAT> ({-1, -0.5, 0, 0.5}; Catapult widens a 1-bit type), i.e. floors and saturates, which keeps exactly the sign
        test `x >= 0` (-0.0 and +0.0 become 0, every negative number -1); a threshold at 0 follows."""
        p = self.planner
        if len(list(x.consumers())) != 1:
            raise UnsupportedModelError(f"{describe(node)}: graph input {x.name!r} must feed only its quantizer")
        shape = p.feature_dims(x, node)
        name = p.plan.unique_name(x.name)
        sign = FixedType(2, 1, True, "TRN", "SAT")
        p.plan.add(Planned(name, "Input", describe(node), layers.input_layer(name, shape), {"result": sign}), shape)
        p.plan.input_name, p.plan.input_shape = name, shape
        return name

    def threshold_layer(self, node: ir.Node, prev: str, thresholds: np.ndarray, k: Fraction, out: ir.Value) -> None:
        p = self.planner
        shape = p.plan.shapes[prev]
        channels = shape[-1]
        if thresholds.shape[0] not in (1, channels):
            raise UnsupportedModelError(f"{describe(node)}: thresholds {list(thresholds.shape)} for {channels} channels")
        thresholds = np.broadcast_to(thresholds, (channels, thresholds.shape[1]))
        if p.io_type == "io_stream" and p.target.hls4ml_backend.lower() == "catapult" and math.prod(shape) != channels:
            # Its streaming normalize_*_tanh declare the output stream as arrays of n_in (not of the
            # channels) and index thresholds per element: they do not compile for an image.
            raise UnsupportedModelError(
                f"{describe(node)}: thresholds on an image in io_stream on catapult; hls4ml's streaming "
                "threshold kernels for Catapult take only [features] inputs"
            )
        data_type = p.plan.by_name[prev].types["result"]
        lsb = Fraction(2) ** data_type.lsb_exponent
        low, high = data_type.min_value, data_type.max_value

        def on_grid(t: float) -> Fraction:
            """The smallest grid value >= t, or one past the range where no value is >= t."""
            if np.isnan(t) or t == np.inf:
                return high + lsb
            if t == -np.inf:
                return low
            return min(max(_ceil_to_grid(float(t), lsb), low), high + lsb)

        grid = [[on_grid(t) for t in row] for row in thresholds]
        binary = thresholds.shape[1] == 1
        xnor = binary and _dense_readers_only(out)
        if xnor:
            stored = {"threshold": [row[0] for row in grid]}
        else:
            # ap_int<2>: `data > hi` is +1, `data <= lo` is -1; for one threshold hi == lo.
            stored = {"threshold_hi": [row[-1] - lsb for row in grid], "threshold_lo": [row[0] - lsb for row in grid]}
        every = [v for values in stored.values() for v in values]
        if min(every) < low or max(every) > high:
            prev = self.widen(node, prev, FixedType.covering(min(min(every), low), max(max(every), high), data_type.lsb_exponent))
            data_type = p.plan.by_name[prev].types["result"]
        name = p.name_for(node, out)
        result: FixedType = xnor_type() if xnor else int_type(2)
        layer = {
            "class_name": "BatchNormalizationQuantizedTanh",
            "name": name,
            "inputs": [prev],
            "n_in": int(math.prod(shape)),
            "n_filt": int(channels),
            "quantize": 2 if xnor else 3,
        }
        from hls4ml.model.types import WeightVariable

        types: dict[str, FixedType] = {"result": result}
        for role, values in stored.items():
            data = np.asarray([float(v) for v in values], dtype=np.float64)
            layer[role] = WeightVariable(
                f"{role}_{name}", type_name=f"{role}_{name}_t", precision=data_type.to_hls4ml(), data=data
            )
            types[role] = data_type
        op = f"BatchNormalizationQuantizedTanh({'binary' if binary else 'ternary'})"
        planned = Planned(name, op, describe(node), layer, types)
        if xnor or (k != 1 and self.weighted_readers_only(out)):
            p.add_layer(planned, out, shape)
            self.coded[out.name] = Coded(xnor, k)
            return
        if k == 1:
            p.add_layer(planned, out, shape)
            return
        # Other readers get the numbers: codes times k, exactly, in a BatchNormalization.
        p.plan.add(planned, shape)
        scaled = p.plan.unique_name(f"{name}_scale")
        exact = p.typed(out, node)
        bn = layers.batchnorm_layer(scaled, name, shape, np.full(channels, float(k)), np.zeros(channels))
        scale_type = FixedType.covering(k, k, min(exact.lsb_exponent, 0))
        zero = FixedType.covering(0, 0, exact.lsb_exponent)
        p.add_layer(Planned(scaled, "BatchNormalization (level scale)", describe(node), bn,
                            {"scale": scale_type, "bias": zero, "result": exact}), out, shape)  # fmt: skip

    @staticmethod
    def weighted_readers_only(value: ir.Value) -> bool:
        """Every reader (through reshapes) is a MatMul or Conv reading `value` as data."""
        if value.is_graph_output() or not list(value.uses()):
            return False
        for use in value.uses():
            node = use.node
            if _is_reshape(node) and use.idx == 0:
                if not BinaryLowering.weighted_readers_only(node.outputs[0]):
                    return False
            elif not (use.idx == 0 and (_is_matmul(node) or node.op_type == "Conv")):
                return False
        return True

    def widen(self, node: ir.Node, prev: str, fixed: FixedType) -> str:
        """An exact linear layer into a wider type (same LSB), so that thresholds beyond the input's
        range can be stored in the type the kernel compares in."""
        p = self.planner
        name = p.plan.unique_name(f"{node.name or 'thresholds'}_widen")
        layer = layers.activation_layer(name, prev, "linear")
        p.plan.add(Planned(name, "Activation(linear) (widened for the thresholds)", describe(node), layer, {"result": fixed}), p.plan.shapes[prev])
        return name

    def reshape_codes(self, node: ir.Node) -> None:
        """A reshape of codes: the same codes, in the same type, still standing for the same numbers."""
        p = self.planner
        x, out = node.inputs[0], node.outputs[0]
        prev = p.source(node, x)
        target = p.feature_dims(out, node)
        if math.prod(target) != math.prod(p.plan.shapes[prev]):
            raise UnsupportedModelError(f"{describe(node)}: reshape of {list(p.plan.shapes[prev])} to {list(target)}")
        name = p.name_for(node, out)
        fixed = p.plan.by_name[prev].types["result"]
        planned = Planned(name, "Reshape", describe(node), layers.reshape_layer(name, prev, target), {"result": fixed}, removable=True)
        p.add_layer(planned, out, target)
        self.coded[out.name] = self.coded[x.name]

    # ---- weighted layers -------------------------------------------------------------------------
    def weights_for(self, x: ir.Value, weights: np.ndarray, declared: FixedType, conv: bool) -> tuple[np.ndarray, FixedType]:
        """The weights a Dense/Conv reading `x` stores, and their type: times the scale of codes it
        reads; +-1 in the Xnor type (stored as 0/1; not for a convolution reading Xnor data, see the
        module docstring), {-1, 0, 1} in ap_int<2>; otherwise exact fixed point."""
        coded = self.coded.get(x.name)
        if coded is not None:
            weights = weights * float(coded.scale)
        kind = _value_kind(weights)
        if conv and self.planner.target.hls4ml_backend.lower() == "catapult":
            # Catapult's conv kernels compare each weight with a double (`weights[i] > 1e-20`, to
            # count multipliers), which does not compile for ac_int: fixed point there (mult).
            kind = None
        if kind == "binary" and not (coded is not None and coded.xnor and conv):
            return (weights > 0).astype(np.float64), xnor_type()
        if kind in ("binary", "ternary") and not (coded is not None and coded.xnor):
            return weights, int_type(2)
        if coded is None:
            return weights, declared
        return weights, exact_type(weights)

    def dense(self, node: ir.Node) -> bool:
        """A MatMul reading codes, or with +-1 / {-1, 0, 1} weights; False for the plain path."""
        p = self.planner
        x, w = node.inputs[0], node.inputs[1]
        weights = p.constant(w)
        if x is None or w is None or weights is None or weights.ndim != 2:
            return False
        coded = self.coded.get(x.name)
        if coded is None and _value_kind(weights) is None:
            return False
        prev = p.source(node, x)
        n_in, n_out = weights.shape
        if p.plan.shapes[prev] != (n_in,):
            raise UnsupportedModelError(f"{describe(node)}: {list(p.plan.shapes[prev])} features into weights {list(weights.shape)}")
        bias, bias_type, result = p.fused_bias(node.outputs[0], n_out)
        accum = p.accumulator(result, node)
        stored, weight_type = self.weights_for(x, weights, p.typed(w, node), conv=False)
        op = "Dense"
        if isinstance(weight_type, XnorType) and coded is not None and coded.xnor:
            stored, weight_type, bias, bias_type, accum, op = self.xnor_popcount(node, x, weights, bias, bias_type, accum, n_in)
        if bias_type is None:
            bias_type = FixedType.covering(0, 0, accum.lsb_exponent)
        kernel = {XnorType: "XNOR-popcount" if op != "Dense" else "weight_binary", IntType: "weight_ternary"}.get(type(weight_type))
        if coded is not None and coded.xnor and op == "Dense":
            kernel = "data_binary"
        name = p.name_for(node, result)
        types = {"weight": weight_type, "bias": bias_type, "accum": accum, "result": p.typed(result, node)}
        label = f"Dense ({kernel})" if kernel else "Dense"
        p.add_layer(Planned(name, label, describe(node), layers.dense_layer(name, prev, stored, bias), types), result, (n_out,))
        return True

    def xnor_popcount(self, node, x, weights, bias, bias_type, accum, n_in):
        """both_binary: stores half the bias (`cast` doubles the accumulator), with an accumulator
        for `bias / 2 + popcount`; falls back to data_binary (fixed-point +-1 weights) when the bias
        is not an integer or `2 * acc - n_in` would not fit `ap_int<ceillog2(n_in) + 2>`."""
        half = np.asarray(bias, dtype=np.float64) / 2
        limit = 2 ** (math.ceil(math.log2(n_in)) + 1) - 1 if n_in > 1 else 1
        integral = np.all(bias == np.round(bias))
        if not integral or float(np.max(np.abs(bias), initial=0)) + n_in > limit:
            stored = weights * float(self.coded[x.name].scale)
            zero_type = bias_type
            return stored, exact_type(stored), bias, zero_type, accum, "Dense"
        half_type = exact_type(half) if np.any(half) else FixedType.covering(0, 0, 0)
        lsb = min(half_type.lsb_exponent, 0)
        accum = FixedType.covering(min(Fraction(float(half.min())), 0), max(Fraction(float(half.max())), 0) + n_in, lsb)
        return (weights > 0).astype(np.float64), xnor_type(), half, half_type, accum, "Dense(xnor)"

    def conv_weights(self, x: ir.Value, weights: np.ndarray, types: dict[str, FixedType]) -> tuple[np.ndarray, dict[str, FixedType]]:
        """A convolution's weights when it reads codes or has +-1 / {-1, 0, 1} weights."""
        stored, weight_type = self.weights_for(x, weights, types["weight"], conv=True)
        return stored, {**types, "weight": weight_type}
