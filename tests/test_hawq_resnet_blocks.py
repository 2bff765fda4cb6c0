"""HAWQ's ResNet blocks that cast a Quant's result to double, end to end (tests/hawq_resnet_models.py):
a residual whose identity branch is a QuantAct's output, and a QuantAct after QuantAveragePool2d.

Both were refused by the hls4ml lowering (`node 'block2_quant_act_int32_identity_to_double' (Cast):
the cast changes the value's type`, `'quant_act_output_to_double' (Cast)`): the planner asked the
Cast's inferred type to EQUAL its input's, and a quantizer's result type carries the rounding and
saturation it writes with (`RND_CONV,SAT`; `TRN_ZERO,SAT` for the average's truncation) where the
Cast's has the defaults (`TRN,WRAP`), on the same values. It now asks that the input layer's type
holds the Cast's values, as for a reshape.

Two variants: every QuantAct's scale rounded up to a power of two (every requantization ratio one
too), and calibrated scales (only the input's is a power of two). HAWQ's integer outputs == the
lifted graph in semantic mode == the compiled graph in hardware and semantic mode == the C
simulation on vitis (its project compiled by the driver with `--verify`).
"""

from __future__ import annotations

import hawq_chain_models
import hawq_resnet_models
import numpy as np
import onnx_ir as ir
import pytest
import torch
from test_hawq_chain import _differences, _in_layout, _one_thread, hawq_codes

import hawqc
from hawqc.backends.csim import compile_csim
from hawqc.backends.hls4ml_planner import plan_layers
from hawqc.backends.vitis import vitis_target
from hawqc.errors import UnsupportedModelError
from hawqc.flow.driver import DEFAULT_PIPELINE, CompileOptions, compile_model
from hawqc.ir.precision import precision_of
from hawqc.passes.manager import PassManager
from hawqc.sim.executor import Executor

VARIANTS = ("power_of_two", "calibrated")
SAMPLES = 300
DRIVER_VERIFY_SAMPLES = 64
# The Casts of the two blocks, and the Quant each casts.
IDENTITY_CAST = ("block2_quant_act_int32_identity_to_double", "block2_quant_act_quant")
POOL_CAST = ("quant_act_output_to_double", "final_pool_trunc")


@pytest.fixture(scope="module")
def built() -> dict[str, tuple]:
    return {}


def resnet(built: dict, variant: str) -> tuple[torch.nn.Module, ir.Model, np.ndarray, np.ndarray]:
    """(model, lifted graph, inputs, HAWQ's integer outputs), built once per variant."""
    if variant not in built:
        with _one_thread():
            model = hawq_resnet_models.build(seed=3, power_of_two=variant == "power_of_two")
            x = hawq_chain_models.random_inputs(model, SAMPLES, seed=5).numpy()
            graph = hawqc.lift(model, torch.from_numpy(x[:1]))
            built[variant] = (model, graph, x, hawq_codes(model, x, graph))
    return built[variant]


def compiled_graph(graph: ir.Model) -> ir.Model:
    copy = ir.from_proto(ir.to_proto(graph))  # the pipeline rewrites in place
    PassManager.parse(DEFAULT_PIPELINE).run(copy)
    return copy


def _is_power_of_two(factors: np.ndarray) -> bool:
    return bool(np.all(np.frexp(np.asarray(factors, dtype=np.float64))[0] == 0.5))


@pytest.mark.parametrize("variant", VARIANTS)
def test_both_blocks_cast_a_quant_result_to_double(built, variant) -> None:
    _, graph, _, expected = resnet(built, variant)
    assert len(np.unique(expected, axis=0)) > SAMPLES // 2  # outputs vary: not a degenerate model
    nodes = {node.name: node for node in graph.graph}
    for cast, quant in (IDENTITY_CAST, POOL_CAST):
        producer = nodes[cast].inputs[0].producer()
        assert producer.name == quant and producer.op_type == "Quant", (cast, producer.name)
    assert nodes["final_pool_trunc"].attributes["rounding_mode"].as_string() == "DOWN"
    # The factors each Cast's Mul applies: powers of two exactly in the power-of-two variant.
    for cast, _ in (IDENTITY_CAST, POOL_CAST):
        (mul,) = [use for use, _ in nodes[cast].outputs[0].uses()]
        assert _is_power_of_two(mul.inputs[1].const_value.numpy()) == (variant == "power_of_two"), cast


@pytest.mark.parametrize("variant", VARIANTS)
def test_lifted_and_compiled_graphs_are_hawq_in_semantic_and_hardware_mode(built, variant) -> None:
    _, graph, x, expected = resnet(built, variant)
    diff = _differences(expected, Executor(graph).run(x)["output"])
    assert not diff, diff
    lowered = compiled_graph(graph)
    x = _in_layout(lowered, x)
    for mode in ("hardware", "semantic"):
        diff = _differences(expected, Executor(lowered, mode=mode).run(x)["output"])
        assert not diff, f"{mode}: {diff}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_casts_stay_on_the_layer_of_the_quant_they_cast(built, variant) -> None:
    lowered = compiled_graph(resnet(built, variant)[1])
    plan = plan_layers(lowered, precision_of(lowered), vitis_target(), "io_parallel")
    casts = [node for node in lowered.graph if node.op_type == "Cast"]
    assert {IDENTITY_CAST[0], POOL_CAST[0]} <= {node.name for node in casts}
    for node in casts:
        assert plan.value_layer[node.outputs[0].name] == plan.value_layer[node.inputs[0].name], node.name


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_c_simulation_on_vitis_is_hawq(built, variant, tmp_path) -> None:
    _, graph, x, expected = resnet(built, variant)
    hawqc.save(graph, tmp_path / "resnet.onnx")
    options = CompileOptions(backend="vitis", verify_samples=DRIVER_VERIFY_SAMPLES)
    result = compile_model(tmp_path / "resnet.onnx", tmp_path / "out", options)
    # The driver's `--verify`: C simulation == hardware mode == semantic mode on its drawn inputs.
    assert result.verify.bit_exact and result.verify.modes.equal, result.verify.summary()
    diff = _differences(expected, compile_csim(result.project).predict(_in_layout(result.model, x)))
    assert not diff, diff


class _LinearBuiltInForward(torch.nn.Module):
    def forward(self, x):
        return torch.nn.Linear(4, 4)(x)


def test_a_module_with_parameters_built_inside_forward_is_refused_in_one_line() -> None:
    """HAWQ's `nn.ReLU()(x)` is traced through (the blocks above); a module with state is not."""
    with pytest.raises(UnsupportedModelError, match=r"^a Linear created inside forward \(not a submodule\)"):
        hawqc.lift(_LinearBuiltInForward(), torch.zeros(1, 4))
