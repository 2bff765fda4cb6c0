"""The PyTorch frontend: a `.pt` / `.pth` file plus a model factory, lifted into hawqc's IR.

    hawqc model.pth --model-factory package.module:function --input-shape 1,16 -o proj
    hawqc model.pth --model-factory path/to/file.py:function --input-shape 1,16 -o proj

The file is a state_dict (or a checkpoint holding one under `state_dict`, as HAWQ's training
script saves them), read with `torch.load(weights_only=True)`, which executes no code from the
file. The factory builds the (HAWQ-module) model, the state_dict is loaded strictly, the model is
put in eval mode and lifted by `hawqc.frontends.hawq.lift` with an example input of the given
shape. A pickled whole module can only be read by running code from the file; it is refused
unless the user opts in with `allow_pickle`.

Everything the user gives (file, factory, shape) is judged here, and a mistake is one line
naming the file or the option (UserInputError, exit code 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import onnx_ir as ir
import torch

from hawqc.errors import HawqcError, OptionError, UnsupportedModelError, UserInputError
from hawqc.frontends.pytorch_options import PyTorchOptions


def load_factory(spec: str) -> Callable[[], Any]:
    """The function named by `package.module:function` or `path/to/file.py:function`."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise OptionError(f"{{}} {spec!r}: expected package.module:function or path/to/file.py:function", "model_factory")
    if where.endswith(".py"):
        module = _import_file(Path(where), spec)
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as err:
            raise OptionError(f"{{}} {spec!r}: cannot import {where} ({err})", "model_factory") from None
        except Exception as err:
            raise OptionError(f"{{}} {spec!r}: importing {where} failed ({_one_line(err)})", "model_factory") from None
    factory = getattr(module, name, None)
    if not callable(factory):
        raise OptionError(f"{{}} {spec!r}: {where} has no function {name!r}", "model_factory")
    return factory


def _import_file(path: Path, spec: str):
    if not path.is_file():
        raise OptionError(f"{{}} {spec!r}: {path}: no such file", "model_factory")
    # Registered under its own name (unless taken) so that a pickled module whose classes live in
    # this file (`--allow-pickle`) unpickles, and dataclasses resolve their annotations.
    name = path.stem if path.stem not in sys.modules else f"hawqc_factory_{path.stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[name]
        raise OptionError(f"{{}} {spec!r}: importing {path} failed ({_one_line(err)})", "model_factory") from None
    return module


def load_pytorch_model(path: str | Path, options: PyTorchOptions) -> torch.nn.Module:
    """The model in `path` (a state_dict loaded into the factory's model, or with `allow_pickle`
    a pickled module), in eval mode on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    factory = load_factory(options.model_factory) if options.model_factory else None
    contents = _read(path, options.allow_pickle)
    if isinstance(contents, torch.nn.Module):
        return contents.cpu().eval()
    state_dict = _state_dict(contents, path)
    if factory is None:
        raise OptionError(
            f"{path}: holds a state_dict; give the model that loads it with {{}} package.module:function", "model_factory"
        )
    model = _build(factory, options.model_factory)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise OptionError(f"{path}: does not fit the model of {{}} {options.model_factory!r}: "
                          f"{_key_mismatch(model, state_dict) or _first_problem(err)}", "model_factory") from None  # fmt: skip
    return model.cpu().eval()


def _read(path: Path, allow_pickle: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not allow_pickle:
            raise OptionError(
                f"{path}: not a plain state_dict (a pickled module?); loading it executes code from the file: "
                "save model.state_dict() instead, or pass {} if you trust the file", "allow_pickle=True"
            ) from None
    except Exception as err:
        raise UserInputError(f"{path}: cannot read as a PyTorch file ({_one_line(err)})") from None
    warnings.warn(f"pickle allowed: loading {path} executes code from the file", UserWarning, stacklevel=2)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise UserInputError(f"{path}: cannot unpickle ({_one_line(err)})") from None


def _state_dict(contents: Any, path: Path) -> Mapping[str, Any]:
    # HAWQ's training script saves {'epoch': .., 'state_dict': .., 'best_acc1': ..}.
    if isinstance(contents, Mapping) and isinstance(contents.get("state_dict"), Mapping):
        contents = contents["state_dict"]
    if not isinstance(contents, Mapping) or not all(isinstance(key, str) for key in contents):
        raise UserInputError(f"{path}: holds a {type(contents).__name__}, not a state_dict or a module")
    return contents


def _build(factory: Callable[[], Any], spec: str) -> torch.nn.Module:
    try:
        model = factory()
    except HawqcError:
        raise
    except Exception as err:
        raise OptionError(f"{{}} {spec!r}: the factory raised {_one_line(err)}", "model_factory") from None
    if not isinstance(model, torch.nn.Module):
        raise OptionError(
            f"{{}} {spec!r}: the factory returned a {type(model).__name__}, not a torch.nn.Module", "model_factory"
        )
    return model


def _key_mismatch(model: torch.nn.Module, state_dict: Mapping[str, Any]) -> str:
    expected, given = set(model.state_dict()), set(state_dict)
    parts = []
    for what, keys in (("missing", expected - given), ("unexpected", given - expected)):
        if keys:
            shown = ", ".join(sorted(keys)[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")
            parts.append(f"{what} keys {shown}")
    return "; ".join(parts)


def _first_problem(err: RuntimeError) -> str:
    """The first of load_state_dict's problems (its message is a header and one line each)."""
    problems = [line.strip().rstrip(".") for line in str(err).splitlines()[1:] if line.strip()]
    if not problems:
        return _one_line(err)
    return problems[0] + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "")


def _one_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {'; '.join(lines)}" if lines else type(err).__name__


def lift_model(model: torch.nn.Module, example_input: torch.Tensor, **options) -> ir.Model:
    """`hawqc.lift`: the QONNX graph of a HAWQ model, normalized, shape-inferred and verified like a
    loaded ONNX file (options: those of `hawqc.frontends.hawq.lift.lift`). The model is not changed:
    a frozen deep copy of it is lifted (`hawqc.frontends.hawq.lift.frozen_copy`)."""
    from hawqc.frontends.hawq.lift import lift
    from hawqc.frontends.onnx import prepare_model

    return prepare_model(lift(model, example_input, **options), f"lifted {type(model).__name__}", True)


def load_pytorch(path: str | Path, options: PyTorchOptions, *, verify_ir: bool = True) -> ir.Model:
    """Read `path` (see the module docstring), lift it and prepare it like a loaded ONNX file."""
    from hawqc.frontends.hawq.lift import frozen_copy, lift
    from hawqc.frontends.onnx import prepare_model

    if not Path(path).is_file():
        raise UserInputError(f"{path}: no such file")
    if options.input_shape is None:
        raise OptionError(f"{path}: a PyTorch model needs {{}} (e.g. 1,16)", "input_shape")
    # Frozen before the trial run below: upstream HAWQ's QuantAct would move its range to the zeros.
    model = frozen_copy(load_pytorch_model(path, options))
    example = torch.zeros(options.input_shape)
    shape = ",".join(map(str, options.input_shape))
    try:
        with torch.no_grad():
            model(example)
    except HawqcError:
        raise
    except Exception as err:
        raise OptionError(f"{path}: the model does not run on {{}} {shape} ({_one_line(err)})", "input_shape") from None
    try:
        lifted = lift(model, example)
    except UnsupportedModelError as err:
        raise UnsupportedModelError(f"{path}: {err}") from None
    return prepare_model(lifted, str(path), verify_ir)
