"""Hypothesis strategy: random small integer-only QONNX graphs as the hls4ml lowering sees them.

`integer_graphs()` draws channels-last CNNs (Conv in `CHANNELS_LAST_DOMAIN`, plain or depthwise,
with strides, padding, quantized biases; requantization by per-channel powers of two; Relu,
LeakyRelu with a power-of-two alpha, Clip; activation Quants of every rounding mode with a
fixed-point equivalent; max and power-of-two average pools; a residual Add or a channel Concat of
two branches; Flatten and a dense head) and MLPs. Every scale and constant is a power of two or a
short dyadic number, so float32 (semantic mode) computes every value exactly and hardware mode must
equal it bit for bit; every value is far from 2**24 codes.

A drawn `IntegerGraph` also knows its first linear layer, so tests can build the input that drives
one output of that layer to its extreme (`worst_case_inputs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN
from hawqc.ir.shape_inference import infer_shapes
from hawqc.sim.ops_conv import conv_channels_last

ROUNDINGS = ("ROUND", "FLOOR", "DOWN", "HALF_UP", "HALF_DOWN")


@dataclass
class IntegerGraph:
    proto: onnx.ModelProto
    input_shape: tuple[int, ...]  # without the batch
    input_low: float
    input_high: float
    # The first layer: Conv (weight [M, k..., C/group] and its attributes) or MatMul ([K, N]).
    first_weight: np.ndarray
    first_attributes: dict = field(default_factory=dict)
    first_output: str = ""
    features: frozenset[str] = frozenset()

    def load(self) -> ir.Model:
        model = ir.from_proto(self.proto)
        infer_shapes(model)
        return model

    def jacobian(self) -> np.ndarray:
        """d(first layer output) / d(input): [input elements, output elements] (it is linear)."""
        size = int(np.prod(self.input_shape))
        basis = np.eye(size).reshape(size, *self.input_shape)
        if self.first_attributes.get("dense"):
            out = basis.reshape(size, -1) @ self.first_weight
        else:
            attrs = {k: v for k, v in self.first_attributes.items() if k != "dense"}
            out = conv_channels_last(basis, self.first_weight, **attrs)
        return out.reshape(size, -1)

    def worst_case_inputs(self) -> np.ndarray:
        """For every output of the first layer, the inputs driving it to its maximum and its minimum."""
        jacobian = self.jacobian()
        high = np.where(jacobian > 0, self.input_high, self.input_low).T
        low = np.where(jacobian > 0, self.input_low, self.input_high).T
        return np.concatenate([high, low]).reshape(-1, *self.input_shape).astype(np.float32)

    def extreme_inputs(self) -> np.ndarray:
        """All min, all max, alternating both ways, and every first-layer worst case."""
        size = int(np.prod(self.input_shape))
        alternating = np.where(np.arange(size) % 2 == 0, self.input_low, self.input_high)
        rows = [
            np.full(size, self.input_low),
            np.full(size, self.input_high),
            alternating,
            self.input_low + self.input_high - alternating,
        ]
        fixed = np.stack(rows).reshape(-1, *self.input_shape).astype(np.float32)
        return np.concatenate([fixed, self.worst_case_inputs()])


class _Builder:
    def __init__(self, draw, rng: np.random.Generator) -> None:
        self.draw = draw
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0
        self.features: set[str] = set()

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value, stem: str = "c", dtype=np.float32) -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out + "_node", domain=domain, **attrs))
        return out

    def quant(self, x: str, *, signed: bool | None = None) -> tuple[str, int]:
        """An activation Quant; returns the value and its LSB exponent."""
        draw = self.draw
        bits = draw(st.integers(3, 8))
        exp = draw(st.integers(-4, 0))
        signed = draw(st.booleans()) if signed is None else signed
        narrow = signed and draw(st.booleans())
        rounding = draw(st.sampled_from(ROUNDINGS))
        self.features.add(f"quant:{rounding}")
        args = [x, self.const(2.0**exp, "s"), self.const(0.0, "z"), self.const(float(bits), "b")]
        return self.node("Quant", args, QONNX_DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode=rounding), exp

    def dyadic(self, shape, exp: int, magnitude: int = 7) -> np.ndarray:
        return self.rng.integers(-magnitude, magnitude + 1, size=shape) * 2.0**exp

    def activation(self, x: str, channels: int, exp: int) -> str:
        """Requantization (Mul by powers of two) and an activation, in some combination."""
        draw = self.draw
        if draw(st.booleans()):
            k = 2.0 ** self.rng.integers(-3, 2, size=channels)
            x = self.node("Mul", [x, self.const(k, "k")])
            self.features.add("mul")
        kind = draw(st.sampled_from(["relu", "leaky", "clip", "none"]))
        self.features.add(kind)
        if kind == "relu":
            x = self.node("Relu", [x])
        elif kind == "leaky":
            x = self.node("LeakyRelu", [x], alpha=draw(st.sampled_from([0.125, 0.25, 0.5])))
        elif kind == "clip":
            x = self.node("Clip", [x, self.const(-2.0 ** (exp + 2), "lo"), self.const(6.0, "hi")])
        return x


@st.composite
def integer_graphs(draw, cnn: bool | None = None) -> IntegerGraph:
    """A random integer-only graph: a CNN (channels-last) or an MLP."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = _Builder(draw, rng)
    cnn = draw(st.booleans()) if cnn is None else cnn
    x, in_exp = b.quant("x", signed=draw(st.booleans()))
    if cnn:
        height, width = draw(st.integers(3, 5)), draw(st.integers(3, 5))
        channels = draw(st.integers(1, 3))
        input_shape = (height, width, channels)
        x, channels, first_weight, first_attrs, spatial = _conv_blocks(draw, b, x, channels, in_exp, (height, width))
        x = b.node("Flatten", [x])
        features = int(np.prod(spatial)) * channels
    else:
        features = draw(st.integers(2, 8))
        input_shape = (features,)
        first_weight = None
        first_attrs = {"dense": True}
    outputs = draw(st.integers(1, 4))
    w = b.dyadic((features, outputs), draw(st.integers(-3, 0)))
    if first_weight is None:
        first_weight = w
    x = b.node("MatMul", [x, b.const(w, "w")])
    if draw(st.booleans()):
        x = b.node("Add", [x, b.const(b.dyadic(outputs, in_exp - 3, 63), "bias")])
    y, _ = b.quant(x)
    # Input range: the input Quant's representable extremes.
    quant_node = b.nodes[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in quant_node.attribute}
    inits = {t.name: numpy_helper.to_array(t) for t in b.inits}
    bits = int(inits[quant_node.input[3]])
    scale = float(inits[quant_node.input[1]])
    if attrs["signed"]:
        low, high = (-(2 ** (bits - 1)) + attrs["narrow"]) * scale, (2 ** (bits - 1) - 1) * scale
    else:
        low, high = 0.0, (2**bits - 1) * scale
    graph = helper.make_graph(
        b.nodes, "integer_graph",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *input_shape])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)],
        initializer=b.inits,
    )  # fmt: skip
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1),
                       helper.make_opsetid(CHANNELS_LAST_DOMAIN, 1)],
    )  # fmt: skip
    proto.ir_version = 8
    first_output = b.nodes[1].output[0]  # the node after the input Quant: the first linear layer
    return IntegerGraph(proto, input_shape, low, high, first_weight, first_attrs, first_output, frozenset(b.features))


