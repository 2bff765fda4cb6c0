"""Property: every registered pass and named pipeline keeps the meaning of every valid QONNX graph.

Random graphs come from `qonnx_strategies.qonnx_graphs()`: MLP-like and convolutional. For each
graph, every name in the default registry (passes and named pipelines, plugins included) and one
random pipeline of several passes run on a fresh load of it; the semantic executor's outputs on
inputs drawn by `hawqc.sim.inputs.draw_inputs` must be identical to the bit (compared as raw float32
bits, so -0.0 and 0.0 are told apart) before and after. Where a pass changed the layout of a graph
input or output (`channels-last`, recorded with `hawqc.ir.layout`), the inputs are fed transposed
and the outputs transposed back.

Refusals: `channels-last` and `infer-precision` may refuse a graph with `UnsupportedModelError`, on
one line (an op with no channels-last form, a weight computed by a non-elementwise op before
fold-constants ran, a graph without fixed-point types...). The named pipelines run cleanup first,
so there `channels-last` may refuse only what the generator marks (`EXPECTED_PIPELINE_REFUSALS`).
Any other exception, from any pass, fails the test. Bugs found and not fixed yet are `KNOWN_BUGS`:
the pipelines with the passes they name are skipped on the graphs they apply to, each with a strict
xfail reproducer in `test_property_regressions.py`.

Second property, on the integer-only graphs (`qonnx_graphs(integer_only=True)`: power-of-two
scales, quantized biases, BatchNorm with dyadic coefficients...): after the whole `hls4ml-prepare`
pipeline, hardware mode (`Executor(model, mode="hardware")`, the types of precision inference)
equals the original graph's semantic mode bit for bit, and precision inference declares nothing
inexact.

The passes also run under the pass manager's own translation validation
(`PassManager.parse(..., validate=N)`, `hawqc.passes.validation`), but this test keeps its own
comparison as the oracle, so that it does not rely only on the code under test.

Example counts come from hypothesis profiles: "hawqc-property-ci" (the default: 100 graphs for
each property, derandomized; this file takes 30-45 s on 2 cores) and "hawqc-property-thorough"
(2,000, exploring from hypothesis's seed).
Choose one with HAWQC_PROPERTY_PROFILE, or set the count with HAWQC_PROPERTY_EXAMPLES;
HAWQC_PROPERTY_INDEPENDENT=1 makes every graph independent of the others (`graphs`);
`benchmarks/property_run.py` does that. The profiles apply to this file only.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from qonnx_strategies import (
    FEATURES,
    GeneratedGraph,
    RandomChoices,
    build_graph,
    qonnx_graphs,
    random_graphs,
)

from hawqc.errors import UnsupportedModelError
from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir.interfaces import has_interfaces
from hawqc.ir.io import to_text
from hawqc.ir.layout import CHANNELS_LAST_OPS, invert, layout_permutations
from hawqc.passes.manager import FixpointGroup, PassManager
from hawqc.passes.registry import default_registry
from hawqc.sim import Executor
from hawqc.sim.inputs import draw_inputs

SAMPLES = 32
_COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}
# CI draws the same graphs on every run (a run that lands must be repeatable); the thorough profile
# and benchmarks/property_run.py explore new ones.
settings.register_profile("hawqc-property-ci", max_examples=100, derandomize=True, **_COMMON)
settings.register_profile("hawqc-property-thorough", max_examples=2000, **_COMMON)


def property_settings() -> settings:
    profile = settings.get_profile(os.environ.get("HAWQC_PROPERTY_PROFILE", "hawqc-property-ci"))
    examples = os.environ.get("HAWQC_PROPERTY_EXAMPLES")
    return settings(profile, max_examples=int(examples)) if examples else profile


def graphs(*, integer_only: bool = False) -> st.SearchStrategy[GeneratedGraph]:
    """The graphs of the properties: structure drawn through hypothesis (a failure shrinks to a
    small graph), or, with HAWQC_PROPERTY_INDEPENDENT=1, drawn uniformly from a seed hypothesis
    draws: every graph independent of the others (hypothesis's examples repeat much of each other's
    structure), but a failure does not shrink."""
    if os.environ.get("HAWQC_PROPERTY_INDEPENDENT") == "1":
        seeds = st.integers(0, 2**32 - 1)
        return seeds.map(lambda seed: build_graph(RandomChoices(seed), integer_only=integer_only))
    return qonnx_graphs(integer_only=integer_only)


@dataclass(frozen=True)
class KnownBug:
    """A bug this property finds that is not fixed yet: the pipelines that schedule one of
    `passes` are skipped on the graphs it `applies` to (given the test's inputs), so that every
    other pass still runs on them. Each has a strict xfail reproducer; delete the entry when the bug
    is fixed (the reproducer then stays as a regression test)."""

    passes: frozenset[str]
    applies: Callable[[GeneratedGraph, dict[str, np.ndarray]], bool]
    reproducer: str


def operand_values(
    graph: GeneratedGraph, inputs: dict[str, np.ndarray], chosen: Callable[[ir.Node], bool]
) -> list[tuple[np.ndarray, np.ndarray, ir.Node]]:
    """(input 0, input 1, node) of the nodes `chosen` in a fresh load of `graph`, run on `inputs`."""
    model = graph.load()
    nodes = [node for node in model.graph if chosen(node)]
    if not nodes:
        return []
    for value in dict.fromkeys(v for node in nodes for v in node.inputs[:2]):
        if not value.is_graph_output():
            model.graph.outputs.append(value)
    values = Executor(model).run(inputs)
    return [(values[node.inputs[0].name], values[node.inputs[1].name], node) for node in nodes]


def dense_sums_are_exact(graph: GeneratedGraph, inputs: dict[str, np.ndarray]) -> bool:
    """Whether every MatMul / Gemm that reads a flattened image, whose elements channels-last
    reorders, sums exactly in float32, in any order, on `inputs`."""

    def dense(node: ir.Node) -> bool:
        standard = node.domain in ("", "ai.onnx")
        return standard and node.op_type in ("MatMul", "Gemm") and reads_flattened_image(node)

    for a, b, node in operand_values(graph, inputs, dense):
        if node.op_type == "Gemm":
            a = a.T if node.attributes.get_int("transA", 0) else a
            b = b.T if node.attributes.get_int("transB", 0) else b
        if not sums_exactly(a, b):
            return False
    return True


# Ops through which a flattened image reaches a dense layer in the generated graphs, elementwise.
_PASS_THROUGH = frozenset({"Identity", "Relu", "Div", "Mul", "Quant", "IntQuant", "BipolarQuant"})


def reads_flattened_image(node: ir.Node) -> bool:
    """Whether input 0 of `node` is (through elementwise ops) a Flatten / Reshape of an image with
    more than one channel and more than one pixel, flattened in its channels-first order."""
    value = node.inputs[0]
    while (producer := value.producer()) is not None and producer.op_type in _PASS_THROUGH:
        value = producer.inputs[0]
    if producer is None or producer.op_type not in ("Flatten", "Reshape"):
        return False
    image = producer.inputs[0]
    if image.shape is None or len(image.shape) < 3 or not all(isinstance(d, int) for d in image.shape):
        return True  # (unknown: assume it is)
    source = image.producer()
    if source is not None and source.op_type == "Transpose":
        return False  # flattened channels-last already (a Keras-style export): nothing to reorder
    return image.shape[1] > 1 and int(np.prod(list(image.shape)[2:])) > 1


def sums_exactly(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether float32 `a @ b` is exact whatever order its sums take: every product a multiple of
    2**e, e the lowest bit any product of that sum has, and their magnitudes adding up to at most
    2**(24 + e) (float32 holds every multiple of 2**e up to there)."""
    products = a.astype(np.float64)[..., :, :, np.newaxis] * b.astype(np.float64)  # exact: 24 x 24 bits
    mantissa, exponent = np.frexp(np.abs(products))
    codes = (mantissa * 2.0**53).astype(np.int64)  # the product is codes * 2**(exponent - 53)
    lowest = exponent - 53 + np.log2(np.maximum(codes & -codes, 1)).astype(np.int64)
    e = np.where(codes > 0, lowest, 999).min(axis=-2)  # (a zero product has no bits)
    magnitude = np.abs(products).sum(axis=-2)
    return bool(np.all(magnitude <= np.ldexp(1.0, e + 24)))


KNOWN_BUGS: dict[str, KnownBug] = {
    # channels-last permutes a dense weight's rows after a Flatten: the same products, summed in
    # another order, round differently in float32 unless the sum is exact.
    "channels-last reorders a dense layer's float32 sum": KnownBug(
        frozenset({"channels-last"}),
        lambda graph, inputs: "cnn" in graph.features and not dense_sums_are_exact(graph, inputs),
        "test_property_regressions.py::test_channels_last_keeps_a_dense_layers_float32_sum_after_a_flatten",
    ),
}

# Every registered pass and pipeline, except passes that change the outputs on purpose
# (`Pass.changes_meaning`, e.g. remove-output-softmax): the property is that meaning is kept.
PASS_NAMES = [
    name
    for name in default_registry().names()
    if default_registry().is_pipeline(name) or not default_registry().lookup(name).changes_meaning
]

# The passes that may refuse a graph they cannot handle (UnsupportedModelError, one line).
REFUSING_PASSES = frozenset({"channels-last", "infer-precision"})
# What the named pipelines (cleanup first) may refuse: generator feature -> (pass, message part).
EXPECTED_PIPELINE_REFUSALS = {
    "cnn:flattened-image-output": ("channels-last", "is a flattened image"),
}


def run_semantic(model: ir.Model, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return Executor(model).run(inputs)


def run_in_original_layout(
    model: ir.Model, executor: Executor, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Run `executor` (of `model`) on inputs in the layout the graph was generated with, transposed
    the way the model's layout records (`hawqc.ir.layout`) say its inputs are stored now; outputs
    transposed back."""
    perms = layout_permutations(model)
    fed = {name: array.transpose(perms[name]) if name in perms else array for name, array in inputs.items()}
    outputs = executor.run(fed)
    return {
        name: array.transpose(invert(perms[name])) if name in perms else array
        for name, array in outputs.items()
    }


def refusal_is_expected(graph: GeneratedGraph, pipeline: str, err: UnsupportedModelError) -> bool:
    """Whether `pipeline` may refuse `graph` so: a refusing pass, one line; in a named pipeline,
    only what the generator marked."""
    message = str(err)
    match = re.match(r"pass '([\w-]+)", message)
    if match is None or match.group(1) not in REFUSING_PASSES or "\n" in message:
        return False
    if default_registry().is_pipeline(pipeline):
        return any(
            feature in graph.features and match.group(1) == refuser and text in message
            for feature, (refuser, text) in EXPECTED_PIPELINE_REFUSALS.items()
        )
    return True


def first_difference(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> str | None:
    """None if the outputs are identical to the bit, else where they first differ."""
    if list(before) != list(after):
        return f"graph outputs {list(before)} became {list(after)}"
    for name, a in before.items():
        b = after[name]
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"output '{name}': {a.dtype}{list(a.shape)} became {b.dtype}{list(b.shape)}"
        differs = a.view(np.uint32) != b.view(np.uint32)
        if differs.any():
            index = tuple(int(i) for i in np.argwhere(differs)[0])
            return (
                f"output '{name}' differs at {index} (sample {index[0]}): {a[index]!r} -> {b[index]!r} "
                f"(bits {a[index].view(np.uint32):#010x} -> {b[index].view(np.uint32):#010x}), "
                f"{int(differs.sum())} of {differs.size} elements differ"
            )
    return None


def scheduled_pass_names(items) -> set[str]:
    """The names of the passes a manager runs, inside fixpoint groups too."""
    names = set()
    for item in items:
        if isinstance(item, FixpointGroup):
            names |= scheduled_pass_names(item.body)
        else:
            names.add(item.instance.name)
    return names


def check_pipeline(
    graph: GeneratedGraph, pipeline: str, inputs, before, known_bugs: frozenset[str] = frozenset()
) -> None:
    """Run `pipeline` on a fresh load of `graph`; fail unless the outputs stay bit-identical.

    The manager's translation validation runs too (on its own draw of inputs, seed 0, after
    every pass of a pipeline); this test's comparison stays the oracle.
    """
    model = graph.load()
    manager = PassManager.parse(pipeline, validate=SAMPLES)
    names = scheduled_pass_names(manager.passes)
    for bug in sorted(known_bugs):
        if names & KNOWN_BUGS[bug].passes:
            event(f"skipped (known bug: {bug}): {pipeline}")
            return
    try:
        manager.run(model)
    except UnsupportedModelError as err:
        if not refusal_is_expected(graph, pipeline, err):
            raise AssertionError(
                f"'{pipeline}' refused the graph, which it must not: {err}\n"
                f"graph as loaded:\n{to_text(graph.load())}"
            ) from err
        event(f"refused by {pipeline}: {_refusal_kind(str(err))}")
        return
    except Exception as err:
        raise AssertionError(
            f"'{pipeline}' raised {type(err).__name__}: {err}\n"
            f"graph as loaded:\n{to_text(graph.load())}"
        ) from err
    if has_interfaces(model):
        # integer-requant took the graph to integers (scales that are not powers of two): the manager's
        # translation validation checked its exact meaning (exact mode) and every later pass's float32
        # results; float32 of the original is not what it keeps.
        event(f"exact meaning kept (integer-requant): {pipeline}")
        return
    difference = first_difference(before, run_in_original_layout(model, Executor(model), inputs))
    if difference is not None:
        pytest.fail(
            f"'{pipeline}' changed the meaning: {difference}\n"
            f"graph as loaded:\n{to_text(graph.load())}\nafter the pass:\n{to_text(model)}"
        )


def _refusal_kind(message: str) -> str:
    """A refusal without its node and value names, so that hypothesis's statistics group alike ones."""
    message = re.sub(r"'[^']*'", "'…'", message)
    return re.sub(r"\d+", "N", message)[:100]


PASSES_ONLY = [name for name in PASS_NAMES if not default_registry().is_pipeline(name)]


@st.composite
def pipelines(draw) -> str:
    """A random pipeline of 2..5 passes, part of it sometimes in a fixpoint group."""
    names = draw(st.lists(st.sampled_from(PASSES_ONLY), min_size=2, max_size=5))
    if draw(st.booleans()):
        start = draw(st.integers(0, len(names) - 1))
        stop = draw(st.integers(start + 1, len(names)))
        group = f"fixpoint({','.join(names[start:stop])})"
        names = [*names[:start], group, *names[stop:]]
    return ",".join(names)


@property_settings()
@given(graph=graphs(), seed=st.integers(0, 2**16), sequence=pipelines())
def test_every_pass_keeps_the_meaning(graph: GeneratedGraph, seed: int, sequence: str) -> None:
    for feature in graph.features:
        event(feature)
    model = graph.load()
    assert not layout_permutations(model)  # the generator writes no layout records
    inputs = draw_inputs(model, SAMPLES, seed)
    before = run_semantic(model, inputs)
    known_bugs = frozenset(name for name, bug in KNOWN_BUGS.items() if bug.applies(graph, inputs))
    for name in PASS_NAMES:
        check_pipeline(graph, name, inputs, before, known_bugs)
    check_pipeline(graph, sequence, inputs, before, known_bugs)


@property_settings()
@given(graph=graphs(integer_only=True), seed=st.integers(0, 2**16))
def test_hls4ml_prepare_then_hardware_mode_equals_semantic_mode(graph: GeneratedGraph, seed: int) -> None:
    """Integer-only graphs: `hls4ml-prepare` leaves a graph the lowering takes (channels-last, no
    Transpose, every type known and nothing declared inexact), and hardware mode on it computes the
    original graph's semantic results exactly (fixed point has no -0.0: compared as numbers)."""
    for feature in graph.features:
        event(feature)
    model = graph.load()
    inputs = draw_inputs(model, SAMPLES, seed)
    before = run_semantic(model, inputs)
    original = to_text(model)
    # (channels-last leaves a graph without Conv, pools and BatchNorm as it is, Transposes included.)
    has_image_ops = any(node.op_type in CHANNELS_LAST_OPS for node in model.graph)
    try:
        PassManager.parse("hls4ml-prepare", validate=SAMPLES).run(model)
        hardware = Executor(model, mode="hardware")
    except Exception as err:
        raise AssertionError(f"{type(err).__name__}: {err}\ngraph:\n{original}") from err
    prepared = to_text(model)
    context = f"graph:\n{original}\nafter hls4ml-prepare:\n{prepared}"
    if has_image_ops:
        assert not any(node.op_type == "Transpose" for node in model.graph), context
    assert not hardware.precision.inexact, f"declared inexact: {hardware.precision.inexact}\n{context}"
    after = run_in_original_layout(model, hardware, inputs)
    for name, expected in before.items():
        got = after[name]
        differs = got != expected.astype(np.float64)
        if differs.any():
            index = tuple(int(i) for i in np.argwhere(differs)[0])
            pytest.fail(
                f"output '{name}' differs at {index}: semantic {expected[index]!r}, hardware {got[index]!r} "
                f"({int(differs.sum())} of {differs.size} elements)\n{context}"
            )


# Graphs the coverage test draws, of independent uniform choices (`random_graphs`): hypothesis's
# examples share much of their structure, so that counting features over them says little.
COVERAGE_GRAPHS = {"general": 1500, "integer-only": 150}


def test_generated_graphs_load_run_and_cover_every_feature() -> None:
    """The generator itself: its graphs load, verify and run to finite outputs, and between them
    they exercise every feature it claims (else the property above could pass vacuously)."""
    seen: Counter[str] = Counter()
    nodes: Counter[str] = Counter()
    drawn = [
        *random_graphs(COVERAGE_GRAPHS["general"]),
        *random_graphs(COVERAGE_GRAPHS["integer-only"], integer_only=True),
    ]
    for graph in drawn:
        model = graph.load()
        outputs = run_semantic(model, draw_inputs(model, 8, 0))
        assert outputs and all(np.isfinite(array).all() for array in outputs.values()), repr(graph)
        assert all(array.shape[0] == 8 for array in outputs.values() if array.ndim), repr(graph)
        seen.update(graph.features)
        nodes.update(node.op_type for node in graph.proto.graph.node)
    missing = sorted(FEATURES - set(seen))
    assert not missing, f"never generated in {len(drawn)} graphs: {missing}"
    unknown = sorted(set(seen) - FEATURES)
    assert not unknown, f"features not listed in FEATURES: {unknown}"
    assert set(nodes) >= {
        "Quant", "IntQuant", "BipolarQuant", "MatMul", "Gemm", "Add", "Sub", "Mul", "Div",
        "Relu", "Identity", "Flatten", "Reshape", "Constant", "Conv", "BatchNormalization", "MaxPool",
        "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Concat", "Resize", "Pad", "Transpose",
        "LeakyRelu", "Clip", "Softmax", "Sigmoid",
    }  # fmt: skip


# Regression tests: the bugs the property found, each as its smallest graph. All three were fixed
# in 18df85f; the generator keeps making graphs that hit them (features
# "identity-chain-between-outputs", "constant-gemm:inexact-alpha-with-bias", and per-channel
# input quantizer parameters spelled with the batch dim).


def test_remove_identity_keeps_two_graph_outputs_apart() -> None:
    # An Identity copies graph output r to graph output y. remove-identity (onnx_ir's
    # IdentityEliminationPass) renamed r's producer output to y: the graph then had outputs (y, y)
    # and output r was gone.
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,2] x) => (float[1,2] y, float[1,2] r)
{
   r = Relu (x)
   y = Identity (r)
}"""
    model = load_onnx_text(text)
    inputs = {"x": np.array([[-1.5, 2.0]], dtype=np.float32)}
    before = run_semantic(model, inputs)
    PassManager.parse("remove-identity").run(model)
    assert first_difference(before, run_semantic(model, inputs)) is None


def test_fold_constants_rounds_gemm_once() -> None:
    # A constant Gemm with alpha not a power of two and a bias: onnxruntime (and the semantic
    # executor) computes fl(alpha * AB + beta * C) with one rounding; fold-constants evaluated it
    # with onnx's ReferenceEvaluator, fl(fl(alpha * AB) + fl(beta * C)): 0.3 * (0.1 * 0.7) + 0.1 is
    # 0.121 (0x3df7ced9) in onnxruntime and the executor, and was 0.12100001 (0x3df7ceda) folded.
    text = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,1] x) => (float[1,1] y)
   <float[1,1] a = {0.1}, float[1,1] b = {0.7}, float[1] c = {0.1}>
{
   w = Gemm <alpha: float = 0.3> (a, b, c)
   y = Mul (x, w)
}"""
    model = load_onnx_text(text)
    inputs = {"x": np.ones((1, 1), dtype=np.float32)}
    before = run_semantic(model, inputs)
    assert before["y"].view(np.uint32)[0, 0] == 0x3DF7CED9
    PassManager.parse("fold-constants").run(model)
    assert first_difference(before, run_semantic(model, inputs)) is None


def test_draw_inputs_takes_per_channel_parameters_with_the_batch_dim() -> None:
    # Found while writing the generator (not a pass bug): `input_range`'s bounds were broadcast to
    # one sample's shape, so parameters spelled with the batch dim ([1, C] here; Brevitas writes
    # [1, C, 1, 1]) raised "input operand has more dimensions than allowed".
    text = """<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
g (float[1,2] x) => (float[1,2] y)
   <float[1,2] s = {0.5, 0.25}, float z = {0}, float b = {8}>
{
   y = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0> (x, s, z, b)
}"""
    x = draw_inputs(load_onnx_text(text), 4, 0)["x"]
    assert x.shape == (4, 2)
    assert np.all(np.abs(x) <= np.array([64, 32])), x  # within each channel's range
