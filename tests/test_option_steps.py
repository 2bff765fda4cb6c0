"""Steps that options ask for run as passes (`hawqc.flow.option_steps`): `read-as-hawq`
(`--hawq-export-semantics hawq`) and `default-precision` (`--default-precision`). Both change the
meaning on purpose (`changes_meaning`), so translation validation cannot check them: these tests
check what each promises instead (HAWQ's integer inference; the default type recorded exactly
where the model has float parts), that the pass from a pipeline does what the option does, and that
each runs under the manager (statistics, records, its refusals)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
from conftest import JET_TAGGER, data_model
from hawq_export_files import export_mlp, to_hawq_export

import hawqc
from hawqc.cli import main, opt_main
from hawqc.errors import OptionError, UnsupportedModelError, UserInputError
from hawqc.flow.float_parts_option import run_default_precision_step
from hawqc.flow.hawq_export import read_as_hawq
from hawqc.flow.option_steps import run_step
from hawqc.frontends.load import load_model
from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir import default_precision
from hawqc.ir.io import to_text
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import FixedType
from hawqc.passes.base import Pass, PassResult
from hawqc.passes.default_precision import DefaultPrecision
from hawqc.passes.manager import PassManager
from hawqc.passes.pipeline import parse_pipeline
from hawqc.passes.read_as_hawq import READING_KEY, ReadAsHawq, recorded_reading
from hawqc.sim.executor import Executor
from hawqc.sim.inputs import draw_inputs

FIXED = FixedType(16, 6, True, "RND_CONV", "SAT")  # what fixed<16,6> means
FLOAT_MLP = data_model("three_layer_pytorch.onnx")


@pytest.fixture(scope="module")
def hawq_mlp(tmp_path_factory):
    """A HAWQ export with HAWQ's own calibrated scales (the ones exact-requant refuses), and its net."""
    net, shape = export_mlp(round_trip_scales=False)
    path = tmp_path_factory.mktemp("steps") / "mlp.onnx"
    onnx.save(to_hawq_export(net, shape), path)
    return net, path


# ---- read-as-hawq ---------------------------------------------------------------------------------


def test_read_as_hawq_computes_hawqs_integer_inference(hawq_mlp):
    """What the pass promises: HAWQ's float output is fl32(graph output * recorded scale), bit for bit."""
    net, path = hawq_mlp
    model = hawqc.load(path)
    x = next(iter(draw_inputs(model, 500, seed=5).values())).copy()
    x[:100] *= 4  # beyond the input quantizer's range too
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    records = PassManager.parse("read-as-hawq", validate=64).run(model)  # accepted: it changes the meaning
    assert [(r.name, r.changed, r.statistics) for r in records] == [("read-as-hawq", True, {"requantizations-read": 2})]
    output = Executor(model).run(x)[model.graph.outputs[0].name]
    scale = np.float32(json.loads(model.metadata_props["hawqc.hawq.output_scale"])[0])
    assert np.array_equal((output * scale).view(np.uint32), expected.view(np.uint32))
    assert not any(node.op_type == "Div" for node in model.graph)
    reading = recorded_reading(model)
    assert [r.quant for r in reading.requantizations] == ["/act1/Quant_25", "/act2/Quant_46"] and reading.samples == 0


def test_the_pass_and_the_option_rewrite_alike(hawq_mlp):
    """`-p read-as-hawq` replays what `--hawq-export-semantics hawq` does; the option adds the
    measurement to the recorded reading."""
    _, path = hawq_mlp
    by_pass, by_option = hawqc.load(path), hawqc.load(path)
    PassManager.parse("read-as-hawq").run(by_pass)
    reading = read_as_hawq(by_option, source="mlp", samples=30)
    assert reading.samples == 30
    assert json.loads(by_option.metadata_props.pop(READING_KEY))["samples"] == 30
    assert json.loads(by_pass.metadata_props.pop(READING_KEY))["samples"] == 0
    assert to_text(by_pass) == to_text(by_option)


def test_read_as_hawq_leaves_a_graph_without_the_pattern_alone():
    model = load_model(JET_TAGGER, None)
    before = to_text(model)
    assert ReadAsHawq().run(model).changed is False
    assert to_text(model) == before and READING_KEY not in model.metadata_props


def test_from_a_pipeline_its_refusals_name_the_pass_not_the_option(hawq_mlp):
    _, path = hawq_mlp
    model = hawqc.load(path)
    div = next(node for node in model.graph if node.op_type == "Div" and node.name.startswith("/fc2/"))
    div.inputs[1].const_value = ir.tensor(div.inputs[1].const_value.numpy() * np.float32(1.5))
    with pytest.raises(UnsupportedModelError, match=r"^pass 'read-as-hawq': node '/fc2/Div_\d+' .*not by the activation scale") as info:
        PassManager.parse("read-as-hawq").run(model)
    assert "hawq_export_semantics" not in str(info.value)


