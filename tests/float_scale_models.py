"""Quantized models with float scales (not powers of two), in the layouts Brevitas's `export_qonnx`
writes (after hawqc's cleanup): `Quant` on the graph input, weights as `Quant(float W, per-tensor or
per-channel scale)`, `MatMul` / `Conv` then a float bias `Add`, `BatchNormalization`, `Relu`, the
next `Quant` with a calibrated float scale. Built with onnx.helper, seeded.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from hawqc.ir.domains import QONNX_DOMAIN


class FloatScaleBuilder:
    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{stem}{self.count}"

    def const(self, value, stem: str = "c") -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        name = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [name + "_out"], name=name, domain=domain, **attrs))
        return name + "_out"

    def scale(self, low: float = 0.01, high: float = 0.09, shape=()) -> np.ndarray:
        return self.rng.uniform(low, high, size=shape).astype(np.float32)

    def quant(self, x: str, scale, bits: int, signed: bool = True, narrow: bool = False, rounding: str = "ROUND") -> str:
        args = [x, self.const(scale, "s"), self.const(np.float32(0), "z"), self.const(np.float32(bits), "b")]
        return self.node("Quant", args, QONNX_DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode=rounding)

    def weight(self, shape, bits: int, per_channel_axis: int | None, narrow: bool = True) -> str:
        w = self.rng.normal(0, 0.3, size=shape).astype(np.float32)
        high = 2 ** (bits - 1) - 1
        if per_channel_axis is None:
            scale = np.float32(np.abs(w).max() / high)
        else:
            axes = tuple(i for i in range(len(shape)) if i != per_channel_axis)
            scale = (np.abs(w).max(axis=axes, keepdims=True) / high).astype(np.float32)
        return self.quant(self.const(w, "w"), scale, bits, narrow=narrow)

    def dense(self, x: str, k: int, n: int, bits: int, per_channel: bool, bias: bool = True) -> str:
        y = self.node("MatMul", [x, self.weight((k, n), bits, 1 if per_channel else None)])
        if bias:
            y = self.node("Add", [y, self.const(self.rng.normal(0, 0.2, size=n), "bias")])
        return y

    def build(self, input_shape: tuple[int, ...], output: str, opset: int = 13) -> ir.Model:
        from hawqc.ir.shape_inference import infer_shapes

        graph = helper.make_graph(
            self.nodes, "float_scales",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, *input_shape])],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
            self.inits,
        )  # fmt: skip
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(QONNX_DOMAIN, 1)])
        model = ir.serde.deserialize_model(proto)
        infer_shapes(model)
        return model


def mlp(seed: int = 0, features: int = 16, hidden: int = 12, outputs: int = 5, act_bits: int = 4, weight_bits: int = 4,
        per_channel: bool = True, relu: bool = True, output_quant: bool = False) -> ir.Model:
    """x -> Quant(float s) -> [MatMul(Quant W) -> Add(float bias) -> Relu -> Quant(float s, unsigned)] -> MatMul -> Add."""
    b = FloatScaleBuilder(seed)
    h = b.quant("x", b.scale(0.02, 0.05), 8)
    h = b.dense(h, features, hidden, weight_bits, per_channel)
    if relu:
        h = b.node("Relu", [h])
    h = b.quant(h, b.scale(0.05, 0.2), act_bits, signed=not relu)
    h = b.dense(h, hidden, outputs, weight_bits, per_channel)
    if output_quant:
        h = b.quant(h, b.scale(0.05, 0.2), 8)
    return b.build((features,), h)


def cnn(seed: int = 0, channels: int = 4, act_bits: int = 4, weight_bits: int = 4) -> ir.Model:
    """x[1,8,8] -> Quant -> Conv(per-channel float W) -> BatchNorm -> Relu -> Quant -> MaxPool -> Flatten -> MatMul."""
    b = FloatScaleBuilder(seed)
    h = b.quant("x", b.scale(0.01, 0.03), 8)
    h = b.node("Conv", [h, b.weight((channels, 1, 3, 3), weight_bits, 0)], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    bn = [b.const(b.rng.uniform(0.5, 1.5, channels)), b.const(b.rng.normal(0, 0.2, channels)),
          b.const(b.rng.normal(0, 0.1, channels)), b.const(b.rng.uniform(0.5, 2.0, channels))]  # fmt: skip
    h = b.node("BatchNormalization", [h, *bn])
    h = b.node("Relu", [h])
    h = b.quant(h, b.scale(0.05, 0.2), act_bits, signed=False)
    h = b.node("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Flatten", [h])
    h = b.dense(h, channels * 16, 5, weight_bits, per_channel=True)
    return b.build((1, 8, 8), h)


def residual(seed: int = 0, op: str = "Add", relu: bool = False) -> ir.Model:
    """x -> Quant -> two Dense branches quantized with different float scales (6 and 5 bits) -> Add / Sub
    -> Relu? -> Quant(float s): a residual sum whose branches no common float32 integer aligns."""
    b = FloatScaleBuilder(seed)
    x = b.quant("x", b.scale(), 8)
    h1 = b.quant(b.dense(x, 16, 12, 4, True), b.scale(), 6)
    h2 = b.quant(b.dense(x, 16, 12, 4, False), np.float32(0.0517), 5)
    h = b.node(op, [h1, h2])
    if relu:
        h = b.node("Relu", [h])
    return b.build((16,), b.quant(h, np.float32(0.0731), 8, signed=not relu))


def hardware_against_exact(model: ir.Model, samples: int = 200):
    """Lower `model` with the default pipeline and run hardware mode on `samples` drawn host inputs (as
    codes where the port takes codes) against the original's exact meaning: the ExactMeaning, whose
    `comparison` says how they compare (and float32's difference)."""
    from hawqc.flow.exact_meaning import ExactMeaning
    from hawqc.ir.io import copy_model
    from hawqc.passes.manager import PassManager
    from hawqc.sim import Executor
    from hawqc.sim.inputs import draw_input_slices

    original = copy_model(model)
    PassManager.parse("cleanup").run(original)
    PassManager.parse("default").run(model)
    meaning = ExactMeaning(original, model)
    hardware = Executor(model, mode="hardware")
    for drawn in draw_input_slices(model, samples, 0, samples):
        host = meaning.host_values(drawn)
        meaning.add(host, hardware.run(meaning.design_inputs(host))[hardware.output_names[0]])
    return meaning
