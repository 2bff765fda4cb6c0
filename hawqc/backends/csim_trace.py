"""Per-layer outputs of a written project's C simulation, through hls4ml's own tracing machinery.

hls4ml traces a model by rewriting it with `Trace: True` and recompiling (`ModelGraph.trace()`):
its writer puts `nnet::save_layer_output<type>(var, "layer", size)` after every layer's call in
`firmware/<project>.cpp` and registers a buffer per layer in the bridge's `allocate_trace_storage`;
the bridge's `collect_trace_output` then hands the buffers back after each call.

hawqc writes its projects untraced (users take them to synthesis) and only needs the trace when
verify finds a mismatch. Then it instruments a *copy of the written project*, with the same lines
hls4ml's writer would have written (the layer names, variables and sizes are recorded at lowering
time as `TracePoint`s), compiles that copy like any C simulation (cached by content) and runs the
samples one at a time through the bridge's `<project>_double` wrapper. Instrumenting the written
files rather than lowering again means the trace shows what the project on disk computes, even
if something changed it after hls4ml wrote it.

The traced values come back as doubles (`save_output_array` converts each element with the fixed
point type's own conversion), exact for types up to 53 bits wide.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hawqc.backends.project import LoweredProject, TracePoint
from hawqc.errors import BackendError
from hawqc.temporaries import owned_directory

# What the bridge template has in allocate_trace_storage right where hls4ml inserts the buffers.
_ALLOCATE_ANCHOR = "nnet::trace_type_size = element_size;"
# Not copied into the traced copy: hawqc's own outputs, and the test bench data.
_NOT_COPIED = ("hawqc_report.json", "mismatch", "tb_data")


class _TraceData(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("data", ctypes.c_void_p)]


def _layer_block_end(lines: list[str], layer: str) -> int:
    """Index of the blank line that ends `layer`'s call in the top function (hls4ml writes one call
    as `<call> // <layer>`, several as a `// <layer>` line followed by the calls, then a blank line)."""
    marker = f"// {layer}"
    for i, line in enumerate(lines):
        if line.rstrip().endswith(marker) and (line.strip() == marker or line.rstrip().endswith(f"; {marker}")):
            for j in range(i + 1, len(lines)):
                if not lines[j].strip():
                    return j
            return len(lines)
    raise BackendError(f"cannot trace layer {layer!r}: its call is not in the written top function")


def instrument_top_function(source: str, points: tuple[TracePoint, ...]) -> str:
    lines = source.split("\n")
    by_layer: dict[str, list[TracePoint]] = {}
    for point in points:
        by_layer.setdefault(point.layer, []).append(point)
    # Insert from the bottom up so that earlier indices stay valid.
    ends = sorted(((_layer_block_end(lines, layer), layer) for layer in by_layer), reverse=True)
    for end, layer in ends:
        saves = [
            f'    nnet::save_layer_output<{p.type_name}>({p.variable}, "{p.layer}", {p.size});' for p in by_layer[layer]
        ]
        lines[end:end] = ["#ifndef __SYNTHESIS__", *saves, "#endif"]
    return "\n".join(lines)


def instrument_bridge(source: str, points: tuple[TracePoint, ...]) -> str:
    if _ALLOCATE_ANCHOR not in source:
        raise BackendError("cannot trace: the bridge has no allocate_trace_storage (not an hls4ml bridge?)")
    buffers = "".join(
        f'\n    nnet::trace_outputs->insert(std::pair<std::string, void *>("{p.layer}", (void *) malloc({p.size} * element_size)));'
        for p in points
    )
    return source.replace(_ALLOCATE_ANCHOR, _ALLOCATE_ANCHOR + buffers, 1)


def instrumented_copy(project: LoweredProject, destination: Path) -> LoweredProject:
    """A copy of the written project at `destination` whose top function saves every layer's output."""
    if not project.trace_points:
        raise BackendError(f"{project.outdir}: the lowering recorded no layers to trace")
    shutil.copytree(project.outdir, destination, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    top = destination / "firmware" / f"{project.project_name}.cpp"
    bridge = destination / f"{project.project_name}_bridge.cpp"
    top.write_text(instrument_top_function(top.read_text(), project.trace_points))
    bridge.write_text(instrument_bridge(bridge.read_text(), project.trace_points))
    return dataclasses.replace(project, outdir=destination.resolve())


def trace_layers(project: LoweredProject, inputs: np.ndarray) -> dict[str, np.ndarray]:
    """Every traced layer's output for each sample of `inputs` (flat per sample, C order): layer name
    -> array of shape (n, elements). The copy is compiled (or found in the cache) and then removed."""
    from hawqc.backends.csim import compile_csim

    flat = np.ascontiguousarray(np.asarray(inputs, dtype=np.float64).reshape(len(inputs), -1))
    if flat.shape[1] != project.input_size:
        raise BackendError(f"trace input has {flat.shape[1]} values per sample; the project takes {project.input_size}")
    sizes: dict[str, int] = {}
    for point in project.trace_points:
        sizes.setdefault(point.layer, point.elements)  # hls4ml keys a buffer by layer: the first variable
    with owned_directory(Path(tempfile.gettempdir()), "hawqc-trace") as tmp:
        traced = instrumented_copy(project, tmp / "project")
        library = compile_csim(traced).library
    lib = ctypes.CDLL(str(library), mode=os.RTLD_LOCAL)
    run = getattr(lib, f"{project.project_name}_double")
    run.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    run.restype = None
    lib.allocate_trace_storage.argtypes = [ctypes.c_size_t]
    lib.collect_trace_output.argtypes = [ctypes.POINTER(_TraceData)]
    records = (_TraceData * len(sizes))()
    traces = {layer: np.zeros((len(flat), size)) for layer, size in sizes.items()}
    out = np.zeros(project.output_size)
    lib.allocate_trace_storage(ctypes.sizeof(ctypes.c_double))
    try:
        for i, sample in enumerate(flat):
            run(sample.ctypes.data, out.ctypes.data)
            lib.collect_trace_output(records)
            for record in records:
                layer = record.name.decode()
                buffer = ctypes.cast(record.data, ctypes.POINTER(ctypes.c_double))
                traces[layer][i] = np.ctypeslib.as_array(buffer, shape=(sizes[layer],))
    finally:
        lib.free_trace_storage()
    return traces


def layer_values(project: LoweredProject) -> Mapping[str, str]:
    """Traced layer -> the graph value it computes (the first the plan maps to it, in graph order)."""
    traced = {p.layer for p in project.trace_points}
    chosen: dict[str, str] = {}
    for value, layer in (project.plan.value_layer if project.plan else {}).items():
        if layer in traced and layer not in chosen:
            chosen[layer] = value
    return chosen
