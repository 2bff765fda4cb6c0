"""Quantization annotations (hawqc.ir.quant_annotation) and the `fold-quant` pass."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from hawqc.errors import UserInputError
from hawqc.frontends.onnx import load_onnx, load_onnx_text
from hawqc.ir.io import parse_text, read_model, to_proto, to_text, write_model
from hawqc.ir.quant_annotation import (
    ANNOTATION_KEY,
    MODEL_MIRROR_PREFIX,
    QuantAnnotation,
    annotate,
    read_annotation,
)

OPSETS = '<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>'

# ---------------------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------------------

PER_CHANNEL = QuantAnnotation.from_arrays(
    4, True, True, np.array([[0.1], [0.3]], dtype=np.float32), np.array(0, dtype=np.float32), "round"
)
PER_TENSOR = QuantAnnotation(8, False, False, 0.0625, 0.0, "FLOOR")

ANNOTATED_GRAPH = f"""{OPSETS}
g (float[1,3] x) => (float[1,2] y)
   <float[3,2] w = {{1, 2, 3, 4, 5, 6}}, float[2] b = {{0.5, 1}}>
{{
   m = MatMul (x, w)
   y = Add (m, b)
}}"""


def annotated_model():
    model = load_onnx_text(ANNOTATED_GRAPH)
    annotate(model.graph.initializers["w"], PER_CHANNEL)
    annotate(model.graph.node(0).outputs[0], PER_TENSOR)  # any value may carry one, not only constants
    return model


def assert_annotations_kept(model):
    assert read_annotation(model.graph.initializers["w"]) == PER_CHANNEL
    assert read_annotation(model.graph.node(0).outputs[0]) == PER_TENSOR
    assert read_annotation(model.graph.initializers["b"]) is None
    assert not any(key.startswith(MODEL_MIRROR_PREFIX) for key in model.metadata_props)


def test_annotation_json_keeps_float32_parameters_exactly():
    scale = np.array([[0.1], [1 / 3], [np.float32(2.0) ** -30]], dtype=np.float32)
    annotation = QuantAnnotation.from_arrays(5, True, False, scale, np.zeros((3, 1), np.float32))
    back = QuantAnnotation.from_json(annotation.to_json())
    assert back == annotation
    assert back.scale_array().dtype == np.float32 and back.scale_array().shape == (3, 1)
    assert (back.scale_array().view(np.uint32) == scale.view(np.uint32)).all()
    assert back.per_channel and not PER_TENSOR.per_channel
    assert PER_CHANNEL.rounding_mode == "ROUND"  # normalized spelling


def test_annotation_integer_ranges():
    assert QuantAnnotation(4, True, False, 1.0, 0.0).integer_range() == (-8, 7)
    assert QuantAnnotation(4, True, True, 1.0, 0.0).integer_range() == (-7, 7)
    assert QuantAnnotation(4, False, False, 1.0, 0.0).integer_range() == (0, 15)
    assert QuantAnnotation(4, False, True, 1.0, 0.0).integer_range() == (0, 14)
    assert QuantAnnotation(1, True, False, 1.0, 0.0).integer_range() == (-1, 1)  # qonnx's bipolar case


def test_annotation_transposed_moves_the_channel_axis():
    # A [out, in] weight with a per-output-row scale, transposed to [in, out]: the scale becomes a row.
    transposed = PER_CHANNEL.transposed((1, 0))
    assert transposed.scale_array().shape == (1, 2)
    assert transposed.zeropt == 0.0
    # A [C] scale of a rank-4 tensor broadcasts along the last axis; NCHW -> NHWC-like perm keeps it rank 4.
    annotation = QuantAnnotation.from_arrays(8, True, False, np.array([1.0, 2.0], np.float32), np.array(0.0))
    assert annotation.transposed((0, 3, 1, 2)).scale_array().shape == (1, 2, 1, 1)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"bits": 4}',
        '{"bits": 0, "signed": 1, "narrow": 0, "scale": 1, "zeropt": 0}',
        '{"bits": 4, "signed": 1, "narrow": 0, "scale": "x", "zeropt": 0}',
        '{"bits": 4, "signed": 1, "narrow": 0, "scale": [[1], [1, 2]], "zeropt": 0}',
        '{"bits": 4, "signed": 1, "narrow": 0, "scale": NaN, "zeropt": 0}',
    ],
)
def test_bad_annotations_are_user_errors_naming_the_value(text):
    model = load_onnx_text(ANNOTATED_GRAPH)
    weight = model.graph.initializers["w"]
    weight.metadata_props[ANNOTATION_KEY] = text
    with pytest.raises(UserInputError, match="value 'w'"):
        read_annotation(weight)


def test_annotation_survives_binary_onnx(tmp_path):
    # onnx_ir writes a value's metadata_props into the graph's value_info (initializers included).
    write_model(annotated_model(), tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert any(entry.name == "w" and entry.metadata_props for entry in proto.graph.value_info)
    assert_annotations_kept(read_model(tmp_path / "m.onnx"))
    assert_annotations_kept(load_onnx(tmp_path / "m.onnx"))  # normalization and shape inference keep it


def test_annotated_binary_model_still_runs_in_onnxruntime():
    model = annotated_model()
    session = ort.InferenceSession(to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.ones((1, 3), np.float32)})
    assert y.tolist() == [[9.5, 13.0]]


def test_annotation_survives_onnx_text(tmp_path):
    # ONNX text drops value metadata; hawqc.ir.io mirrors it in the model's metadata and back.
    model = annotated_model()
    text = to_text(model)
    assert f'"{MODEL_MIRROR_PREFIX}w": ' in text
    assert not any(key.startswith(MODEL_MIRROR_PREFIX) for key in model.metadata_props)  # printing changes nothing
    assert_annotations_kept(parse_text(text))
    assert to_text(parse_text(text)) == text
    write_model(model, tmp_path / "m.onnxtxt")
    assert_annotations_kept(read_model(tmp_path / "m.onnxtxt"))
    assert_annotations_kept(load_onnx(tmp_path / "m.onnxtxt"))


def test_text_annotation_of_a_missing_value_is_an_error():
    text = to_text(annotated_model()).replace(f'"{MODEL_MIRROR_PREFIX}w"', f'"{MODEL_MIRROR_PREFIX}nothing"')
    with pytest.raises(UserInputError, match="'nothing', which is no value"):
        parse_text(text)
