"""`channels-last`: translation validation on small quantized CNNs, defaults, layouts, shapes.

Every model is run by the semantic executor before and after the pass on the same inputs; the
inputs are transposed into, and the outputs out of, the layouts the pass records. The comparison is
done here, bit for bit, and again by the pass manager's own translation validation (`validate=N`),
which must read the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import data_model
from onnx import TensorProto, helper

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.frontends.onnx import load_onnx, load_onnx_text
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN
from hawqc.ir.io import read_model, to_text, write_model
from hawqc.ir.layout import describe_layouts, layout_permutations, record_layout
from hawqc.ir.shape_inference import infer_shapes
from hawqc.passes.base import Pass, PassResult
from hawqc.passes.channels_last import ChannelsLast
from hawqc.passes.manager import PassManager
from hawqc.passes.registry import PassRegistry
from hawqc.passes.validation import TranslationValidationError
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

QONNX = "qonnx.custom_op.general"
SAMPLES = 64


@dataclass
class Cnn:
    """A tiny quantized CNN under construction (NCHW, or NCW when `spatial` has one dim)."""

    rng: np.random.Generator
    channels: int = 2
    spatial: tuple[int, ...] = (6, 6)
    per_channel_input: bool = False
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    count: int = 0
    INPUT: ClassVar[str] = "x"

    def __post_init__(self) -> None:
        self.shapes[self.INPUT] = (1, self.channels, *self.spatial)

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, array: np.ndarray, prefix: str = "k") -> str:
        name = self.fresh(prefix)
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], shape: tuple, domain: str = "", **attributes) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain, **attributes))
        self.shapes[out] = tuple(shape)
        return out

    def quant(self, x: str, *, bits: int = 6, signed: int = 1, scale=None, narrow: int = 0) -> str:
        scale = np.float32(2.0 ** -int(self.rng.integers(2, 5))) if scale is None else scale
        inputs = [x, self.constant(scale, "s"), self.constant(np.float32(0), "z"), self.constant(np.float32(bits), "b")]
        shape = np.broadcast_shapes(self.shapes[x], np.shape(scale))
        return self.node("Quant", inputs, shape, QONNX, signed=signed, narrow=narrow, rounding_mode="ROUND")

    def input_quant(self) -> str:
        scale = np.float32(0.125)
        if self.per_channel_input:
            shape = (1, self.channels) + (1,) * len(self.spatial)
            scale = (2.0 ** -self.rng.integers(2, 5, size=shape)).astype(np.float32)
        return self.quant(self.INPUT, bits=8, scale=scale)

    def weight(self, shape: tuple, per_channel: bool) -> str:
        w = self.rng.standard_normal(shape).astype(np.float32)
        scale = np.float32(0.25)
        if per_channel:
            scale = (2.0 ** -self.rng.integers(1, 4, size=(shape[0],) + (1,) * (len(shape) - 1))).astype(np.float32)
        name = self.constant(w, "w")
        self.shapes[name] = shape
        return self.quant(name, bits=5, scale=scale, narrow=1)

    def conv(self, x: str, out_channels: int, kernel: int = 3, *, group: int = 1, per_channel: bool = True,
             bias: bool = True, explicit: str = "all", stride: int = 1) -> str:  # fmt: skip
        _, c, *spatial = self.shapes[x]
        dims = len(spatial)
        w = self.weight((out_channels, c // group, *[kernel] * dims), per_channel)
        inputs = [x, w]
        if bias:
            b = self.constant((self.rng.integers(-8, 8, size=out_channels) / 16).astype(np.float32), "bias")
            self.shapes[b] = (out_channels,)
            inputs.append(self.quant(b, bits=8, scale=np.float32(1 / 16)))
        pad = kernel // 2
        attributes = {}
        if explicit == "all":
            attributes = {"kernel_shape": [kernel] * dims, "pads": [pad] * 2 * dims, "strides": [stride] * dims,
                          "dilations": [1] * dims}  # fmt: skip
        else:  # attributes left at their ONNX defaults: no pads, strides, dilations (and kernel_shape)
            pad, stride = 0, 1
            if explicit == "kernel_shape":
                attributes = {"kernel_shape": [kernel] * dims}
        if group != 1:
            attributes["group"] = group
        out_spatial = [(s + 2 * pad - kernel) // stride + 1 for s in spatial]
        return self.node("Conv", inputs, (1, out_channels, *out_spatial), **attributes)

    def activation(self, x: str, leaky: bool = False) -> str:
        shape = self.shapes[x]
        y = self.node("LeakyRelu", [x], shape, alpha=0.125) if leaky else self.node("Relu", [x], shape)
        return self.quant(y, bits=6, signed=int(leaky))

    def per_channel(self, x: str, op: str) -> str:
        c = self.shapes[x][1]
        dims = len(self.shapes[x]) - 2
        shape = (c,) + (1,) * dims
        values = 2.0 ** self.rng.integers(-2, 2, size=shape) if op == "Mul" else self.rng.integers(-4, 4, size=shape) / 8
        return self.node(op, [x, self.constant(values.astype(np.float32), "pc")], self.shapes[x])

    def batch_norm(self, x: str) -> str:
        c = self.shapes[x][1]
        gamma, beta = (2.0 ** self.rng.integers(-1, 2, size=c)), self.rng.integers(-4, 4, size=c) / 4
        mean, var = self.rng.integers(-2, 3, size=c) / 4, np.full(c, 1.0)
        params = [self.constant(np.asarray(p, dtype=np.float32), "bn") for p in (gamma, beta, mean, var)]
        return self.node("BatchNormalization", [x, *params], self.shapes[x], epsilon=0.0)

    def pool(self, x: str, op: str) -> str:
        n, c, *spatial = self.shapes[x]
        if op in ("GlobalAveragePool", "GlobalMaxPool"):
            return self.node(op, [x], (n, c, *[1] * len(spatial)))
        dims = len(spatial)
        attributes = {"kernel_shape": [2] * dims, "strides": [2] * dims}  # MaxPool: no pads attribute
        return self.node(op, [x], (n, c, *[s // 2 for s in spatial]), **attributes)

    def concat(self, a: str, b: str) -> str:
        n, ca, *spatial = self.shapes[a]
        return self.node("Concat", [a, b], (n, ca + self.shapes[b][1], *spatial), axis=1)

    def pad(self, x: str) -> str:
        n, c, *spatial = self.shapes[x]
        dims = len(spatial)
        begins, ends = [0, 0, 1] + [0] * (dims - 1), [0, 0] + [0] * (dims - 1) + [1]
        pads = self.constant(np.array(begins + ends, dtype=np.int64), "pads")
        out = [s + begins[2 + i] + ends[2 + i] for i, s in enumerate(spatial)]
        return self.node("Pad", [x, pads], (n, c, *out))

    def resize(self, x: str) -> str:
        n, c, *spatial = self.shapes[x]
        scales = self.constant(np.array([1, 1] + [2] * len(spatial), dtype=np.float32), "scales")
        roi = self.constant(np.zeros(0, dtype=np.float32), "roi")
        return self.node("Resize", [x, roi, scales], (n, c, *[2 * s for s in spatial]), mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor")  # fmt: skip

    def flatten(self, x: str, how: str = "Flatten") -> str:
        n, *rest = self.shapes[x]
        size = int(np.prod(rest))
        if how == "Flatten":
            return self.node("Flatten", [x], (n, size))
        target = [n, -1] if how == "Reshape-1" else [n, size]
        return self.node("Reshape", [x, self.constant(np.array(target, dtype=np.int64), "shape")], (n, size))

    def squeeze(self, x: str) -> str:
        n, c, *spatial = self.shapes[x]
        axes = self.constant(np.arange(2, 2 + len(spatial), dtype=np.int64), "axes")
        return self.node("Squeeze", [x, axes], (n, c))

    def unsqueeze(self, x: str, dims: int) -> str:
        n, c = self.shapes[x]
        axes = self.constant(np.arange(2, 2 + dims, dtype=np.int64), "axes")
        return self.node("Unsqueeze", [x, axes], (n, c, *[1] * dims))

    def dense(self, x: str, out: int, *, gemm: bool, per_row: bool = False) -> str:
        n, k = self.shapes[x]
        shape = (out, k) if gemm else (k, out)
        w = self.rng.standard_normal(shape).astype(np.float32)
        name = self.constant(w, "w")
        self.shapes[name] = shape
        if gemm:  # Brevitas: per-output-channel scale [out, 1] on a transposed weight
            scale = (2.0 ** -self.rng.integers(1, 4, size=(out, 1))).astype(np.float32)
        else:  # per input row [k, 1] when asked: it must follow the permuted rows
            scale = (2.0 ** -self.rng.integers(1, 4, size=(k, 1))).astype(np.float32) if per_row else np.float32(0.25)
        wq = self.quant(name, bits=5, scale=scale, narrow=1)
        if gemm:
            return self.node("Gemm", [x, wq], (n, out), transB=1)
        return self.node("MatMul", [x, wq], (n, out))

    def model(self, *outputs: str, opset: int = 17) -> ir.Model:
        graph = helper.make_graph(
            self.nodes,
            "cnn",
            [helper.make_tensor_value_info(self.INPUT, TensorProto.FLOAT, self.shapes[self.INPUT])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, self.shapes[o]) for o in outputs],
            self.initializers,
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(QONNX, 1)])
        proto.ir_version = 8
        return load_onnx_text(to_text(ir.from_proto(proto)), source="cnn")  # exact floats, unlike onnx.printer


def conv_relu_pool(cnn: Cnn) -> tuple[str, ...]:
    x = cnn.input_quant()
    h = cnn.activation(cnn.conv(x, 3))
    h = cnn.quant(cnn.pool(h, "MaxPool"), signed=0)
    return (cnn.activation(cnn.per_channel(cnn.per_channel(cnn.conv(h, 4, kernel=1), "Mul"), "Add"), leaky=True),)


def residual_and_concat(cnn: Cnn) -> tuple[str, ...]:
    x = cnn.input_quant()
    a = cnn.activation(cnn.conv(x, 4))  # read by three consumers
    b = cnn.activation(cnn.conv(a, 4, kernel=1))
    res = cnn.quant(cnn.node("Add", [a, b], cnn.shapes[a]), bits=7)
    d = cnn.activation(cnn.conv(a, 4, group=4), leaky=True)  # depthwise
    cat = cnn.quant(cnn.concat(res, d), bits=7)
    return cnn.quant(cnn.resize(cnn.pad(cat)), bits=7), res


def batch_norm_and_average(cnn: Cnn) -> tuple[str, ...]:
    x = cnn.input_quant()
    h = cnn.activation(cnn.batch_norm(cnn.conv(x, 4, bias=False)))
    h = cnn.quant(cnn.pool(h, "AveragePool"), bits=8)
    g = cnn.quant(cnn.pool(h, "GlobalAveragePool"), bits=10)
    m = cnn.pool(h, "GlobalMaxPool")
    return cnn.dense(cnn.flatten(g), 3, gemm=True), cnn.squeeze(m)


def squeeze_excite(cnn: Cnn) -> tuple[str, ...]:
    x = cnn.input_quant()
    h = cnn.activation(cnn.conv(x, 4))
    gate = cnn.quant(cnn.pool(h, "GlobalAveragePool"), bits=10)
    gate = cnn.node("Sigmoid", [cnn.dense(cnn.squeeze(gate), 4, gemm=True)], (1, 4))
    scaled = cnn.quant(cnn.node("Mul", [h, cnn.unsqueeze(gate, len(cnn.spatial))], cnn.shapes[h]), bits=8)
    return (cnn.node("Softmax", [scaled], cnn.shapes[scaled], axis=1),)


def transposed_in_the_middle(cnn: Cnn) -> tuple[str, ...]:
    # A Transpose of the model's own (H <-> W) between two convolutions: it stays, composed with
    # the layout change (NHWC -> NWHC).
    h = cnn.activation(cnn.conv(cnn.input_quant(), 3))
    n, c, height, width = cnn.shapes[h]
    t = cnn.node("Transpose", [h], (n, c, width, height), perm=[0, 1, 3, 2])
    return (cnn.activation(cnn.conv(t, 2)),)


def flatten_heads(cnn: Cnn) -> tuple[str, ...]:
    x = cnn.input_quant()
    h = cnn.activation(cnn.conv(x, 3))
    h = cnn.quant(cnn.pool(h, "MaxPool"), signed=0)
    gemm = cnn.dense(cnn.quant(cnn.flatten(h), signed=0), 5, gemm=True)
    matmul = cnn.dense(cnn.flatten(h, "Reshape-1"), 4, gemm=False, per_row=True)
    sized = cnn.dense(cnn.activation(cnn.flatten(h, "Reshape")), 2, gemm=False)
    return gemm, matmul, sized


def defaults_left_out(cnn: Cnn) -> tuple[str, ...]:
    x = cnn.input_quant()
    h = cnn.activation(cnn.conv(x, 3, explicit="kernel_shape"))  # what PyTorch writes
    h = cnn.quant(cnn.pool(h, "MaxPool"), signed=0)
    return (cnn.dense(cnn.flatten(cnn.activation(cnn.conv(h, 2, explicit="none", bias=False))), 3, gemm=True),)


MODELS = {
    "conv_relu_pool_2d": (conv_relu_pool, (6, 6)),
    "conv_relu_pool_1d": (conv_relu_pool, (8,)),
    "residual_and_concat_2d": (residual_and_concat, (4, 4)),
    "residual_and_concat_1d": (residual_and_concat, (6,)),
    "batch_norm_and_average_2d": (batch_norm_and_average, (4, 4)),
    "batch_norm_and_average_1d": (batch_norm_and_average, (8,)),
    "flatten_heads_2d": (flatten_heads, (4, 6)),
    "flatten_heads_1d": (flatten_heads, (8,)),
    "defaults_left_out_2d": (defaults_left_out, (10, 10)),
    "squeeze_excite_2d": (squeeze_excite, (4, 4)),
    "squeeze_excite_1d": (squeeze_excite, (6,)),
}


def build(name: str, seed: int = 0, per_channel_input: bool = False) -> ir.Model:
    builder, spatial = MODELS[name]
    cnn = Cnn(np.random.default_rng(seed), channels=2, spatial=spatial, per_channel_input=per_channel_input)
    return cnn.model(*builder(cnn))


def run_in_original_layout(model: ir.Model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run `model` on inputs given in the original layouts; outputs back in the original layouts."""
    perms = layout_permutations(model)
    fed = {name: x.transpose(perms[name]) if name in perms else x for name, x in inputs.items()}
    outputs = Executor(model).run(fed)
    return {name: y.transpose(np.argsort(perms[name])) if name in perms else y for name, y in outputs.items()}


