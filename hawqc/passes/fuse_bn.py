"""`fuse-bn`: inference-mode BatchNormalization turned into what the backends compute.

BatchNormalization (standard domain, or `CHANNELS_LAST_DOMAIN` with the channels on the last axis)
means, per channel, `y = fl(fl(x * a) + b)` with `a = fl(fl(1 / fl(sqrt(fl(var + eps)))) * gamma)`
and `b = fl(beta - fl(mean * a))`, each step a float32 operation (`hawqc.ir.op_arithmetic.
batch_norm_coefficients`, the executor's own; bit-identical to onnxruntime, and two roundings in
`b`, not a fused multiply-add: tests/test_fuse_bn.py checks both). Three rewrites,
tried in this order:

1. **Before a binary or ternary quantizer** (`BN -> BipolarQuant`, `BN -> Quant` 1-bit signed, i.e.
   qonnx's bipolar case, or `BN -> Quant` 2-bit signed narrow with zero point 0, i.e. ternary; any
   producer): the pair becomes a QONNX `MultiThreshold` whose count, times the quantizer's scale,
   is the quantizer's output. The thresholds are exact, not derived on paper: `u -> quantizer(bn(u))`
   is monotone in u for a > 0, so for each channel and level boundary a bisection over the ordered
   float32 values (infinities included) finds the smallest float32 reaching the next level, with
   the executor's own arithmetic (`exact_thresholds`). A channel with a < 0 is thresholded on `-x`
   (a `Mul` by -1 in front, exact), a channel with a == 0 on `0 * x` (a constant level). Hence the
   MultiThreshold's output equals the quantizer's bit for bit on every input that is not NaN (a NaN
   counts 0: the bipolar quantizers agree, a ternary Quant would output NaN).
   One difference is unavoidable for the ternary quantizer: it outputs -0.0 for inputs that round to
   zero from below, and no MultiThreshold can (its output `out_scale * count + out_bias` is -0.0 only
   at count 0 with negative `out_scale`, i.e. at the lowest level, never in the middle one). So the
   ternary rewrite is done only where the sign of that zero cannot reach a graph output
   (`zero_sign_unobservable`, the analysis of `hawqc.ir.ops.zero_sign` shared with fold-quant):
   every path from the quantizer passes through ops that keep a difference in the sign of zeros a
   difference in the sign of zeros only (Conv, MatMul, Mul, pools, reshapes...) and then through one
   that erases it (a quantizer, an Add of a constant without -0.0, a BatchNormalization whose offset
   has no -0.0, a threshold). Otherwise the
   quantizer stays, counted as `ternary-kept-zero-sign`.
2. **After a layer with quantized weights** (Conv, channels-last Conv, MatMul or Gemm, directly or
   through a bias Add; the weight is a QONNX quantizer of a constant, or a constant annotated by
   `fold-quant` in `hawqc.ir.quant_annotation`): the BN becomes `Mul(a)` then `Add(b)`, the
   requantization canonical form, with float32 constants of shape [C, 1, ...] (channel axis 1) or
   [C] (channels last, and rank-2 outputs of MatMul/Gemm). That is the BN's own arithmetic, so it
   is bit-identical by construction. The layer and its bias are left as they are: folding `b` into
   the bias would round differently.
3. **After a layer with float weights** (a float32 initializer, no quantizer, no annotation): folded
   into the weights and bias, `W' = fl(W * a)` per output channel and `bias' = fl(fl(bias * a) + b)`
   (or `b` when there is no bias). This changes float roundings, so it is NOT bit-exact, and it is
   off by default: only with `fold-float-weights=true`. Then the pass measures what it changed on
   `error-samples` inputs (the semantic executor before and after, graph outputs compared) and
   reports it: statistics `outputs-differing` and `max-error-ulps` (the largest difference, in
   float32 ULPs of the largest magnitude of that output), and the exact floats `max_abs_error` and
   `max_rel_error` on the returned `FloatFoldResult`. Without the option such a BN stays
   (`float-bns-kept`); translation validation would reject the fold, as it should.

A BN that matches none of these stays; the pass then returns False and leaves the graph untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN
from hawqc.ir.ops.batchnorm import BATCH_NORMS, batch_norm
from hawqc.ir.ops.keys import op_key, op_types
from hawqc.ir.ops.quantizer import BIPOLAR_QUANTIZER, CODE_QUANTIZERS, quantizer
from hawqc.ir.ops.traits import Trait, keys_with
from hawqc.ir.ops.zero_sign import zero_sign_unobservable
from hawqc.ir.quant_annotation import read_annotation
from hawqc.passes.base import Pass, PassResult, option
from hawqc.passes.rewrite import (
    Match,
    Op,
    QonnxOp,
    Rewriter,
    RewriteRule,
    Var,
    apply_rules,
)
from hawqc.sim import quant

BN_DOMAINS = tuple(sorted(domain for domain, _ in BATCH_NORMS))


# ---------------------------------------------------------------------------------------------------
# BatchNormalization as a per-channel scale and offset
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchNorm:
    """An inference-mode BatchNormalization node, as `y = fl(fl(x * a) + b)` per channel."""

    node: ir.Node
    rank: int
    channel_axis: int
    a: np.ndarray  # float32 [C]
    b: np.ndarray  # float32 [C]

    @property
    def x(self) -> ir.Value:
        return self.node.inputs[0]

    @property
    def y(self) -> ir.Value:
        return self.node.outputs[0]

    @property
    def channels(self) -> int:
        return self.a.shape[0]

    @property
    def channels_last(self) -> bool:
        return self.channel_axis == self.rank - 1

    def per_channel(self, vector: np.ndarray) -> np.ndarray:
        """`vector` [C] shaped to broadcast along the channel axis: [C, 1, ...] or [C]."""
        return vector.reshape((self.channels,) + (1,) * (self.rank - 1 - self.channel_axis))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return x * self.per_channel(self.a) + self.per_channel(self.b)

    def data_layout(self) -> str:
        """The MultiThreshold `data_layout` naming this BN's channel axis (qonnx reads "C" in it)."""
        spatial = "DHW"[3 - (self.rank - 2) :] if self.rank <= 5 else "S" * (self.rank - 2)
        return "N" + spatial + "C" if self.channels_last and self.rank > 2 else "NC" + spatial


