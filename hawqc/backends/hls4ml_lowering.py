"""Lower a quantized graph to an hls4ml project, with every type chosen by hawqc.

Three steps, one file each:
1. `hls4ml_planner.py` matches the canonical channels-last graph into hls4ml layers
   (`hls4ml_layers.py` builds each layer's dict), every type from `hawqc.ir.precision.infer_types`;
2. here, `ModelGraph.from_layer_list` runs hls4ml's own flows on them and writes the project;
3. `hls4ml_checks.py` asserts, on the ModelGraph and again on the written `firmware/defines.h`,
   that hls4ml kept hawqc's layers, wiring and types (it may insert copies in io_stream).
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from hawqc.backends.hls4ml_checks import check_graph, check_written_types, read_typedefs
from hawqc.backends.hls4ml_plan import Plan
from hawqc.backends.hls4ml_planner import plan_layers
from hawqc.backends.hls4ml_reuse import (
    check_settings_honoured,
    hardware_summary,
    hls4ml_layer_settings,
    hls4ml_model_settings,
)
from hawqc.backends.hls4ml_target import Hls4mlTarget
from hawqc.backends.hls_settings import HlsSettings
from hawqc.backends.project import LoweredProject, TracePoint
from hawqc.errors import BackendError, UnsupportedModelError
from hawqc.ir.precision import precision_of

__all__ = ["IO_TYPES", "Hls4mlBackend", "Hls4mlTarget", "lower_with_hls4ml", "read_typedefs"]

IO_TYPES = ("io_parallel", "io_stream")

# Model-wide fallback precision. hawqc sets every layer's types by name, so this must never appear
# in a written project; the checks would name the layer if it did.
FALLBACK_PRECISION = "fixed<1,1>"


def _hls_config(plan: Plan, settings: HlsSettings) -> dict:
    layer_names = {
        planned.name: {
            "Precision": {role: fixed.hls4ml_string() for role, fixed in planned.config_types().items()},
            **hls4ml_layer_settings(planned.name, settings),
        }
        for planned in plan.layers
    }
    return {
        "Model": {"Precision": {"default": FALLBACK_PRECISION}, **hls4ml_model_settings(settings)},
        "LayerName": layer_names,
    }


def _clock_period(settings: HlsSettings) -> float | int | None:
    """hls4ml writes the number as Python prints it: keep a whole number of ns an int (5, not 5.0)."""
    period = settings.clock_period
    return int(period) if period is not None and float(period).is_integer() else period


def _graph_output_shape(model: ir.Model, hls4ml_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The graph output's dims without the batch; hls4ml's output holds the same values in the
    same (channels-last, C) order, possibly without unit dims (global pooling gives [channels])."""
    value = model.graph.outputs[0]
    dims = tuple(value.shape or ())[1:]
    if not dims or not all(isinstance(d, int) for d in dims):
        return hls4ml_shape
    dims = tuple(int(d) for d in dims)
    if math.prod(dims) != math.prod(hls4ml_shape):
        raise BackendError(f"hls4ml's output has shape {list(hls4ml_shape)}; the graph's {value.name!r} is {list(dims)}")
    return dims


def lower_with_hls4ml(
    model: ir.Model,
    outdir: Path,
    target: Hls4mlTarget,
    *,
    project_name: str = "myproject",
    io_type: str = "io_parallel",
    settings: HlsSettings | None = None,
) -> LoweredProject:
    """Plan the layers, build the ModelGraph, check it, write the project, check it again."""
    settings = settings or HlsSettings()
    if io_type not in IO_TYPES:
        raise UnsupportedModelError(f"io_type {io_type!r}; known: {', '.join(IO_TYPES)}")
    if not re.fullmatch(r"[A-Za-z_]\w*", project_name):
        raise BackendError(f"project name {project_name!r} is not a C identifier")
    precision = precision_of(model)
    plan = plan_layers(model, precision, target, io_type)
    settings.check_layer_names([planned.name for planned in plan.layers])

    from hls4ml.model.graph import ModelGraph
    from hls4ml.utils.config import create_config

    outdir = Path(outdir).resolve()
    config = create_config(
        output_dir=str(outdir),
        project_name=project_name,
        backend=target.hls4ml_backend,
        io_type=io_type,
        **target.options,
        # None keeps the hls4ml backend's default part / clock.
        **{key: value for key, value in (("part", settings.part), ("clock_period", _clock_period(settings))) if value is not None},
    )
    config["HLSConfig"] = _hls_config(plan, settings)
    if target.hls4ml_backend == "Catapult":
        # hls4ml's own Catapult report reader (`parse_catapult_report`) reads `ProjectDir` from
        # hls4ml_config.yml and fails without it; the value is the one hls4ml uses by default.
        config["ProjectDir"] = f"{project_name}_prj"
    output_layer = plan.value_layer[model.graph.outputs[0].name]
    tarball = outdir.with_name(outdir.name + ".tar.gz")
    tarball_existed = tarball.exists()
    # hls4ml prints progress and warns about attributes it overrides from the config (which is the
    # point of the config here); keep both off the user's terminal.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        # hls4ml rewires layers by editing their `inputs` lists in place (clone_output): give it copies.
        layer_list = [{**p.layer, "inputs": list(p.layer["inputs"])} for p in plan.layers]
        model_graph = ModelGraph.from_layer_list(config, layer_list, inputs=[plan.input_name], outputs=[output_layer])
        match = check_graph(model_graph, plan, output_layer)
        check_settings_honoured(model_graph, plan, settings)
        model_graph.write()
    if target.writes_tarball and not tarball_existed and tarball.exists():
        tarball.unlink()

    layers = check_written_types(match, target, outdir / "firmware" / "defines.h")
    output_var = model_graph.get_output_variables()[0]
    return LoweredProject(
        outdir=outdir,
        backend=target.name,
        project_name=project_name,
        io_type=io_type,
        layers=layers,
        input_shape=plan.input_shape,
        output_shape=_graph_output_shape(model, tuple(int(d) for d in output_var.shape)),
        input_name=model.graph.inputs[0].name,
        output_name=model.graph.outputs[0].name,
        csim=target.csim(project_name),
        hardware=hardware_summary(config, plan, settings),
        plan=plan,
        trace_points=_trace_points(model_graph),
    )


def _trace_points(model_graph) -> tuple[TracePoint, ...]:
    """What hls4ml's writer would save with `Trace: True` on every layer (see its write_project_cpp)."""
    return tuple(
        TracePoint(layer.name, var.type.name, var.name, str(var.size_cpp()), int(var.size()))
        for layer in model_graph.get_layers()
        if layer.get_attr("function_cpp", None)
        for var in layer.get_variables()
    )


@dataclass(frozen=True)
class Hls4mlBackend:
    """The `Backend` of one hls4ml target: Vivado, Vitis and Catapult differ only in their target."""

    target: Hls4mlTarget

    @property
    def name(self) -> str:
        return self.target.name

    def lower(
        self,
        model: ir.Model,
        outdir: Path,
        *,
        project_name: str = "myproject",
        io_type: str = "io_parallel",
        settings: HlsSettings | None = None,
    ) -> LoweredProject:
        return lower_with_hls4ml(
            model, outdir, self.target, project_name=project_name, io_type=io_type, settings=settings
        )