def assert_bit_identical(before: dict, after: dict, what: str) -> None:
    assert before.keys() == after.keys(), what
    for name, a in before.items():
        b = after[name]
        assert a.shape == b.shape, f"{what}: output {name} shape {a.shape} became {b.shape}"
        differs = a.view(np.uint32) != b.view(np.uint32)
        assert not differs.any(), f"{what}: output {name} differs at {np.argwhere(differs)[0]}"


def convert_and_compare(model: ir.Model, what: str) -> ir.Model:
    inputs = draw_inputs(model, SAMPLES, seed=2)
    before = Executor(model).run(inputs)
    (record,) = PassManager.parse("channels-last", validate=SAMPLES).run(model)
    assert record.changed
    assert_bit_identical(before, run_in_original_layout(model, inputs), what)
    return model


def standard_image_ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph if n.domain == "" and n.op_type in ("Conv", "MaxPool", "AveragePool",
            "GlobalAveragePool", "GlobalMaxPool", "BatchNormalization", "Transpose")]  # fmt: skip


@pytest.mark.parametrize("name", sorted(MODELS))
def test_channels_last_preserves_semantics(name):
    model = convert_and_compare(build(name, seed=len(name)), name)
    assert standard_image_ops(model) == []
    assert any(node.domain == CHANNELS_LAST_DOMAIN for node in model.graph)
    assert set(layout_permutations(model)) >= {"x"}
    # Idempotent: nothing channels-first is left.
    assert not ChannelsLast().run(model).changed


