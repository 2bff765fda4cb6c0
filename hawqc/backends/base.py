"""The Backend protocol, and the registry that finds a backend by name.

The registry is a table of names to *import paths*, resolved only when a backend is asked for, so
importing hawqc imports no backend (and no hls4ml). Other packages add backends through the entry
point group `hawqc.backends` (`name = "package.module:factory"`); entry points are read only when a
name is not built in, or when the list of names is requested.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol, runtime_checkable

import onnx_ir as ir

from hawqc.backends.project import LoweredProject
from hawqc.errors import BackendError, UserInputError

ENTRY_POINT_GROUP = "hawqc.backends"

# name -> "module:factory"; the factory takes no arguments and returns a Backend.
_BUILTIN: dict[str, str] = {
    "vivado": "hawqc.backends.vivado:vivado_backend",
    "vitis": "hawqc.backends.vitis:vitis_backend",
    "catapult": "hawqc.backends.catapult:catapult_backend",
}


@runtime_checkable
class Backend(Protocol):
    name: str

    def lower(
        self, model: ir.Model, outdir: Path, *, project_name: str = "myproject", io_type: str = "io_parallel"
    ) -> LoweredProject:
        """Write a project for `model` into `outdir` and describe it.

        `outdir` is a fresh temporary directory beside the user's output directory, renamed into
        place once the compile is done (`hawqc.flow.output_dir`); where a project file spells its own
        absolute path, the driver rewrites it to the final one.

        A backend that also takes `settings: hawqc.backends.hls_settings.HlsSettings` (strategy,
        reuse factors, part, clock) gets them when the user gives any; one without is refused then."""
        ...


def _plugin_entry_points() -> dict[str, str]:
    return {ep.name.lower(): ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_backends() -> list[str]:
    """Every backend name: built in, and from installed plugins."""
    return sorted(set(_BUILTIN) | set(_plugin_entry_points()))


def _load(target: str, name: str) -> Backend:
    module_name, _, attr = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise BackendError(f"backend {name!r}: cannot load {target!r}: {error}") from error
    backend = factory()
    if not isinstance(backend, Backend):
        raise BackendError(f"backend {name!r}: {target!r} did not produce a Backend (needs `name` and `lower`)")
    return backend


def get_backend(name: str) -> Backend:
    """The backend called `name` (case-insensitive), built in or from a plugin."""
    key = name.lower()
    if key in _BUILTIN:
        return _load(_BUILTIN[key], key)
    plugins = _plugin_entry_points()
    if key in plugins:
        return _load(plugins[key], key)
    raise UserInputError(f"unknown backend {name!r}; known backends: {', '.join(available_backends())}")
