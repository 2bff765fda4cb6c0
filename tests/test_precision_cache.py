"""Precision inference as an analysis computed once per IR state: cached on the model, invalidated
by the pass manager when a pass reports a change, and never handed back for another IR state."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

import onnx_ir as ir
import pytest
from conftest import JET_TAGGER

from hawqc.cli import main
from hawqc.errors import UnsupportedModelError
from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir import analysis_cache, default_precision
from hawqc.ir.precision import Analysis, precision_of
from hawqc.ir.precision.rules import RULES, _merged
from hawqc.ir.qtypes import FixedType
from hawqc.passes.base import Pass, PassResult
from hawqc.passes.manager import PassManager, ScheduledPass

# x -> Quant (4-bit signed, LSB 1/4) -> MatMul(w) -> y, with w = [[1], [2]] (exact integers).
LAYER = """<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
g (float[1,2] x) => (float[1,1] y)
   <float s = {0.25}, float z = {0}, float b = {4}, float[2,1] w = {1, 2}>
{
   xq = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (x, s, z, b)
   y = MatMul (xq, w)
}"""

# The same layer without the Quant: a float input, typed only with a default precision.
FLOAT_LAYER = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2] x) => (float[1,1] y)
   <float[2,1] w = {1, 2}>
{
   y = MatMul (x, w)
}"""


@pytest.fixture
def runs(monkeypatch) -> list[tuple]:
    """The IR state of every run of precision inference, in order."""
    states: list[tuple] = []
    real_run = Analysis.run

    def counting_run(self: Analysis):
        states.append(analysis_cache.ir_state(self.model))
        return real_run(self)

    monkeypatch.setattr(Analysis, "run", counting_run)
    return states


def test_a_result_is_computed_once_per_ir_state(runs) -> None:
    model = load_onnx_text(LAYER)
    first = precision_of(model)
    assert precision_of(model) is first
    assert len(runs) == 1
    # x in [-2, 1.75]: y = x0 + 2 x1 in [-6, 5.25].
    assert first.intervals["y"] == (Fraction(-6), Fraction(21, 4))


def test_one_compile_infers_precision_once(tmp_path, capsys, runs) -> None:
    """The lowering, the BOPs count, hardware mode and verification all read the same IR state:
    inference ran five times per compile before it was cached; now once."""
    code = main([str(JET_TAGGER), "-o", str(tmp_path / "p"), "--verify", "20"])
    assert code == 0, capsys.readouterr().out
    assert len(runs) == 1
    # Once per distinct IR state: no state is analysed twice.
    assert all(a != b for i, a in enumerate(runs) for b in runs[i + 1 :])


@dataclass(frozen=True)
class DoubleWeightsInPlace(Pass):
    """Writes into the weight's array in place: the one edit the IR state does not show, so only
    the manager's invalidation keeps precision from handing back the interval of the old weights."""

    name: ClassVar[str] = "double-weights-in-place"

    def run(self, model: ir.Model) -> PassResult:
        model.graph.initializers["w"].const_value.numpy()[...] *= 2
        return PassResult(True)


@dataclass(frozen=True)
class ReplaceWeights(Pass):
    name: ClassVar[str] = "replace-weights"
    changed: bool = True

    def run(self, model: ir.Model) -> PassResult:
        w = model.graph.initializers["w"]
        w.const_value = ir.tensor(w.const_value.numpy() * 2, name="w")
        return PassResult(self.changed)


def _layer_with_numpy_weights() -> ir.Model:
    """`LAYER` with its weight held in a numpy array, which a pass can write into in place."""
    model = load_onnx_text(LAYER)
    w = model.graph.initializers["w"]
    w.const_value = ir.tensor(w.const_value.numpy().copy(), name="w")
    return model


def _manager(*passes: Pass) -> PassManager:
    return PassManager([ScheduledPass(p, None) for p in passes])


def test_a_pass_that_reports_a_change_invalidates_the_cache(runs) -> None:
    model = _layer_with_numpy_weights()
    assert precision_of(model).intervals["y"] == (Fraction(-6), Fraction(21, 4))
    _manager(DoubleWeightsInPlace()).run(model)
    assert precision_of(model).intervals["y"] == (Fraction(-12), Fraction(21, 2))
    assert len(runs) == 2


def test_without_the_managers_invalidation_an_in_place_edit_would_be_stale() -> None:
    """What the test above guards against: the same edit outside the manager is not seen."""
    model = _layer_with_numpy_weights()
    before = precision_of(model)
    DoubleWeightsInPlace().run(model)
    assert precision_of(model) is before
    analysis_cache.invalidate(model)
    assert precision_of(model).intervals["y"] == (Fraction(-12), Fraction(21, 2))


def test_a_pass_that_changes_the_graph_unreported_is_seen_in_the_ir_state(runs) -> None:
    model = load_onnx_text(LAYER)
    precision_of(model)
    _manager(ReplaceWeights(changed=False)).run(model)
    assert precision_of(model).intervals["y"] == (Fraction(-12), Fraction(21, 2))
    assert len(runs) == 2


def test_an_edit_outside_the_manager_is_never_read_stale(runs) -> None:
    model = load_onnx_text(LAYER)
    precision_of(model)
    quant = next(node for node in model.graph if node.op_type == "Quant")
    # A narrower quantizer: 3 bits, x in [-1, 0.75], y in [-3, 2.25].
    quant.replace_input_with(3, ir.Value(name="b3", const_value=ir.tensor([3.0], dtype=ir.DataType.FLOAT, name="b3")))
    assert precision_of(model).intervals["y"] == (Fraction(-3), Fraction(9, 4))
    assert len(runs) == 2


def test_attaching_and_detaching_the_default_precision_changes_the_answer(runs) -> None:
    model = load_onnx_text(FLOAT_LAYER)
    with pytest.raises(UnsupportedModelError, match="used without a Quant"):
        precision_of(model)
    default_precision.attach(model, FixedType(8, 4, True))
    with_default = precision_of(model)
    assert with_default.float_parts is not None
    default_precision.detach(model)
    with pytest.raises(UnsupportedModelError, match="used without a Quant"):
        precision_of(model)
    default_precision.attach(model, FixedType(8, 4, True))
    assert precision_of(model) is with_default  # the same IR state as before: not recomputed
    assert len(runs) == 3


def test_the_cache_never_reaches_a_file() -> None:
    model = load_onnx_text(LAYER)
    precision_of(model)
    assert analysis_cache.META_KEY in model.meta
    assert analysis_cache.META_KEY not in model.metadata_props


def test_every_op_is_in_one_family_table() -> None:
    with pytest.raises(AssertionError, match="two precision rules"):
        _merged(RULES, {("", "MatMul"): RULES[("", "MatMul")]})
