"""The pass framework: pipeline text, registry, typed options, the manager's verification and blame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir
import pytest
from conftest import JET_TAGGER

from hawqc.errors import UserInputError, VerificationError
from hawqc.frontends.onnx import load_onnx
from hawqc.passes.base import Pass, PassResult, option
from hawqc.passes.manager import PassFailed, PassManager
from hawqc.passes.pipeline import format_pipeline, parse_pipeline
from hawqc.passes.registry import BUILTIN_PASSES, PassRegistry


@dataclass(frozen=True)
class CountRelus(Pass):
    """A custom pass as a user writes one: a name, a typed option, `run`."""

    name: ClassVar[str] = "count-relus"
    summary: ClassVar[str] = "Count Relu nodes; optionally remove the first one."
    remove_first: bool = option(False, "bypass the first Relu")
    limit: int = option(3, "unused, for option parsing tests")

    def run(self, model: ir.Model) -> PassResult:
        relus = [node for node in model.graph if node.op_type == "Relu"]
        if self.remove_first and relus:
            node = relus[0]
            ir.convenience.replace_all_uses_with(node.outputs[0], node.inputs[0])
            model.graph.remove(node, safe=True)
        return PassResult(self.remove_first and bool(relus), {"relus": len(relus)})


@dataclass(frozen=True)
class BreakGraph(Pass):
    name: ClassVar[str] = "break-graph"

    def run(self, model: ir.Model) -> bool:
        # Drop a node whose output is still used: the verifier must blame this pass.
        node = next(node for node in model.graph if node.op_type == "MatMul")
        model.graph.remove(node, safe=False)
        return True


@dataclass(frozen=True)
class Crash(Pass):
    name: ClassVar[str] = "crash"

    def run(self, model: ir.Model) -> bool:
        raise KeyError("oops")


def registry() -> PassRegistry:
    registry = PassRegistry()
    for cls in (CountRelus, BreakGraph, Crash):
        registry.register(cls)
    return registry


@pytest.mark.parametrize(
    "text",
    ["cleanup", "dce,remove-identity", "count-relus{remove-first=true}", "count-relus{remove-first=true,limit=5},dce"],
)
def test_pipeline_text_round_trips(text):
    assert format_pipeline(parse_pipeline(text)) == text


def test_whitespace_is_allowed():
    assert format_pipeline(parse_pipeline(" dce , count-relus{ limit = 2 } ")) == "dce,count-relus{limit=2}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected a pass name at column 1"),
        ("dce,", "expected a pass name at column 5"),
        ("dce{", "expected an option name"),
        ("dce{a}", "expected '=' after option 'a'"),
        ("dce{a=1,a=2}", "option 'a' given twice"),
        ("dce}", "unexpected '}'"),
    ],
)
def test_pipeline_syntax_errors_say_where(text, message):
    with pytest.raises(UserInputError, match=message):
        parse_pipeline(text)


def test_unknown_pass_lists_what_exists():
    with pytest.raises(UserInputError) as info:
        PassManager.parse("dce,no-such-pass", registry=registry())
    message = str(info.value)
    assert "unknown pass 'no-such-pass'" in message
    for name in [*BUILTIN_PASSES, "cleanup", "count-relus"]:
        assert name in message


def test_options_are_typed_and_listed():
    manager = PassManager.parse("count-relus{remove-first=true,limit=7}", registry=registry())
    (scheduled,) = manager.passes
    assert scheduled.instance == CountRelus(remove_first=True, limit=7)
    assert scheduled.instance.spelling() == "count-relus{remove-first=true,limit=7}"
    assert CountRelus().spelling() == "count-relus"
    with pytest.raises(UserInputError, match="option 'limit' expects int, got 'many'"):
        PassManager.parse("count-relus{limit=many}", registry=registry())
    with pytest.raises(UserInputError, match=r"no option 'lmit' \(options: limit, remove-first\)"):
        PassManager.parse("count-relus{lmit=1}", registry=registry())


def test_named_pipelines_expand_and_take_no_options():
    manager = PassManager.parse("cleanup,count-relus", registry=registry())
    assert [p.instance.name for p in manager.passes] == [
        "dce", "remove-identity", "remove-dropout", "fold-constants", "dce", "topo-sort", "unique-names",
        "count-relus",
    ]  # fmt: skip
    assert [p.pipeline for p in manager.passes] == ["cleanup"] * 7 + [None]
    with pytest.raises(UserInputError, match="named pipeline 'cleanup' takes no options"):
        PassManager.parse("cleanup{x=1}", registry=registry())


def test_a_self_referencing_pipeline_is_an_error_not_a_hang():
    reg = registry()
    reg.register_pipeline("loop", "dce,loop")
    with pytest.raises(UserInputError, match="nests deeper"):
        PassManager.parse("loop", registry=reg)


def test_names_cannot_be_registered_twice():
    reg = registry()
    @dataclass(frozen=True)
    class Other(Pass):
        name: ClassVar[str] = "dce"
    with pytest.raises(UserInputError, match="already registered"):
        reg.register(Other)


def test_custom_pass_runs_with_statistics_and_hooks():
    model = load_onnx(JET_TAGGER)
    manager = PassManager.parse("count-relus{remove-first=true}", registry=registry())
    seen = []
    manager.add_callbacks(after=lambda p, m, record: seen.append(record.name))
    (record,) = manager.run(model)
    assert record.changed and record.statistics == {"relus": 3}
    assert seen == ["count-relus{remove-first=true}"]
    assert sum(node.op_type == "Relu" for node in model.graph) == 2


def test_manager_blames_the_pass_that_breaks_the_ir():
    model = load_onnx(JET_TAGGER)
    with pytest.raises(VerificationError, match=r"after pass 'break-graph': node '\S+' \(Add\): input 0 '\S+' is never defined"):
        PassManager.parse("dce,break-graph", registry=registry()).run(model)


def test_without_verification_the_break_goes_unnoticed():
    model = load_onnx(JET_TAGGER)
    PassManager.parse("break-graph", registry=registry(), verify_each=False).run(model)


def test_a_crashing_pass_is_named():
    with pytest.raises(PassFailed, match="pass 'crash' crashed: KeyError"):
        PassManager.parse("crash", registry=registry()).run(load_onnx(JET_TAGGER))


def test_invalid_input_ir_is_reported_before_any_pass_runs():
    model = load_onnx(JET_TAGGER)
    node = next(node for node in model.graph if node.op_type == "Relu")
    node.outputs[0].shape = None
    with pytest.raises(VerificationError, match="input IR is invalid"):
        PassManager.parse("dce", registry=registry()).run(model)


def test_public_api_names():
    import hawqc

    assert hawqc.PassManager is PassManager
    assert hawqc.Pass is Pass
    model = hawqc.load(JET_TAGGER)
    records = hawqc.PassManager.parse("default").run(model)
    assert [r.name for r in records if r.name == "gemm-to-matmul"] == ["gemm-to-matmul"]


def test_instrumentation_from_python():
    import io

    from hawqc.passes.instrumentation import IRPrinter

    model = load_onnx(JET_TAGGER)
    manager = PassManager.parse("remove-identity,gemm-to-matmul", validate=8)
    stream = io.StringIO()
    manager.instrumentations.append(IRPrinter(after_change=True, stream=stream))
    order = []
    manager.add_callbacks(before=lambda p, m: order.append(("before", p.name)), after=lambda p, m, r: order.append(("after", p.name)))
    manager.run(model)
    assert order == [("before", "remove-identity"), ("after", "remove-identity"), ("before", "gemm-to-matmul"), ("after", "gemm-to-matmul")]
    # The jet tagger has no Identity and no Gemm: nothing changed, nothing printed.
    assert stream.getvalue() == ""


def test_fixpoint_groups_iterate_and_record_iterations():
    model = load_onnx(JET_TAGGER)
    records = PassManager.parse("fixpoint(count-relus{remove-first=true}){max-iters=5}", registry=registry()).run(model)
    # Three Relus: three iterations remove one each, the fourth changes nothing and ends the loop.
    assert [(r.iteration, r.changed) for r in records] == [(1, True), (2, True), (3, True), (4, False)]
    assert not any(node.op_type == "Relu" for node in model.graph)


def test_a_parsed_pipeline_prints_back_to_the_same_text():
    text = "cleanup,fixpoint(dce,count-relus{limit=2}){max-iters=3},gemm-to-matmul"
    assert str(PassManager.parse(text, registry=registry())) == text
