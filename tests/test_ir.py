"""The IR floor: reading and writing, normalization, shape inference, the verifier."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from conftest import JET_TAGGER, REPO, data_model

from hawqc.errors import UserInputError, VerificationError
from hawqc.frontends.onnx import load_onnx, load_onnx_text
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.io import MAX_IR_VERSION, parse_text, read_model, to_text, write_model
from hawqc.ir.normalize import normalize
from hawqc.ir.shape_inference import infer_shapes
from hawqc.ir.verifier import verify

QUANT_ATTRS = 'signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"'


def quant_graph(domain: str = QONNX_DOMAIN, op: str = "Quant", attrs: str = QUANT_ATTRS, extra_inputs: str = "", body: str = "") -> str:
    return f"""<ir_version: 8, opset_import: ["" : 17, "{domain}" : 1]>
g (float[1,4] x{extra_inputs}) => (float[1,4] y)
   <float s = {{0.5}}, float z = {{0}}, float b = {{4}}>
{{
   {body or f"[q] y = {domain}.{op} <{attrs}> (x, s, z, b)"}
}}"""


@pytest.mark.parametrize(
    "name", ["bnn_model_fc_1layer.onnx", "three_layer_pytorch.onnx", "conv2d_small_keras.onnx", "branched_model_ch_last.onnx"]
)
def test_real_models_load_and_verify(name):
    model = load_onnx(data_model(name))
    verify(model)
    assert all(node.domain in ("", QONNX_DOMAIN, "qonnx.custom_op.channels_last") for node in model.graph)


def test_brevitas_binary_model_is_normalized():
    model = read_model(data_model("bnn_model_fc_1layer.onnx"))
    report = normalize(model)
    # Four onnx.brevitas nodes renamed; the bias is a graph input shadowed by an initializer.
    assert (report.renamed_domains, report.unshadowed_inputs) == (4, 1)
    assert [value.name for value in model.graph.inputs] == ["x.1"]
    assert "onnx.brevitas" not in model.opset_imports and QONNX_DOMAIN in model.opset_imports


@pytest.mark.parametrize("domain", ["onnx.brevitas", "hawq2qonnx", "finn.custom_op.general", QONNX_DOMAIN])
@pytest.mark.parametrize("op", ["Quant", "IntQuant"])
def test_every_qonnx_domain_and_quant_spelling_is_accepted(domain, op):
    model = load_onnx_text(quant_graph(domain, op))
    (node,) = list(model.graph)
    assert (node.domain, node.op_type) == (QONNX_DOMAIN, op)


def test_the_version_of_an_alias_domain_import_survives_normalization():
    """Trunc's meaning depends on its domain's version (v2 has an out_scale input): an `onnx.brevitas`
    import at version 2 must stay version 2 under the normalized name."""
    text = """<ir_version: 8, opset_import: ["" : 17, "onnx.brevitas" : 2]>
g (float[1,4] x) => (float[1,4] y)
   <float s = {0.5}, float z = {0}, float b = {8}, float o = {4}, float os = {1}>
{
   [t] y = onnx.brevitas.Trunc <signed: int = 1, narrow: int = 0, rounding_mode: string = "FLOOR"> (x, s, z, b, os, o)
}"""
    model = load_onnx_text(text)
    assert model.opset_imports[QONNX_DOMAIN] == 2 and "onnx.brevitas" not in model.opset_imports


def test_constant_nodes_become_initializers():
    text = f"""<ir_version: 8, opset_import: ["" : 17, "hawq2qonnx" : 1]>
