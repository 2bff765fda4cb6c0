"""Tiny channels-last quantized CNNs in hawqc's canonical form (what the `default` pipeline leaves
for the hls4ml lowering), for the backend tests: Conv / pools in `CHANNELS_LAST_DOMAIN` with weights [M, k..., C/group], quantized
constants, requantization as `Mul(k) [-> Add(b)]`. Each model is built directly with onnx.helper.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN


class CnnBuilder:
    """Appends nodes to one graph; every method returns the name of the value it makes."""

    def __init__(self, input_shape: tuple[int, ...], seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.input_shape = (1, *input_shape)
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value: np.ndarray, stem: str = "c") -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", stem: str | None = None, **attrs) -> str:
        name = self.fresh(stem or op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name, domain=domain, **attrs))
        return name + "_out"

    def quant(self, x: str, bits: int, exp: int, signed: bool = True, narrow: bool = False, rounding: str = "ROUND") -> str:
        args = [x, self.const(np.float32(2.0**exp), "s"), self.const(np.float32(0), "z"), self.const(np.float32(bits), "b")]
        return self.node("Quant", args, QONNX_DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode=rounding)

    def weights(self, shape: tuple[int, ...], bits: int = 4, exp: int = -3) -> str:
        """Quantized weights: a constant that lies on the grid of 2**exp within `bits` signed bits."""
        high = 2 ** (bits - 1) - 1
        return self.const(self.rng.integers(-high, high + 1, size=shape) * 2.0**exp, "w")

    def conv(self, x: str, out_channels: int, in_channels: int, kernel: tuple[int, ...], *, group: int = 1, bias_exp: int | None = None, **attrs) -> str:
        w = self.weights((out_channels, *kernel, in_channels // group))
        inputs = [x, w]
        if bias_exp is not None:
            inputs.append(self.const(self.rng.integers(-64, 64, size=out_channels) * 2.0**bias_exp, "bias"))
        if group != 1:
            attrs["group"] = group
        return self.node("Conv", inputs, CHANNELS_LAST_DOMAIN, **attrs)

    def build(self, output: str) -> ir.Model:
        from hawqc.ir.shape_inference import infer_shapes

        for node in self.nodes:
            node.output[:] = ["y" if o == output else o for o in node.output]
            node.input[:] = ["y" if i == output else i for i in node.input]
        graph = helper.make_graph(
            self.nodes,
            "cnn",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.input_shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            initializer=self.inits,
        )
        proto = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1), helper.make_opsetid(CHANNELS_LAST_DOMAIN, 1)],
        )
        proto.ir_version = 8
        model = ir.from_proto(proto)
        infer_shapes(model)
        return model


def classic_cnn() -> ir.Model:
    """Conv2D (pads 1, bias) -> Relu -> Quant -> MaxPool 2x2 -> Flatten -> Dense (+ bias) -> Quant."""
    g = CnnBuilder((6, 6, 2), seed=1)
    x = g.quant("x", 8, -4)
    y = g.conv(x, 4, 2, (3, 3), bias_exp=-7, pads=[1, 1, 1, 1])
    y = g.quant(g.node("Relu", [y]), 8, -3, signed=False)
    y = g.node("MaxPool", [y], CHANNELS_LAST_DOMAIN, kernel_shape=[2, 2], strides=[2, 2])
    y = g.node("Flatten", [y])
    y = g.node("MatMul", [y, g.weights((36, 5))])
    y = g.node("Add", [y, g.const(g.rng.integers(-256, 256, size=5) * 2.0**-6, "bias")])
    return g.build(g.quant(y, 8, -2))


def conv1d_leaky() -> ir.Model:
    """Conv1D (stride 2, pads 1, bias) -> LeakyRelu(1/8) -> Quant -> GlobalAveragePool (4 positions);
    the output keeps ONNX's [1, 1, channels] (hls4ml holds it as [channels])."""
    g = CnnBuilder((8, 3), seed=2)
    x = g.quant("x", 8, -4)
    y = g.conv(x, 4, 3, (3,), bias_exp=-7, strides=[2], pads=[1, 1])
    y = g.quant(g.node("LeakyRelu", [y], alpha=0.125), 8, -3)
    return g.build(g.node("GlobalAveragePool", [y], CHANNELS_LAST_DOMAIN))


