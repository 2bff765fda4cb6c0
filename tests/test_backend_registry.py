"""The backend registry: built-in names, plugins through entry points, loaded lazily."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint

import pytest

from hawqc.backends import base
from hawqc.backends.base import Backend, available_backends, get_backend
from hawqc.errors import BackendError, UserInputError


def test_builtin_backends() -> None:
    for name in ("vivado", "vitis", "catapult"):
        backend = get_backend(name)
        assert backend.name == name
        assert isinstance(backend, Backend)
    assert get_backend("Vitis").name == "vitis"
    assert {"vivado", "vitis", "catapult"} <= set(available_backends())


def test_unknown_name_lists_every_known_backend() -> None:
    with pytest.raises(UserInputError, match=r"unknown backend 'oneapi'; known backends: catapult, vitis, vivado"):
        get_backend("oneapi")


class _PluginBackend:
    name = "toy"

    def lower(self, model, outdir, *, project_name="myproject", io_type="io_parallel"):
        raise NotImplementedError


def _fake_entry_points(value: str):
    def entry_points(group: str):
        assert group == "hawqc.backends"
        return [EntryPoint(name="Toy", value=value, group=group)]

    return entry_points


def test_plugin_backend_through_entry_point(monkeypatch) -> None:
    monkeypatch.setattr(base, "entry_points", _fake_entry_points(f"{__name__}:_PluginBackend"))
    assert "toy" in available_backends()
    assert get_backend("toy").name == "toy"


def test_builtin_lookup_reads_no_entry_points(monkeypatch) -> None:
    def broken(group: str):
        raise AssertionError("entry points read for a built-in name")

    monkeypatch.setattr(base, "entry_points", broken)
    assert get_backend("vivado").name == "vivado"


def test_broken_plugin_is_reported(monkeypatch) -> None:
    monkeypatch.setattr(base, "entry_points", _fake_entry_points("no_such_module_hawqc:Backend"))
    with pytest.raises(BackendError, match="backend 'toy': cannot load"):
        get_backend("toy")
    monkeypatch.setattr(base, "entry_points", _fake_entry_points(f"{__name__}:test_builtin_backends"))
    with pytest.raises(BackendError, match="did not produce a Backend"):
        get_backend("toy")


def test_importing_hawqc_backends_imports_no_backend_or_hls4ml() -> None:
    import subprocess

    code = (
        "import sys, hawqc.backends.base; "
        "print(sorted(m for m in sys.modules if m.startswith(('hls4ml', 'hawqc.backends.viv', 'hawqc.backends.cat'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
