"""Reshape targets the graph computes from shapes (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`,
as FINN, Brevitas and torch.onnx write a flatten) are constants in fact: load folds them
(`hawqc.ir.computed_shapes`), shapes are known, the model compiles bit-exact; a target computed from
data is refused in one line naming the node."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import one_error_line, run_cli
from onnx import TensorProto, numpy_helper
from onnx import helper as oh

from hawqc.cli import main
from hawqc.errors import UnsupportedModelError
from hawqc.frontends.onnx import prepare_model
from hawqc.sim import Executor

QONNX = "qonnx.custom_op.general"


def _ints(name: str, values, scalar: bool = False) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values[0] if scalar else values, dtype=np.int64), name)


def batch_of(shape: str, opset: int, index: str = "initializer", select: str = "gather") -> list[onnx.NodeProto]:
    """`shape`'s dim 0 as a one-element int64 vector `u`, in the forms exporters write. Returns the
    nodes; the constants they read are initializers or `Constant` nodes."""
    nodes = []
    if select == "gather":
        if index == "constant":
            nodes.append(oh.make_node("Constant", [], ["i0"], value=_ints("c0", [0], scalar=True)))
        nodes.append(oh.make_node("Gather", [shape, "i0"], ["g"], axis=0))
        if opset >= 13:
            nodes.append(oh.make_node("Unsqueeze", ["g", "axes0"], ["u"]))
        else:
            nodes.append(oh.make_node("Unsqueeze", ["g"], ["u"], axes=[0]))
    elif opset >= 10:
        nodes.append(oh.make_node("Slice", [shape, "start0", "end1"], ["u"]))
    else:
        nodes.append(oh.make_node("Slice", [shape], ["u"], starts=[0], ends=[1], axes=[0]))
    return nodes


def flatten_mlp(batch, opset: int = 13, index: str = "initializer", select: str = "gather") -> onnx.ModelProto:
    """x [batch, 2, 8] -> Quant (2^-3, 8 bits) -> Relu -> Reshape to [Shape(.)[0], -1] (computed) ->
    MatMul with 4-bit weights (2^-2) -> Quant (2^-1, 8 bits). Power-of-two scales only."""
    weights = np.random.default_rng(0).integers(-8, 8, size=(16, 3)).astype(np.float32) * 0.25
    constants = [
        numpy_helper.from_array(np.array(v, dtype=np.float32), n)
        for n, v in [("s_in", 0.125), ("z", 0.0), ("b8", 8.0), ("s_w", 0.25), ("b4", 4.0), ("s_out", 0.5)]
    ]
    constants += [numpy_helper.from_array(weights, "w"), _ints("minus1", [-1]), _ints("axes0", [0])]
    constants += [_ints("start0", [0]), _ints("end1", [1])]
    if index == "initializer":
        constants.append(_ints("i0", [0], scalar=True))
    quant = {"domain": QONNX, "signed": 1, "narrow": 0, "rounding_mode": "ROUND"}
    nodes = [
        oh.make_node("Quant", ["x", "s_in", "z", "b8"], ["xq"], **quant),
        oh.make_node("Relu", ["xq"], ["r"]),
        oh.make_node("Shape", ["r"], ["s"]),
        *batch_of("s", opset, index, select),
        oh.make_node("Concat", ["u", "minus1"], ["target"], axis=0),
        oh.make_node("Reshape", ["r", "target"], ["f"], name="flatten"),
        oh.make_node("Quant", ["w", "s_w", "z", "b4"], ["wq"], **quant),
        oh.make_node("MatMul", ["f", "wq"], ["m"]),
        oh.make_node("Quant", ["m", "s_out", "z", "b8"], ["y"], **quant),
    ]
    graph = oh.make_graph(
        nodes, "flatten_mlp", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 2, 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)], constants,
    )  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset), oh.make_opsetid(QONNX, 1)])


def load(proto: onnx.ModelProto) -> ir.Model:
    return prepare_model(ir.serde.deserialize_model(proto), "model.onnx", True)


FORMS = [
    pytest.param(opset, index, select, id=f"opset{opset}-{select}-{index}")
    for opset in (9, 11, 13)
    for index, select in (("initializer", "gather"), ("constant", "gather"), ("initializer", "slice"))
]


@pytest.mark.parametrize("opset, index, select", FORMS)
@pytest.mark.parametrize("batch, expected", [(1, [1, -1]), ("N", [0, -1]), (None, [0, -1])], ids=["batch1", "symbolic", "unset"])
def test_the_chain_is_folded_at_load(opset, index, select, batch, expected):
    model = load(flatten_mlp(batch, opset, index, select))
    ops = [node.op_type for node in model.graph]
    assert ops == ["Quant", "Relu", "Reshape", "Quant", "MatMul", "Quant"]  # the chain is gone
    reshape = next(node for node in model.graph if node.op_type == "Reshape")
    assert reshape.inputs[1].const_value.numpy().tolist() == expected
    # A static batch is the number; a symbolic or unset one is the data's own dim 0, copied (0).
    dims = list(reshape.outputs[0].shape)
    assert dims[1] == 16 and (dims[0] == 1 if batch == 1 else not isinstance(dims[0], int))
    assert list(model.graph.outputs[0].shape)[1:] == [3]
    # The chain's constants went with it (those the form does not read were never read).
    assert "minus1" not in model.graph.initializers and ("i0" not in model.graph.initializers or select == "slice")


@pytest.mark.parametrize("batch", [1, "N", None])
def test_the_folded_model_computes_what_the_chain_computes(batch):
    """The constant target is what the subgraph computes, at every batch size (onnx's reference
    evaluator runs the original chain)."""
    from onnx.reference import ReferenceEvaluator

    proto = flatten_mlp(batch)
    model = load(proto)
    folded = Executor(model)
    # The reference evaluator does not know Quant; the chain's Reshape alone is compared.
    for samples in (1, 5):
        x = np.random.default_rng(samples).standard_normal((samples, 2, 8)).astype(np.float32)
        values = folded.run({"x": x}, keep_intermediates=True)
        target = ReferenceEvaluator(_chain_only(proto)).run(None, {"r": values["r"]})[0]
        np.testing.assert_array_equal(values["f"], target)


def _chain_only(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The shape chain and the Reshape of `proto`, reading `r`."""
    keep = [n for n in proto.graph.node if n.output[0] not in ("xq", "r", "wq", "m", "y")]
    graph = oh.make_graph(
        keep, "chain", [oh.make_tensor_value_info("r", TensorProto.FLOAT, None)],
        [oh.make_tensor_value_info("f", TensorProto.FLOAT, None)], list(proto.graph.initializer),
    )  # fmt: skip
    return oh.make_model(graph, opset_imports=list(proto.opset_import)[:1])


