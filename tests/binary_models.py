"""Tiny binary, ternary and mixed-precision QONNX models for the tests (built with onnx.helper).

Every model has one float input, quantized by its first node, and the layers the Loncar et al.
networks have: dense (MatMul, or Gemm as Brevitas exports it) or convolution layers whose weights are
`BipolarQuant` / 1-bit signed `Quant` (binary), 2-bit signed narrow `Quant` (ternary) or 8-bit
`Quant` of a constant, each followed by a BatchNormalization and a binary or ternary quantizer
(which `fuse-bn` turns into a `MultiThreshold`), and higher-precision first and last layers.
Weights and BN parameters are drawn from a seeded generator, so a model is the same on every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

QONNX = "qonnx.custom_op.general"


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, array: np.ndarray, stem: str = "c") -> str:
        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        out = self.name(op.lower() + "_out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), domain=domain, **attrs))
        return out

    def quant(self, x: str, bits: int, scale: float, signed: bool = True, narrow: bool = False) -> str:
        return self.node(
            "Quant", [x, self.const(scale, "scale"), self.const(0.0, "zeropt"), self.const(float(bits), "bits")],
            domain=QONNX, signed=int(signed), narrow=int(narrow), rounding_mode="ROUND",
        )  # fmt: skip

    def bipolar(self, x: str, scale: float = 1.0) -> str:
        return self.node("BipolarQuant", [x, self.const(scale, "scale")], domain=QONNX)

    def weight(self, shape: tuple[int, ...], kind: str, scale: float = 1.0) -> str:
        """A quantizer of a float constant: 'binary' (BipolarQuant), 'bipolar1' (1-bit signed
        Quant), 'ternary' (2-bit signed narrow Quant) or 'int8' (8-bit Quant, scale 2**-6)."""
        if kind == "int8":
            return self.quant(self.const(self.rng.normal(0, 0.5, shape)), 8, 2.0**-6)
        data = self.const(self.rng.normal(0, 1, shape) * scale)
        if kind == "binary":
            return self.bipolar(data, scale)
        if kind == "bipolar1":
            return self.quant(data, 1, scale)
        if kind == "ternary":
            return self.quant(data, 2, scale, narrow=True)
        raise ValueError(kind)

    def batchnorm(self, x: str, channels: int) -> str:
        gamma = self.rng.uniform(0.5, 1.5, channels) * self.rng.choice([-1, 1], channels, p=[0.2, 0.8])
        beta = self.rng.normal(0, 1, channels)
        mean = self.rng.normal(0, 2, channels)
        var = self.rng.uniform(0.5, 4, channels)
        inputs = [x] + [self.const(v, n) for v, n in ((gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "var"))]
        return self.node("BatchNormalization", inputs, epsilon=1e-5)

    def model(self, x_shape: list[int], out: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "binary_test",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
            self.inits,
        )  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])
        return onnx.shape_inference.infer_shapes(model)


def mlp(
    hidden: str, seed: int = 0, features: int = 16, width: int = 24, classes: int = 5, scale: float = 1.0
) -> onnx.ModelProto:
    """8-bit input and first layer, two hidden layers of `hidden` weights ('binary', 'bipolar1' or
    'ternary') and activations (binary for the first two, ternary for 'ternary'), BN before each
    activation, an 8-bit last layer with a bias. `scale`: of the binary activations and weights."""
    b = _Builder(seed)
    activation = "ternary" if hidden == "ternary" else "binary"

    def act(x: str) -> str:
        return b.quant(x, 2, 1.0, narrow=True) if activation == "ternary" else b.bipolar(x, scale)

    x = b.quant("x", 8, 2.0**-4)
    x = act(b.batchnorm(b.node("MatMul", [x, b.weight((features, width), "int8")]), width))
    x = act(b.batchnorm(b.node("MatMul", [x, b.weight((width, width), hidden, scale)]), width))
    x = b.node("MatMul", [x, b.weight((width, classes), "int8")])
    out = b.node("Add", [x, b.quant(b.const(b.rng.normal(0, 1, classes)), 8, 2.0**-4)])
    return b.model([1, features], out)


def gemm_binary(seed: int = 1, features: int = 12, width: int = 10, scale: float = 1.0) -> onnx.ModelProto:
    """Brevitas' binary layer form, twice: BipolarQuant input, Gemm(transB) with BipolarQuant
    weights and an integer bias, BipolarQuant on the result (no BN). `scale`: of every binary value."""
    b = _Builder(seed)
    x = b.bipolar("x", scale)
    for n_in, n_out in ((features, width), (width, width)):
        bias = b.quant(b.const(b.rng.integers(-4, 5, n_out)), 4, 1.0)
        x = b.bipolar(b.node("Gemm", [x, b.weight((n_out, n_in), "binary", scale), bias], transB=1), scale)
    return b.model([1, features], x)


def conv_bnn(seed: int = 2) -> onnx.ModelProto:
    """A small convolutional BNN: 8-bit Conv -> BN -> binary, binary Conv -> BN -> binary,
    Flatten, 8-bit dense."""
    b = _Builder(seed)
    x = b.quant("x", 8, 2.0**-4)
    x = b.bipolar(b.batchnorm(b.node("Conv", [x, b.weight((4, 1, 3, 3), "int8")], pads=[1, 1, 1, 1]), 4))
    x = b.bipolar(b.batchnorm(b.node("Conv", [x, b.weight((6, 4, 3, 3), "binary")]), 6))
    x = b.node("Flatten", [x], axis=1)
    out = b.node("MatMul", [x, b.weight((6 * 4 * 4, 3), "int8")])
    return b.model([1, 1, 6, 6], out)


# Per-channel thresholds for 5-bit inputs on the grid of 1/4 (range [-4, 3.75]): on grid points,
# between them (hls4ml's own floor of a threshold would be wrong there), infinite, beyond the range
# on both sides (the input must be widened to store them), equal, unsorted.
TERNARY_EDGES = [[-0.25, 0.25], [-0.3, 0.1], [-np.inf, 0.5], [1.0, np.inf], [-10.0, 10.0], [0.5, 0.5], [-0.125, -0.125], [3.75, -4.0]]
BINARY_EDGES = [[0.0], [-0.3], [0.1], [-np.inf], [np.inf], [-10.0], [3.75], [4.0]]


def threshold_edges(kind: str) -> onnx.ModelProto:
    """5-bit input -> MultiThreshold ('ternary': levels -1, 0, 1; 'binary': -1, +1) with the edge
    thresholds above -> a dense layer with ternary / binary weights and an integer bias."""
    b = _Builder(3)
    x = b.quant("x", 5, 0.25)
    edges = np.asarray(TERNARY_EDGES if kind == "ternary" else BINARY_EDGES, dtype=np.float32)
    scale, bias = (1.0, -1.0) if kind == "ternary" else (2.0, -1.0)
    x = b.node("MultiThreshold", [x, b.const(edges, "thresholds")], domain=QONNX, out_scale=scale, out_bias=bias, data_layout="NC")
    w = b.weight((8, 4), kind)
    x = b.node("MatMul", [x, w])
    out = b.node("Add", [x, b.quant(b.const(np.array([3, -2, 0, 5])), 4, 1.0)])
    return b.model([1, 8], out)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path