def depthwise_residual() -> ir.Model:
    """Depthwise Conv2D (pads 1, no bias) -> requantization Mul(k) -> Add(b) per channel -> Relu ->
    Quant; a residual Add with the quantized input (a value with two readers) -> Quant ->
    AveragePool 2x2."""
    g = CnnBuilder((6, 6, 3), seed=3)
    x = g.quant("x", 8, -4)
    y = g.conv(x, 3, 3, (3, 3), group=3, pads=[1, 1, 1, 1])
    y = g.node("Mul", [y, g.const(np.array([0.5, 0.25, 1.0]), "k")])
    y = g.node("Add", [y, g.const(np.array([0.375, -0.5, 0.125]), "b")])
    y = g.quant(g.node("Relu", [y]), 8, -4, signed=False)
    y = g.quant(g.node("Add", [x, y]), 8, -3, rounding="FLOOR")
    return g.build(g.node("AveragePool", [y], CHANNELS_LAST_DOMAIN, kernel_shape=[2, 2], strides=[2, 2]))


def concat_resize() -> ir.Model:
    """Three branches from the input (1x1 conv -> Relu -> Quant, 3x3 conv -> Quant, Relu -> Quant),
    one Concat on the channels (hls4ml joins two at a time), Resize x2 nearest, MaxPool 2x2 pads 1
    on unsigned values (an explicit zero padding), GlobalMaxPool."""
    g = CnnBuilder((4, 4, 2), seed=4)
    x = g.quant("x", 8, -4)
    a = g.quant(g.node("Relu", [g.conv(x, 3, 2, (1, 1), bias_exp=-6)]), 6, -2, signed=False)
    b = g.quant(g.conv(x, 2, 2, (3, 3), pads=[1, 1, 1, 1]), 6, -2, signed=False, rounding="HALF_UP")
    c = g.quant(g.node("Relu", [x]), 4, -2, signed=False)
    y = g.node("Concat", [a, b, c], axis=3)
    scales = g.const(np.array([1, 2, 2, 1]), "scales")
    y = g.node("Resize", [y, "", scales], mode="nearest")
    y = g.node("MaxPool", [y], CHANNELS_LAST_DOMAIN, kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1])
    return g.build(g.node("GlobalMaxPool", [y], CHANNELS_LAST_DOMAIN))


def float_requantization() -> ir.Model:
    """Float parts, exact only in hardware mode: Conv -> Mul(float k per channel) -> Add(float b)
    -> Quant; LeakyRelu(0.1) -> Quant; an unfused channels-last BatchNormalization -> Quant ->
    Flatten -> Dense."""
    g = CnnBuilder((5, 5, 2), seed=5)
    x = g.quant("x", 8, -4)
    y = g.conv(x, 3, 2, (3, 3))
    y = g.node("Mul", [y, g.const(np.array([0.0123, 0.3, 0.7]), "k")])
    y = g.quant(g.node("Add", [y, g.const(np.array([0.01, -0.2, 0.3]), "b")]), 8, -4)
    y = g.quant(g.node("LeakyRelu", [y], alpha=0.1), 8, -4)
    bn = [g.const(np.array(v), "bn") for v in ([1.5, 0.7, -0.3], [0.1, 0.0, -0.2], [0.05, -0.1, 0.2], [0.5, 2.0, 1.1])]
    y = g.node("BatchNormalization", [y, *bn], CHANNELS_LAST_DOMAIN, epsilon=1e-3)
    y = g.node("Flatten", [g.quant(y, 8, -3)])
    y = g.node("MatMul", [y, g.weights((27, 4))])
    return g.build(g.quant(y, 10, -3))




def depthwise_1d() -> ir.Model:
    """Depthwise Conv1D (pads 1, bias) -> Relu -> Quant -> MaxPool 2 -> Flatten as the last layer
    (Catapult has no io_parallel depthwise Conv1D)."""
    g = CnnBuilder((8, 3), seed=6)
    x = g.quant("x", 8, -4)
    y = g.conv(x, 3, 3, (3,), group=3, bias_exp=-7, pads=[1, 1])
    y = g.quant(g.node("Relu", [y]), 8, -3, signed=False)
    y = g.node("MaxPool", [y], CHANNELS_LAST_DOMAIN, kernel_shape=[2], strides=[2])
    return g.build(g.node("Flatten", [y]))


# name -> (builder, integer-only: semantic mode equals hardware mode)
MODELS = {
    "classic": (classic_cnn, True),
    "conv1d_leaky": (conv1d_leaky, True),
    "depthwise_residual": (depthwise_residual, True),
    "concat_resize": (concat_resize, True),
    "float_requant": (float_requantization, False),
    "depthwise_1d": (depthwise_1d, True),
}