def read_batchnorm(node: ir.Node) -> BatchNorm | None:
    """The BN as scale and offset, or None if it is not an inference-mode BN on known constants."""
    view = batch_norm(node)
    # Not batch statistics, not (opset < 9) per-activation parameters, no running mean / variance read.
    if view is None or not view.inference_mode or len(node.inputs) != 5:
        return None
    parameters = view.parameters()
    if parameters is None:
        return None
    x = node.inputs[0]
    if x is None or x.shape is None or x.dtype != ir.DataType.FLOAT or len(x.shape) < 2:
        return None
    gamma = parameters[0]
    if any(p.dtype != np.float32 for p in parameters):
        return None
    rank = len(x.shape)
    channel_axis = view.channel_axis(rank)
    channels = x.shape[channel_axis]
    if any(p.ndim != 1 or p.shape != gamma.shape for p in parameters):
        return None
    if isinstance(channels, int) and channels != gamma.shape[0]:
        return None
    # The executor's own coefficients: the rewrites reproduce exactly what it computes.
    a, b = view.coefficients(parameters)
    return BatchNorm(node, rank, channel_axis, a, b)


# ---------------------------------------------------------------------------------------------------
# Rewrite 1: BN before a binary / ternary quantizer -> MultiThreshold
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepQuantizer:
    """A binary or ternary quantizer seen as a step function: level k (0 = lowest) of its input.

    Level k's output is `(min_level + k) * scale` (float32); `level_of(y)` is the level the quantizer
    puts y in, by its exact arithmetic (`hawqc.sim.quant`).
    """

    node: ir.Node
    kind: str  # "bipolar" or "ternary"
    scale: ir.Value
    level_of: Callable[[np.ndarray], np.ndarray]

    @property
    def levels(self) -> int:
        return 2 if self.kind == "bipolar" else 3

    @property
    def min_level(self) -> int:
        return -1

    @property
    def step(self) -> int:
        """Distance between neighbouring integer levels: -1, +1 (bipolar) or -1, 0, +1 (ternary)."""
        return 2 if self.kind == "bipolar" else 1


