"""Files the IR floor refuses at load, each naming the file and the value or node: quantizer
parameters that do not broadcast, ambiguous graphs (names defined twice), unknown op domains,
zero-sized and negative dimensions, tensors whose data does not fit, standard nodes that do not
fit their ONNX schema, missing external data, and write errors. Real exports' quirks (an input
shadowed by an initializer, omitted optional inputs) stay accepted."""

from __future__ import annotations

import errno
import os

import numpy as np
import onnx
import pytest
from conftest import JET_TAGGER
from onnx import TensorProto, helper, numpy_helper

from hawqc.errors import UserInputError
from hawqc.frontends.onnx import load_onnx, load_onnx_text
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.io import read_model, write_model

Q = QONNX_DOMAIN


def quantizer(op: str = "Quant", shape=(1, 4), **params) -> onnx.ModelProto:
    """y = op(x, parameters...) with per-tensor defaults; `params` replaces any of them by name."""
    defaults = {"Quant": {"s": 0.5, "z": 0.0, "b": 4.0}, "IntQuant": {"s": 0.5, "z": 0.0, "b": 4.0}, "BipolarQuant": {"s": 0.5},
                "Trunc": {"s": 0.5, "z": 0.0, "b": 8.0, "o": 4.0}}[op]  # fmt: skip
    values = {**defaults, **params}
    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in values.items()]
    attrs = {} if op == "BipolarQuant" else {"signed": 1, "narrow": 0, "rounding_mode": "FLOOR" if op == "Trunc" else "ROUND"}
    node = helper.make_node(op, ["x", *values], ["y"], domain=Q, name="q", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(Q, 1)])


def standard(nodes, inputs=(("x", (1, 4)),), initializers=(), output=("y", (1, 4))) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, output[1])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in initializers],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def refusal(tmp_path, model: onnx.ModelProto) -> str:
    """The message of loading `model` from a file; it names the file."""
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(UserInputError) as info:
        load_onnx(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


# --- quantizer parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op, params, message",
    [
        ("Quant", {"s": np.full(7, 0.5)}, "scale 's' of shape [7] does not broadcast to input 'x' of shape [1, 4]"),
        ("Quant", {"z": np.zeros(7)}, "zero point 'z' of shape [7] does not broadcast"),
        ("Quant", {"s": np.full((1, 7), 0.5)}, "scale 's' of shape [1, 7] does not broadcast"),
        ("Quant", {"s": np.full((2, 1, 4), 0.5)}, "scale 's' of shape [2, 1, 4] does not broadcast"),  # would change y's shape
        ("Quant", {"b": [4.0, 4.0]}, "bit width 'b' must be a scalar, got shape [2]"),
        ("Quant", {"b": np.nan}, "bit width is NaN"),
        ("IntQuant", {"s": np.full((4, 1), 0.5)}, "scale 's' of shape [4, 1] does not broadcast to input 'x' of shape [1, 4]"),
        ("BipolarQuant", {"s": np.full(7, 0.5)}, "scale 's' of shape [7] does not broadcast"),
        ("Trunc", {"s": np.full(7, 0.5)}, "scale 's' of shape [7] does not broadcast"),
        ("Trunc", {"z": np.zeros(7)}, "zero point 'z' of shape [7] does not broadcast"),
        ("Trunc", {"o": np.full(7, 4.0)}, "output bit width 'o' must be a scalar, got shape [7]"),
        ("Trunc", {"b": np.full(3, 8.0)}, "input bit width 'b' must be a scalar"),
    ],
)
def test_quantizer_parameters_that_do_not_fit_x_name_the_node(tmp_path, op, params, message):
    line = refusal(tmp_path, quantizer(op, **params))
    assert f"node 'q' ({Q}.{op}): {message}" in line


@pytest.mark.parametrize(
    "op, params",
    [
        ("Quant", {"s": [0.5, 0.25, 1, 2]}),
        ("Quant", {"s": [[0.5, 0.25, 1, 2]], "z": [0.0]}),
        ("Quant", {"b": [4.0]}),
        ("BipolarQuant", {"s": [[0.5]]}),
        ("Trunc", {}),  # v1 (five inputs) crashed the verifier
    ],
)
def test_quantizer_parameters_that_broadcast_load(tmp_path, op, params):
    path = tmp_path / "model.onnx"
    path.write_bytes(quantizer(op, **params).SerializeToString())
    assert [node.op_type for node in load_onnx(path).graph] == [op]


# --- ambiguous graphs ----------------------------------------------------------------------------


def test_duplicate_initializers_are_refused_not_last_one_wins(tmp_path):
    model = onnx.load(JET_TAGGER)
    first = next(t for t in model.graph.initializer if len(t.dims) == 2)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(tuple(first.dims), np.float32), first.name))
    assert f"initializer '{first.name}' is defined twice" in refusal(tmp_path, model)


