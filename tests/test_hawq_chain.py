"""The bit-exact chain of HAWQ's PyTorch models: HAWQ module forward in eval mode == the lifted
graph in semantic mode == the compiled graph in hardware mode == the C simulation on vitis, vivado
and catapult, integer outputs compared exactly on random inputs.

The chains:
- `mlp` and `cnn` (tests/hawq_chain_models.py): between them every module of
  `hawqc.frontends.hawq` in every mode: QuantAct plain (symmetric and unsigned input), requantizing
  with a per-tensor and per-channel dyadic factor (signed and unsigned codes), with
  `fixed_point_quantization`, and with a residual identity (one factor per branch); QuantLinear with
  per-tensor and per-channel weights, with and without bias; QuantConv2d (3x3 and 1x1);
  QuantBnConv2d folded and trained unfolded; QuantMaxPool2d; QuantAveragePool2d on signed codes;
  QuantDropout. Calibrated scales (not powers of two), so HAWQ's dyadic mantissas use all 31 bits;
- the jet tagger example (examples/jet_tagger/hawq_model.py) trained at weights 8/5/5/5 (the paper's)
  and at 6/4/4/6, and at 8/5/5/5 with the paper's 16-bit input (`jet_paper16`): its first
  requantization's products need 56 bits, beyond float64, so hardware mode runs in longdouble and
  precision inference declares that value inexact in the double semantics (compared here anyway:
  on these inputs it is exact); C simulation on one backend;
- the digits CNN example (examples/digits_cnn/hawq_model.py);
- `binary` (tests/hawq_binary_models.py): 8-bit first and last layers around a binary
  (`weight_bit=1`) and a ternary (`weight_bit=2`) layer, compiled to hls4ml's weight_binary and
  weight_ternary kernels (tests/test_hawq_binary.py checks the kernels and the lifted forms).

"Integer outputs": HAWQ's float32 output divided by the output scale the lifter records
(`hawqc.hawq.output_scale`) and rounded; `hawq_codes` checks that these integers are the only ones
that give HAWQ's output back. The graph's output is those codes.

Stages: `hawqc.lift` -> semantic mode on the lifted graph (NCHW as lifted); the lifted graph
written to a file and compiled by the driver (`hawqc.flow.driver.compile_model`, the default pipeline,
channels-last for the CNNs) -> hardware mode and semantic mode on the graph the backends get ->
the C simulation of each backend's project (`compile_csim`, cached in `HAWQC_CACHE_DIR`) on the
same inputs, transposed as the driver recorded. One project per (chain, backend), shared by the
tests through module-scoped fixtures; compiling them is what makes the csim tests slow.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import hawq_binary_models
import hawq_chain_models
import numpy as np
import onnx_ir as ir
import pytest
import torch
from conftest import REPO, load_example

import hawqc
from hawqc.backends.csim import compile_csim
from hawqc.flow.driver import DEFAULT_PIPELINE, CompileOptions, CompileResult, compile_model
from hawqc.frontends.hawq.lift import OUTPUT_SCALE_KEY
from hawqc.ir.layout import layout_permutations
from hawqc.passes.manager import PassManager
from hawqc.sim.executor import Executor

BACKENDS = ("vitis", "vivado", "catapult")
JET_TAGGER_BITS = {"jet_8553": (8, 5, 5, 5), "jet_6446": (6, 4, 4, 6), "jet_paper16": (8, 5, 5, 5)}
JET_TAGGER_INPUT_BITS = {"jet_paper16": 16}  # others: the example's 8
CHAINS = ("mlp", "cnn", *JET_TAGGER_BITS, "digits", "binary")
# (chain, backend) pairs compiled to a C simulation: every backend, except that the 16-bit-input
# jet tagger (the same lowering as jet_8553 with wider types) compiles on one.
COMPILED = [(n, b) for n in CHAINS for b in BACKENDS if n != "jet_paper16"] + [("jet_paper16", "catapult")]
# Inputs per chain: the C simulation of the small models is fast once compiled; the digits CNN's
# inputs are its test split (449 images) plus random images.
SAMPLES = {"mlp": 2000, "cnn": 1000, "jet_8553": 2000, "jet_6446": 2000, "jet_paper16": 2000, "digits": 200, "binary": 2000}
# Drawn by the driver's own `--verify` (hardware mode vs C simulation vs semantic mode).
DRIVER_VERIFY_SAMPLES = 64


jet_tagger = load_example(REPO / "examples" / "jet_tagger" / "hawq_model.py", "hawq_chain_jet_tagger")
digits_cnn = load_example(REPO / "examples" / "digits_cnn" / "hawq_model.py", "hawq_chain_digits_cnn")


@contextlib.contextmanager
def _one_thread():
    """One intra-op thread: on this 2-core machine, shared with g++, multi-threaded torch spends
    most of its time spin-waiting on the tiny tensors here (calibration 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Chain:
    name: str
    model: torch.nn.Module  # frozen, eval mode
    graph: ir.Model  # hawqc.lift's graph (NCHW for the CNNs)
    x: np.ndarray  # float32 inputs, the model's layout
    expected: np.ndarray  # HAWQ's integer outputs on x


def hawq_codes(model: torch.nn.Module, x: np.ndarray, graph: ir.Model) -> np.ndarray:
    scale = np.asarray(json.loads(graph.metadata_props[OUTPUT_SCALE_KEY]), dtype=np.float32).astype(np.float64)
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    out = (out[0] if isinstance(out, tuple) else out).numpy()
    codes = np.round(out.astype(np.float64) / scale)
    # HAWQ's output is float32(integer * scale): these integers are the only ones that give it back.
    np.testing.assert_array_equal((codes * scale).astype(np.float32), out)
    return codes


def _jet_inputs(samples: int) -> np.ndarray:
    # Jets as the model sees them (standardized features), a quarter at 3x the spread: those
    # saturate the 8-bit input quantizer and push the hidden activations into their clamps.
    x = np.random.default_rng(7).normal(0.0, 1.1, size=(samples, 16)).astype(np.float32)
    x[: samples // 4] *= 3
    return x


def _digits_inputs(data, samples: int) -> np.ndarray:
    # The test split, and random images up to 3x the pixel range (saturating the input quantizer).
    shape = (samples, 1, digits_cnn.IMAGE, digits_cnn.IMAGE)
    noise = np.random.default_rng(11).uniform(-0.5, 3.0, size=shape).astype(np.float32)
    return np.concatenate([data.x_test, noise])


def build_chain(name: str) -> Chain:
    with _one_thread():
        if name in ("mlp", "cnn"):
            model = hawq_chain_models.build(name, seed=3)
            x = hawq_chain_models.random_inputs(model, SAMPLES[name], seed=5).numpy()
        elif name == "binary":
            model = hawq_binary_models.build(seed=3)
            x = hawq_chain_models.random_inputs(model, SAMPLES[name], seed=5).numpy()
        elif name in JET_TAGGER_BITS:
            model = jet_tagger.train(JET_TAGGER_BITS[name], input_bits=JET_TAGGER_INPUT_BITS.get(name, 8)).model
            x = _jet_inputs(SAMPLES[name])
        else:
            trained = digits_cnn.train()
            model = trained.model
            x = _digits_inputs(trained.data, SAMPLES[name])
        graph = hawqc.lift(model, torch.from_numpy(x[:1]))
        expected = hawq_codes(model, x, graph)
    return Chain(name, model, graph, x, expected)


@pytest.fixture(scope="module")
def chains() -> dict[str, Chain]:
    """Chains built on first use (training and calibration take seconds; a test selecting one chain
    builds only that one)."""
    return {}


def chain(chains: dict[str, Chain], name: str) -> Chain:
    if name not in chains:
        chains[name] = build_chain(name)
    return chains[name]


def _differences(expected: np.ndarray, actual: np.ndarray) -> str:
    """'' when equal; else how many samples differ, the first, and the largest difference in codes."""
    actual = np.asarray(actual, dtype=np.float64).reshape(expected.shape)
    wrong = np.flatnonzero(np.any(expected != actual, axis=1))
    if not len(wrong):
        return ""
    first = wrong[0]
    return (
        f"{len(wrong)} of {len(expected)} samples differ (largest difference {np.abs(expected - actual).max():g} "
        f"codes); first: sample {first}, expected {expected[first].tolist()}, got {actual[first].tolist()}"
    )


def _check_semantic_mode(name: str, expected: np.ndarray, semantic: np.ndarray) -> None:
    """Exact. (jet_6446, sample 963 was the witness of the earlier float32 `z*hi + z*lo` form of the
    requantization: quant_act_1, channel 49, z = 1157, exact z * m / 2^e = 30.50000044, the float32
    sum exactly 30.5, rounded to 30 instead of 31; the double requantization gets it right.)"""
    diff = _differences(expected, semantic)
    assert not diff, diff


def _in_layout(graph: ir.Model, x: np.ndarray) -> np.ndarray:
    """x transposed to the layout the compiled graph's input has (channels-last for a CNN)."""
    perm = layout_permutations(graph).get(graph.graph.inputs[0].name)
    return x if perm is None else np.ascontiguousarray(x.transpose(perm))


# ---- HAWQ == semantic mode == hardware mode (seconds) ---------------------------------------


@pytest.mark.parametrize("name", CHAINS)
def test_lifted_graph_in_semantic_mode_is_hawq(chains, name) -> None:
    c = chain(chains, name)
    assert len(np.unique(c.expected, axis=0)) > len(c.expected) // 4  # outputs vary: not a degenerate model
    _check_semantic_mode(name, c.expected, Executor(c.graph).run(c.x)["output"])


@pytest.mark.parametrize("name", CHAINS)
def test_compiled_graph_in_hardware_and_semantic_mode_is_hawq(chains, name) -> None:
    """The graph the backends get (the driver's default pipeline; channels-last for the CNNs,
    whose channels-first Convs hardware mode has no precision rule for)."""
    c = chain(chains, name)
    graph = ir.from_proto(ir.to_proto(c.graph))  # a copy: the pipeline rewrites in place
    PassManager.parse(DEFAULT_PIPELINE).run(graph)
    x = _in_layout(graph, c.x)
    hardware = Executor(graph, mode="hardware").run(x)["output"]
    diff = _differences(c.expected, hardware)
    assert not diff, diff
    _check_semantic_mode(name, c.expected, Executor(graph).run(x)["output"])


def test_the_chains_cover_every_hawq_module_and_mode(chains) -> None:
    """What the docstring claims the two small models exercise, read from the modules themselves."""
    modules = [m for name in ("mlp", "cnn") for m in chain(chains, name).model.modules()]

    def having(kind: str, **attributes) -> list[torch.nn.Module]:
        matches = (m for m in modules if type(m).__name__ == kind)
        return [m for m in matches if all(getattr(m, key) == value for key, value in attributes.items())]

    assert having("QuantAct", quant_mode="symmetric") and having("QuantAct", quant_mode="asymmetric")
    assert having("QuantAct", fixed_point_quantization=True)
    assert having("QuantLinear", per_channel=True) and having("QuantLinear", per_channel=False)
    assert [m for m in having("QuantLinear") if m.bias is None]
    assert having("QuantConv2d", per_channel=True) and having("QuantConv2d", per_channel=False)
    assert having("QuantBnConv2d", fix_BN=True) and having("QuantBnConv2d", fix_BN=False)
    for kind in ("QuantMaxPool2d", "QuantAveragePool2d", "QuantDropout"):
        assert having(kind), kind
    # The residual requantization has its own dyadic factor for the identity branch.
    assert any(n.name.startswith("act_residual_identity_dyadic") for n in chain(chains, "cnn").graph.graph)
    # Calibrated scales: no requantization ratio is a power of two (HAWQ's m would be 2^30), and
    # most need more than float32's 24 bits of mantissa.
    factors = []  # (chain, QuantAct path, branch, HAWQ's mantissas m of that branch)
    for name in ("mlp", "cnn"):
        c = chain(chains, name)
        found = hawq_chain_models.dyadic_mantissas(c.model, torch.from_numpy(c.x[:1]))
        factors += [(name, path, branch, m) for path, ms in found.items() for branch, m in enumerate(ms)]
    assert [f[:3] for f in factors] == [
        ("mlp", "act1", 0), ("mlp", "act2", 0),
        ("cnn", "act1", 0), ("cnn", "act2", 0), ("cnn", "act_residual", 0), ("cnn", "act_residual", 1),
    ]  # fmt: skip
    # One factor per output channel after per-channel weights (mlp act2, the cnn's BN convs).
    assert [f[3].numel() for f in factors] == [1, 10, 1, 4, 4, 4]
    mantissas = [int(m) for f in factors for m in f[3].reshape(-1)]
    significant_bits = [m.bit_length() - ((m & -m).bit_length() - 1) for m in mantissas]
    assert min(significant_bits) > 1  # no power of two
    assert np.mean(np.array(significant_bits) > 24) > 0.8  # float32 cannot hold m in one constant

@pytest.mark.parametrize("name", JET_TAGGER_BITS)
def test_jet_tagger_chains_have_their_per_layer_bits(chains, name) -> None:
    bits = {
        node.name: int(node.inputs[3].const_value.numpy())
        for node in chain(chains, name).graph.graph
        if node.op_type == "Quant"
    }
    assert tuple(bits[f"dense_{i}_weight"] for i in range(1, 5)) == JET_TAGGER_BITS[name]
    assert bits["quant_input_quant"] == JET_TAGGER_INPUT_BITS.get(name, 8)


def test_the_16_bit_input_chain_is_wider_than_float64(chains) -> None:
    """What jet_paper16 is there for: hardware mode's exact path beyond 53 bits."""
    graph = ir.from_proto(ir.to_proto(chain(chains, "jet_paper16").graph))
    PassManager.parse(DEFAULT_PIPELINE).run(graph)
    hardware = Executor(graph, mode="hardware")
    assert max(t.width for t in hardware.precision.types.values()) > 53
    assert "quant_act_1_dyadic_mul_out" in hardware.precision.float_inexact


# ---- ... == the C simulation on every backend (compiles: slow) -------------------------------


@pytest.fixture(scope="module")
def lifted_files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lifted")


@pytest.fixture(scope="module", params=COMPILED, ids=lambda p: "-".join(p))
def compiled(request, chains, lifted_files, tmp_path_factory) -> tuple[Chain, CompileResult]:
    """The lifted graph written to a file and compiled by the driver, as `hawqc FILE -o OUT
    --backend B --verify N` does (its own verify on drawn inputs included)."""
    name, backend = request.param
    c = chain(chains, name)
    path = lifted_files / f"{name}.onnx"
    if not path.exists():
        hawqc.save(c.graph, path)
    outdir = tmp_path_factory.mktemp(f"{name}-{backend}")
    options = CompileOptions(backend=backend, verify_samples=DRIVER_VERIFY_SAMPLES)
    return c, compile_model(path, outdir, options)


@pytest.mark.slow
def test_c_simulation_is_hawq(compiled) -> None:
    c, result = compiled
    # The driver's own check on its drawn inputs: C simulation == hardware mode == semantic mode.
    assert result.verify.bit_exact and result.verify.modes.equal, result.verify.summary()
    simulated = compile_csim(result.project).predict(_in_layout(result.model, c.x))  # a cache hit
    assert simulated.shape[0] == len(c.x)
    diff = _differences(c.expected, simulated)
    assert not diff, diff