def test_hawqc_opt_counts_the_reading_among_the_passes(hawq_mlp, capsys):
    _, path = hawq_mlp
    assert opt_main([str(path), "--hawq-export-semantics", "hawq", "-p", "dce", "--pass-statistics"]) == 0
    err = capsys.readouterr().err
    assert "read-as-hawq" in err and "requantizations-read" in err and "hawqc-opt: hawq export: 2 requantizations" in err


# ---- default-precision ----------------------------------------------------------------------------


def _float_mlp():
    model = load_model(FLOAT_MLP, None)
    PassManager.parse("default,remove-output-softmax").run(model)
    return model


def test_default_precision_is_recorded_where_there_are_float_parts():
    """What the pass promises: the type recorded, and precision inference then applies it exactly as
    when it is attached by hand."""
    model = _float_mlp()
    records = PassManager.parse(f"default-precision{{type={FIXED}}}", validate=16).run(model)
    assert records[0].changed and records[0].name == "default-precision{type=fixed<16,6,RND_CONV,SAT>}"
    assert default_precision.read(model) == FIXED
    by_hand = _float_mlp()
    default_precision.attach(by_hand, FIXED)
    parts, expected = infer_types(model).float_parts, infer_types(by_hand).float_parts
    assert parts.as_dict() == expected.as_dict()
    assert records[0].statistics == {
        "inputs-cast": len(expected.inputs), "activations-cast": len(expected.casts),
        "weights-rounded": expected.as_dict()["weights_changed"],
    }  # fmt: skip
    assert DefaultPrecision(type=str(FIXED)).run(model).changed is False  # already there


def test_default_precision_changes_nothing_without_float_parts():
    model = load_model(JET_TAGGER, None)
    PassManager.parse("default").run(model)
    before = to_text(model)
    records = PassManager.parse("default-precision").run(model)
    assert not records[0].changed and to_text(model) == before
    # A default precision recorded before, with nothing to apply to, is dropped.
    default_precision.attach(model, FIXED)
    assert DefaultPrecision().run(model).changed is True
    assert default_precision.METADATA_KEY not in model.metadata_props


def test_the_type_option_is_spelled_as_a_pipeline_value():
    assert str(parse_pipeline("default-precision{type=fixed<16,6,TRN,WRAP>},dce")[0]) == "default-precision{type=fixed<16,6,TRN,WRAP>}"
    manager = PassManager.parse("default-precision{type=ap_ufixed<8,0,AP_RND>}")
    assert manager.passes[0].instance.fixed() == FixedType(8, 0, False, "RND", "SAT")
    with pytest.raises(UserInputError, match=r"pass 'default-precision' option 'type' 'fixed<40,6>': width must be 2\.\.32"):
        PassManager.parse("default-precision{type=fixed<40,6>}")


def test_the_option_runs_the_pass_and_reports_it(tmp_path, capsys):
    model = _float_mlp()
    outcome, records = run_default_precision_step(model, FIXED)
    assert [r.name for r in records] == ["default-precision{type=fixed<16,6,RND_CONV,SAT>}"]
    assert outcome.parts is not None and outcome.summary().startswith("float parts computed in fixed<16,6,RND_CONV,SAT>")
    quantized = load_model(JET_TAGGER, None)
    outcome, records = run_default_precision_step(quantized, FIXED)
    assert outcome.parts is None and records == []
    code = main([str(FLOAT_MLP), "-o", str(tmp_path / "p"), "-p", "default,remove-output-softmax",
                 "--default-precision", "fixed<16,6>", "--pass-statistics"])  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "weights-rounded" in captured.err and "hawqc: float parts computed in fixed<16,6,RND_CONV,SAT>" in captured.out
    report = json.loads((tmp_path / "p" / "hawqc_report.json").read_text())
    assert report["passes"][-1]["name"] == "default-precision{type=fixed<16,6,RND_CONV,SAT>}"


# ---- a step's refusals --------------------------------------------------------------------------


@dataclass(frozen=True)
class RefuseByOption(Pass):
    name: ClassVar[str] = "test-refuse-by-option"

    def run(self, model) -> PassResult:
        raise OptionError("{} does not fit this model", "default_precision")


def test_a_step_refuses_as_its_pass_said_naming_the_option():
    """Asked for by an option, not by name: no `pass '...':` in front, the option still named."""
    with pytest.raises(OptionError) as info:
        run_step(RefuseByOption(), load_model(JET_TAGGER, None))
    assert str(info.value) == "default_precision does not fit this model" and info.value.option == "default_precision"


def test_a_graph_precision_inference_cannot_type_keeps_the_type_and_is_refused_later_as_before():
    """Nothing shows such a graph has no float parts: the type is recorded, and the flow's own
    inference then refuses the graph naming the node, as the option always did (no pass named)."""
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2] x) => (float[1,2] y) <float[2,2] w = {1,2,3,4}> {
   y = Gemm (x, w)
}"""
    model = load_onnx_text(text, source="gemm")
    assert DefaultPrecision().run(model).changed is True
    assert default_precision.read(model) == FIXED
    with pytest.raises(UnsupportedModelError, match=r"^unnamed node \(Gemm\): no precision rule for this op$"):
        run_default_precision_step(load_onnx_text(text, source="gemm"), FIXED)