def test_duplicate_initializers_in_onnx_text_are_refused():
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y)
   <float[4] w = {1,2,3,4}, float[4] w = {0,0,0,0}>
{
   y = Mul (x, w)
}"""
    with pytest.raises(UserInputError, match=r"^t\.onnxtxt: initializer 'w' is defined twice"):
        load_onnx_text(text, source="t.onnxtxt")


@pytest.mark.parametrize(
    "nodes, initializers, message",
    [
        ([helper.make_node("Relu", ["x"], ["t"], name="a"), helper.make_node("Neg", ["x"], ["t"], name="b"),
          helper.make_node("Add", ["t", "t"], ["y"])], (), "node 'b' (Neg): output 't' is already defined by node 'a' (Relu)"),
        ([helper.make_node("Relu", ["x"], ["x"], name="a"), helper.make_node("Neg", ["x"], ["y"])], (),
         "node 'a' (Relu): output 'x' is already defined by graph input 'x'"),
        ([helper.make_node("Relu", ["x"], ["w"], name="a"), helper.make_node("Add", ["w", "x"], ["y"])], (("w", np.ones(4)),),
         "node 'a' (Relu): output 'w' is already defined by initializer 'w'"),
    ],
)  # fmt: skip
def test_a_name_written_twice_is_named(tmp_path, nodes, initializers, message):
    assert message in refusal(tmp_path, standard(nodes, initializers=initializers))


def test_real_export_quirks_still_load(tmp_path):
    """A graph input shadowed by an initializer of its name, and omitted optional inputs ("")
    twice over, are legal ONNX and not duplicates."""
    nodes = [helper.make_node("Clip", ["x", "", "m"], ["t"]), helper.make_node("Clip", ["t", "", "m"], ["u"]),
             helper.make_node("Add", ["u", "w"], ["y"])]  # fmt: skip
    model = standard(nodes, inputs=(("x", (1, 4)), ("w", (4,))), initializers=(("m", 1.0), ("w", np.ones(4))))
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    loaded = load_onnx(path)
    assert [v.name for v in loaded.graph.inputs] == ["x"] and "w" in loaded.graph.initializers


def test_an_unknown_op_domain_is_named_with_the_known_ones(tmp_path):
    nodes = [helper.make_node("Foo", ["x"], ["t"], domain="my.domain", name="foo"), helper.make_node("Relu", ["t"], ["y"])]
    model = standard(nodes)
    model.opset_import.append(helper.make_opsetid("my.domain", 1))
    line = refusal(tmp_path, model)
    assert "node 'foo' (my.domain.Foo): unknown op domain 'my.domain'" in line
    assert all(known in line for known in ("'' (ONNX)", QONNX_DOMAIN, "qonnx.custom_op.channels_last", "onnx.brevitas"))


def test_an_unknown_qonnx_op_says_so():
    text = f"""<ir_version: 8, opset_import: ["" : 17, "{Q}" : 1]>
g (float[1,4] x) => (float[1,4] y)
{{
   [foo] t = {Q}.Foo (x)
   y = Relu (t)
}}"""
    with pytest.raises(UserInputError, match="node 'foo' .*: the shape of output 't' is unknown: hawqc knows no QONNX op 'Foo'"):
        load_onnx_text(text)


# --- dimensions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, message",
    [
        (standard([helper.make_node("Relu", ["x"], ["y"])], inputs=(("x", (1, 0)),)), "graph input 'x' has a zero-sized dimension (shape [1, 0])"),
        (standard([helper.make_node("Relu", ["x"], ["y"])], inputs=(("x", (1, -1)),)), "graph input 'x' has a negative dimension (shape [1, -1])"),
        (standard([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], initializers=(("w", np.ones((4, 0))),), output=("y", None)),
         "node 'mm' (MatMul): output 'y' has a zero-sized dimension (shape [1, 0])"),
        (standard([helper.make_node("Add", ["x", "w"], ["y"], name="add")], initializers=(("w", np.ones(0)),), output=("y", None)),
         "node 'add' (Add): the shape of output 'y' is unknown: input 1 'w' has a zero-sized dimension (shape [0])"),
    ],
)  # fmt: skip
def test_zero_sized_and_negative_dimensions_are_named(tmp_path, model, message):
    assert message in refusal(tmp_path, model)


def test_an_empty_initializer_that_means_nothing_missing_still_loads(tmp_path):
    """Resize's `roi` and empty axes lists are zero-sized initializers in real exports."""
    nodes = [helper.make_node("Resize", ["x", "roi", "scales"], ["y"], mode="nearest")]
    model = standard(nodes, inputs=(("x", (1, 1, 2, 2)),), initializers=(("roi", np.ones(0)), ("scales", [1, 1, 2, 2])), output=("y", (1, 1, 4, 4)))
    path = tmp_path / "model.onnx"
    path.write_bytes(model.SerializeToString())
    assert [node.op_type for node in load_onnx(path).graph] == ["Resize"]


