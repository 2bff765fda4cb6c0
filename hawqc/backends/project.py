"""What a backend hands back: the written project, its layers' types, and how to compile its C simulation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hawqc.backends.hls4ml_plan import Plan

# Not in hls4ml's build_lib.sh. GCC 12's -Wfree-nonheap-object analysis is superlinear in function
# size and the static initializer of hls4ml's unrolled weight arrays is one huge function: on the
# 16-64-32-32-5 MLP it took 14 of 18 s of compiling firmware/myproject.cpp. A warning flag, it leaves
# the object code byte-identical (checked with cmp on that project).
# -O1 (after build_lib.sh's -O3, and the last -O wins): 20-25% less compile time on the jet tagger
# and the digits CNN, the C simulation runs ~5% slower (benchmarks/RESULTS.md); -Og and -O0 compile
# faster still but run 2x and 70x slower. Fixed-point kernels are integer code: same results
# (tests/test_csim_fast.py compares with build_lib.sh's flags bit for bit).
FAST_COMPILE_FLAGS: tuple[str, ...] = ("-Wno-free-nonheap-object", "-O1")


@dataclass(frozen=True)
class LayerReport:
    """One layer of the generated project.

    `precision` is the result type in hawqc's neutral spelling; `types` maps each role the layer's
    kernel uses (`result`, and where the kernel has them `weight`, `bias`, `accum`, `scale`,
    `param`) to the C++ type written in `defines.h`. Layers hls4ml inserts (io_stream copies) are
    reported too, with the type of the value they copy.
    """

    name: str
    op: str
    precision: str
    types: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TracePoint:
    """One output variable of one layer of the written `firmware/<project>.cpp`, as hls4ml's writer
    names it for its own tracing (`nnet::save_layer_output<type>(var, "layer", size)`): what
    `hawqc.backends.csim_trace` instruments a copy of the project with when verify finds a mismatch."""

    layer: str
    type_name: str
    variable: str
    size: str  # a C++ expression (hls4ml's `size_cpp()`)
    elements: int


@dataclass(frozen=True)
class CSimRecipe:
    """How to compile the C simulation of a written project with plain g++ (no vendor tool).

    Paths are relative to the project directory. `runtime_weights_dir` is set for projects whose C
    simulation reads its weights from text files at run time (Catapult); the compiled library then
    needs that directory, so the compiler keeps a copy next to it.
    """

    sources: tuple[str, ...]
    include_dirs: tuple[str, ...]
    cxxflags: tuple[str, ...]
    entry: str
    # build_lib.sh probes the compiler: the first C++ standard it accepts, and optional flags it knows.
    std_candidates: tuple[str, ...] = ("c++11",)
    optional_flags: tuple[str, ...] = ()
    runtime_weights_dir: str | None = None
    # Lines of the sources that differ between otherwise identical projects (absolute paths) and do
    # not affect the compiled code once `runtime_weights_dir` is overridden; left out of the cache key.
    unhashed_line_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoweredProject:
    outdir: Path
    backend: str
    project_name: str
    io_type: str
    layers: list[LayerReport]
    # Shapes without the batch dimension, channels last: the graph's own. The generated C function
    # reads and writes the same values flat, in this C order (hls4ml may drop unit dims, e.g. the
    # [1, 1, C] of a global pooling is its [C]).
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    input_name: str
    output_name: str
    csim: CSimRecipe
    # The layers hawqc planned (graph value -> layer, shapes, every type), for the report's table and
    # the per-layer trace on a verify mismatch, and the layers' output variables for that trace.
    plan: Plan | None = None
    trace_points: tuple[TracePoint, ...] = ()
    # Part, clock, strategy and reuse factors the project is written for (hls4ml_reuse.hardware_summary).
    hardware: dict = field(default_factory=dict)

    @property
    def input_size(self) -> int:
        size = 1
        for d in self.input_shape:
            size *= d
        return size

    @property
    def output_size(self) -> int:
        size = 1
        for d in self.output_shape:
            size *= d
        return size