@pytest.mark.parametrize("seed", range(3))
def test_per_channel_input_quantizer_and_weights(seed):
    model = build("residual_and_concat_2d", seed=seed, per_channel_input=True)
    convert_and_compare(model, f"per-channel input, seed {seed}")
    (input_quant,) = [use.node for use in model.graph.inputs[0].uses()]
    assert input_quant.inputs[1].const_value.numpy().shape == (1, 1, 1, 2)  # [1,C,1,1] -> [1,1,1,C]


def test_flatten_head_weights_are_permuted_not_transposed():
    model = convert_and_compare(build("flatten_heads_2d"), "flatten heads")
    ops = [node.op_type for node in model.graph]
    assert "Transpose" not in ops
    assert ops.count("Flatten") == 1 and ops.count("Reshape") == 2
    # The model's outputs are dense, in their original layout: only the input was relaid out.
    assert describe_layouts(model) == {"x": "NCHW->NHWC"}


def test_bn_is_converted_not_fused():
    model = convert_and_compare(build("batch_norm_and_average_2d"), "bn")
    converted = {node.op_type for node in model.graph if node.domain == CHANNELS_LAST_DOMAIN}
    assert converted == {"Conv", "BatchNormalization", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}


def test_a_transpose_of_the_model_is_composed_not_removed():
    cnn = Cnn(np.random.default_rng(5), spatial=(4, 6))
    model = cnn.model(*transposed_in_the_middle(cnn))
    inputs = draw_inputs(model, SAMPLES, seed=2)
    before = Executor(model).run(inputs)
    (record,) = PassManager.parse("channels-last", validate=SAMPLES).run(model)
    assert record.statistics["transposes-kept"] == 1
    (transpose,) = [node for node in model.graph if node.op_type == "Transpose"]
    assert list(transpose.attributes.get_ints("perm")) == [0, 2, 1, 3]
    assert_bit_identical(before, run_in_original_layout(model, inputs), "transpose in the middle")


