"""`hawqc.lift` never changes the model it is given: it lifts a frozen deep copy.

The model here tracks its activation ranges in eval mode, as upstream HAWQ's QuantAct does while
`running_stat` is set (tests/hawq_tracking_models.py): the lifter's trace run on the example input
would otherwise move `x_min` / `x_max`, and with them every scale, `bias_integer` and the graph.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import hawq_chain_models
import hawq_tracking_models
import numpy as np
import pytest
import torch

from hawqc.errors import UnsupportedModelError
from hawqc.frontends.hawq import freeze_model
from hawqc.frontends.hawq.lift import LIFTED_FROM_KEY, OUTPUT_SCALE_KEY, lift
from hawqc.frontends.pytorch import load_pytorch
from hawqc.frontends.pytorch_options import PyTorchOptions
from hawqc.ir.io import to_text
from hawqc.sim.executor import Executor

PLAIN = (bool, int, float, str, type(None))
MODULE_INTERNALS = {"_parameters", "_buffers", "_modules"}


def snapshot(model: torch.nn.Module) -> dict[str, Any]:
    """Everything a forward may change: the state_dict (parameters and buffers), and per module its
    mode and every other attribute that holds a tensor or a plain value (`fix_flag`, `running_stat`,
    `counter`, a scale kept outside the buffers)."""
    state = {f"state_dict:{key}": value.detach().clone() for key, value in model.state_dict(keep_vars=True).items()}
    for path, module in model.named_modules():
        for name, value in vars(module).items():
            if name in MODULE_INTERNALS or name.startswith("_"):
                continue
            if isinstance(value, torch.Tensor):
                state[f"{path}.{name}"] = value.detach().clone()
            elif isinstance(value, PLAIN):
                state[f"{path}.{name}"] = value
    return state


def differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = sorted(set(before) ^ set(after))
    for key in set(before) & set(after):
        a, b = before[key], after[key]
        same = torch.equal(a, b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else a == b
        if not same:
            changed.append(key)
    return sorted(changed)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return hawq_tracking_models.calibrated_tracking_cnn()


def example(model: torch.nn.Module, samples: int = 1, seed: int = 5) -> torch.Tensor:
    return hawq_chain_models.random_inputs(model, samples, seed)


def test_the_model_tracks_its_ranges_in_eval_mode(model) -> None:
    """The premise: an eval-mode forward of this model changes it (x_min / x_max, the scales)."""
    probe = copy.deepcopy(model).eval()
    before = snapshot(probe)
    with torch.no_grad():
        probe(example(probe, seed=1) * 3)
    changed = differences(before, snapshot(probe))
    assert {"state_dict:quant_input.x_max", "state_dict:act1.x_max", "state_dict:act1.act_scaling_factor"} <= set(changed), changed


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lift_leaves_every_parameter_buffer_and_attribute_unchanged(model, mode) -> None:
    user_model = copy.deepcopy(model).train(mode == "train")
    before = snapshot(user_model)
    lifted = lift(user_model, example(user_model) * 3)
    assert differences(before, snapshot(user_model)) == []
    assert user_model.training == (mode == "train")
    assert "frozen deep copy" in lifted.metadata_props[LIFTED_FROM_KEY]


def test_lift_equals_the_lift_of_the_frozen_model(model) -> None:
    frozen = copy.deepcopy(model)
    freeze_model(frozen)
    x = example(model)
    assert to_text(lift(model, x)) == to_text(lift(frozen.eval(), x))
    # And that graph is HAWQ's frozen model, integer for integer (a lift of the example input's
    # ranges would not be: the example saturates nothing here, the calibration did).
    graph = lift(model, x * 3)
    inputs = example(model, samples=300, seed=7)
    scale = np.asarray(json.loads(graph.metadata_props[OUTPUT_SCALE_KEY]), dtype=np.float64)
    with torch.no_grad():
        hawq = frozen(inputs).numpy().astype(np.float64)
    np.testing.assert_array_equal(Executor(graph).run(inputs.numpy())["output"], np.round(hawq / scale))


def test_the_pytorch_loader_lifts_the_state_dict_as_saved(model, tmp_path) -> None:
    """`hawqc model.pth --model-factory ...` runs the model once to check the input shape: on a
    frozen copy, or that run would move the loaded ranges to those of zeros before lifting."""
    torch.save(model.state_dict(), tmp_path / "model.pth")
    factory = f"{hawq_tracking_models.__file__}:tracking_cnn"
    shape = (1, *hawq_chain_models.ChainCNN.INPUT_SHAPE)
    loaded = load_pytorch(tmp_path / "model.pth", PyTorchOptions(model_factory=factory, input_shape=shape))
    expected = lift(model, torch.zeros(shape))
    assert json.loads(loaded.metadata_props[OUTPUT_SCALE_KEY]) == json.loads(expected.metadata_props[OUTPUT_SCALE_KEY])
    initializers = {name: value.const_value.numpy() for name, value in expected.graph.initializers.items()}
    for name, value in loaded.graph.initializers.items():
        if name in initializers:
            np.testing.assert_array_equal(value.const_value.numpy(), initializers[name], err_msg=name)


class _Uncopyable(torch.nn.Module):
    def __deepcopy__(self, memo):
        raise TypeError("cannot pickle '_thread.lock' object\nsecond line")


def test_a_model_that_cannot_be_copied_is_refused_in_one_line() -> None:
    with pytest.raises(UnsupportedModelError, match=r"^the model cannot be copied \(TypeError: cannot pickle") as error:
        lift(_Uncopyable(), torch.zeros(1, 4))
    assert "\n" not in str(error.value)
