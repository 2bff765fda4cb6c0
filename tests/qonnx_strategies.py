"""Hypothesis strategies: random valid QONNX graphs, in the forms real exporters write them.

`qonnx_graphs()` draws a `GeneratedGraph`: an `onnx.ModelProto` (serialized, so that every load is
a fresh, independent model) and the set of features it exercises; MLP-like graphs and small
convolutional networks. The same builder (`build_graph`) also takes its structural choices
uniformly from a seed (`RandomChoices`, `random_graphs`): independent graphs, without shrinking. The graphs use only the ops the semantic executor runs
(`hawqc.sim.ops.OP_TABLE`), and are built so that:

- every value is finite: scales are tied to the bit width (the largest quantized magnitude is
  0.25..4), layers are narrow and images tiny (at most MAX_CHANNELS channels and MAX_SPATIAL pixels
  along each axis, everywhere), so no product overflows float32 and the executor stays fast;
- dim 0 is the batch, declared 1, and no op mixes it with other dims (Reshape targets keep dim 0 as
  1, -1 or 0; Flatten only at axis 0 or 1; Gemm's transA=1 only on constants, where it would
  otherwise transpose the batch into the features), so the executor's batched run means what ONNX
  means;
- every QONNX quantization parameter is a constant (an initializer, a `Constant` node, or a graph
  input shadowed by an initializer), as the verifier requires.

What the graphs cover (the feature names in `GeneratedGraph.features`; `FEATURES` lists them all):
MLPs (input Quant -> MatMul/Gemm with quantized weights and biases -> Relu -> activation Quant),
HAWQ-style layers (Div -> MatMul(Quant(W_int, 1)) -> Add(Quant(b_int, 1)) -> Mul), bit widths
1..16, signed and unsigned, narrow, the seven rounding modes (also spelled in lower case, and
absent), absent `signed`/`narrow`, the four QONNX domain names, Quant / IntQuant / BipolarQuant,
per-tensor / per-output-channel / per-input-channel / per-element scales and zero points, non-zero
zero points, power-of-two and arbitrary scales, Gemm with transB (on a constant weight or a
computed one, which `gemm-to-matmul` transposes with a Transpose), alpha, beta (absent, 1, powers of
two, others, 0) and absent or empty bias, branches that rejoin through Add/Sub/Mul, a second graph
input, Identity chains (on data, on weights, onto a graph output), dead nodes and initializers,
constant subexpressions (Add/Sub/Mul/Div/Reshape/MatMul/Gemm, with transA and transB, of
constants), `Constant` nodes (every attribute form), graph inputs shadowed by initializers, Reshape
and Flatten around the batch dim (rank-3 and rank-4 tensors), batched rank-3 MatMul, two graph
outputs, a graph output that is also read by other nodes, unnamed and duplicate node names, nodes in
a shuffled topological order, undeclared output shapes and missing opset imports of the QONNX domain.

Convolutional networks: an NCHW or NCW input (or an NHWC / NWC one transposed to channels-first,
as Keras-style exports do, and transposed back before the flatten) with its Quant (per tensor or
per channel, [C,1,1] or [1,C,1,1]); then up to three blocks: Conv (kernel 1-3, strides, dilations,
pads symmetric or not, auto_pad, plain, grouped or depthwise, attributes at their ONNX defaults
often left out, the bias as input 2, as an Add of [M,1,1] / [1,M,1,1] after it, or none; weights
quantized per tensor, per output channel [M,1,1,1], per input channel or per element, or float;
biases quantized or float), HAWQ's Div -> Conv(Quant(W_int, 1)) -> Add -> Mul, BatchNormalization
with random parameters (right after the Conv, after its bias Add, or on its own; before a binary or
ternary quantizer too), Relu / LeakyRelu / Clip (bounds absent or not) and activation Quants, MaxPool
/ AveragePool (ceil_mode, count_include_pad, dilations at opset 19) / GlobalAveragePool /
GlobalMaxPool, a residual Add of two equal-shaped paths, a Concat of two on the channel axis,
Resize nearest by 2 (scales or sizes, the coordinate modes), Pad (constant, edge, reflect, wrap;
value; the axes input from opset 18; the channels too), Mul/Div rescales; then Flatten (or Reshape
[N,-1]), after a global pool sometimes, into one or two dense layers, the last one's Quant sometimes
left out, now and then ending in Softmax or Sigmoid. Outputs: the head's, sometimes an image as
well, or only the image; rarely the flattened image (which channels-last must refuse).

`qonnx_graphs(integer_only=True)` draws only integer-only graphs (CNNs, and MLPs of the same
kinds of layers): power-of-two scales, zero points 0, 2..6-bit activations and weights, quantized
biases, every activation requantized, rounding modes that ap_fixed has, BatchNormalization whose
var + epsilon is a power of four (so that its scale and offset are short dyadic numbers), LeakyRelu
alphas and Clip bounds that are dyadic, averages over power-of-two windows. Every value then has a
fixed-point type float32 computes exactly, so hardware mode must equal semantic mode bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hawqc.ir.io import to_text
from hawqc.ir.normalize import normalize
from hawqc.ir.shape_inference import infer_shapes
from hawqc.ir.verifier import verify

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "hawq2qonnx", "finn.custom_op.general")
ROUNDING_MODES = ("ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")
# The modes an ap_fixed / ac_fixed assignment performs (CEIL and UP have no equivalent).
INTEGER_ROUNDING_MODES = ("ROUND", "FLOOR", "DOWN", "HALF_UP", "HALF_DOWN")
# opset -> an IR version that declares it (HAWQ's exporter writes opset 11, Brevitas 13..17).
OPSETS = {11: 7, 13: 7, 17: 8, 19: 9}
# Gemm factors: powers of two split exactly (gemm-to-matmul rewrites them), the others do not.
POWER_OF_TWO_FACTORS = (1.0, 0.5, 2.0, 0.25, 4.0)
OTHER_FACTORS = (0.75, 1.5, 3.0, 0.1, -1.0, -0.5, 0.3)
# Convolutional graphs stay tiny, so that the executor runs them fast: at most this many channels
# and pixels along each spatial axis, everywhere in the graph.
MAX_CHANNELS = 4
MAX_SPATIAL = 6

FEATURES = frozenset(
    {
        # structure
        "mlp", "layer:matmul", "layer:gemm", "layer:hawq", "relu", "activation-quant",
        "branch", "join:Add", "join:Sub", "join:Mul", "second-input", "identity-chain",
        "identity-on-weight", "identity-to-output", "dead-node", "dead-initializer",
        "constant-subexpression", "constant-gemm", "constant-gemm:inexact-alpha-with-bias",
        "constant-node", "shadowed-input", "reshape", "flatten", "flatten-axis0", "input-rank>2",
        "matmul-rank3", "rescale", "two-outputs", "output-also-consumed",
        "identity-chain-between-outputs", "unnamed-nodes", "duplicate-node-names", "shuffled-order",
        "output-shape-undeclared", "pass-like-names", "qonnx-opset-import-missing",
        # quantizers
        "op:Quant", "op:IntQuant", "op:BipolarQuant", "bits:1", "bits:2-8", "bits:9-16",
        "signed", "unsigned", "narrow", "signed/narrow-absent", "zero-point-nonzero",
        "scale:per-tensor", "scale:per-out-channel", "scale:per-in-channel", "scale:per-element",
        "zeropt:per-tensor", "zeropt:per-out-channel", "zeropt:per-in-channel", "zeropt:per-element",
        "scale:power-of-two", "scale:arbitrary", "rounding-absent", "rounding-lowercase",
        "unquantized-weight", "float-bias", "quantized-bias", "scale:per-channel", "zeropt:per-channel",
        # Gemm
        "gemm:transB=1", "gemm:transB=0", "gemm:transB-absent", "gemm:transA=0",
        "gemm:alpha-power-of-two", "gemm:alpha-other", "gemm:beta-power-of-two", "gemm:beta-other",
        "gemm:beta=0", "gemm:no-bias", "gemm:empty-bias", "gemm:transB=1-computed-weight",
        "constant-gemm:transA=1",
        # convolutional networks
        "cnn", "cnn:1d-input", "cnn:2d-input", "cnn:nhwc-input", "cnn:transpose-before-flatten",
        "cnn:conv", "cnn:hawq-conv", "cnn:residual", "cnn:concat", "cnn:head", "cnn:image-output",
        "cnn:image-tap-output", "cnn:flattened-image-output", "cnn:dyadic",
        "conv:1d", "conv:2d", "conv:depthwise", "conv:grouped", "conv:auto_pad",
        "conv:bias-input", "conv:bias-add", "conv:bias-none",
        "window:strided", "window:dilated", "window:padded", "window:padded-asymmetric",
        "attr-absent:kernel_shape", "attr-absent:strides", "attr-absent:dilations", "attr-absent:pads",
        "attr-absent:group",
        "bn", "bn:after-conv", "bn:after-bias-add", "bn:standalone", "bn:epsilon-absent", "bn:dyadic",
        "bn:before-step-quant", "integer-only",
        "leaky-relu", "leaky-relu:alpha-absent", "clip", "clip:min-absent", "clip:max-absent",
        "pool:MaxPool", "pool:AveragePool", "pool:GlobalAveragePool", "pool:GlobalMaxPool",
        "pool:ceil-mode", "pool:count-include-pad", "head:global-pool", "head:Softmax", "head:Sigmoid",
        "residual:skip", "residual:relu", "residual:quant", "residual:conv",
        "concat:with-input", "concat:negative-axis",
        "resize", "resize:scales", "resize:sizes", "resize:mode-attributes",
        "pad", "pad:constant", "pad:edge", "pad:reflect", "pad:wrap", "pad:value", "pad:axes", "pad:channels",
        *(f"rounding:{mode}" for mode in ROUNDING_MODES),
        *(f"domain:{domain}" for domain in QONNX_DOMAINS),
        *(f"opset:{opset}" for opset in OPSETS),
    }
)  # fmt: skip


@dataclass(frozen=True)
class GeneratedGraph:
    """One drawn graph. Its repr is the graph as ONNX text, so a failing example can be read."""

    data: bytes  # the serialized ModelProto
    features: frozenset[str]

    @property
    def proto(self) -> onnx.ModelProto:
        return onnx.ModelProto.FromString(self.data)

    def load(self) -> ir.Model:
        """A fresh model, loaded as `hawqc.frontends.onnx.load_onnx` loads a file."""
        model = ir.from_proto(self.proto)
        normalize(model)
        infer_shapes(model)
        verify(model)
        return model

    def __repr__(self) -> str:
        return (
            f"GeneratedGraph(features={sorted(self.features)}, text=\n{to_text(ir.from_proto(self.proto))}\n)"
        )

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for a failing example
        printer.text(repr(self))


Shape = tuple[int, ...]


@dataclass(frozen=True)
class WindowAxis:
    """A Conv or pool window along one spatial axis (ONNX attributes, one entry each)."""

    kernel: int
    stride: int = 1
    dilation: int = 1
    begin: int = 0  # pads
    end: int = 0

    @property
    def effective_kernel(self) -> int:
        return (self.kernel - 1) * self.dilation + 1

    def out(self, size: int, ceil: bool = False) -> int:
        span = size + self.begin + self.end - self.effective_kernel
        return (-(-span // self.stride) if ceil else span // self.stride) + 1

    def every_window_reads(self, size: int) -> bool:
        """Whether every window (ceil_mode's too) holds a position of the input, not only padding
        (always so without dilation, the pads being smaller than the kernel)."""
        for index in range(self.out(size, ceil=True)):
            start = index * self.stride - self.begin
            if not any(0 <= start + tap * self.dilation < size for tap in range(self.kernel)):
                return False
        return True


class HypothesisChoices:
    """Structural choices drawn through hypothesis, so that a failing graph shrinks."""

    def __init__(self, draw: Callable) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def choice(self, options: Sequence):
        return self.draw(st.sampled_from(options))


class RandomChoices:
    """Structural choices drawn independently and uniformly (for coverage statistics: examples of
    one hypothesis run are correlated, hypothesis mutates earlier ones)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def integer(self, low: int, high: int) -> int:
        return int(self.rng.integers(low, high + 1))

    def choice(self, options: Sequence):
        return options[int(self.rng.integers(len(options)))]


Choices = HypothesisChoices | RandomChoices


class _GraphBuilder:
    """Collects nodes, constants and shapes while a graph is drawn.

    Structure (which layers, which attributes, which parameter shapes) comes from `choices`
    (hypothesis, so that it shrinks); the numbers inside the tensors come from a numpy generator
    seeded by one drawn integer, which keeps drawing fast.
    """

    def __init__(self, choices: Choices, opset: int, *, integer_only: bool = False) -> None:
        self.choices = choices
        self.opset = opset
        self.integer_only = integer_only
        # Dyadic: every scale a power of two and every float constant a short dyadic number, so
        # that sums of products of quantized values are exact in float32, whatever their order.
        self.dyadic = integer_only
        self.rng = np.random.default_rng(choices.integer(0, 2**32 - 1))  # the tensor seed
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shadowed: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, Shape] = {}
        self.data_values: list[str] = []  # values computed from graph inputs (dead code reads them)
        self.input_names: set[str] = set()
        self.features: set[str] = set()
        self.domains_used: set[str] = set()
        self.computed_constant = False  # whether a constant made since it was reset is computed by nodes
        self.flattened: str | None = None  # a CNN's flattened image (what its dense head reads)
        self.batch_norm_outputs: set[str] = set()
        self._count = 0

    # -- drawing ---------------------------------------------------------------------------------

    def chance(self, percent: int) -> bool:
        """True with about `percent`% probability; shrinks toward False."""
        return self.choices.integer(0, 99) >= 100 - percent

    def choice(self, options):
        return self.choices.choice(options)

    def integer(self, low: int, high: int) -> int:
        return self.choices.integer(low, high)

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    # -- graph pieces ----------------------------------------------------------------------------

    def node(
        self, op: str, inputs: list[str], shape: Shape, *, domain: str = "", data: bool = True, **attrs
    ) -> str:
        out = self.fresh(op.lower() + "_")
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"node_{out}", domain=domain, **attrs))
        self.shapes[out] = shape
        if data:
            self.data_values.append(out)
        return out

    def constant(self, array: np.ndarray, prefix: str) -> str:
        """A constant as an initializer, a `Constant` node, or a graph input shadowed by an initializer."""
        name = self.fresh(prefix)
        self.shapes[name] = array.shape
        kind = self.choice(["initializer"] * 6 + ["constant-node", "shadowed-input"])
        if kind == "constant-node":
            self.features.add("constant-node")
            self.nodes.append(self._constant_node(name, array))
            return name
        self.initializers.append(numpy_helper.from_array(array, name))
        if kind == "shadowed-input":
            self.features.add("shadowed-input")
            elem = helper.np_dtype_to_tensor_dtype(array.dtype)
            self.shadowed.append(helper.make_tensor_value_info(name, elem, list(array.shape)))
        return name

    def _constant_node(self, name: str, array: np.ndarray) -> onnx.NodeProto:
        # value_float(s) / value_int(s) exist from opset 12 on; `value` (a tensor) always.
        forms = ["value"]
        if self.opset >= 12 and array.size > 0:  # (onnx's helper cannot type an empty list)
            if array.dtype == np.float32 and array.ndim == 0:
                forms.append("value_float")
            if array.dtype == np.float32 and array.ndim == 1:
                forms.append("value_floats")
            if array.dtype == np.int64 and array.ndim == 1:
                forms.append("value_ints")
        form = self.choice(forms)
        if form == "value":
            attr = {"value": numpy_helper.from_array(array, name + "_value")}
        elif form == "value_float":
            attr = {"value_float": float(array)}
        elif form in ("value_floats", "value_ints"):
            attr = {form: array.tolist()}
        return helper.make_node("Constant", [], [name], name=f"node_{name}", **attr)

    # -- quantizers ------------------------------------------------------------------------------

    def quantizer(
        self,
        source: str | Callable[[np.ndarray, np.ndarray, float, float], str],
        *,
        role: str,
        shape: Shape | None = None,
        out_axis: int | None = None,
        in_axis: int | None = None,
        channel_axis: int | None = None,
        after_relu: bool = False,
    ) -> str:
        """A Quant / IntQuant / BipolarQuant of `source`.

        role: "input" (of a graph input: `draw_inputs` draws inside its range), "weight" (a constant
        with `out_axis` / `in_axis` naming its output and input channel: [rows, cols] or a Conv
        weight [M, C/group, k...]), "bias", or "activation". `channel_axis` names the channel axis
        of an image ([N, C, H, W]: 1) or of a per-channel constant ([M, 1, 1]: 0), along which
        per-channel parameters go; without it, an activation's channels are its last axis. A
        constant `source` may be given as a function of (scale, zero point, min_int, max_int) that
        makes it, so that its values can sit on the quantizer's grid and on its rounding ties.

        In an integer-only graph (`integer_only`), every quantizer has a fixed-point type:
        power-of-two scales, zero point 0, 2..6 bits (biases 4..10), and activations are per
        tensor, rounded by a mode ap_fixed has, and never unsigned narrow.
        """
        shape = self.shapes[source] if isinstance(source, str) else shape
        data = role in ("input", "activation")
        domain = self.choice(QONNX_DOMAINS)
        self.domains_used.add(domain)
        self.features.add(f"domain:{domain}")
        after_batch_norm = isinstance(source, str) and source in self.batch_norm_outputs
        if role in ("weight", "activation") and not self.integer_only and self.chance(8):
            self.features.add("op:BipolarQuant")
            if after_batch_norm:
                self.features.add("bn:before-step-quant")
            scale = self._scale(shape, role, out_axis, in_axis, channel_axis, bits=1, signed=True)
            x = source if isinstance(source, str) else source(scale, np.float32(0), -1, 1)
            return self.node(
                "BipolarQuant", [x, self.constant(scale, "scale")], shape, domain=domain, data=data
            )
        op = self.choice(["Quant", "IntQuant"])
        self.features.add(f"op:{op}")
        if self.integer_only:
            bits = self.integer(4, 10) if role == "bias" else self.integer(2, 6)
        elif self.dyadic:
            bits = self.integer(1, 8)
        else:
            bits = self.integer(1, 16)
        self.features.add("bits:1" if bits == 1 else "bits:2-8" if bits <= 8 else "bits:9-16")
        signed = self.choice([1, 0]) if not after_relu else self.choice([0, 0, 1])
        narrow = self.choice([0, 0, 1])
        if self.integer_only and data and not signed:
            narrow = 0  # qonnx clamps unsigned narrow at 2**b - 2: no saturation mode does that
        if self.integer_only and after_batch_norm and bits == 2:
            narrow = 0  # not ternary: fuse-bn would make a MultiThreshold, which has no precision rule
        attrs: dict = {}
        if self.chance(10):
            signed, narrow = 1, 0  # absent: the QONNX spec's defaults, which the executor applies
            self.features.add("signed/narrow-absent")
        else:
            attrs = {"signed": signed, "narrow": narrow}
        self.features.add("signed" if signed else "unsigned")
        if narrow:
            self.features.add("narrow")
        if self.chance(8):
            self.features.add("rounding-absent")
            self.features.add("rounding:ROUND")
        else:
            # CEIL and UP have no ap_fixed mode: an integer-only graph rounds activations otherwise
            # (a constant is evaluated, so any mode is exact there).
            modes = INTEGER_ROUNDING_MODES if self.integer_only and data else ROUNDING_MODES
            mode = self.choice(modes)
            self.features.add(f"rounding:{mode}")
            if self.chance(10):
                self.features.add("rounding-lowercase")
                mode = mode.lower()
            attrs["rounding_mode"] = mode
        scale = self._scale(shape, role, out_axis, in_axis, channel_axis, bits=bits, signed=signed)
        zero_point = self._zero_point(shape, role, out_axis, in_axis, channel_axis)
        # A binary or ternary quantizer right after a BatchNormalization: fuse-bn makes them a
        # MultiThreshold, which channels-last then refuses on an image (a known gap).
        binary = bits == 1 and signed
        ternary = bits == 2 and signed and narrow and not zero_point.any()
        if after_batch_norm and (binary or ternary):
            self.features.add("bn:before-step-quant")
        if signed:
            low, high = -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
        else:
            low, high = 0, 2**bits - 1 - narrow
        x = source if isinstance(source, str) else source(scale, zero_point, low, high)
        bitwidth = np.array(bits, dtype=np.float32)
        if self.chance(30):
            bitwidth = bitwidth.reshape(1)
        inputs = [
            x,
            self.constant(scale, "scale"),
            self.constant(zero_point, "zeropt"),
            self.constant(bitwidth, "bits"),
        ]
        return self.node(op, inputs, shape, domain=domain, data=data, **attrs)

    def _parameter_shape(
        self,
        shape: Shape,
        role: str,
        out_axis: int | None,
        in_axis: int | None,
        channel_axis: int | None,
        what: str,
    ) -> Shape:
        rank = len(shape)
        options = ["per-tensor"] * 3
        if role == "weight":
            options += ["per-out-channel"] * 3 + ["per-in-channel", "per-element"]
        elif self.integer_only and role in ("input", "activation"):
            pass  # per tensor only: a per-channel activation scale has no one fixed-point type
        elif channel_axis is not None:
            options += (["per-channel"] * 2 if shape[channel_axis] > 1 else []) + ["per-element"]
        elif rank >= 1 and shape[-1] > 1:
            options += ["per-out-channel"] * 2 + ["per-element"]  # the last axis: an activation's channels
        kind = self.choice(options)
        self.features.add(f"{what}:{kind}")
        if kind == "per-tensor":
            return self.choice([(), (1,)] if rank else [()])
        if kind == "per-element":
            return shape
        if kind == "per-channel":
            # An image's channels: PyTorch-style [C, 1, 1] or, as Brevitas writes it, [1, C, 1, 1].
            full = [1] * rank
            full[channel_axis] = shape[channel_axis]
            return self.choice([tuple(full), tuple(full[channel_axis:])] if channel_axis else [tuple(full)])
        if role in ("input", "activation", "bias"):
            # [C] or [1, ..., 1, C] (Brevitas spells it with the batch dim, [1, C, 1, 1]).
            return self.choice([(shape[-1],)] + ([(1,) * (rank - 1) + (shape[-1],)] if rank >= 2 else []))
        axis = out_axis if kind == "per-out-channel" else in_axis
        param = [1] * rank
        param[axis] = shape[axis]
        if rank == 2 and axis == 1 and self.chance(50):
            return (shape[1],)  # [C] broadcasts like [1, C]
        return tuple(param)

    def _scale(
        self, shape: Shape, role: str, out_axis, in_axis, channel_axis, *, bits: int, signed: int
    ) -> np.ndarray:
        """Scales that keep the largest quantized magnitude within 0.25..4 (so nothing overflows)."""
        pshape = self._parameter_shape(shape, role, out_axis, in_axis, channel_axis, "scale")
        levels = 2.0 ** (bits - 1) if signed and bits > 1 else 2.0**bits if not signed else 1.0
        if self.dyadic or self.chance(50):
            self.features.add("scale:power-of-two")
            exponents = self.rng.integers(-2, 3, size=pshape)
            return (2.0**exponents / levels).astype(np.float32)
        self.features.add("scale:arbitrary")
        return (self.rng.uniform(0.25, 4.0, size=pshape) / levels).astype(np.float32)

    def _zero_point(self, shape: Shape, role: str, out_axis, in_axis, channel_axis) -> np.ndarray:
        if self.integer_only or not self.chance(35):
            return np.zeros(self.choice([(), (1,)] if shape else [()]), dtype=np.float32)
        self.features.add("zero-point-nonzero")
        pshape = self._parameter_shape(shape, role, out_axis, in_axis, channel_axis, "zeropt")
        values = self.rng.integers(-2, 3, size=pshape).astype(np.float32)
        if self.chance(15):
            values += np.float32(0.5)  # QONNX allows any float zero point
        return values

    def _grid_values(
        self, shape: Shape, scale: np.ndarray, zero_point: np.ndarray, low: float, high: float
    ) -> np.ndarray:
        """Values on the quantizer's grid, on its half-steps (rounding ties) and in between,
        reaching one step beyond either end of the range (so that clamping happens too)."""
        grid = self.rng.integers(int(low) - 1, int(high) + 2, size=shape).astype(np.float64)
        kind = self.rng.integers(0, 3, size=shape)
        steps = np.where(
            kind == 0, grid, np.where(kind == 1, grid + 0.5, grid + self.rng.uniform(-0.5, 0.5, size=shape))
        )
        return ((steps - zero_point) * scale).astype(np.float32)

    def _float_values(self, shape: Shape, magnitude: float) -> np.ndarray:
        fractions = [0.0, 0.5, 0.25] if self.dyadic else [0.0, 0.5, 0.3]
        steps = self.rng.integers(-8, 9, size=shape) + self.rng.choice(fractions, size=shape)
        return (steps * magnitude / 8).astype(np.float32)

    # -- constant weights and biases -------------------------------------------------------------

    def weight(self, rows: int, cols: int, *, out_axis: int, direct: bool) -> str:
        """A weight [rows, cols], quantized or not. `direct`: the quantizer reads a constant itself."""
        shape = (rows, cols)
        if not self.integer_only and not self.chance(90):
            self.features.add("unquantized-weight")
            return self._constant_tensor(self._float_values(shape, 1.0), "w", allow_computed=not direct)
        through_identity = not direct and self.chance(12)

        def source(scale, zero_point, low, high) -> str:
            values = self._grid_values(shape, scale, zero_point, low, high)
            w = self._constant_tensor(values, "w", allow_computed=not direct)
            if through_identity:
                self.features.add("identity-on-weight")
                self.computed_constant = True
                w = self.node("Identity", [w], shape, data=False)
            return w

        return self.quantizer(source, role="weight", shape=shape, out_axis=out_axis, in_axis=1 - out_axis)

    def bias(self, shape: Shape, channel_axis: int | None = None) -> str:
        """A bias of `shape`; `channel_axis` names its channel axis if that is not the last ([M, 1, 1]: 0)."""
        if not self.integer_only and not self.chance(70):
            self.features.add("float-bias")
            return self._constant_tensor(
                self._float_values(shape, 2.0), "b", allow_computed=True, computed_percent=40
            )
        self.features.add("quantized-bias")

        def source(scale, zero_point, low, high) -> str:
            return self._constant_tensor(
                self._grid_values(shape, scale, zero_point, low, high), "b", allow_computed=True
            )

        return self.quantizer(source, role="bias", shape=shape, channel_axis=channel_axis)

    def _constant_tensor(
        self,
        array: np.ndarray,
        prefix: str,
        *,
        allow_computed: bool,
        computed_percent: int = 20,
        values_matter: bool = False,
    ) -> str:
        """`array` as a constant, or (sometimes) computed from constants by standard ops. A MatMul
        or Gemm of constants computes other numbers of that shape: not where `values_matter`."""
        if not allow_computed or not self.chance(computed_percent):
            return self.constant(array, prefix)
        self.features.add("constant-subexpression")
        self.computed_constant = True
        kinds = ["Add", "Sub", "Mul", "Div", "Reshape"]
        if not values_matter:
            kinds += ["MatMul", "Gemm", "Gemm"]
        kind = self.choice(kinds)
        shape = array.shape
        if kind in ("Add", "Sub"):
            other = self.rng.integers(-2, 3, size=shape).astype(np.float32) / 8
            first = array - other if kind == "Add" else array + other
            return self.node(
                kind,
                [self.constant(first.astype(np.float32), prefix), self.constant(other, "c")],
                shape,
                data=False,
            )
        if kind in ("Mul", "Div"):
            factor = np.float32(2.0 ** self.integer(-2, 2))
            first = array / factor if kind == "Mul" else array * factor
            return self.node(
                kind,
                [self.constant(first.astype(np.float32), prefix), self.constant(np.array(factor), "c")],
                shape,
                data=False,
            )
        if kind == "Reshape":
            flat = self.constant(array.reshape(-1), prefix)
            return self.node(
                "Reshape", [flat, self.constant(np.array(shape, dtype=np.int64), "shape")], shape, data=False
            )
        if len(shape) == 1:
            # A vector: the product as a [1, n] matrix, reshaped (a chain of constant ops).
            matrix = self._constant_product(kind, (1, shape[0]), prefix)
            return self.node(
                "Reshape",
                [matrix, self.constant(np.array(shape, dtype=np.int64), "shape")],
                shape,
                data=False,
            )
        if len(shape) != 2:
            return self.constant(array, prefix)
        return self._constant_product(kind, shape, prefix)

    def _constant_product(self, kind: str, shape: Shape, prefix: str) -> str:
        """MatMul, or Gemm with any attributes, of constants."""
        k = self.integer(1, 3)
        left = self._float_values((shape[0], k), 1.0)
        right = self._float_values((k, shape[1]), 1.0)
        if kind == "MatMul":
            return self.node(
                "MatMul", [self.constant(left, prefix), self.constant(right, "b")], shape, data=False
            )
        self.features.add("constant-gemm")
        trans_a = self.choice([None, 0, 1])
        if trans_a:
            self.features.add("constant-gemm:transA=1")
            left = np.ascontiguousarray(left.T)
        trans_b = self.choice([None, 0, 1])
        if trans_b:
            right = np.ascontiguousarray(right.T)
        # Half the alphas are not powers of two: those round differently when computed in two steps.
        alpha = self.choice([None, *POWER_OF_TWO_FACTORS]) if self.chance(50) else self.choice(OTHER_FACTORS)
        beta = self.choice([None, *POWER_OF_TWO_FACTORS, *OTHER_FACTORS])
        inputs = [self.constant(left, prefix), self.constant(right, "b")]
        if self.chance(70):
            inputs.append(self.constant(self.rng.integers(-4, 5, size=shape[1:]).astype(np.float32) / 4, "c"))
            exact_alpha = alpha is None or np.frexp(np.float32(abs(alpha)))[0] == 0.5
            if not exact_alpha and beta != 0:
                # onnxruntime rounds alpha * AB + beta * C once; rounding alpha * AB first differs.
                self.features.add("constant-gemm:inexact-alpha-with-bias")
        return self.node(
            "Gemm", inputs, shape, data=False, transA=trans_a, transB=trans_b, alpha=alpha, beta=beta
        )

    # -- data path blocks ------------------------------------------------------------------------

    def identities(self, h: str) -> str:
        if self.chance(15):
            self.features.add("identity-chain")
            for _ in range(self.integer(1, 3)):
                h = self.node("Identity", [h], self.shapes[h])
        return h

    def dense(self, h: str, out_dim: int) -> str:
        """One dense layer [1, in] -> [1, out] (or [1, a, in] -> [1, a, out] for MatMul)."""
        shape = self.shapes[h]
        in_dim = shape[-1]
        out_shape = (*shape[:-1], out_dim)
        kind = self.choice(["matmul", "gemm", "hawq"] if len(shape) == 2 else ["matmul"])
        self.features.add(f"layer:{kind}")
        if kind == "matmul":
            y = self.node("MatMul", [h, self.weight(in_dim, out_dim, out_axis=1, direct=False)], out_shape)
            if self.chance(60):
                b = self.bias(self.choice([(out_dim,), (1,) * (len(shape) - 1) + (out_dim,)]))
                y = self.node("Add", [y, b] if self.chance(50) else [b, y], out_shape)
            return y
        if kind == "hawq":
            return self._hawq_dense(h, out_dim)
        return self._gemm(h, out_dim)

    def _gemm(self, h: str, out_dim: int) -> str:
        in_dim = self.shapes[h][-1]
        trans_b = self.choice([None, 0, 1, 1])
        self.features.add("gemm:transB-absent" if trans_b is None else f"gemm:transB={trans_b}")
        # transA=1 would transpose the batch into the features: it appears on constants only.
        trans_a = self.choice([None, None, 0])
        if trans_a == 0:
            self.features.add("gemm:transA=0")
        self.computed_constant = False
        if trans_b:
            w = self.weight(out_dim, in_dim, out_axis=0, direct=False)
            if self.computed_constant:
                self.features.add("gemm:transB=1-computed-weight")  # gemm-to-matmul adds a Transpose
        else:
            w = self.weight(in_dim, out_dim, out_axis=1, direct=False)
        alpha = self._gemm_factor("alpha")
        beta = self._gemm_factor("beta")
        inputs = [h, w]
        bias = self.choice(["none", "present", "present", "present", "empty"])
        if bias == "none":
            self.features.add("gemm:no-bias")
        elif bias == "empty":
            self.features.add("gemm:empty-bias")
            inputs.append("")
        else:
            inputs.append(self.bias(self.choice([(out_dim,), (1, out_dim), ()])))
        return self.node("Gemm", inputs, (1, out_dim), transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)

    def _gemm_factor(self, name: str) -> float | None:
        kind = self.choice(
            ["absent", "absent", "power-of-two"]
            + ([] if self.dyadic else ["other"])
            + (["zero"] if name == "beta" else [])
        )
        if kind == "absent":
            return None
        if kind == "zero":
            self.features.add("gemm:beta=0")
            return 0.0
        self.features.add(f"gemm:{name}-{kind}")
        return self.choice(POWER_OF_TWO_FACTORS if kind == "power-of-two" else OTHER_FACTORS)

    def _hawq_dense(self, h: str, out_dim: int) -> str:
        """HAWQ's exporter: Div(s_prev) -> MatMul(Quant(W_int, 1, 0)) -> Add(Quant(b_int, 1, 0)) -> Mul(s)."""
        shape = self.shapes[h]
        in_dim = shape[-1]
        domain = self._hawq_domain()
        s_prev = self._hawq_scale()
        x = self.node("Div", [h, self.constant(np.array(s_prev), "s_prev")], shape)
        bits = self.integer(2, 6 if self.integer_only else 8)
        limit = 2 ** (bits - 1)
        w_int = self.rng.integers(-limit, limit, size=(in_dim, out_dim)).astype(np.float32)
        y = self.node("MatMul", [x, self._int_quant(w_int, bits, domain)], (1, out_dim))
        if self.chance(80):
            b_int = self.rng.integers(-100, 101, size=(out_dim,)).astype(np.float32)
            y = self.node("Add", [y, self._int_quant(b_int, 16, domain)], (1, out_dim))
        return self.node("Mul", [y, self.constant(np.array(self._hawq_rescale(s_prev)), "s")], (1, out_dim))

    def _hawq_domain(self) -> str:
        domain = self.choice(QONNX_DOMAINS)
        self.domains_used.add(domain)
        self.features.add(f"domain:{domain}")
        return domain

    def _hawq_scale(self) -> np.float32:
        """The scale HAWQ divides an activation by (a power of two in an integer-only graph)."""
        if not self.dyadic and self.chance(50):
            return np.float32(self.rng.uniform(0.05, 1.0))
        return np.float32(2.0 ** self.integer(-4, 0))

    def _hawq_rescale(self, s_prev: np.float32) -> np.float32:
        """The scale HAWQ multiplies the integer accumulator by: s_prev * s_weight."""
        if self.dyadic:
            return np.float32(s_prev * 2.0 ** -self.integer(4, 7))
        return np.float32(s_prev * self.rng.uniform(0.001, 0.05))

    def _int_quant(self, values: np.ndarray, bits: int, domain: str) -> str:
        """HAWQ's integer constants: Quant(values, scale 1, zero point 0, bits), signed, ROUND."""
        op = self.choice(["Quant", "IntQuant"])
        self.features.update({f"op:{op}", "signed", "rounding:ROUND", "scale:per-tensor"})
        self.features.add("scale:power-of-two")
        inputs = [
            self.constant(values, "int"),
            self.constant(np.array(1.0, np.float32), "scale"),
            self.constant(np.array(0.0, np.float32), "zeropt"),
            self.constant(np.array(bits, np.float32), "bits"),
        ]
        return self.node(
            op, inputs, values.shape, domain=domain, data=False, signed=1, narrow=0, rounding_mode="ROUND"
        )

    def activation(self, h: str, *, quantized: bool | None = None) -> str:
        """Relu (sometimes), then an activation Quant (sometimes; always in an integer-only graph,
        where an unquantized accumulator feeding the next layer would outgrow float32's 24 bits;
        `quantized` decides instead when given)."""
        relu = self.chance(60)
        if relu:
            self.features.add("relu")
            h = self.node("Relu", [h], self.shapes[h])
        h = self.identities(h)
        if quantized is None:
            quantized = self.integer_only or self.chance(70)
        if quantized:
            self.features.add("activation-quant")
            h = self.quantizer(h, role="activation", after_relu=relu)
        return h

    def layer(self, h: str) -> str:
        self.features.add("mlp")
        out_dim = self.integer(1, 6)
        return self.activation(self.dense(h, out_dim))

    def branch(self, h: str, second_input: Callable[[int], str] | None) -> str:
        """Two paths from `h` (or from a second graph input) rejoined by Add / Sub / Mul."""
        self.features.add("branch")
        in_dim = self.shapes[h][-1]
        out_dim = self.choice([in_dim, self.integer(1, 6)])
        a = self.activation(self.dense(h, out_dim))
        if second_input is not None and self.chance(40):
            self.features.add("second-input")
            b = self.activation(self.dense(second_input(out_dim), out_dim))
        elif out_dim == in_dim:
            kind = self.choice(["identity", "relu", "quant", "rescale", "dense"])
            if kind == "identity":
                b = self.node("Identity", [h], self.shapes[h])
            elif kind == "relu":
                b = self.node("Relu", [h], self.shapes[h])
            elif kind == "quant":
                b = self.quantizer(h, role="activation")
            elif kind == "rescale":
                b = self.rescale(h)
            else:
                b = self.dense(h, out_dim)
        else:
            b = self.dense(h, out_dim)
        op = self.choice(["Add", "Sub", "Mul"])
        self.features.add(f"join:{op}")
        return self.node(op, [a, b] if self.chance(50) else [b, a], self.shapes[a])

    def rescale(self, h: str) -> str:
        """Mul or Div by a constant (scalar or per-channel), sometimes a constant subexpression."""
        self.features.add("rescale")
        shape = self.shapes[h]
        options = [(), (shape[-1],), (1,) * (len(shape) - 1) + (shape[-1],)]
        if len(shape) >= 3:  # an image's channels, [C, 1, 1] / [1, C, 1, 1]
            options += [(shape[1],) + (1,) * (len(shape) - 2), (1, shape[1]) + (1,) * (len(shape) - 2)]
        pshape = self.choice(options)
        factor = (
            2.0 ** self.rng.integers(-3, 3, size=pshape)
            * (1 if self.dyadic or self.chance(50) else self.rng.uniform(0.5, 1.5, size=pshape))
        ).astype(np.float32)
        op = self.choice(["Mul", "Div"])
        # Unlike a quantizer's input, a factor reaches the output unrounded: a folding error shows.
        # (A divisor keeps its values: a MatMul or Gemm of constants could make a zero of it.)
        c = self._constant_tensor(
            factor, "k", allow_computed=True, computed_percent=50, values_matter=self.dyadic or op == "Div"
        )
        return self.node(op, [h, c] if op == "Div" or self.chance(50) else [c, h], shape)

    def reshape_block(self, h: str) -> str:
        """[1, F] -> Reshape [1, a, b] -> an op on the rank-3 tensor -> Flatten / Reshape -> [1, F']."""
        self.features.add("reshape")
        size = self.shapes[h][-1]
        a = self.choice([d for d in range(1, size + 1) if size % d == 0])
        b = size // a
        target = self.choice([[1, a, b], [-1, a, b], [0, a, b], [1, -1, b], [1, a, -1], [0, -1, b]])
        x = self._reshape(h, target, (1, a, b))
        kind = self.choice(["relu", "quant", "rescale", "matmul", "identity"])
        if kind == "relu":
            x = self.node("Relu", [x], (1, a, b))
        elif kind == "quant":
            x = self.quantizer(x, role="activation")
        elif kind == "rescale":
            x = self.rescale(x)
        elif kind == "matmul":
            self.features.add("matmul-rank3")
            x = self.activation(self.dense(x, self.integer(1, 4)))
        else:
            x = self.node("Identity", [x], (1, a, b))
        return self.to_rank2(x)

    def _reshape(self, h: str, target: list[int], shape: Shape) -> str:
        allowzero = 0 if self.opset >= 14 and self.chance(20) else None
        spec = self.constant(np.array(target, dtype=np.int64), "shape")
        return self.node("Reshape", [h, spec], shape, allowzero=allowzero)

    def to_rank2(self, x: str) -> str:
        shape = self.shapes[x]
        size = int(np.prod(shape[1:]))
        if self.chance(50):
            self.features.add("flatten")
            axis = self.choice([None, 1, 0, 0, 1 - len(shape)])
            if axis == 0:
                self.features.add("flatten-axis0")
            return self.node("Flatten", [x], (1, size), axis=axis)
        self.features.add("reshape")
        return self._reshape(x, self.choice([[1, -1], [-1, size], [0, -1], [1, size]]), (1, size))

    def graph_input(self, name: str, shape: Shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.input_names.add(name)
        self.shapes[name] = shape
        self.data_values.append(name)
        return name

    def quantized_input(self, name: str, shape: Shape, channel_axis: int | None = None) -> str:
        x = self.graph_input(name, shape)
        if self.integer_only or self.chance(85):
            x = self.quantizer(x, role="input", channel_axis=channel_axis)
        return x

    def dead_code(self) -> None:
        for _ in range(self.integer(1, 3)):
            v = self.choice(self.data_values)
            kind = self.choice(["relu", "quant", "rescale", "identity", "layer", "initializer", "constant"])
            self.features.add("dead-initializer" if kind == "initializer" else "dead-node")
            if kind == "relu":
                self.node("Relu", [v], self.shapes[v])
            elif kind == "quant":
                self.quantizer(v, role="activation")
            elif kind == "rescale":
                self.rescale(v)
            elif kind == "identity":
                self.node("Identity", [v], self.shapes[v])
            elif kind == "layer" and len(self.shapes[v]) == 2:
                self.layer(v)
            elif kind == "initializer":
                self.initializers.append(
                    numpy_helper.from_array(np.ones(2, np.float32), self.fresh("unused"))
                )
            else:
                self._constant_tensor(np.ones((2, 2), np.float32), "deadc", allow_computed=True)


    # -- convolutional networks ------------------------------------------------------------------

    def image_input(self, rank: int) -> str:
        """An NCHW / NCW graph input and its Quant; or, as Keras-style exports have it, an NHWC /
        NWC input (quantized per channel along its last axis) transposed to channels-first."""
        channels = self.integer(1, MAX_CHANNELS)
        spatial = tuple(self.integer(1, MAX_SPATIAL) for _ in range(rank - 2))
        if self.chance(15):
            self.features.add("cnn:nhwc-input")
            x = self.quantized_input("x", (1, *spatial, channels))
            perm = [0, rank - 1, *range(1, rank - 1)]
            return self.node("Transpose", [x], (1, channels, *spatial), perm=perm)
        return self.quantized_input("x", (1, channels, *spatial), channel_axis=1)

    def window_axis(
        self, size: int, *, kernels=(1, 2, 3), same: bool = False, pool: bool = False, dilate: bool = True
    ) -> WindowAxis:
        """One spatial axis of a Conv or pool window over `size` pixels. `same`: stride 1 and pads
        that keep the size (split unevenly for an even kernel). Pads stay below the (dilated)
        kernel (below the kernel itself for a pool, as onnxruntime requires); a window may need
        the padding to fit; outputs stay within MAX_SPATIAL."""
        kernel = self.choice(kernels)
        dilation = 2 if dilate and self.chance(15) else 1
        if same:
            total = (kernel - 1) * dilation
            begin = self.choice(sorted({total // 2, total - total // 2}))
            axis = WindowAxis(kernel, 1, dilation, begin, total - begin)
        else:
            stride = 2 if self.chance(50 if pool else 30) else 1

            def limit() -> int:
                return kernel - 1 if pool else (kernel - 1) * dilation

            unpadded = self.chance(25 if pool else 40)
            begin, end = (0, 0) if unpadded else (self.integer(0, limit()), self.integer(0, limit()))
            while (kernel - 1) * dilation + 1 > size + begin + end:  # the window must fit somewhere
                if dilation > 1:
                    dilation = 1
                else:
                    kernel -= 1
                begin, end = min(begin, limit()), min(end, limit())
            while WindowAxis(kernel, stride, dilation, begin, end).out(size) > MAX_SPATIAL:
                if end >= begin:
                    end -= 1
                else:
                    begin -= 1
            axis = WindowAxis(kernel, stride, dilation, begin, end)
        if axis.stride > 1:
            self.features.add("window:strided")
        if axis.dilation > 1:
            self.features.add("window:dilated")
        if axis.begin or axis.end:
            self.features.add("window:padded")
        if axis.begin != axis.end:
            self.features.add("window:padded-asymmetric")
        return axis

    def window_attributes(
        self, op: str, axes: list[WindowAxis], *, kernel_shape_optional: bool = False
    ) -> dict:
        """kernel_shape, strides, dilations, pads; each left out now and then where it has its
        ONNX default (kernel_shape where the weight gives it)."""
        spatial = len(axes)
        attrs = {
            "kernel_shape": [a.kernel for a in axes],
            "strides": [a.stride for a in axes],
            "dilations": [a.dilation for a in axes],
            "pads": [a.begin for a in axes] + [a.end for a in axes],
        }
        defaults = {"strides": [1] * spatial, "dilations": [1] * spatial, "pads": [0] * (2 * spatial)}
        if kernel_shape_optional:
            defaults["kernel_shape"] = attrs["kernel_shape"]
        for name, default in defaults.items():
            if attrs[name] == default and self.chance(40):
                self.features.add(f"attr-absent:{name}")
                attrs[name] = None
        if op == "AveragePool" and self.opset < 19:
            attrs["dilations"] = None  # (all 1: see `pool`)
        return attrs

    def conv_geometry(self, h: str, out_channels: int | None, same: bool):
        """(weight shape, group, attributes, output shape) of a Conv reading `h`."""
        shape = self.shapes[h]
        rank, channels, spatial = len(shape), shape[1], shape[2:]
        self.features.add(f"conv:{rank - 2}d")
        out, group = self._conv_channels(channels, out_channels)
        axes = [self.window_axis(size, same=same) for size in spatial]
        attrs = self.window_attributes("Conv", axes, kernel_shape_optional=True)
        out_spatial = [a.out(size) for a, size in zip(axes, spatial)]
        if not same and self.chance(10):
            auto_pad = self.choice(["SAME_UPPER", "SAME_LOWER", "VALID"])
            # (onnxruntime refuses SAME_* with dilations; VALID needs windows that fit unpadded.)
            dilated = any(a.dilation > 1 for a in axes)
            fits = all(a.effective_kernel <= size for a, size in zip(axes, spatial))
            if (auto_pad == "VALID" and fits) or (auto_pad != "VALID" and not dilated):
                self.features.add("conv:auto_pad")
                attrs["auto_pad"], attrs["pads"] = auto_pad, None
                valid = auto_pad == "VALID"
                out_spatial = [
                    (size - a.effective_kernel) // a.stride + 1 if valid else -(-size // a.stride)
                    for a, size in zip(axes, spatial)
                ]
        if group == 1 and self.chance(40):
            self.features.add("attr-absent:group")
        else:
            attrs["group"] = group
        weight_shape = (out, channels // group, *[a.kernel for a in axes])
        return weight_shape, attrs, (1, out, *out_spatial)

    def _conv_channels(self, channels: int, out_channels: int | None) -> tuple[int, int]:
        """(output channels, group): a plain, grouped or depthwise convolution."""
        kind = self.choice(["plain", "plain", "grouped", "depthwise"])
        if kind == "depthwise" and channels > 1:
            multipliers = [
                m for m in (1, 2) if channels * m <= MAX_CHANNELS and out_channels in (None, channels * m)
            ]
            if multipliers:
                self.features.add("conv:depthwise")
                return channels * self.choice(multipliers), channels
        out = out_channels or self.integer(1, MAX_CHANNELS)
        if kind == "grouped":
            groups = [g for g in range(2, channels + 1) if channels % g == 0 and out % g == 0]
            if groups:
                group = self.choice(groups)
                self.features.add("conv:depthwise" if group == channels else "conv:grouped")
                return out, group
        return out, 1

    def conv_weight(self, shape: Shape) -> str:
        """A Conv weight [M, C/group, k...], quantized (per tensor, per output channel, ...) or not."""
        if not self.integer_only and not self.chance(90):
            self.features.add("unquantized-weight")
            return self._constant_tensor(self._float_values(shape, 1.0), "w", allow_computed=True)

        def source(scale, zero_point, low, high) -> str:
            values = self._grid_values(shape, scale, zero_point, low, high)
            return self._constant_tensor(values, "w", allow_computed=True)

        return self.quantizer(source, role="weight", shape=shape, out_axis=0, in_axis=1)

    def channel_bias(self, channels: int, rank: int) -> str:
        """A bias added to an image: [M, 1, 1] or [1, M, 1, 1] (or the 1-D forms)."""
        shape = self.choice([(channels,) + (1,) * (rank - 2), (1, channels) + (1,) * (rank - 2)])
        return self.bias(shape, channel_axis=0 if len(shape) < rank else 1)

    def conv(self, h: str, *, out_channels: int | None = None, same: bool = False) -> str:
        """Conv with its bias as input 2, as an Add after it, or none; sometimes BatchNormalization
        after the Conv or after the bias Add."""
        weight_shape, attrs, out_shape = self.conv_geometry(h, out_channels, same)
        channels = weight_shape[0]
        inputs = [h, self.conv_weight(weight_shape)]
        bias = self.choice(["input", "input", "add", "none"])
        self.features.add(f"conv:bias-{bias}")
        if bias == "input":
            inputs.append(self.bias((channels,)))
        y = self.node("Conv", inputs, out_shape, **attrs)
        batch_norm = self.chance(30)
        if bias == "add":
            b = self.channel_bias(channels, len(out_shape))
            y = self.node("Add", [y, b] if self.chance(70) else [b, y], out_shape)
        if batch_norm:
            self.features.add("bn:after-bias-add" if bias == "add" else "bn:after-conv")
            y = self.batch_norm(y)
        return y

    def hawq_conv(self, h: str, *, out_channels: int | None = None, same: bool = False) -> str:
        """HAWQ's exporter on a convolution:
        Div(s_prev) -> Conv(Quant(W_int, 1, 0)) -> Add(Quant(b_int, 1, 0)) -> Mul(s)."""
        self.features.add("cnn:hawq-conv")
        domain = self._hawq_domain()
        s_prev = self._hawq_scale()
        x = self.node("Div", [h, self.constant(np.array(s_prev), "s_prev")], self.shapes[h])
        weight_shape, attrs, out_shape = self.conv_geometry(x, out_channels, same)
        bits = self.integer(2, 6 if self.integer_only else 8)
        limit = 2 ** (bits - 1)
        w_int = self.rng.integers(-limit, limit, size=weight_shape).astype(np.float32)
        inputs = [x, self._int_quant(w_int, bits, domain)]
        channels = weight_shape[0]
        bias = self.choice(["input", "add", "none"])
        bias_shape = (channels,) if bias == "input" else (1, channels) + (1,) * (len(out_shape) - 2)
        b_int = self.rng.integers(-100, 101, size=bias_shape).astype(np.float32)
        if bias == "input":
            inputs.append(self._int_quant(b_int, 16, domain))
        y = self.node("Conv", inputs, out_shape, **attrs)
        if bias == "add":
            y = self.node("Add", [y, self._int_quant(b_int, 16, domain)], out_shape)
        return self.node("Mul", [y, self.constant(np.array(self._hawq_rescale(s_prev)), "s")], out_shape)

    def batch_norm(self, h: str) -> str:
        """Inference BatchNormalization with random per-channel parameters. In a dyadic graph
        var + epsilon is 4**k exactly, so that its scale and offset are short dyadic numbers."""
        self.features.add("bn")
        channels = self.shapes[h][1]
        if self.dyadic:
            self.features.add("bn:dyadic")
            epsilon = self.choice([2.0**-10, 2.0**-8, 2.0**-6])
            variance = self.rng.choice([0.25, 1.0, 4.0], size=channels) - epsilon
            gamma = self.rng.integers(1, 17, size=channels) * self.rng.choice([-1, 1], size=channels) / 8
            beta = self.rng.integers(-16, 17, size=channels) / 8
            mean = self.rng.integers(-16, 17, size=channels) / 8
        else:
            epsilon = self.choice([None, 1e-5, 1e-3])
            variance = self.rng.uniform(0.1, 2.0, size=channels)
            gamma = self.rng.uniform(0.5, 1.5, size=channels) * self.rng.choice([-1, 1], size=channels)
            beta = self.rng.uniform(-1, 1, size=channels)
            mean = self.rng.uniform(-1, 1, size=channels)
        if epsilon is None:
            self.features.add("bn:epsilon-absent")
        momentum = 0.9 if self.chance(20) else None  # training only: no effect at inference
        inputs = [h] + [
            self.constant(np.asarray(p, dtype=np.float32), name)
            for p, name in ((gamma, "bn_scale"), (beta, "bn_bias"), (mean, "bn_mean"), (variance, "bn_var"))
        ]
        y = self.node("BatchNormalization", inputs, self.shapes[h], epsilon=epsilon, momentum=momentum)
        self.batch_norm_outputs.add(y)
        return y

    def image_activation(self, h: str, *, quantized: bool | None = None) -> str:
        """Relu, LeakyRelu, Clip or nothing, then (sometimes; always in an integer-only graph) an
        activation Quant, per tensor or per channel."""
        kind = self.choice(["relu", "relu", "leaky-relu", "clip", "none"])
        shape = self.shapes[h]
        non_negative = kind == "relu"
        if kind == "relu":
            self.features.add("relu")
            h = self.node("Relu", [h], shape)
        elif kind == "leaky-relu":
            self.features.add("leaky-relu")
            options = [0.5, 0.25, 0.125, 0.375] if self.dyadic else [None, None, 0.1, 0.01, 0.2, 0.25]
            alpha = self.choice(options)
            if alpha is None:
                self.features.add("leaky-relu:alpha-absent")
            h = self.node("LeakyRelu", [h], shape, alpha=alpha)
        elif kind == "clip":
            self.features.add("clip")
            low = self.choice([0.0, -1.0, -0.5] + ([] if self.dyadic else [0.1]))
            high = self.choice([6.0, 1.0, 0.75, 2.5])
            form = self.choice(["both", "both", "min", "max", "none"])
            inputs = [h, "", ""]
            if form in ("both", "min"):
                inputs[1] = self.constant(np.array(low, np.float32), "clip_min")
            else:
                self.features.add("clip:min-absent")
            if form in ("both", "max"):
                inputs[2] = self.constant(np.array(high, np.float32), "clip_max")
            else:
                self.features.add("clip:max-absent")
            while inputs[-1] == "":
                inputs.pop()
            non_negative = form in ("both", "min") and low >= 0
            h = self.node("Clip", inputs, shape)
        if quantized is None:
            quantized = self.integer_only or self.chance(75)
        if quantized:
            self.features.add("activation-quant")
            h = self.quantizer(h, role="activation", channel_axis=1, after_relu=non_negative)
        return h

    def step_quantizer(self, h: str) -> str:
        """A binary (BipolarQuant) or ternary (Quant, 2 bits, signed, narrow) activation quantizer."""
        domain = self.choice(QONNX_DOMAINS)
        self.domains_used.add(domain)
        self.features.update({f"domain:{domain}", "activation-quant", "scale:per-tensor"})
        self.features.add("scale:power-of-two")
        if h in self.batch_norm_outputs:
            self.features.add("bn:before-step-quant")
        scale = self.constant(np.array(2.0 ** self.integer(-2, 1), np.float32), "scale")
        if self.chance(50):
            self.features.add("op:BipolarQuant")
            return self.node("BipolarQuant", [h, scale], self.shapes[h], domain=domain)
        self.features.update({"op:Quant", "bits:2-8", "signed", "narrow", "rounding:ROUND"})
        zero, bits = np.array(0, np.float32), np.array(2, np.float32)
        inputs = [h, scale, self.constant(zero, "zeropt"), self.constant(bits, "bits")]
        attrs = {"signed": 1, "narrow": 1, "rounding_mode": "ROUND"}
        return self.node("Quant", inputs, self.shapes[h], domain=domain, **attrs)

    def conv_block(self, h: str, *, out_channels: int | None = None, same: bool = False) -> str:
        self.features.add("cnn:conv")
        if self.chance(15):
            y = self.hawq_conv(h, out_channels=out_channels, same=same)
        else:
            y = self.conv(h, out_channels=out_channels, same=same)
        return self.image_activation(y)

    def pool(self, h: str) -> str:
        """MaxPool, AveragePool (attributes sometimes left at their defaults), GlobalAveragePool or
        GlobalMaxPool. In an integer-only graph every average is over a power-of-two window."""
        shape = self.shapes[h]
        channels, spatial = shape[1], shape[2:]
        kind = self.choice(
            ["MaxPool", "MaxPool", "AveragePool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]
        )
        if kind == "GlobalAveragePool" and self.integer_only and any(d not in (1, 2, 4) for d in spatial):
            kind = "GlobalMaxPool"
        self.features.add(f"pool:{kind}")
        if kind.startswith("Global"):
            return self.node(kind, [h], (1, channels) + (1,) * len(spatial))
        average = kind == "AveragePool"
        # Integer-only: windows of 1 or 2 per axis, so that every count (padding left out or not)
        # is a power of two.
        kernels = (1, 2) if average and self.integer_only else (1, 2, 3)
        # AveragePool has dilations from opset 19 on.
        dilate = not average or self.opset >= 19
        axes = [self.window_axis(size, kernels=kernels, pool=True, dilate=dilate) for size in spatial]
        # A dilated window can fall on padding only: averaging it is NaN in the executor, 0 in
        # onnxruntime (test_property_regressions.py, test_average_pool_of_a_window_on_padding_only).
        axes = [
            a if a.every_window_reads(size) else WindowAxis(a.kernel, a.stride, 1, a.begin, a.end)
            for a, size in zip(axes, spatial)
        ]
        ceil_mode = self.chance(35) and not (average and self.integer_only)
        if ceil_mode:
            axes = [_with_partial_last_window(a, size) for a, size in zip(axes, spatial)]
        attrs = self.window_attributes(kind, axes)
        out_spatial = [a.out(size) for a, size in zip(axes, spatial)]
        ceil = [a.out(size, ceil=True) for a, size in zip(axes, spatial)]
        # (Where the last ceil window would start past the input and its begin padding, runtimes
        # drop it but onnx's shape inference does not: test_property_regressions.py,
        # test_shape_inference_drops_a_ceil_mode_window_that_would_start_in_the_end_padding.)
        starts_inside = all((n - 1) * a.stride < size + a.begin for n, a, size in zip(ceil, axes, spatial))
        if ceil_mode and starts_inside:
            attrs["ceil_mode"] = 1
            if ceil != out_spatial:
                self.features.add("pool:ceil-mode")
            out_spatial = ceil
        if average:
            attrs["count_include_pad"] = self.choice([None, 0, 1, 1, 1])
            if attrs["count_include_pad"] and any(a.begin or a.end for a in axes):
                self.features.add("pool:count-include-pad")
        return self.node(kind, [h], (1, channels, *out_spatial), **attrs)

    def residual(self, h: str) -> str:
        """A residual Add: a shape-keeping conv block, and a skip path (the input itself, Relu, a
        Quant, or another conv block)."""
        self.features.add("cnn:residual")
        channels = self.shapes[h][1]
        a = self.conv_block(h, out_channels=channels, same=True)
        kind = self.choice(["skip", "relu", "quant", "conv"])
        self.features.add(f"residual:{kind}")
        if kind == "skip":
            b = h
        elif kind == "relu":
            b = self.node("Relu", [h], self.shapes[h])
        elif kind == "quant":
            b = self.quantizer(h, role="activation", channel_axis=1)
        else:
            b = self.conv_block(h, out_channels=channels, same=True)
        y = self.node("Add", [a, b] if self.chance(50) else [b, a], self.shapes[a])
        if self.integer_only or self.chance(50):
            y = self.image_activation(y)
        return y

    def concat(self, h: str) -> str:
        """Concat on the channel axis of two shape-keeping paths (or of one and the input)."""
        self.features.add("cnn:concat")
        shape = self.shapes[h]
        if shape[1] < MAX_CHANNELS and self.chance(50):
            self.features.add("concat:with-input")
            b = h
        else:
            b = self.conv_block(h, out_channels=self.integer(1, 2), same=True)
        a = self.conv_block(h, out_channels=self.integer(1, MAX_CHANNELS - self.shapes[b][1]), same=True)
        axis = self.choice([1, 1 - len(shape)])
        if axis < 0:
            self.features.add("concat:negative-axis")
        out_shape = (1, self.shapes[a][1] + self.shapes[b][1], *shape[2:])
        return self.node("Concat", [a, b] if self.chance(50) else [b, a], out_shape, axis=axis)

    def resize(self, h: str) -> str:
        """Resize, nearest, by 2 along the spatial axes of at most 3 pixels (scales or sizes; roi
        and the modes sometimes absent)."""
        self.features.add("resize")
        shape = self.shapes[h]
        factors = [2 if size <= MAX_SPATIAL // 2 and self.chance(80) else 1 for size in shape[2:]]
        if factors == [1] * len(factors):
            factors[shape[2:].index(min(shape[2:]))] = 2
        out_shape = (1, shape[1], *[size * f for size, f in zip(shape[2:], factors)])
        attrs = {
            "mode": self.choice([None, "nearest"]),
            "coordinate_transformation_mode": self.choice(
                [None, "asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel"]
            ),
            "nearest_mode": self.choice([None, "floor", "round_prefer_ceil", "ceil"]),
        }
        if any(value is not None for value in attrs.values()):
            self.features.add("resize:mode-attributes")
        empty = np.zeros(0, np.float32)
        # roi and (with sizes) scales are required inputs before opset 13, empty then.
        roi = "" if self.opset >= 13 and self.chance(50) else self.constant(empty, "roi")
        if self.chance(30):
            self.features.add("resize:sizes")
            scales = "" if self.opset >= 13 and self.chance(50) else self.constant(empty, "scales")
            sizes = self.constant(np.array(out_shape, dtype=np.int64), "sizes")
            inputs = [h, roi, scales, sizes]
        else:
            self.features.add("resize:scales")
            inputs = [h, roi, self.constant(np.array([1, 1, *factors], dtype=np.float32), "scales")]
        return self.node("Resize", inputs, out_shape, **attrs)

    def pad(self, h: str) -> str:
        """Pad of the spatial axes (now and then of the channels too): constant (value absent, 0
        or another), edge, reflect or (opset 19) wrap; the axes input from opset 18 on."""
        self.features.add("pad")
        shape = self.shapes[h]
        rank, spatial = len(shape), shape[2:]
        modes = ["constant", "constant", "edge", "reflect"] + (["wrap", "wrap"] if self.opset >= 19 else [])
        mode = self.choice(modes)
        begins, ends = [], []
        for size in spatial:
            limit = min(2, MAX_SPATIAL - size)
            if mode == "reflect":
                limit = min(limit, size - 1)  # reflection needs that many pixels to mirror
            elif mode == "wrap":
                limit = min(limit, size)
            begin = self.integer(0, max(limit, 0))
            end = self.integer(0, max(limit - begin, 0))
            begins.append(begin)
            ends.append(end)
        channel_pad = 0
        if mode == "constant" and not self.integer_only and shape[1] < MAX_CHANNELS and self.chance(40):
            self.features.add("pad:channels")
            channel_pad = 1
        self.features.add(f"pad:{mode}")
        pads = [0, 0, *begins, 0, channel_pad, *ends]
        out_shape = (1, shape[1] + channel_pad, *[s + b + e for s, b, e in zip(spatial, begins, ends)])
        attrs = {"mode": None if mode == "constant" and self.chance(50) else mode}
        inputs = [h, None, ""]
        if mode == "constant" and self.chance(60):
            self.features.add("pad:value")
            value = self.choice([0.0, 0.5, -1.0] + ([] if self.dyadic else [0.3]))
            inputs[2] = self.constant(np.array(value, np.float32), "pad_value")
        if self.opset >= 18 and not channel_pad and not self.integer_only and self.chance(70):
            self.features.add("pad:axes")
            axes = [axis - rank if self.chance(50) else axis for axis in range(2, rank)]
            inputs[1] = self.constant(np.array(begins + ends, dtype=np.int64), "pads")
            inputs.append(self.constant(np.array(axes, dtype=np.int64), "axes"))
        else:
            inputs[1] = self.constant(np.array(pads, dtype=np.int64), "pads")
        while inputs[-1] == "":
            inputs.pop()
        return self.node("Pad", inputs, out_shape, **attrs)

    def image_block(self, h: str) -> str:
        kinds = ["conv", "conv", "conv", "residual", "concat", "pool", "pool", "pad", "pad", "bn", "bn"]
        kinds.append("rescale")
        if min(self.shapes[h][2:]) <= MAX_SPATIAL // 2:
            kinds.append("resize")
        kind = self.choice(kinds)
        if kind == "conv":
            return self.conv_block(h)
        if kind == "residual":
            return self.residual(h)
        if kind == "concat":
            return self.concat(h)
        if kind == "pool":
            return self.pool(h)
        if kind == "pad":
            return self.pad(h)
        if kind == "resize":
            return self.resize(h)
        if kind == "bn":
            self.features.add("bn:standalone")
            y = self.batch_norm(h)
            if not self.integer_only and self.chance(35):
                return self.step_quantizer(y)
            return self.image_activation(y) if self.integer_only or self.chance(50) else y
        return self.rescale(h)

    def cnn_head(self, h: str, nhwc: bool) -> str:
        """Flatten / Reshape [N, -1] (after a global pool, sometimes) into dense layers, the last
        one's Quant sometimes left out; now and then Softmax or Sigmoid at the end."""
        if self.chance(30):
            self.features.add("head:global-pool")
            kind = "GlobalMaxPool"
            if self.chance(50) and (not self.integer_only or all(d in (1, 2, 4) for d in self.shapes[h][2:])):
                kind = "GlobalAveragePool"
            self.features.add(f"pool:{kind}")
            h = self.node(kind, [h], self.shapes[h][:2] + (1,) * (len(self.shapes[h]) - 2))
        if nhwc and self.chance(70):
            # Back to the input's layout before the flatten, as a Keras export does.
            self.features.add("cnn:transpose-before-flatten")
            shape = self.shapes[h]
            rank = len(shape)
            h = self.node("Transpose", [h], (1, *shape[2:], shape[1]), perm=[0, *range(2, rank), 1])
        self.features.add("cnn:head")
        h = self.to_rank2(h)
        self.flattened = h
        layers = self.integer(1, 2)
        for index in range(layers):
            self.features.add("mlp")
            h = self.dense(h, self.integer(1, 6))
            last = index == layers - 1
            h = self.activation(h, quantized=self.chance(60) if last else None)
        if not self.integer_only and self.chance(15):
            op = self.choice(["Softmax", "Sigmoid"])
            self.features.add(f"head:{op}")
            h = self.node(op, [h], self.shapes[h], axis=-1 if op == "Softmax" and self.chance(50) else None)
        return h


@st.composite
def qonnx_graphs(draw, integer_only: bool = False) -> GeneratedGraph:
    """Random valid QONNX graphs (see the module docstring for what they cover): MLP-like or
    convolutional. `integer_only`: only graphs whose every value has a fixed-point type that
    float32 computes exactly (see the module docstring), CNNs and MLPs."""
    return build_graph(HypothesisChoices(draw), integer_only=integer_only)


def random_graphs(count: int, *, seed: int = 0, integer_only: bool = False) -> Iterator[GeneratedGraph]:
    """`count` graphs of independent, uniform choices (no hypothesis): for coverage statistics."""
    for index in range(count):
        yield build_graph(RandomChoices(seed * 1_000_003 + index), integer_only=integer_only)


def build_graph(choices: Choices, *, integer_only: bool = False) -> GeneratedGraph:
    """One graph, its structure drawn from `choices`."""
    opset = choices.choice(sorted(OPSETS))
    g = _GraphBuilder(choices, opset, integer_only=integer_only)
    g.features.add(f"opset:{opset}")
    if integer_only:
        g.features.add("integer-only")
        outputs = _cnn_graph(g) if g.chance(80) else _integer_mlp_graph(g)
    else:
        outputs = _cnn_graph(g) if g.chance(50) else _mlp_graph(g)
    if g.chance(30):
        g.dead_code()

    nodes = g.nodes
    if g.chance(25):
        g.features.add("shuffled-order")
        nodes = _shuffled_topological_order(nodes, g.rng)
    if g.chance(15):
        g.features.add("unnamed-nodes")
        for node in nodes:
            if g.rng.random() < 0.5:
                node.name = ""
    elif g.chance(5) and len(nodes) >= 2:
        g.features.add("duplicate-node-names")
        nodes[1].name = nodes[0].name

    if g.chance(10):
        g.features.add("pass-like-names")
        outputs = _rename_like_pass_results(g, nodes, outputs)
    if _identity_chain_between_outputs(nodes, outputs):
        g.features.add("identity-chain-between-outputs")
    output_infos = []
    for name in dict.fromkeys(outputs):
        # (A graph input that is also an output keeps its declared shape: onnx_ir takes the
        # output's declaration for the one value, and a load would then find no shape.)
        if name not in g.input_names and g.chance(15):
            g.features.add("output-shape-undeclared")
            output_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        else:
            output_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(g.shapes[name])))
    graph = helper.make_graph(nodes, "generated", g.inputs + g.shadowed, output_infos, g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    if g.chance(15):
        g.features.add("qonnx-opset-import-missing")
    else:
        opsets += [helper.make_opsetid(domain, 1) for domain in sorted(g.domains_used)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=OPSETS[opset], producer_name="hawqc-tests"
    )
    return GeneratedGraph(model.SerializeToString(), frozenset(g.features))


def _mlp_graph(g: _GraphBuilder) -> list[str]:
    """An MLP-like graph: dense layers, branches, reshapes, rescales; its outputs."""
    # The input: [1, F], or a rank-3/4 tensor flattened (a Brevitas export's flatten folds to that).
    if g.chance(25):
        g.features.add("input-rank>2")
        dims = tuple(g.integer(1, 3) for _ in range(g.integer(2, 3)))
        h = g.to_rank2(g.identities(g.quantized_input("x", (1, *dims))))
    else:
        h = g.identities(g.quantized_input("x", (1, g.integer(1, 6))))

    second_used = []

    def second_input(dim: int) -> str:
        second_used.append(True)
        return g.quantized_input("x2", (1, dim))

    taps: list[str] = []
    for _ in range(g.integer(1, 4)):
        kind = g.choice(["layer", "layer", "branch", "reshape", "rescale", "identity"])
        if kind == "layer":
            h = g.layer(h)
        elif kind == "branch":
            h = g.branch(h, None if second_used else second_input)
        elif kind == "reshape":
            h = g.reshape_block(h)
        elif kind == "rescale":
            h = g.rescale(h)
        else:
            h = g.node("Identity", [h], g.shapes[h])
            g.features.add("identity-chain")
        if h != "x" and g.chance(10):
            taps.append(h)  # this value becomes a graph output and is read on
    if g.chance(10):
        g.features.add("identity-to-output")
        h = g.node("Identity", [h], g.shapes[h])
    outputs = [h]
    if taps and taps[0] != h:
        g.features.update({"two-outputs", "output-also-consumed"})
        outputs.append(taps[0])
    elif g.chance(10) and len(g.data_values) > 1:
        g.features.add("two-outputs")
        outputs.append(g.data_values[-2])
    return outputs


def _integer_mlp_graph(g: _GraphBuilder) -> list[str]:
    """An integer-only MLP: input Quant, dense layers (MatMul, Gemm, HAWQ), Relu, Quant."""
    h = g.quantized_input("x", (1, g.integer(1, 6)))
    layers = g.integer(1, 3)
    for index in range(layers):
        g.features.add("mlp")
        h = g.dense(h, g.integer(1, 6))
        h = g.activation(h, quantized=g.chance(60) if index == layers - 1 else None)
    return [h]


def _cnn_graph(g: _GraphBuilder) -> list[str]:
    """A convolutional network: an image input (NCHW or NCW, or NHWC transposed), 1..3 image blocks
    (conv, residual, concat, pool, pad, resize, BatchNorm, rescale), then a dense head (or the image
    itself as the output); its outputs."""
    rank = g.choice([4, 4, 3])
    g.features.update({"cnn", f"cnn:{rank - 2}d-input"})
    if not g.integer_only and g.chance(40):
        # (Float sums that are not exact round differently once channels-last reorders them, a known
        # bug: the property test skips channels-last there. Dyadic graphs keep it checked.)
        g.features.add("cnn:dyadic")
        g.dyadic = True
    h = g.image_input(rank)
    images = [h]
    for _ in range(g.integer(1, 3)):
        h = g.image_block(h)
        images.append(h)
    if g.chance(10):
        g.features.add("cnn:image-output")  # fully convolutional: the image leaves the graph
        out = h
    else:
        out = g.cnn_head(h, nhwc="cnn:nhwc-input" in g.features)
    if g.chance(5):
        g.features.add("identity-to-output")
        out = g.node("Identity", [out], g.shapes[out])
    outputs = [out]
    if g.chance(12):
        tap = g.choice(images)
        if tap != out:
            g.features.update({"two-outputs", "cnn:image-tap-output"})
            outputs.append(tap)
    if g.flattened is not None and not g.integer_only and g.chance(8):
        # channels-last must refuse: the output's elements would be in channels-last order.
        g.features.update({"two-outputs", "cnn:flattened-image-output"})
        outputs.append(g.flattened)
    return outputs


def _with_partial_last_window(axis: WindowAxis, size: int) -> WindowAxis:
    """`axis` with one pad more or less at the end where that gives a strided pool a last window
    that only ceil_mode counts (and keeps the output within MAX_SPATIAL)."""
    if axis.stride == 1 or axis.out(size, ceil=True) != axis.out(size):
        return axis
    for end in (axis.end + 1, axis.end - 1):
        candidate = WindowAxis(axis.kernel, axis.stride, axis.dilation, axis.begin, end)
        fits = 0 <= end < axis.kernel and candidate.effective_kernel <= size + axis.begin + end
        if fits and candidate.out(size, ceil=True) <= MAX_SPATIAL:
            return candidate
    return axis


def _shuffled_topological_order(
    nodes: list[onnx.NodeProto], rng: np.random.Generator
) -> list[onnx.NodeProto]:
    """Another valid topological order: a random ready node at each step."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    waiting = [{producer[x] for x in node.input if x in producer} for node in nodes]
    done: set[int] = set()
    order: list[onnx.NodeProto] = []
    while len(order) < len(nodes):
        ready = [i for i in range(len(nodes)) if i not in done and waiting[i] <= done]
        i = ready[int(rng.integers(len(ready)))]
        done.add(i)
        order.append(nodes[i])
    return order


def _rename_like_pass_results(g: _GraphBuilder, nodes: list[onnx.NodeProto], outputs: list[str]) -> list[str]:
    """Rename some values to names that passes make up for what they add (gemm-to-matmul's
    `<gemm>_matmul_out`, `<weight>_transposed`, onnx_ir's `v` / `node`), so that a pass that does
    not check its new names against the graph's would collide."""
    taken = set(g.shapes)
    candidates = ["v", "v_1", "node", "gemm", "gemm_matmul", "gemm_matmul_out", "gemm_alpha", "gemm_beta"]
    for node in nodes:
        if node.op_type == "Gemm":
            base = node.name or "gemm"
            candidates += [
                f"{base}_{suffix}"
                for suffix in (
                    "matmul",
                    "matmul_out",
                    "alpha",
                    "alpha_out",
                    "beta",
                    "beta_out",
                    "bias",
                    "bias_out",
                    "transpose_b_out",
                )
            ]
            candidates += [f"{name}_transposed" for name in node.input[1:2]]
        if node.op_type in ("Quant", "IntQuant", "BipolarQuant"):
            candidates += [f"{name}_transposed" for name in node.input]
    candidates = [name for name in dict.fromkeys(candidates) if name not in taken]
    renamable = sorted(taken)
    count = min(len(candidates), len(renamable), 1 + int(g.rng.integers(0, 4)))
    mapping = dict(
        zip(g.rng.permutation(renamable)[:count].tolist(), g.rng.permutation(candidates)[:count].tolist())
    )

    def rename(names) -> list[str]:
        return [mapping.get(name, name) for name in names]

    for node in nodes:
        node.input[:] = rename(node.input)
        node.output[:] = rename(node.output)
    for tensor in g.initializers:
        tensor.name = mapping.get(tensor.name, tensor.name)
    for info in (*g.inputs, *g.shadowed):
        info.name = mapping.get(info.name, info.name)
    g.shapes = {mapping.get(name, name): shape for name, shape in g.shapes.items()}
    return rename(outputs)


def _identity_chain_between_outputs(nodes: list[onnx.NodeProto], outputs: list[str]) -> bool:
    """Whether a chain of Identity nodes leads from one graph output to another."""
    identity_of = {node.output[0]: node.input[0] for node in nodes if node.op_type == "Identity"}
    for output in outputs:
        value = output
        while value in identity_of:
            value = identity_of[value]
            if value in outputs:
                return True
    return False
