"""Match a canonical channels-last QONNX graph into hls4ml layers, every type taken from precision.

The graphs are what the driver's pipeline leaves (hawqc's canonical form): Conv, pools and
BatchNormalization in `CHANNELS_LAST_DOMAIN`, weights as constants, requantization as
`Mul(k) [-> Add(b)]`, no Transpose. Patterns and the hls4ml layer each becomes:

    Quant(graph input)                    InputLayer (the C bridge's float->fixed conversion rounds
                                          and saturates: it IS the Quant)
    unquantized graph input               InputLayer in the default precision (float parts,
                                          hawqc.ir.default_precision: the same conversion casts it)
    MatMul(x, W) [+ Add(b)]               Dense
    Conv(x, W[, b]) [+ Add(b)]            Conv1D/2D, DepthwiseConv1D/2D (group == channels)
    Mul(k) [+ Add(b)] [-> Quant]          BatchNormalization (scale, bias; one rounding into the
    Add(x, b), BatchNormalization         result, the Quant's type when fused)
    Relu / LeakyRelu [-> Quant]           Activation relu / LeakyReLU (result: the Quant's type)
    Quant(activation)                     Activation linear (a cast to the Quant's type)
    Add(x, y)                             Merge add
    Concat (channel axis)                 Concatenate
    Resize (nearest, integer factors)     Resize
    MaxPool, AveragePool                  MaxPooling1D/2D, AveragePooling1D/2D
    GlobalMaxPool, GlobalAveragePool      GlobalMaxPooling1D/2D, GlobalAveragePooling1D/2D
    Flatten, Reshape, Squeeze, Unsqueeze  Reshape
    Cast (float32 <-> double)             nothing: fixed point has no float types, the value keeps
                                          its layer (lifted HAWQ graphs requantize in double)
Anything else, and every configuration hls4ml's kernels compute differently from ONNX, raises
UnsupportedModelError naming the node.

A bias, a requantization or a Quant is fused into the layer before it only when that layer's
result has no other reader; otherwise it becomes a layer of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.backends import hls4ml_layers as layers
from hawqc.backends.hls4ml_binary import BinaryLowering
from hawqc.backends.hls4ml_layers import Window
from hawqc.backends.hls4ml_plan import Plan, Planned
from hawqc.backends.hls4ml_target import Hls4mlTarget
from hawqc.errors import UnsupportedModelError
from hawqc.ir.diagnostics import describe
from hawqc.ir.grid import exact_type
from hawqc.ir.op_arithmetic import cast_target
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import OpKey, channels_last_op, onnx_op, op_key
from hawqc.ir.ops.quantizer import is_integer_quantizer
from hawqc.ir.ops.traits import Trait, has_trait, ops_with
from hawqc.ir.ops.window import Windows
from hawqc.ir.precision import PrecisionResult
from hawqc.ir.qtypes import FixedType

# hls4ml 1.3.0's `FixInputPrecision` (bit_exact.py) takes over any input type wider than this.
MAX_INPUT_WIDTH = 100


def _int(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.value)


def _str(node: ir.Node, name: str, default: str) -> str:
    attr = node.attributes.get(name)
    return default if attr is None else str(attr.value)


def _only_consumer(value: ir.Value) -> ir.Node | None:
    users = list(value.consumers())
    if len(users) != 1 or value.is_graph_output():
        return None
    return users[0]


def _is_onnx(node: ir.Node, op_type: str) -> bool:
    return op_key(node) == onnx_op(op_type)


def onnx_nearest_index(out_index: int, in_size: int, out_size: int, transform: str, nearest: str) -> int | None:
    """The input index ONNX Resize (mode nearest) reads for one output index along one axis, exact;
    None for a coordinate transformation this does not model."""
    scale = Fraction(out_size, in_size)
    x = Fraction(out_index)
    if transform == "asymmetric":
        original = x / scale
    elif transform == "half_pixel" or (transform == "pytorch_half_pixel" and out_size > 1):
        original = (x + Fraction(1, 2)) / scale - Fraction(1, 2)
    elif transform == "pytorch_half_pixel":
        original = Fraction(0)
    elif transform == "align_corners":
        original = Fraction(0) if out_size == 1 else x * (in_size - 1) / (out_size - 1)
    else:
        return None
    floor = original.numerator // original.denominator
    if nearest == "floor":
        index = floor
    elif nearest == "ceil":
        index = -((-original.numerator) // original.denominator)
    elif nearest in ("round_prefer_floor", "round_prefer_ceil"):
        frac = original - floor
        if frac == Fraction(1, 2):
            index = floor if nearest == "round_prefer_floor" else floor + 1
        else:
            index = floor + (1 if frac > Fraction(1, 2) else 0)
    else:
        return None
    return min(max(index, 0), in_size - 1)


def hls4ml_nearest_index(out_index: int, in_size: int, out_size: int, io_type: str) -> int:
    """The input index hls4ml's `resize_nearest` reads (nnet_image.h for io_parallel, a repeat of
    each input `out/in` times for io_stream)."""
    if io_type == "io_stream":
        return out_index // (out_size // in_size)
    ratio = ((in_size << 16) // out_size) + 1
    return (out_index * ratio) >> 16


class Planner:
    def __init__(self, model: ir.Model, precision: PrecisionResult, target: Hls4mlTarget, io_type: str) -> None:
        self.graph = model.graph
        self.precision = precision
        self.target = target
        self.io_type = io_type
        self.plan = Plan()
        self.consumed: set[int] = set()
        # Binary and ternary layers (thresholds, XNOR-popcount): hls4ml_binary.py.
        self.binary = BinaryLowering(self)
        self.handlers: dict[OpKey, Callable[[ir.Node], None]] = {
            onnx_op("MatMul"): self.dense,
            onnx_op("Relu"): self.relu,
            onnx_op("LeakyRelu"): self.leaky_relu,
            onnx_op("Add"): self.add,
            onnx_op("Mul"): self.requantization,
            onnx_op("Concat"): self.concat,
            onnx_op("Resize"): self.resize,
            **{onnx_op(op): self.reshape for op in sorted(ops_with(Trait.NEW_SHAPE))},
            onnx_op("Cast"): self.cast,
            channels_last_op("Conv"): self.conv,
            channels_last_op("MaxPool"): self.pool,
            channels_last_op("AveragePool"): self.pool,
            channels_last_op("GlobalMaxPool"): self.global_pool,
            channels_last_op("GlobalAveragePool"): self.global_pool,
            channels_last_op("BatchNormalization"): self.batchnorm,
        }

    # ---- plumbing -----------------------------------------------------------------------------
    def run(self) -> Plan:
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise UnsupportedModelError(
                f"graph has {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} outputs; "
                "the hls4ml lowering takes exactly one of each"
            )
        parts = self.precision.float_parts
        if parts is not None and self.graph.inputs[0].name in parts.inputs:
            self.float_input_layer(self.graph.inputs[0])
        for node in self.graph:
            if id(node) not in self.consumed:
                self.lower_node(node)
        out = self.graph.outputs[0]
        if out.name not in self.plan.value_layer:
            raise UnsupportedModelError(f"graph output {out.name!r} is not produced by a lowered layer")
        for planned in self.plan.layers:
            for role, fixed in planned.types.items():
                self.target.check_type(fixed, f"layer {planned.name!r} ({planned.source}) {role}")
        return self.plan

    def lower_node(self, node: ir.Node) -> None:
        if self.binary.lower(node):
            return
        if is_integer_quantizer(node):
            self.quant(node)
            return
        handler = self.handlers.get(op_key(node))
        if handler is not None:
            handler(node)
            return
        if has_trait(node, Trait.CHANNELS_FIRST):  # hawqc does not lower their channels-first meaning
            raise UnsupportedModelError(f"{describe(node)}: channels-first {node.op_type}; run channels-last first")
        raise UnsupportedModelError(f"{describe(node)}: op is not supported by the hls4ml lowering")

    def add_layer(self, planned: Planned, value: ir.Value, shape: tuple[int, ...]) -> None:
        self.plan.add(planned, shape)
        self.plan.value_layer[value.name] = planned.name

    def name_for(self, node: ir.Node, value: ir.Value) -> str:
        return self.plan.unique_name(node.name or value.name)

    def source(self, node: ir.Node, value: ir.Value | None) -> str:
        if value is None or value.name not in self.plan.value_layer:
            name = value.name if value is not None else "<missing>"
            raise UnsupportedModelError(
                f"{describe(node)}: input {name!r} is not produced by a lowered layer "
                "(unsupported producer, or the graph is not topologically sorted)"
            )
        return self.plan.value_layer[value.name]

    def typed(self, value: ir.Value, node: ir.Node) -> FixedType:
        fixed = self.precision.types.get(value.name)
        if fixed is None:
            raise UnsupportedModelError(f"{describe(node)}: no type inferred for {value.name!r}")
        return fixed

    def input_type(self, value: ir.Value, node: ir.Node) -> FixedType:
        """The input layer's type; hls4ml 1.3.0 rewrites an input type wider than 100 bits
        (`FixInputPrecision`) and fails on the graphs hawqc gives it, with a Python error."""
        fixed = self.typed(value, node)
        if fixed.width > MAX_INPUT_WIDTH:
            raise UnsupportedModelError(
                f"{describe(node)}: the input type {fixed} is {fixed.width} bits wide; hls4ml takes at most "
                f"{MAX_INPUT_WIDTH} (a bit width that large is likely a mistake)"
            )
        return fixed

    def accumulator(self, value: ir.Value, node: ir.Node) -> FixedType:
        fixed = self.precision.accumulators.get(value.name)
        if fixed is None:
            raise UnsupportedModelError(f"{describe(node)}: no accumulator type inferred for {value.name!r}")
        return fixed

    def constant(self, value: ir.Value | None) -> np.ndarray | None:
        """A constant's exact value: precision's (quantized constants are evaluated there), else
        the initializer's (BatchNormalization parameters, which precision reads on its own)."""
        if value is None:
            return None
        if value.name in self.precision.constants:
            return self.precision.constants[value.name]
        return None if value.const_value is None else value.const_value.numpy().astype(np.float64)

    def feature_dims(self, value: ir.Value, node: ir.Node) -> tuple[int, ...]:
        """Dims without the batch dimension (the first); hls4ml's C function takes one sample."""
        if value.shape is None:
            raise UnsupportedModelError(f"{describe(node)}: shape of {value.name!r} is unknown (run shape inference)")
        dims = tuple(value.shape)
        if len(dims) < 2 or not all(isinstance(d, int) for d in dims[1:]):
            raise UnsupportedModelError(
                f"{describe(node)}: {value.name!r} must be [batch, features...] with static features, got {list(dims)}"
            )
        return tuple(int(d) for d in dims[1:])

    def layer_shape(self, node: ir.Node, value: ir.Value, layer: str) -> tuple[int, ...]:
        """The shape hls4ml holds `value` in: the graph's, which layers that read positions need."""
        dims = self.feature_dims(value, node)
        if self.plan.shapes[layer] != dims:
            raise UnsupportedModelError(
                f"{describe(node)}: hls4ml holds input {value.name!r} as {list(self.plan.shapes[layer])}, "
                f"not {list(dims)} (a global pooling drops the unit dims)"
            )
        return dims

    def fused_quant(self, value: ir.Value) -> tuple[ir.Value, FixedType | None]:
        """The Quant that is the only reader of `value`, consumed: (its output, its type)."""
        quant = _only_consumer(value)
        if quant is None or not is_integer_quantizer(quant):
            return value, None
        out = quant.outputs[0]
        self.consumed.add(id(quant))
        return out, self.typed(out, quant)

    def per_channel(self, node: ir.Node, data: np.ndarray, channels: int, what: str) -> np.ndarray:
        """A constant that broadcasts along the channel (last) axis only, as [channels]."""
        squeezed = np.asarray(data, dtype=np.float64)
        if squeezed.size in (1, channels) and (squeezed.ndim == 0 or squeezed.shape[-1] == squeezed.size):
            return np.broadcast_to(squeezed.reshape(-1), (channels,)).copy()
        raise UnsupportedModelError(
            f"{describe(node)}: {what} of shape {list(squeezed.shape)} is not per tensor or per channel "
            f"(last axis, {channels} channels)"
        )

    def fused_bias(self, value: ir.Value, channels: int) -> tuple[np.ndarray, FixedType | None, ir.Value]:
        """A following `Add(value, constant)` that is the only reader of `value`, consumed:
        (bias per channel, its type, the Add's output); without one, (zeros, None, value)."""
        none = np.zeros(channels), None, value
        add = _only_consumer(value)
        if add is None or not _is_onnx(add, "Add"):
            return none
        other = add.inputs[1] if add.inputs[0] is value else add.inputs[0]
        data = self.constant(other)
        if other is None or data is None:
            return none
        bias = self.per_channel(add, data, channels, "bias")
        self.consumed.add(id(add))
        return bias, self.typed(other, add), add.outputs[0]

    def window(self, node: ir.Node, spatial: tuple[int, ...], windows: Windows) -> Window:
        """The window of a Conv or pool; refuses what hls4ml's kernels do not compute (dilation,
        ceil mode that adds an output)."""
        kernel = windows.kernel
        assert kernel is not None, "read with the weight's kernel, or checked present for a pool"
        rank = len(kernel)
        dilations = windows.dilations_or_default(rank)
        if any(d != 1 for d in dilations):
            raise UnsupportedModelError(f"{describe(node)}: dilations {list(dilations)}: hls4ml 1.3.0's kernels have no dilation")
        strides = windows.strides_or_default(rank)
        pads = windows.pads_for(spatial)
        if windows.depends_on_input_size:
            # A kernel smaller than its stride leaves the input's end unread (a negative end pad):
            # the same windows as no padding there.
            pads = tuple(max(p, 0) for p in pads)
        window = Window(tuple(spatial), tuple(kernel), strides, tuple(pads[:rank]), tuple(pads[rank:]))
        if any(o < 1 for o in window.out_size):
            raise UnsupportedModelError(f"{describe(node)}: the kernel is larger than the padded input")
        if windows.ceil_mode:
            ceil = tuple(
                -(-(n + b + e - k) // s) + 1
                for n, k, s, b, e in zip(spatial, kernel, strides, window.pads_begin, window.pads_end, strict=True)
            )
            if ceil != window.out_size:
                raise UnsupportedModelError(f"{describe(node)}: ceil_mode adds outputs; hls4ml's pooling floors")
        return window

    def kept_type(self, node: ir.Node, out: ir.Value, prev: str) -> FixedType:
        """The result type of a layer that moves values without computing (reshape, resize,
        padding): its input's type, as hls4ml gives it (an in-place view, `precision=inp.type`);
        the exact type of `out` must fit in it."""
        fixed = self.plan.by_name[prev].types["result"]
        exact = self.typed(out, node)
        if (exact.width, exact.integer, exact.signed) == (fixed.width, fixed.integer, fixed.signed):
            return fixed  # the same bits: only the modes differ, which apply to computed values, not moved ones
        if exact.lsb_exponent < fixed.lsb_exponent or not fixed.holds(exact.min_value, exact.max_value):
            raise UnsupportedModelError(f"{describe(node)}: {out.name!r} of type {exact} does not fit its input's type {fixed}")
        return fixed

    def zero_padding(self, node: ir.Node, x: ir.Value, prev: str, window: Window, channels: int) -> tuple[str, Window]:
        """An explicit ZeroPadding1D/2D layer before a window layer; returns it and the unpadded window."""
        name = self.plan.unique_name(f"{node.name or x.name}_pad")
        layer = layers.zero_padding_layer(name, prev, window, channels)
        padded = tuple(n + b + e for n, b, e in zip(window.in_size, window.pads_begin, window.pads_end, strict=True))
        fixed = self.plan.by_name[prev].types["result"]
        if not fixed.holds(0, 0):
            raise UnsupportedModelError(f"{describe(node)}: the padding value 0 is outside the input's type {fixed}")
        self.plan.add(Planned(name, f"ZeroPadding{window.rank}D", describe(node), layer, {"result": fixed}), (*padded, channels))
        zeros = (0,) * window.rank
        return name, Window(padded, window.kernel, window.strides, zeros, zeros)

    # ---- layers -------------------------------------------------------------------------------
    def quant(self, node: ir.Node) -> None:
        out = node.outputs[0]
        if out.name in self.precision.constants:
            return  # a weight or bias quantizer: folded into the layer that reads it
        x = node.inputs[0]
        if x is not None and x.is_graph_input():
            self.input_layer(node, x)
        else:
            self.linear(node)

    def input_layer(self, node: ir.Node, x: ir.Value) -> None:
        if len(list(x.consumers())) != 1:
            raise UnsupportedModelError(f"{describe(node)}: graph input {x.name!r} must feed only its Quant")
        shape = self.feature_dims(x, node)
        name = self.plan.unique_name(x.name)
        out = node.outputs[0]
        planned = Planned(name, "Input", describe(node), layers.input_layer(name, shape), {"result": self.input_type(out, node)})
        self.add_layer(planned, out, shape)
        self.plan.input_name, self.plan.input_shape = name, shape

    def float_input_layer(self, x: ir.Value) -> None:
        """An unquantized graph input: the input layer's type is the default precision."""
        reader = next(iter(x.consumers()))
        shape = self.feature_dims(x, reader)
        name = self.plan.unique_name(x.name)
        planned = Planned(name, "Input", f"graph input {x.name!r}", layers.input_layer(name, shape), {"result": self.input_type(x, reader)})
        self.add_layer(planned, x, shape)
        self.plan.input_name, self.plan.input_shape = name, shape

    def linear(self, node: ir.Node) -> None:
        prev = self.source(node, node.inputs[0])
        out = node.outputs[0]
        name = self.name_for(node, out)
        fixed = self.typed(out, node)
        removable = self.plan.by_name[prev].types["result"] == fixed
        layer = layers.activation_layer(name, prev, "linear")
        self.add_layer(
            Planned(name, "Activation(linear)", describe(node), layer, {"result": fixed}, removable),
            out,
            self.plan.shapes[prev],
        )

    def dense(self, node: ir.Node) -> None:
        if self.binary.dense(node):
            return
        x, w = node.inputs[0], node.inputs[1]
        prev = self.source(node, x)
        weights = self.constant(w)
        if w is None or weights is None:
            raise UnsupportedModelError(f"{describe(node)}: the right operand must be constant weights")
        if weights.ndim != 2:
            raise UnsupportedModelError(f"{describe(node)}: weights must be 2-D, got {list(weights.shape)}")
        if len(self.plan.shapes[prev]) != 1:
            # hls4ml turns a Dense on a multi-dimensional input into a pointwise convolution.
            raise UnsupportedModelError(f"{describe(node)}: only [batch, features] inputs are lowered to Dense")
        if self.plan.shapes[prev][0] != weights.shape[0]:
            raise UnsupportedModelError(
                f"{describe(node)}: {self.plan.shapes[prev][0]} features into weights {list(weights.shape)}"
            )
        n_out = weights.shape[1]
        bias, bias_type, result = self.fused_bias(node.outputs[0], n_out)
        accum = self.accumulator(result, node)
        if bias_type is None:
            # hls4ml always adds a bias array; a zero one of the narrowest type, chosen here.
            bias_type = FixedType.covering(0, 0, accum.lsb_exponent)
        name = self.name_for(node, result)
        types = {"weight": self.typed(w, node), "bias": bias_type, "accum": accum, "result": self.typed(result, node)}
        self.add_layer(
            Planned(name, "Dense", describe(node), layers.dense_layer(name, prev, weights, bias), types), result, (n_out,)
        )

    def conv(self, node: ir.Node) -> None:
        x, w = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
        b = node.inputs[2] if len(node.inputs) > 2 else None
        prev = self.source(node, x)
        dims = self.layer_shape(node, x, prev)
        weights = self.constant(w)
        if w is None or weights is None:
            raise UnsupportedModelError(f"{describe(node)}: the weight (input 1) must be a constant")
        if len(dims) not in (2, 3) or weights.ndim != len(dims) + 1:
            raise UnsupportedModelError(
                f"{describe(node)}: input {list(dims)} with weight {list(weights.shape)} is not a 1-D or 2-D convolution"
            )
        spatial, channels = dims[:-1], dims[-1]
        n_filt, kernel, per_group = weights.shape[0], tuple(weights.shape[1:-1]), weights.shape[-1]
        windows = Windows.read(node, kernel)
        group = windows.group
        depthwise = group != 1
        if group == 1:
            if per_group != channels:
                raise UnsupportedModelError(f"{describe(node)}: weight {list(weights.shape)} does not fit {channels} input channels")
        elif group == channels and per_group == 1 and n_filt == channels:
            pass
        elif group == channels and per_group == 1 and n_filt % channels == 0:
            raise UnsupportedModelError(
                f"{describe(node)}: depthwise convolution with depth multiplier {n_filt // channels}; "
                "hls4ml's depthwise kernels take multiplier 1 only"
            )
        else:
            raise UnsupportedModelError(
                f"{describe(node)}: grouped convolution (group {group} of {channels} channels) is not supported; "
                "only group 1 and depthwise (group == channels == filters)"
            )
        window = self.window(node, spatial, windows)
        result = node.outputs[0]
        if self.feature_dims(result, node) != (*window.out_size, n_filt):
            raise UnsupportedModelError(
                f"{describe(node)}: output {list(self.feature_dims(result, node))} is not the "
                f"{[*window.out_size, n_filt]} its window gives"
            )
        bias_data = self.constant(b)
        if b is not None and bias_data is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias (input 2) must be a constant")
        if b is not None:
            bias, bias_type = self.per_channel(node, bias_data, n_filt, "bias"), self.typed(b, node)
        else:
            bias, bias_type, result = self.fused_bias(result, n_filt)
        accum = self.accumulator(result, node)
        if bias_type is None:
            bias_type = FixedType.covering(0, 0, accum.lsb_exponent)
        result_type = self.typed(result, node)
        plain_depthwise = depthwise and self.io_type == "io_parallel" and self.target.plain_parallel_depthwise
        if plain_depthwise:
            if window.rank == 1 or any(s != 1 for s in window.strides):
                raise UnsupportedModelError(
                    f"{describe(node)}: {self.target.name}'s io_parallel depthwise convolution exists only in 2-D "
                    "with stride 1"
                )
            # It sums straight into the result: give the result the accumulator's type (exact, wider).
            result_type = accum
        if window.padded and (self.io_type == "io_stream" or plain_depthwise):
            # hls4ml would insert the same layer itself in io_stream (insert_zero_padding_before_conv1d/2d),
            # but for Conv1D it rewires the first reader of the input rather than this convolution
            # (model.insert_node without `before`), which breaks branches.
            prev, window = self.zero_padding(node, x, prev, window, channels)
        name = self.name_for(node, result)
        build = layers.depthwise_conv_layer if depthwise else layers.conv_layer
        kind = f"{'DepthwiseConv' if depthwise else 'Conv'}{window.rank}D"
        types = {"weight": self.typed(w, node), "bias": bias_type, "accum": accum, "result": result_type}
        weights, types = self.binary.conv_weights(x, weights, types)
        self.add_layer(
            Planned(name, kind, describe(node), build(name, prev, window, weights, bias), types),
            result,
            (*window.out_size, n_filt),
        )

    def requantization(self, node: ir.Node) -> None:
        """`Mul(x, k) [-> Add(b)] [-> Quant]`: a BatchNormalization layer."""
        data = [self.constant(v) for v in node.inputs[:2]]
        if (data[0] is None) == (data[1] is None):
            raise UnsupportedModelError(f"{describe(node)}: only a product of an activation and a constant is lowered")
        k_index = 0 if data[0] is not None else 1
        x, k = node.inputs[1 - k_index], node.inputs[k_index]
        assert x is not None and k is not None
        prev = self.source(node, x)
        channels = self.plan.shapes[prev][-1]
        scale = self.per_channel(node, data[k_index], channels, "scale")
        bias, bias_type, result = self.fused_bias(node.outputs[0], channels)
        self.scale_layer(node, prev, result, scale, self.typed(k, node), bias, bias_type)

    def scale_layer(
        self,
        node: ir.Node,
        prev: str,
        result: ir.Value,
        scale: np.ndarray,
        scale_type: FixedType,
        bias: np.ndarray,
        bias_type: FixedType | None,
    ) -> None:
        """BatchNormalization `res = x * scale + bias`, rounded once into the result type: a
        following Quant's type when it is the only reader (that single rounding is what the Quant
        does to the exact value), else the exact type of the result."""
        exact = self.typed(result, node)
        result, quant_type = self.fused_quant(result)
        fixed = quant_type if quant_type is not None else exact
        if bias_type is None:
            bias_type = FixedType.covering(0, 0, exact.lsb_exponent)
        name = self.name_for(node, result)
        shape = self.plan.shapes[prev]
        if np.all(scale == 1) and np.all(bias == 0):
            # hls4ml's remove_nop_batch_normalization would drop it, rounding and all: a cast.
            layer = layers.activation_layer(name, prev, "linear")
            removable = self.plan.by_name[prev].types["result"] == fixed
            planned = Planned(name, "Activation(linear)", describe(node), layer, {"result": fixed}, removable)
            self.add_layer(planned, result, shape)
            return
        layer = layers.batchnorm_layer(name, prev, shape, scale, bias)
        types = {"scale": scale_type, "bias": bias_type, "result": fixed}
        self.add_layer(Planned(name, "BatchNormalization", describe(node), layer, types), result, shape)

    def batchnorm(self, node: ir.Node) -> None:
        """An unfused channels-last BatchNormalization: `x * a + b` with onnxruntime's float32 a, b."""
        if len(node.inputs) < 5 or any(self.constant(v) is None for v in node.inputs[1:5]):
            raise UnsupportedModelError(f"{describe(node)}: scale, bias, mean and variance must be constants")
        x = node.inputs[0]
        prev = self.source(node, x)
        channels = self.plan.shapes[prev][-1]
        params = [self.per_channel(node, self.constant(v), channels, "parameter") for v in node.inputs[1:5]]
        view = batch_norm(node)
        assert view is not None, "the handler table maps only BatchNormalization here"
        a, b = view.coefficients(tuple(params))
        self.scale_layer(node, prev, node.outputs[0], a, exact_type(a), b, exact_type(b))

    def add(self, node: ir.Node) -> None:
        first, second = node.inputs[0], node.inputs[1]
        data = [self.constant(v) for v in (first, second)]
        if data[0] is not None and data[1] is not None:
            raise UnsupportedModelError(f"{describe(node)}: an Add of two constants (run fold-constants)")
        if data[0] is not None or data[1] is not None:
            # An offset on its own: a BatchNormalization with scale 1.
            x, b = (second, first) if data[0] is not None else (first, second)
            prev = self.source(node, x)
            channels = self.plan.shapes[prev][-1]
            bias = self.per_channel(node, data[0] if data[0] is not None else data[1], channels, "bias")
            one = FixedType.covering(1, 1, 0)
            self.scale_layer(node, prev, node.outputs[0], np.ones(channels), one, bias, self.typed(b, node))
            return
        a, b = self.source(node, first), self.source(node, second)
        if self.plan.shapes[a] != self.plan.shapes[b]:
            raise UnsupportedModelError(
                f"{describe(node)}: operands of shapes {list(self.plan.shapes[a])} and {list(self.plan.shapes[b])}; "
                "only equal shapes are lowered (no broadcasting)"
            )
        out = node.outputs[0]
        name = self.name_for(node, out)
        self.add_layer(
            Planned(name, "Merge(add)", describe(node), layers.merge_layer(name, a, b, "add"), {"result": self.typed(out, node)}),
            out,
            self.plan.shapes[a],
        )

    def relu(self, node: ir.Node) -> None:
        prev = self.source(node, node.inputs[0])
        # relu writes `res = data` (or 0) into the result type, which rounds and saturates like
        # the Quant; fusing saves a layer and an intermediate array.
        out, quant_type = self.fused_quant(node.outputs[0])
        fixed = quant_type if quant_type is not None else self.typed(node.outputs[0], node)
        name = self.name_for(node, out)
        layer = layers.activation_layer(name, prev, "relu")
        self.add_layer(Planned(name, "Activation(relu)", describe(node), layer, {"result": fixed}), out, self.plan.shapes[prev])

    def leaky_relu(self, node: ir.Node) -> None:
        prev = self.source(node, node.inputs[0])
        attr = node.attributes.get("alpha")
        alpha = np.float32(attr.value if attr is not None else 0.01)
        # `alpha * data` is exact in the product type and rounded once into the result (the Quant's).
        out, quant_type = self.fused_quant(node.outputs[0])
        fixed = quant_type if quant_type is not None else self.typed(node.outputs[0], node)
        name = self.name_for(node, out)
        layer = layers.leaky_relu_layer(name, prev, float(alpha))
        types = {"param": exact_type(np.asarray(alpha)), "result": fixed}
        self.add_layer(Planned(name, "LeakyReLU", describe(node), layer, types), out, self.plan.shapes[prev])

    def concat(self, node: ir.Node) -> None:
        """Concatenate along the channels; hls4ml joins two values, so more are joined pairwise,
        left to right, each partial result in the narrowest type holding both of its parts."""
        if len(node.inputs) < 2:
            raise UnsupportedModelError(f"{describe(node)}: a concatenation of {len(node.inputs)} value")
        sources = [self.source(node, v) for v in node.inputs]
        dims = [self.layer_shape(node, v, layer) for v, layer in zip(node.inputs, sources, strict=True)]
        rank = len(dims[0])
        axis = _int(node, "axis", 0)
        if axis not in (-1, rank) or rank > 3 or any(len(d) != rank or d[:-1] != dims[0][:-1] for d in dims):
            raise UnsupportedModelError(
                f"{describe(node)}: only a concatenation of channels (the last axis) of equal-sized values is lowered"
            )
        out = node.outputs[0]
        joined, joined_dims = sources[0], dims[0]
        for i, (source, part_dims) in enumerate(zip(sources[1:], dims[1:], strict=True), start=2):
            last = i == len(sources)
            name = self.name_for(node, out) if last else self.plan.unique_name(f"{node.name or out.name}_part{i}")
            if last:
                fixed = self.typed(out, node)
            else:
                a, b = self.plan.by_name[joined].types["result"], self.plan.by_name[source].types["result"]
                fixed = FixedType.covering(
                    min(a.min_value, b.min_value), max(a.max_value, b.max_value), min(a.lsb_exponent, b.lsb_exponent)
                )
            joined_dims = (*joined_dims[:-1], joined_dims[-1] + part_dims[-1])
            layer = layers.concatenate_layer(name, joined, source, rank)
            planned = Planned(name, "Concatenate", describe(node), layer, {"result": fixed})
            if last:
                self.add_layer(planned, out, joined_dims)
            else:
                self.plan.add(planned, joined_dims)
            joined = name

    def resize(self, node: ir.Node) -> None:
        x = node.inputs[0]
        prev = self.source(node, x)
        dims = self.layer_shape(node, x, prev)
        out = node.outputs[0]
        out_dims = self.feature_dims(out, node)
        mode = _str(node, "mode", "nearest")
        if mode != "nearest":
            raise UnsupportedModelError(f"{describe(node)}: mode {mode!r}; only 'nearest' is lowered")
        if len(dims) not in (2, 3) or len(out_dims) != len(dims) or dims[-1] != out_dims[-1]:
            raise UnsupportedModelError(f"{describe(node)}: only resizing the spatial axes of [spatial..., channels] is lowered")
        in_size, out_size = (1, *dims[:-1])[-2:], (1, *out_dims[:-1])[-2:]
        transform = _str(node, "coordinate_transformation_mode", "half_pixel")
        nearest = _str(node, "nearest_mode", "round_prefer_floor")
        for n, m in zip(in_size, out_size, strict=True):
            if m % n:
                raise UnsupportedModelError(f"{describe(node)}: {n} -> {m} is not an integer upsampling factor")
            onnx = [onnx_nearest_index(i, n, m, transform, nearest) for i in range(m)]
            hls = [hls4ml_nearest_index(i, n, m, self.io_type) for i in range(m)]
            if onnx != hls:
                raise UnsupportedModelError(
                    f"{describe(node)}: {transform}/{nearest} reads input indices {onnx} for {n} -> {m}; "
                    f"hls4ml's nearest resize reads {hls}"
                )
        name = self.name_for(node, out)
        layer = layers.resize_layer(name, prev, in_size, out_size, dims[-1])
        fixed = self.kept_type(node, out, prev)
        self.add_layer(Planned(name, "Resize(nearest)", describe(node), layer, {"result": fixed}), out, out_dims)

    def reshape(self, node: ir.Node) -> None:
        x = node.inputs[0]
        prev = self.source(node, x)
        out = node.outputs[0]
        if x is None or x.shape is None or out.shape is None or list(x.shape)[:1] != list(out.shape)[:1]:
            raise UnsupportedModelError(f"{describe(node)}: only reshapes that keep the batch dimension are lowered")
        target = self.feature_dims(out, node)
        if math.prod(target) != math.prod(self.plan.shapes[prev]):
            raise UnsupportedModelError(f"{describe(node)}: reshape of {list(self.plan.shapes[prev])} to {list(target)}")
        name = self.name_for(node, out)
        layer = layers.reshape_layer(name, prev, target)
        fixed = self.kept_type(node, out, prev)
        planned = Planned(name, "Reshape", describe(node), layer, {"result": fixed}, removable=True)
        self.add_layer(planned, out, target)

    def cast(self, node: ir.Node) -> None:
        """A float Cast: the exact value is unchanged in fixed point (where semantic mode's float32
        Cast could round, precision inference has said so), so its output stays on the input's layer.

        The condition is that the input layer's type holds the cast's values (`kept_type`), not that
        the two inferred types are equal: a quantizer's result type carries the rounding and
        saturation it writes with (`RND_CONV,SAT`; `TRN_ZERO` for HAWQ's truncating average), the
        cast's result type the defaults of a computed interval (`TRN,WRAP`), on the same values.
        (HAWQ's residual whose identity branch is a QuantAct's output, and a QuantAct after
        QuantAveragePool2d, cast a Quant's result to double.)"""
        cast_target(node)
        x, out = node.inputs[0], node.outputs[0]
        prev = self.source(node, x)
        self.kept_type(node, out, prev)
        self.plan.value_layer[out.name] = prev

    def pool(self, node: ir.Node) -> None:
        x = node.inputs[0]
        prev = self.source(node, x)
        dims = self.layer_shape(node, x, prev)
        if len(node.outputs) > 1 and node.outputs[1] is not None and list(node.outputs[1].consumers()):
            raise UnsupportedModelError(f"{describe(node)}: the Indices output is not supported")
        windows = Windows.read(node)
        kernel = windows.kernel
        if kernel is None or len(dims) != len(kernel) + 1 or len(kernel) not in (1, 2):
            raise UnsupportedModelError(f"{describe(node)}: only 1-D and 2-D pooling with a kernel_shape is lowered")
        spatial, channels = dims[:-1], dims[-1]
        window = self.window(node, spatial, windows)
        out = node.outputs[0]
        if self.feature_dims(out, node) != (*window.out_size, channels):
            raise UnsupportedModelError(f"{describe(node)}: output shape does not match its window")
        x_type = self.plan.by_name[prev].types["result"]
        maximum = node.op_type == "MaxPool"
        count_pad = windows.count_include_pad and not maximum
        if window.padded and ((maximum and not x_type.signed) or count_pad):
            # Zeros are what max pooling's -inf padding gives when every value is >= 0, and what
            # average pooling with count_include_pad reads; hls4ml's own padding of max pooling
            # (`pad_val`: the sign bit set) is a large positive value for unsigned types.
            prev, window = self.zero_padding(node, x, prev, window, channels)
        if window.padded and (self.io_type == "io_stream" or (not maximum and self.target.averages_in_input_type)):
            what = "signed max" if maximum else "average (count_include_pad=0)"
            raise UnsupportedModelError(
                f"{describe(node)}: padded {what} pooling in {self.io_type} on {self.target.name}; "
                "hls4ml's kernel for it has no padding (io_stream) or rescales with a rounded factor (Catapult)"
            )
        if self.io_type == "io_stream" and window.kernel != window.strides:
            raise UnsupportedModelError(
                f"{describe(node)}: kernel {list(window.kernel)} with strides {list(window.strides)}; "
                "hls4ml's streaming pooling needs strides equal to the kernel"
            )
        op = "Max" if maximum else "Average"
        if not maximum:
            prev = self.average_input(node, x, prev, window.divisors(count_pad), window.kernel)
        name = self.name_for(node, out)
        layer = layers.pooling_layer(name, prev, op, window, channels, count_pad)
        planned = Planned(name, f"{op}Pooling{window.rank}D", describe(node), layer, {"result": self.typed(out, node)})
        self.pooling_accumulator(planned, node, x_type if maximum else self.accumulator(out, node), math.prod(window.kernel))
        self.add_layer(planned, out, (*window.out_size, channels))

    def global_pool(self, node: ir.Node) -> None:
        x = node.inputs[0]
        prev = self.source(node, x)
        dims = self.layer_shape(node, x, prev)
        if len(dims) not in (2, 3):
            raise UnsupportedModelError(f"{describe(node)}: only 1-D and 2-D global pooling is lowered")
        maximum = node.op_type == "GlobalMaxPool"
        out = node.outputs[0]
        size = math.prod(dims[:-1])
        x_type = self.plan.by_name[prev].types["result"]
        if not maximum:
            prev = self.average_input(node, x, prev, {size}, ())
        op = "Max" if maximum else "Average"
        name = self.name_for(node, out)
        layer = layers.global_pooling_layer(name, prev, op, dims[:-1], dims[-1])
        planned = Planned(name, f"Global{op}Pooling{len(dims) - 1}D", describe(node), layer, {"result": self.typed(out, node)})
        # Max pooling compares the inputs in the accumulator type: the input's type holds them all.
        self.pooling_accumulator(planned, node, x_type if maximum else self.accumulator(out, node), size)
        self.add_layer(planned, out, (dims[-1],))

    def pooling_accumulator(self, planned: Planned, node: ir.Node, accum: FixedType, pool_size: int) -> None:
        """Set the accumulator of a pooling layer, through Catapult's widening of it."""
        planned.types["accum"] = accum
        if not self.target.widens_pooling_accum:
            return
        extra = pool_size.bit_length() - 1
        if accum.width - 2 * extra >= 1:
            planned.configured["accum"] = FixedType(
                accum.width - 2 * extra, accum.integer - extra, accum.signed, accum.rounding, accum.saturation
            )
        else:
            # Configure ours; hls4ml's widening keeps it exact (more bits on both sides).
            planned.configured["accum"] = accum
            planned.types["accum"] = FixedType(
                accum.width + 2 * extra, accum.integer + extra, accum.signed, accum.rounding, accum.saturation
            )

    def average_input(self, node: ir.Node, x: ir.Value, prev: str, divisors: set[int], window_dims: tuple[int, ...]) -> str:
        """The layer an average pooling reads. On targets that average in the input's type
        (Catapult; `window_dims` is empty for a global pooling, which only io_parallel does so),
        a cast first into the accumulator's type, which holds every window sum at the quotient's
        LSB, widened to hold the window's dims and 1 (io_parallel rescales by
        `data_T(pool width) / count`, which must come out as exactly 1)."""
        if self.target.widens_pooling_accum and any(d & (d - 1) for d in divisors):
            raise UnsupportedModelError(
                f"{describe(node)}: average over {sorted(divisors)} positions on {self.target.name}: the divisor is "
                "not a power of two and hls4ml's Catapult backend widens the accumulator, which changes the truncation"
            )
        if not self.target.averages_in_input_type or (not window_dims and self.io_type == "io_stream"):
            return prev
        accum = self.accumulator(node.outputs[0], node)
        fixed = FixedType(accum.width, accum.integer, accum.signed)
        for needed in (1, *window_dims):
            fixed = fixed.union(FixedType.covering(needed, needed, fixed.lsb_exponent))
        name = self.plan.unique_name(f"{node.name or x.name}_widen")
        layer = layers.activation_layer(name, prev, "linear")
        op = "Activation(linear) (exact widening for Catapult's average)"
        self.plan.add(Planned(name, op, describe(node), layer, {"result": fixed}), self.plan.shapes[prev])
        return name


def plan_layers(model: ir.Model, precision: PrecisionResult, target: Hls4mlTarget, io_type: str) -> Plan:
    """The hls4ml layers of `model`, with every type (see the module doc)."""
    return Planner(model, precision, target, io_type).run()