@pytest.mark.parametrize("batch", [1, "N", None], ids=["batch1", "symbolic", "unset"])
def test_a_computed_flatten_compiles_bit_exact(tmp_path, capsys, batch):
    path = tmp_path / "model.onnx"
    onnx.save(flatten_mlp(batch, 11 if batch is None else 13, select="slice" if batch is None else "gather"), path)
    code, _, err = run_cli(capsys, main, path, "-o", tmp_path / "proj", "--verify", "100")
    assert code == 0, err
    verify = json.loads((tmp_path / "proj" / "hawqc_report.json").read_text())["verify"]
    assert verify["bit_exact"] and verify["hardware_vs_semantic"]["equal"]


def test_a_target_computed_from_data_is_refused_naming_the_node(tmp_path, capsys):
    """ArgMax reads the values: the target depends on the data, not only on shapes."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    nodes = [
        oh.make_node("ArgMax", ["x"], ["k"], name="which", axis=1, keepdims=0),
        oh.make_node("Concat", ["k", "minus1"], ["target"], axis=0),
        oh.make_node("Reshape", ["x", "target"], ["y"], name="data_reshape"),
    ]
    graph = oh.make_graph(nodes, "g", [x], [oh.make_tensor_value_info("y", TensorProto.FLOAT, None)], [_ints("minus1", [-1])])
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match=r"node 'data_reshape' \(Reshape\): .* at node 'which' \(ArgMax\)"):
        load(proto)
    path = tmp_path / "data.onnx"
    onnx.save(proto, path)
    code, _, err = run_cli(capsys, main, path, "-o", tmp_path / "proj")
    line = one_error_line(err)
    assert code == 2 and "node 'data_reshape' (Reshape)" in line and "node 'which' (ArgMax)" in line


def test_a_dim_that_is_not_the_datas_own_is_not_folded():
    """Reshape(x, [Shape(y)[0], -1]) where y's unset dim 0 is not x's: not provably the same size."""
    x = oh.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])
    y = oh.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    nodes = [
        oh.make_node("Shape", ["y"], ["s"]),
        oh.make_node("Gather", ["s", "i0"], ["g"], axis=0),
        oh.make_node("Unsqueeze", ["g", "axes0"], ["u"]),
        oh.make_node("Concat", ["u", "minus1"], ["target"], axis=0),
        oh.make_node("Reshape", ["x", "target"], ["out"], name="mixed"),
    ]
    constants = [_ints("i0", [0], scalar=True), _ints("axes0", [0]), _ints("minus1", [-1])]
    graph = oh.make_graph(nodes, "g", [x, y], [oh.make_tensor_value_info("out", TensorProto.FLOAT, None)], constants)
    proto = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13)])
    with pytest.raises(UnsupportedModelError, match=r"node 'mixed' \(Reshape\): .*not the data's dim 0"):
        load(proto)


def tfc_shaped(opset: int = 9) -> onnx.ModelProto:
    """The QONNX model zoo TFC's front, small: a float [1, 1, 4, 4] image input without a quantizer,
    flattened by a computed Reshape (Constant nodes, opset 9 Unsqueeze), into a quantized dense layer."""
    weights = np.random.default_rng(1).integers(-2, 2, size=(16, 5)).astype(np.float32) * 0.5
    constants = [
        numpy_helper.from_array(np.array(v, dtype=np.float32), n)
        for n, v in [("s_w", 0.5), ("z", 0.0), ("b2", 2.0), ("s_out", 0.25), ("b8", 8.0)]
    ] + [numpy_helper.from_array(weights, "w")]
    quant = {"domain": QONNX, "signed": 1, "narrow": 0, "rounding_mode": "ROUND"}
    nodes = [
        oh.make_node("Shape", ["global_in"], ["26"]),
        oh.make_node("Constant", [], ["27"], value=_ints("c27", [0], scalar=True)),
        oh.make_node("Gather", ["26", "27"], ["28"], axis=0),
        oh.make_node("Unsqueeze", ["28"], ["29"], axes=[0]),
        oh.make_node("Constant", [], ["30"], value=_ints("c30", [-1])),
        oh.make_node("Concat", ["29", "30"], ["31_shape"], axis=0),
        oh.make_node("Reshape", ["global_in", "31_shape"], ["31"]),
        oh.make_node("Quant", ["w", "s_w", "z", "b2"], ["wq"], **quant),
        oh.make_node("MatMul", ["31", "wq"], ["m"]),
        oh.make_node("Quant", ["m", "s_out", "z", "b8"], ["global_out"], **quant),
    ]
    graph = oh.make_graph(
        nodes, "tfc", [oh.make_tensor_value_info("global_in", TensorProto.FLOAT, [1, 1, 4, 4])],
        [oh.make_tensor_value_info("global_out", TensorProto.FLOAT, [1, 5])], constants,
    )  # fmt: skip
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset), oh.make_opsetid(QONNX, 1)])


def test_a_tfc_shaped_model_with_a_float_input_compiles_bit_exact(tmp_path, capsys):
    """Both halves of the issue at once: the computed flatten folds at load, the unquantized input takes
    `--input-precision`; a [N, 1, H, W] input that no image op relays out is read by the C
    simulation in its own shape."""
    path = tmp_path / "tfc.onnx"
    onnx.save(tfc_shaped(), path)
    code, _, err = run_cli(capsys, main, path, "-o", tmp_path / "refused")
    assert code == 2 and "--input-precision" in one_error_line(err)
    code, text, err = run_cli(capsys, main, path, "-o", tmp_path / "proj", "--input-precision", "fixed<6,2>", "--verify", "200")
    assert code == 0, err
    verify = json.loads((tmp_path / "proj" / "hawqc_report.json").read_text())["verify"]
    assert verify["bit_exact"] and verify["hardware_vs_semantic"]["equal"] and verify["samples"] == 200


@pytest.mark.parametrize(
    "body, expected",
    [
        # Shape with start/end (opset 15), a Squeeze to a scalar and back.
        ("""s = Shape <start: int = 0, end: int = 1> (x)
   sq = Squeeze (s, axes0)
   u = Unsqueeze (sq, axes0)
   target = Concat <axis: int = 0> (u, minus1)""", [0, -1]),
        # FINN's [N, C*H*W]: a product of static dims beside the symbolic batch, through Casts.
        ("""s = Shape (x)
   n = Gather <axis: int = 0> (s, i0)
   c = Gather <axis: int = 0> (s, i1)
   w = Gather <axis: int = 0> (s, i2)
   cw = Mul (c, w)
   c32 = Cast <to: int = 6> (cw)
   c64 = Cast <to: int = 7> (c32)
   un = Unsqueeze (n, axes0)
   ucw = Unsqueeze (c64, axes0)
   target = Concat <axis: int = 0> (un, ucw)""", [0, 6]),
        # Slices: the head, and the last two dims from a negative start to a huge end: [N, 2, 3].
        ("""s = Shape (x)
   last2 = Slice (s, minus2, big)
   head = Slice (s, zero1, one1)
   target = Concat <axis: int = 0> (head, last2)""", [0, 2, 3]),
    ],
    ids=["shape-start-end", "product", "slices"],
)
def test_more_forms_fold(body, expected):
    from hawqc.frontends.onnx import load_onnx_text

    text = f"""<ir_version: 8, opset_import: ["" : 15]>
g (float[N,2,3] x) => (float{"[N,6]" if len(expected) == 2 else "[N,2,3]"} y)
   <int64 i0 = {{0}}, int64 i1 = {{1}}, int64 i2 = {{2}}, int64[1] axes0 = {{0}}, int64[1] minus1 = {{-1}},
    int64[1] minus2 = {{-2}}, int64[1] big = {{9223372036854775807}}, int64[1] zero1 = {{0}}, int64[1] one1 = {{1}}>
{{
   {body}
   r = Reshape (x, target)
   y = Relu (r)
}}"""
    model = load_onnx_text(text)
    reshape = next(node for node in model.graph)
    assert [node.op_type for node in model.graph] == ["Reshape", "Relu"]
    assert reshape.inputs[1].const_value.numpy().tolist() == expected
    assert list(reshape.outputs[0].shape)[1:] == ([6] if len(expected) == 2 else [2, 3])