def _conv(draw, b: _Builder, x: str, channels: int, in_exp: int, spatial: tuple[int, int], *, out_channels=None):
    """One channels-last Conv; returns (value, out channels, weight, attributes, out spatial, LSB exp)."""
    depthwise = out_channels is None and channels > 1 and draw(st.booleans())
    if depthwise:
        out_channels, group = channels, channels
        b.features.add("depthwise")
    else:
        out_channels = out_channels or draw(st.integers(1, 4))
        group = 1
    kernel = (draw(st.integers(1, min(3, spatial[0]))), draw(st.integers(1, min(3, spatial[1]))))
    strides = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    pad = draw(st.integers(0, 1)) if max(kernel) > 1 else 0
    pads = (pad, pad, pad, pad)
    w_exp = draw(st.integers(-3, 0))
    weight = b.dyadic((out_channels, *kernel, channels // group), w_exp)
    inputs = [x, b.const(weight, "w")]
    if draw(st.booleans()):
        inputs.append(b.const(b.dyadic(out_channels, in_exp + w_exp, 31), "cb"))
        b.features.add("conv-bias")
    attrs = {"kernel_shape": list(kernel), "strides": list(strides), "pads": list(pads)}
    if group != 1:
        attrs["group"] = group
    if pad:
        b.features.add("padding")
    y = b.node("Conv", inputs, CHANNELS_LAST_DOMAIN, **attrs)
    out = tuple((n + 2 * pad - k) // s + 1 for n, k, s in zip(spatial, kernel, strides))
    python_attrs = {"strides": list(strides), "pads": list(pads), "group": group}
    return y, out_channels, weight, python_attrs, out, in_exp + w_exp


def _conv_blocks(draw, b: _Builder, x: str, channels: int, in_exp: int, spatial: tuple[int, int]):
    first = None
    for index in range(draw(st.integers(1, 2))):
        branch_input = x
        y, out_channels, weight, attrs, out_spatial, acc_exp = _conv(draw, b, x, channels, in_exp, spatial)
        if first is None:
            first = (weight, attrs)
        join = draw(st.sampled_from(["none", "add", "concat"]))
        if join != "none":
            # A second branch: the same geometry (so the same output shape), other weights.
            other = b.dyadic(weight.shape, draw(st.integers(-3, 0)))
            geometry = {"kernel_shape": list(weight.shape[1:3]), "strides": attrs["strides"], "pads": attrs["pads"]}
            if attrs["group"] != 1:
                geometry["group"] = attrs["group"]
            z = b.node("Conv", [branch_input, b.const(other, "w")], CHANNELS_LAST_DOMAIN, **geometry)
            b.features.add(f"join:{join}")
            if join == "add":
                y = b.node("Add", [y, z])
            else:
                y = b.node("Concat", [y, z], axis=-1)
                out_channels *= 2
        y = b.activation(y, out_channels, acc_exp)
        x, in_exp = b.quant(y)
        channels, spatial = out_channels, out_spatial
        pool = draw(st.sampled_from(["none", "max", "avg", "global"]))
        if pool in ("max", "avg") and min(spatial) >= 2:
            op = "MaxPool" if pool == "max" else "AveragePool"
            x = b.node(op, [x], CHANNELS_LAST_DOMAIN, kernel_shape=[2, 2], strides=[2, 2])
            spatial = tuple(n // 2 for n in spatial)
            b.features.add(f"pool:{pool}")
        elif pool == "global" and all(n & (n - 1) == 0 for n in spatial):
            x = b.node("GlobalAveragePool", [x], CHANNELS_LAST_DOMAIN)
            spatial = (1, 1)
            b.features.add("pool:global")
    return x, channels, first[0], first[1], spatial