def read_step_quantizer(node: ir.Node) -> StepQuantizer | None:
    view = quantizer(node)
    if view is None or op_key(node) not in CODE_QUANTIZERS:
        return None
    scale_value = view.input("scale")
    if op_key(node) == BIPOLAR_QUANTIZER:
        if view.scale is None or view.scale.dtype != np.float32:
            return None
        # qonnx's binary_quant: +1 where x >= 0 (also -0.0), else -1 (also NaN), times the scale.
        return StepQuantizer(node, "bipolar", scale_value, lambda y: (y >= 0).astype(np.int64))
    scale, zeropt, bits = view.scale, view.zero_point, view.bit_width_tensor
    if scale is None or zeropt is None or bits is None:
        return None
    if scale.dtype != np.float32 or zeropt.dtype != np.float32 or bits.size != 1:
        return None
    # A zero point of +0.0 exactly: then a level's output is `level * scale` (and -0.0 would not
    # turn a zero into +0.0 where the quantizer subtracts it).
    if np.any(zeropt.view(np.uint32) != 0):
        return None
    rounding = quant.rounding_function(view.rounding_mode)
    if rounding is None or not view.signed:
        return None
    # qonnx's bounds in the bit width tensor's own dtype, as the executor evaluates them.
    bounds = quant.quant_bounds(bits, view.signed, view.narrow)
    if view.is_bipolar:
        kind = "bipolar"
    elif view.bits == 2 and view.narrow:
        kind = "ternary"
    else:
        return None
    # The quantizer's outputs at levels 1.. (scale > 0, as the verifier guarantees, keeps them in
    # order); the level of an output is how many of those it reaches. -0.0 >= +0.0 counts.
    upper_levels = [np.float32(level) * scale for level in ((1,) if kind == "bipolar" else (0, 1))]

    def level_of(y: np.ndarray) -> np.ndarray:
        out = quant.int_quant(y, scale, zeropt, bounds, rounding)
        return sum((out >= level).astype(np.int64) for level in upper_levels)

    return StepQuantizer(node, kind, scale_value, level_of)


# Float32 values in order as int64 keys (-0.0 and +0.0 share key 0); NaN has none.
KEY_NEG_INF = -0x7F800000
KEY_POS_INF = 0x7F800000