def test_defaults_left_out_convert_where_qonnx_raises():
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean

    from hawqc.ir.io import to_proto

    model = build("defaults_left_out_2d")
    convs = [node for node in model.graph if node.op_type == "Conv"]
    assert convs and all("strides" not in n.attributes and "pads" not in n.attributes for n in convs)
    with pytest.raises(Exception, match="Required attribute strides unspecified"):
        ModelWrapper(to_proto(model)).transform(ConvertToChannelsLastAndClean(make_input_channels_last=True))
    convert_and_compare(model, "defaults left out")
    for node in model.graph:
        if node.op_type == "Conv":
            assert list(node.attributes.get_ints("strides")) == [1, 1]
            assert list(node.attributes.get_ints("pads")) == [0, 0, 0, 0]
            assert list(node.attributes.get_ints("kernel_shape")) == [3, 3]


def test_nhwc_export_loses_its_transposes():
    # Keras via tf2onnx: Transpose(NHWC->NCHW) -> Conv -> Relu -> Transpose(back) -> Flatten -> Gemm -> Softmax.
    model = load_onnx(data_model("conv2d_small_keras.onnx"))
    inputs = draw_inputs(model, SAMPLES, seed=3)
    before = Executor(model).run(inputs)
    (record,) = PassManager.parse("channels-last", validate=SAMPLES).run(model)
    assert record.statistics["transposes-removed"] == 2
    assert [node.op_type for node in model.graph] == ["Conv", "Relu", "Identity", "Flatten", "Gemm", "Softmax"]
    assert layout_permutations(model) == {}  # the interface was NHWC all along
    assert_bit_identical(before, Executor(model).run(inputs), "keras")