g (float[1,4] x) => (float[1,4] y)
{{
   s = Constant <value_float: float = 0.25> ()
   z = Constant <value: tensor = float {{0}}> ()
   b = Constant <value_floats: floats = [8.0]> ()
   [q] y = hawq2qonnx.Quant <{QUANT_ATTRS}> (x, s, z, b)
}}"""
    model = load_onnx_text(text)
    assert {"s", "z", "b"} <= set(model.graph.initializers)
    assert all(node.op_type != "Constant" for node in model.graph)
    assert float(model.graph.initializers["s"].const_value.numpy()) == 0.25


def test_text_round_trip_is_exact():
    model = load_onnx(JET_TAGGER)
    text = to_text(model)
    assert to_text(parse_text(text)) == text


def test_written_files_are_readable_by_onnxruntime_and_back(tmp_path):
    model = load_onnx(data_model("bnn_model_fc_1layer.onnx"))
    write_model(model, tmp_path / "m.onnx")
    write_model(model, tmp_path / "m.onnxtxt")
    proto = onnx.load(tmp_path / "m.onnx")
    assert proto.ir_version <= MAX_IR_VERSION
    assert to_text(read_model(tmp_path / "m.onnxtxt")) == to_text(read_model(tmp_path / "m.onnx"))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"\x08\x01garbage that is not protobuf \xff\xff", "not an ONNX model"),
        (b"", "not an ONNX model"),
    ],
)
def test_unreadable_files_are_user_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=message) as info:
        load_onnx(path)
    assert str(path) in str(info.value)


def test_bad_onnx_text_names_the_file_and_position(tmp_path):
    path = tmp_path / "bad.onnxtxt"
    path.write_text("<ir_version: 8>\ng (float x) => (float y) { y = Relu(x) ")
    with pytest.raises(UserInputError, match=r"bad\.onnxtxt: cannot parse ONNX text \(.*line"):
        load_onnx(path)


def test_shape_inference_covers_quant_ops():
    model = parse_text(
        quant_graph(
            body=f"""[q] a = {QONNX_DOMAIN}.Quant <{QUANT_ATTRS}> (x, s, z, b)
   [r] r = Relu (a)
   [bq] y = {QONNX_DOMAIN}.BipolarQuant (r, s)"""
        )
    )
    for node in model.graph:
        node.outputs[0].shape = None
    infer_shapes(model)
    assert [list(node.outputs[0].shape) for node in model.graph] == [[1, 4]] * 3


def test_a_quant_of_a_double_value_yields_float32_as_qonnx_computes_it():
    model = parse_text(
        quant_graph(
            body=f"""[c] wide = Cast <to: int = 11> (x)
   [q] y = {QONNX_DOMAIN}.Quant <{QUANT_ATTRS}> (wide, s, z, b)"""
        )
    )
    for node in model.graph:
        node.outputs[0].type = None
    infer_shapes(model)
    assert [node.outputs[0].dtype for node in model.graph] == [ir.DataType.DOUBLE, ir.DataType.FLOAT]


@pytest.mark.parametrize(
    "body, attrs, extra, message",
    [
        (None, 'signed: int = 1, narrow: int = 0, rounding_mode: string = "NEAREST"', "", "rounding_mode 'NEAREST'"),
        (None, 'signed: int = 2, narrow: int = 0', "", "attribute 'signed' must be the integer 0 or 1"),
        (f"[q] y = {QONNX_DOMAIN}.Quant <{QUANT_ATTRS}> (x, s, z)", QUANT_ATTRS, "", "has 3 inputs, expected 4"),
        (f"[q] y = {QONNX_DOMAIN}.Quant <{QUANT_ATTRS}> (x, s2, z, b)", QUANT_ATTRS, ", float s2", "input 1 's2' is not a constant"),
    ],
)
def test_verifier_names_the_quant_node(body, attrs, extra, message):
    with pytest.raises(VerificationError, match=message) as info:
        verify(parse_text(quant_graph(attrs=attrs, extra_inputs=extra, body=body or "")))
    assert "node 'q' (qonnx.custom_op.general.Quant)" in str(info.value)


def test_verifier_rejects_bad_scales_and_bit_widths():
    for scale, bits, message in [("-0.5", "4", "scale must be finite and positive"), ("0.5", "0", "bit width 0.0 is below 1")]:
        text = quant_graph().replace("float s = {0.5}", f"float s = {{{scale}}}").replace("float b = {4}", f"float b = {{{bits}}}")
        with pytest.raises(VerificationError, match=message):
            verify(parse_text(text))


def test_verifier_catches_use_before_definition_and_undefined_outputs():
    unsorted = parse_text(
        """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y)
{
   [late] y = Relu (a)
   [early] a = Neg (x)
}"""
    )
    with pytest.raises(VerificationError, match="node 'late' \\(Relu\\): input 0 'a' is used before node 'early' \\(Neg\\) defines it"):
        verify(unsorted)


def test_verifier_requires_shapes():
    model = load_onnx(JET_TAGGER)
    node = next(node for node in model.graph if node.op_type == "MatMul")
    node.outputs[0].shape = None
    with pytest.raises(VerificationError, match=f"node '{node.name}' \\(MatMul\\): the shape of output"):
        verify(model)


def test_per_channel_quant_parameters_verify():
    text = quant_graph().replace("float s = {0.5}", "float[1,4] s = {0.5, 0.25, 1, 2}")
    verify(parse_text(text))
    assert np.asarray(parse_text(text).graph.initializers["s"].const_value.numpy()).shape == (1, 4)


def test_onnx_text_reads_back_every_float_bit_for_bit():
    """onnx's printer writes 6 significant digits; hawqc's text must read back as the same model:
    float32 and double initializers (HAWQ's 31-bit requantization factors) and float attributes."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2] x) => (float[1,2] y)
   <float[2] c = {0.5, 1}, float lo = {-1}, float hi = {1}>
{
   [lr] a = LeakyRelu <alpha: float = 0.1> (x)
   [clip] y = Clip (a, lo, hi)
}"""
    model = parse_text(text)
    model.graph.initializers["c"].const_value = ir.tensor(np.array([0.123456789, -1e-7], dtype=np.float32))
    model.graph.initializers["lo"].const_value = ir.tensor(np.float32(-1 / 3))
    factor = ir.Value(name="factor", const_value=ir.tensor(np.array([1323283541 * 2.0**-40], dtype=np.float64)))
    model.graph.register_initializer(factor)
    model.graph.node("lr").attributes["alpha"] = ir.AttrFloat32("alpha", 0.0123456789)
    back = parse_text(to_text(model))
    for name in ("c", "lo", "hi", "factor"):
        assert back.graph.initializers[name].const_value.numpy().tobytes() == model.graph.initializers[name].const_value.numpy().tobytes(), name
    assert back.graph.node("lr").attributes["alpha"].as_float() == np.float32(0.0123456789)
    assert "hi =  {1}" in to_text(model)  # a value the printer spells right keeps its spelling


def test_the_lifted_jet_tagger_survives_onnx_text():
    model = read_model(REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx")
    back = parse_text(to_text(model))
    for name, value in model.graph.initializers.items():
        assert back.graph.initializers[name].const_value.numpy().tobytes() == value.const_value.numpy().tobytes(), name