def float_keys(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(bits >= 0, bits, -(bits & 0x7FFFFFFF))


def from_keys(keys: np.ndarray) -> np.ndarray:
    bits = np.where(keys >= 0, keys, (-keys) | 0x80000000).astype(np.uint32)
    return bits.view(np.float32)


def exact_thresholds(level_of: Callable[[np.ndarray], np.ndarray], channels: int, count: int) -> np.ndarray:
    """[channels, count] float32: for channel c and boundary k, the smallest float32 u (infinities
    included) with `level_of(u)[c] > k`.

    `level_of` maps a [channels, count] float32 array to levels elementwise per channel and must be
    non-decreasing in u, with level 0 at -inf and level `count` at +inf (checked by the caller).
    """
    targets = np.arange(1, count + 1, dtype=np.int64)
    below = np.full((channels, count), KEY_NEG_INF, dtype=np.int64)  # level <= k here
    reached = np.full((channels, count), KEY_POS_INF, dtype=np.int64)  # level > k here
    while np.any(reached - below > 1):
        middle = below + (reached - below) // 2
        up = level_of(from_keys(middle)) >= targets
        reached = np.where(up, middle, reached)
        below = np.where(up, below, middle)
    return from_keys(reached)


@dataclass(frozen=True)
class ThresholdPlan:
    """What replaces `BN -> quantizer`: optional Mul by per-channel signs, thresholds, output map."""

    signs: np.ndarray | None  # float32 [C] in {1, -1, 0}, or None when every a > 0
    thresholds: np.ndarray  # float32 [C, T]
    out_scale: float
    out_bias: float
    scale_after: bool  # multiply by the quantizer's scale tensor after the MultiThreshold


def plan_thresholds(bn: BatchNorm, quantizer: StepQuantizer) -> ThresholdPlan | None:
    scale = quantizer.scale.const_value.numpy()
    unit = [1] * bn.rank
    unit[bn.channel_axis] = bn.channels
    unit_shape = tuple(unit)
    # The quantizer's parameters must not vary along any axis but the channels (nor add any).
    for value in quantizer.node.inputs[1:]:
        if np.broadcast_shapes(value.const_value.numpy().shape, unit_shape) != unit_shape:
            return None
    if not (np.all(np.isfinite(bn.a)) and np.all(np.isfinite(bn.b))):
        return None
    signs = np.sign(bn.a).astype(np.float32)
    count = quantizer.levels - 1

    def probe(u: np.ndarray) -> np.ndarray:
        """[C, T] per-channel values -> a tensor of the BN's rank: T along axis 0, C on its axis."""
        shape = [u.shape[1]] + [1] * (bn.rank - 1)
        shape[bn.channel_axis] = bn.channels
        return np.ascontiguousarray(u.T).reshape(shape)

    def unprobe(levels: np.ndarray, width: int) -> np.ndarray:
        return levels.reshape(width, bn.channels).T

    def level_of(u: np.ndarray) -> np.ndarray:
        x = probe(u) * bn.per_channel(signs)
        return unprobe(quantizer.level_of(bn.apply(x)), u.shape[1])

    ends = level_of(np.array([[-np.inf, np.inf]] * bn.channels, dtype=np.float32))
    moving = signs != 0
    if np.any(ends[moving, 0] != 0) or np.any(ends[moving, 1] != count):
        return None  # not the monotone step function the search needs
    thresholds = exact_thresholds(level_of, bn.channels, count)
    # a == 0: the MultiThreshold sees 0 * x, +-0 for every finite x, at a constant level.
    constant = level_of(np.zeros((bn.channels, 1), dtype=np.float32))[:, 0]
    fixed = np.where(constant[:, None] > np.arange(count)[None, :], -np.inf, np.inf).astype(np.float32)
    thresholds = np.where(moving[:, None], thresholds, fixed)

    # Output: count k -> (min_level + step * k) * scale. Folded into the attributes when the scale
    # is one number and the folded arithmetic gives the quantizer's outputs bit for bit.
    counts = np.arange(count + 1, dtype=np.float32)
    wanted = np.float32(quantizer.min_level) + np.float32(quantizer.step) * counts
    wanted = wanted * scale.reshape(-1)[0] if scale.size == 1 else None
    if wanted is not None:
        out_scale = np.float32(quantizer.step) * scale.reshape(-1)[0]
        out_bias = np.float32(quantizer.min_level) * scale.reshape(-1)[0]
        got = np.float32(out_scale) * counts + np.float32(out_bias)
        if np.all(np.isfinite(got)) and np.array_equal(got.view(np.uint32), wanted.view(np.uint32)):
            return ThresholdPlan(signs if np.any(signs != 1) else None, thresholds, float(out_scale), float(out_bias), False)
    return ThresholdPlan(
        signs if np.any(signs != 1) else None,
        thresholds,
        float(quantizer.step),
        float(quantizer.min_level),
        True,
    )


def _threshold_rule(domain: str, state: _SweepState) -> RewriteRule:
    def replace(match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        bn = read_batchnorm(match.node("bn"))
        quantizer = read_step_quantizer(match.root)
        if bn is None or quantizer is None:
            return None
        if quantizer.kind == "ternary" and not zero_sign_unobservable(match.root.outputs[0]):
            state.count("ternary-kept-zero-sign")
            return None
        with np.errstate(invalid="ignore", over="ignore"):  # the search probes infinities on purpose
            plan = plan_thresholds(bn, quantizer)
        if plan is None:
            return None
        base = match.root.name or bn.node.name or "bn"
        u = bn.x
        if plan.signs is not None:
            signs = rewriter.constant(bn.per_channel(plan.signs), f"{bn.node.name or 'bn'}_signs")
            u = rewriter.op("Mul", [u, signs], name=f"{base}_signs", like=bn.x)
        thresholds = rewriter.constant(plan.thresholds, f"{bn.node.name or 'bn'}_thresholds")
        attributes = {
            "out_dtype": "BIPOLAR" if quantizer.kind == "bipolar" else "TERNARY",
            "out_scale": plan.out_scale,
            "out_bias": plan.out_bias,
            "data_layout": bn.data_layout(),
        }
        out = rewriter.op("MultiThreshold", [u, thresholds], attributes, domain=QONNX_DOMAIN,
                          name=f"{base}_thresholds")  # fmt: skip
        if plan.scale_after:
            out = rewriter.op("Mul", [out, quantizer.scale], name=f"{base}_scale")
        state.orphaned.append(bn.node)
        return [out]

    pattern = QonnxOp(op_types(CODE_QUANTIZERS, QONNX_DOMAIN), inputs=(Op("BatchNormalization", domain=domain, name="bn"),))
    return RewriteRule(f"bn-to-thresholds{'-' + domain if domain else ''}", pattern, replace)


# ---------------------------------------------------------------------------------------------------
# Rewrites 2 and 3: BN after a Conv / MatMul / Gemm
# ---------------------------------------------------------------------------------------------------

LAYER_OPS = keys_with(Trait.LAYER)


@dataclass(frozen=True)
class Layer:
    """The Conv / MatMul / Gemm a BN follows, and the bias Add in between if there is one."""

    node: ir.Node
    bias_add: ir.Node | None

    @property
    def weight(self) -> ir.Value:
        return self.node.inputs[1]

    @property
    def output(self) -> ir.Value:
        return self.node.outputs[0]


def _is_layer(node: ir.Node | None) -> bool:
    return node is not None and op_key(node) in LAYER_OPS and len(node.inputs) > 1


def layer_before(x: ir.Value) -> Layer | None:
    producer = x.producer()
    if _is_layer(producer):
        return Layer(producer, None)
    if producer is not None and producer.op_type == "Add" and producer.domain == "" and len(producer.inputs) == 2:
        for data, bias in (producer.inputs, reversed(producer.inputs)):
            if bias is not None and bias.const_value is not None and _is_layer(data.producer()):
                return Layer(data.producer(), producer)
    return None


def is_quantized_weight(weight: ir.Value) -> bool:
    producer = weight.producer()
    if producer is not None:
        return op_key(producer) in CODE_QUANTIZERS and producer.inputs[0].const_value is not None
    return weight.const_value is not None and read_annotation(weight) is not None


def is_float_weight(weight: ir.Value) -> bool:
    return (
        weight.producer() is None
        and weight.const_value is not None
        and weight.const_value.numpy().dtype == np.float32
        and read_annotation(weight) is None
    )


def _requant_rule(domain: str, state: _SweepState) -> RewriteRule:
    def replace(match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        bn = read_batchnorm(match.root)
        layer = layer_before(match.value("x"))
        if bn is None or layer is None or not is_quantized_weight(layer.weight):
            return None
        base = bn.node.name or "bn"
        a = rewriter.constant(bn.per_channel(bn.a), f"{base}_scale")
        b = rewriter.constant(bn.per_channel(bn.b), f"{base}_offset")
        scaled = rewriter.op("Mul", [bn.x, a], name=f"{base}_mul")
        return [rewriter.op("Add", [scaled, b], name=f"{base}_add")]

    pattern = Op("BatchNormalization", inputs=(Var("x"),), domain=domain)
    return RewriteRule(f"bn-to-requant{'-' + domain if domain else ''}", pattern, replace)


def _output_channel_axis(layer: Layer, bn: BatchNorm) -> int | None:
    """The weight axis of the layer's output channels, if they are the BN's channels; else None."""
    node, weight = layer.node, layer.weight.const_value.numpy()
    if node.op_type == "Conv":
        same_layout = (node.domain == CHANNELS_LAST_DOMAIN) == bn.channels_last
        axis = 0 if same_layout and bn.rank >= 3 else None
    elif weight.ndim != 2 or bn.channel_axis != bn.rank - 1:
        axis = None  # a dense layer's channels are its output's last axis
    elif node.op_type == "MatMul":
        axis = 1
    else:
        axis = 0 if node.attributes.get_int("transB", 0) else 1
    if axis is None or weight.shape[axis] != bn.channels:
        return None
    return axis


def _only_feeds(value: ir.Value, node: ir.Node) -> bool:
    return not value.is_graph_output() and all(use.node is node for use in value.uses())


def _float_fold_rule(domain: str, state: _SweepState) -> RewriteRule:
    def replace(match: Match, rewriter: Rewriter) -> list[ir.Value] | None:
        bn = read_batchnorm(match.root)
        layer = layer_before(match.value("x"))
        if bn is None or layer is None or not is_float_weight(layer.weight):
            return None
        if not state.fold_float_weights:
            state.count("float-bns-kept")
            return None
        axis = _output_channel_axis(layer, bn)
        if axis is None or not (np.all(np.isfinite(bn.a)) and np.all(np.isfinite(bn.b))):
            return None
        node = layer.node
        if layer.bias_add is None:
            chain_ok = _only_feeds(layer.output, bn.node)
        else:
            chain_ok = _only_feeds(layer.output, layer.bias_add) and _only_feeds(layer.bias_add.outputs[0], bn.node)
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if not chain_ok or (bias is not None and bias.const_value is None):
            return None
        f32 = np.float32
        weight = layer.weight.const_value.numpy()
        a_along = bn.a.reshape((1,) * axis + (-1,) + (1,) * (weight.ndim - axis - 1))
        inputs = [node.inputs[0], rewriter.constant(weight * a_along, f"{layer.weight.name}_bn")]
        attributes = {attr.name: attr for attr in node.attributes.values()}
        own_bias = None
        if bias is not None:
            own_bias = bias.const_value.numpy().astype(f32)
            if node.op_type == "Gemm":
                own_bias = f32(node.attributes.get_float("beta", 1.0)) * own_bias
            # A Conv bias is [M]; a Gemm C broadcasts against [N, M]: both end on the channels.
            own_bias = own_bias * bn.a
        if layer.bias_add is None and node.op_type != "MatMul":
            own_bias = bn.b if own_bias is None else own_bias + bn.b
        if own_bias is not None and node.op_type == "Gemm":
            attributes["beta"] = 1.0  # beta * C is folded into the new C
        if own_bias is not None:
            inputs.append(rewriter.constant(own_bias.astype(f32), f"{node.name or node.op_type.lower()}_bias_bn"))
        out = rewriter.op(node.op_type, inputs, attributes, domain=node.domain, name=node.name or node.op_type.lower(),
                          like=layer.output)  # fmt: skip
        state.orphaned.append(node)
        if layer.bias_add is not None:
            add = layer.bias_add
            constant = next(v for v in add.inputs if v.const_value is not None)
            c = constant.const_value.numpy().astype(f32) * bn.per_channel(bn.a) + bn.per_channel(bn.b)
            out = rewriter.op("Add", [out, rewriter.constant(c, f"{constant.name}_bn")], name=add.name or "add")
            state.orphaned.append(add)
        elif node.op_type == "MatMul":
            out = rewriter.op("Add", [out, rewriter.constant(bn.b, f"{bn.node.name or 'bn'}_offset")],
                              name=f"{bn.node.name or 'bn'}_add")  # fmt: skip
        state.count("float-bns-folded")
        return [out]

    pattern = Op("BatchNormalization", inputs=(Var("x"),), domain=domain)
    return RewriteRule(f"bn-into-float-weights{'-' + domain if domain else ''}", pattern, replace)


# ---------------------------------------------------------------------------------------------------
# The pass
# ---------------------------------------------------------------------------------------------------


@dataclass
class _SweepState:
    fold_float_weights: bool
    counters: dict[str, int]
    orphaned: list[ir.Node]

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


@dataclass(frozen=True)
class FloatFoldResult(PassResult):
    """A run that folded float BNs into weights, with the error that caused (None: not measured)."""

    max_abs_error: float | None = None
    max_rel_error: float | None = None


@dataclass(frozen=True)
class FuseBatchNorm(Pass):
    name: ClassVar[str] = "fuse-bn"
    summary: ClassVar[str] = (
        "BatchNormalization -> MultiThreshold before a binary/ternary quantizer, Mul+Add after a "
        "quantized-weight Conv/MatMul/Gemm (bit-exact); folded into float weights only with "
        "fold-float-weights=true (approximate, error reported)."
    )
    fold_float_weights: bool = option(
        False, "fold BNs after float-weight layers into the weights (not bit-exact: the error is measured and reported)"
    )
    error_samples: int = option(64, "inputs on which a float fold's error is measured")

    def run(self, model: ir.Model) -> PassResult:
        state = _SweepState(self.fold_float_weights, {}, [])
        # Thresholds first: a BN feeding a binary/ternary quantizer goes there whatever precedes it.
        to_thresholds = sum(apply_rules(model, [_threshold_rule(d, state) for d in BN_DOMAINS]).values())
        _remove_orphans(model.graph, state.orphaned)
        before_folds = _snapshot(model) if self.fold_float_weights else None
        rules = [rule for d in BN_DOMAINS for rule in (_requant_rule(d, state), _float_fold_rule(d, state))]
        fired = apply_rules(model, rules)
        _remove_orphans(model.graph, state.orphaned)
        to_requant = sum(count for name, count in fired.items() if name.startswith("bn-to-requant"))
        statistics = {"bns-to-thresholds": to_thresholds, "bns-to-requant": to_requant, **state.counters}
        statistics["bns-kept"] = sum(_is_bn(node) for node in model.graph)
        changed = to_thresholds + sum(fired.values()) > 0
        if before_folds is None or not state.counters.get("float-bns-folded"):
            return PassResult(changed, statistics)
        return self._measured(before_folds, model, changed, statistics)

    def _measured(self, before: ir.Model, after: ir.Model, changed: bool, statistics: dict[str, int]) -> FloatFoldResult:
        """The fold's effect on the graph outputs, measured with the semantic executor."""
        from hawqc.sim import Executor
        from hawqc.sim.inputs import draw_inputs

        inputs = draw_inputs(before, self.error_samples)
        try:
            reference = Executor(before).run(inputs)
            folded = Executor(after).run(inputs)
        except UnsupportedModelError:
            statistics["error-unmeasured"] = 1
            return FloatFoldResult(changed, statistics)
        max_abs = max_rel = 0.0
        ulps = differing = 0
        for name, ref in reference.items():
            ref64, got64 = ref.astype(np.float64), folded[name].astype(np.float64)
            error = np.abs(got64 - ref64)
            differing += int(np.count_nonzero(error))
            largest = float(np.max(np.abs(ref64))) if ref64.size else 0.0
            worst = float(np.max(error)) if error.size else 0.0
            max_abs = max(max_abs, worst)
            if largest > 0:
                max_rel = max(max_rel, worst / largest)
                ulps = max(ulps, math.ceil(worst / float(np.spacing(np.float32(largest)))))
        statistics.update({"error-samples": self.error_samples, "outputs-differing": differing, "max-error-ulps": ulps})
        return FloatFoldResult(changed, statistics, max_abs, max_rel)


def _is_bn(node: ir.Node) -> bool:
    return op_key(node) in BATCH_NORMS


def _snapshot(model: ir.Model) -> ir.Model:
    return ir.from_proto(ir.to_proto(model))


def _remove_orphans(graph: ir.Graph, nodes: list[ir.Node]) -> None:
    """Remove the nodes a rewrite left without users (in reverse: users before their producers)."""
    for node in reversed(nodes):
        if node.graph is graph and not any(out.uses() or out.is_graph_output() for out in node.outputs):
            graph.remove(node, safe=True)
    nodes.clear()