def test_already_channels_last_model_loads_and_stays():
    model = load_onnx(data_model("branched_model_ch_last.onnx"))
    text = to_text(model)
    assert not ChannelsLast().run(model).changed
    assert to_text(model) == text


def test_graph_without_image_ops_is_left_alone():
    cnn = Cnn(np.random.default_rng(0), spatial=(3,))  # a rank-3 input, but nothing says it is an image
    model = cnn.model(cnn.activation(cnn.input_quant()))
    text = to_text(model)
    assert not ChannelsLast().run(model).changed
    assert to_text(model) == text


def test_unsupported_op_names_the_node():
    cnn = Cnn(np.random.default_rng(0), spatial=(4, 4))
    h = cnn.conv(cnn.input_quant(), 2)
    y = cnn.node("ReduceMean", [h], (1, 2, 1, 1), axes=[2, 3])  # opset 17: axes is an attribute
    model = cnn.model(y)
    with pytest.raises(UnsupportedModelError, match=r"node 'reducemean\d+' \(ReduceMean\) reads or writes an image"):
        ChannelsLast().run(model)


def test_mixed_layouts_are_refused():
    text = """<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.channels_last" : 1]>
g (float[1,3,3,1] x) => (float[1,1,1,1] y) <float[1,3,3,1] w = {1,2,3,4,5,6,7,8,9}, float[1,1,3,3] v = {1,2,3,4,5,6,7,8,9}>
{
   c = qonnx.custom_op.channels_last.Conv <kernel_shape: ints = [3, 3], strides: ints = [1, 1], pads: ints = [0, 0, 0, 0], dilations: ints = [1, 1], group: int = 1> (x, w)
   y = Conv (c, v)
}"""
    with pytest.raises(UnsupportedModelError, match="mixes both"):
        ChannelsLast().run(load_onnx_text(text))


