"""Vivado HLS projects (ap_fixed types), through the shared hls4ml lowering."""

from __future__ import annotations

from hawqc.backends.hls4ml_lowering import Hls4mlBackend, Hls4mlTarget
from hawqc.backends.project import FAST_COMPILE_FLAGS, CSimRecipe
from hawqc.ir.qtypes import FixedType


def ap_csim_recipe(project_name: str) -> CSimRecipe:
    """The flags of hls4ml's Vivado/Vitis `build_lib.sh`, but C++11 where it prefers C++23 (which
    only adds half and bfloat16 types, never in hawqc's projects; parsing the larger C++23 standard
    headers costs ~0.3-1 s per translation unit; same results, tests/test_csim_fast.py).

    `write_weights_txt` is off, so the weights are compiled in and the library depends on no file
    of the project directory; `-D WEIGHTS_DIR` of build_lib.sh is then unused and left out.
    """
    return CSimRecipe(
        sources=(f"firmware/{project_name}.cpp", f"{project_name}_bridge.cpp"),
        include_dirs=("firmware/ap_types",),
        cxxflags=("-O3", "-fPIC"),
        std_candidates=("c++11",),
        optional_flags=("-fno-gnu-unique", *FAST_COMPILE_FLAGS),
        entry=f"{project_name}_double",
    )


def vivado_target() -> Hls4mlTarget:
    return Hls4mlTarget(
        name="vivado",
        hls4ml_backend="Vivado",
        options={"write_weights_txt": False},
        cpp_spelling=FixedType.ap_cpp,
        csim=ap_csim_recipe,
    )


def vivado_backend() -> Hls4mlBackend:
    return Hls4mlBackend(vivado_target())