# --- standard nodes and tensors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "node, message",
    [
        (helper.make_node("Gemm", ["x"], ["y"], name="g"), "node 'g' (Gemm): does not fit ONNX's Gemm (opset 17): has input size 1 not in range [min=2, max=3]"),
        (helper.make_node("Softmax", ["x"], ["y"], name="s", axis="a"), "node 's' (Softmax): does not fit ONNX's Softmax (opset 17): Mismatched attribute type"),
        (helper.make_node("Relu", ["x"], ["y"], name="r", foo=1), "node 'r' (Relu): does not fit ONNX's Relu (opset 17): Unrecognized attribute: foo"),
        (helper.make_node("Frobnicate", ["x"], ["y"], name="f"), "node 'f' (Frobnicate): ONNX has no op 'Frobnicate' at opset 17"),
        (helper.make_node("Relu", ["nope"], ["y"], name="r"), "node 'r' (Relu): input 0 'nope' is never defined"),
    ],
)  # fmt: skip
def test_standard_nodes_that_do_not_fit_their_schema_are_named(tmp_path, node, message):
    assert message in refusal(tmp_path, standard([node]))


def test_a_convolution_whose_shape_onnx_cannot_infer_says_why(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv", strides=[0, 0])]
    model = standard(nodes, inputs=(("x", (1, 2, 6, 6)),), initializers=(("w", np.ones((3, 2, 3, 3))),), output=("y", None))
    assert "node 'conv' (Conv): the shape of output 'y' is unknown: Attribute strides must only contain positive values" in refusal(tmp_path, model)


def _with_tensor(edit) -> onnx.ModelProto:
    model = quantizer()
    edit(model.graph.initializer[0])
    return model


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.dims.extend([3]), "initializer 's': 4 bytes of FLOAT data for shape [3] (3 elements), expected 12"),
        (lambda t: setattr(t, "data_type", TensorProto.INT64), "initializer 's': 4 bytes of INT64 data for shape [] (1 element), expected 8"),
        (lambda t: setattr(t, "data_type", 999), "initializer 's': unknown data type 999"),
        (lambda t: t.float_data.extend([1.0, 2.0]), "initializer 's': holds both raw data and float_data"),
        (lambda t: (t.ClearField("raw_data"), t.float_data.extend([1.0, 2.0])), "initializer 's': 2 values of FLOAT data for shape [] (1 element), expected 1"),
    ],
)  # fmt: skip
def test_tensor_data_that_does_not_fit_is_named(tmp_path, edit, message):
    assert message in refusal(tmp_path, _with_tensor(edit))


def test_an_onnx_text_float_attribute_written_as_an_integer_loads():
    """onnx's parser stores `alpha: float = 1` in both fields; onnx's node checker alone would refuse it."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y)
{
   y = LeakyRelu <alpha: float = 1> (x)
}"""
    assert next(iter(load_onnx_text(text).graph)).attributes["alpha"].as_float() == 1.0


# --- files -----------------------------------------------------------------------------------------


def test_missing_external_data_names_the_model_and_the_data_file(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(JET_TAGGER), path, save_as_external_data=True, location="ext.data", size_threshold=0)
    assert [n.op_type for n in load_onnx(path).graph]  # with its data file, it loads
    (tmp_path / "ext.data").unlink()
    with pytest.raises(UserInputError) as info:
        read_model(path)
    assert str(info.value).startswith(f"{path}: the external data file 'ext.data' of tensor ")
    assert "is missing" in str(info.value)


def test_unreadable_and_non_utf8_model_files_are_named(tmp_path, monkeypatch):
    text = tmp_path / "m.onnxtxt"
    text.write_bytes(b"<ir_version: 8>\n\xff\xfe")
    with pytest.raises(UserInputError, match=r"m\.onnxtxt: not UTF-8 text \(byte 16\)"):
        read_model(text)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(JET_TAGGER))

    monkeypatch.setattr(onnx, "load_model", denied)
    with pytest.raises(UserInputError, match=r"jet_tagger\.onnx: cannot read \(Permission denied\)"):
        read_model(JET_TAGGER)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC])
@pytest.mark.parametrize("suffix", [".onnx", ".onnxtxt"])
def test_a_failed_write_is_one_error_and_leaves_nothing_behind(tmp_path, monkeypatch, code, suffix):
    model = load_onnx(JET_TAGGER)
    out = tmp_path / f"out{suffix}"
    out.write_text("old")

    def failing_replace(src, dst, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(UserInputError, match=rf"out\{suffix}: cannot write \({os.strerror(code)}\)"):
        write_model(model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name] and out.read_text() == "old"


def test_writing_into_a_missing_directory_or_onto_a_directory_is_refused(tmp_path):
    model = load_onnx(JET_TAGGER)
    with pytest.raises(UserInputError, match=r"out\.onnx: no such directory .*missing"):
        write_model(model, tmp_path / "missing" / "out.onnx")
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(UserInputError, match=r"dir\.onnx: is a directory"):
        write_model(model, tmp_path / "dir.onnx")