# ---------------------------------------------------------------------------------------------------
# Layout records and translation validation
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".onnx", ".onnxtxt"])
def test_layout_records_survive_save_and_load(tmp_path, suffix):
    model = build("conv_relu_pool_1d")
    ChannelsLast().run(model)
    path = tmp_path / f"model{suffix}"
    write_model(model, path)
    loaded = load_onnx(path)
    output = model.graph.outputs[0].name
    assert layout_permutations(loaded) == {"x": (0, 2, 1), output: (0, 2, 1)}
    assert describe_layouts(loaded) == {"x": "NCW->NWC", output: "NCW->NWC"}
    assert read_model(path).metadata_props["hawqc.layout.x"] == "NCW->NWC perm=0,2,1"


def test_layout_records_compose_and_cancel():
    model = build("conv_relu_pool_1d")
    record_layout(model, "x", (0, 2, 1))
    assert model.metadata_props["hawqc.layout.x"] == "NCW->NWC perm=0,2,1"
    record_layout(model, "x", (0, 2, 1))  # transposed back: the original layout, no record
    assert "hawqc.layout.x" not in model.metadata_props
    record_layout(model, "y", (0, 2, 3, 1))
    record_layout(model, "y", (0, 3, 1, 2))  # NHWC -> NCHW... composed: back to NCHW
    assert layout_permutations(model) == {}
    record_layout(model, "y", (0, 3, 2, 1))
    assert describe_layouts(model) == {"y": "NCHW->NWHC"}
    model.metadata_props["hawqc.layout.z"] = "NCHW->NHWC"
    with pytest.raises(UserInputError, match="does not end in a permutation"):
        layout_permutations(model)


def test_validator_transposes_by_the_recorded_layouts():
    # Without the records the validator would feed NCHW data to an NHWC model: a shape error.
    model = build("conv_relu_pool_2d")
    PassManager.parse("channels-last", validate=8).run(model)
    assert layout_permutations(model)["x"] == (0, 2, 3, 1)


@dataclass(frozen=True)
class RecordWithoutChanging(Pass):
    """A broken pass: records that the input became NHWC but leaves the graph NCHW."""

    name: ClassVar[str] = "test-record-only"

    def run(self, model: ir.Model) -> PassResult:
        record_layout(model, model.graph.inputs[0].name, (0, 2, 3, 1))
        return PassResult(True)


def test_validator_catches_a_wrong_layout_record():
    # C = H = W: the wrongly transposed input still fits the declared shape, only the numbers change.
    cnn = Cnn(np.random.default_rng(0), channels=4, spatial=(4, 4))
    model = cnn.model(*conv_relu_pool(cnn))
    registry = PassRegistry()
    registry.register(RecordWithoutChanging)
    with pytest.raises(TranslationValidationError, match="test-record-only"):
        PassManager.parse("test-record-only", registry=registry, validate=16).run(model)


def test_validator_reads_records_already_present():
    # A model converted earlier (records present) through another pass: no layout change to undo.
    model = build("conv_relu_pool_2d")
    ChannelsLast().run(model)
    PassManager.parse("cleanup", validate=16).run(model)


# ---------------------------------------------------------------------------------------------------
# Shape inference of the channels-last ops
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["residual_and_concat_2d", "batch_norm_and_average_1d", "defaults_left_out_2d"])
def test_shape_inference_of_channels_last_ops(name):
    model = build(name)
    ChannelsLast().run(model)
    expected = output_shapes(model)
    for node in model.graph:
        for value in node.outputs:
            if not value.is_graph_output():
                value.shape = None
    infer_shapes(model)
    assert output_shapes(model) == expected


def test_branched_model_loads_without_its_stored_shapes(tmp_path):
    proto = onnx.load(str(data_model("branched_model_ch_last.onnx")))
    del proto.graph.value_info[:]
    path = tmp_path / "branched_no_shapes.onnx"
    onnx.save(proto, str(path))
    stripped = load_onnx(path)
    reference = load_onnx(data_model("branched_model_ch_last.onnx"))
    assert output_shapes(stripped) == output_shapes(reference)


def output_shapes(model: ir.Model) -> dict:
    return {value.name: value.shape for node in model.graph for value in node.outputs}


def test_batch_norm_of_features_is_no_image_op():
    # BatchNorm1d after a dense layer: rank 2, per feature along axis 1, nothing to relay out.
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,3] x) => (float[1,3] y) <float[3] g = {1,2,3}, float[3] b = {0,1,0}, float[3] m = {0,0,1}, float[3] v = {1,1,1}>
{
   y = BatchNormalization (x, g, b, m, v)
}"""
    assert not ChannelsLast().run(load_onnx_text(text)).changed


def test_quantized_constants_keep_their_annotation_on_their_channels():
    # fold-quant leaves quantized weights as annotated initializers; relaid out, each keeps its
    # quantizer, a per-channel (per-row) scale permuted with it: every weight is still an integer
    # multiple of its own channel's scale, within the quantizer's range.
    from hawqc.ir.quant_annotation import read_annotation

    model = build("flatten_heads_2d", seed=4)
    PassManager.parse("fold-quant").run(model)
    weights_before = {
        name: read_annotation(value) for name, value in model.graph.initializers.items() if read_annotation(value)
    }
    per_channel = [a for a in weights_before.values() if a.per_channel]
    assert per_channel, "the model should have per-channel quantized weights"
    convert_and_compare(model, "annotated weights")
    annotated = 0
    for node in model.graph:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        weight = node.inputs[1]
        annotation = read_annotation(weight)
        assert annotation is not None, f"{node.name}: weight '{weight.name}' lost its quantization annotation"
        q = weight.const_value.numpy() / annotation.scale_array() + annotation.zeropt_array()
        low, high = annotation.integer_range()
        assert np.array_equal(q, np.round(q)) and q.min() >= low and q.max() <= high, node.name
        annotated += 1
    assert annotated == 4  # a Conv, a Gemm, two MatMuls


@pytest.mark.parametrize("name", ["batch_norm_and_average_2d", "residual_and_concat_1d", "flatten_heads_2d"])
def test_in_the_compile_pipeline(name):
    # Where the driver runs it: after fold-quant and fuse-bn (annotated weights, BatchNorm as
    # per-channel Mul/Add), before gemm-to-matmul; translation validation after every pass.
    model = build(name, seed=7, per_channel_input=True)
    inputs = draw_inputs(model, SAMPLES, seed=2)
    before = Executor(model).run(inputs)
    PassManager.parse("cleanup,fold-quant,fuse-bn,channels-last,gemm-to-matmul,cleanup", validate=SAMPLES).run(model)
    assert standard_image_ops(model) == []
    assert_bit_identical(before, run_in_original_layout(model, inputs), name)
