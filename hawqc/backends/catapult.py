"""Catapult HLS projects (ac_fixed types, FPGA or ASIC), through the shared hls4ml lowering."""

from __future__ import annotations

from dataclasses import replace

from hawqc.backends.hls4ml_lowering import Hls4mlBackend, Hls4mlTarget
from hawqc.backends.project import FAST_COMPILE_FLAGS, CSimRecipe
from hawqc.errors import UnsupportedModelError
from hawqc.ir.qtypes import FixedType


def catapult_spelling(fixed: FixedType) -> str:
    # hls4ml's ac_fixed translation widens 1-bit types to 2 bits (same integer bits: one more
    # fractional bit). Harmless for a type that never rounds; `check_catapult_type` refuses the rest.
    return replace(fixed, width=max(fixed.width, 2)).ac_cpp()


def check_catapult_type(fixed: FixedType, where: str) -> None:
    if fixed.width == 1 and (fixed.rounding != "TRN" or fixed.saturation != "WRAP"):
        raise UnsupportedModelError(
            f"{where}: 1-bit quantizer {fixed}: hls4ml's Catapult backend widens it to 2 bits, which changes its rounding"
        )


def catapult_csim_recipe(project_name: str) -> CSimRecipe:
    """The flags of hls4ml's Catapult `build_lib.sh`.

    Its C simulation reads the weights from `firmware/weights/*.txt` at run time, from a directory
    named by an absolute path in the bridge, or by `WEIGHTS_DIR` when that is defined; the compiler
    defines it to a copy kept with the compiled library, so the bridge's path line is not hashed.
    """
    return CSimRecipe(
        sources=(f"firmware/{project_name}.cpp", f"{project_name}_bridge.cpp"),
        include_dirs=(
            "firmware/ac_types/include",
            "firmware/ac_math/include",
            "firmware/ac_simutils/include",
            "firmware/nnet_utils",
        ),
        cxxflags=("-O3", "-fPIC"),
        std_candidates=("c++11",),
        # build_lib.sh adds -Wno-pragmas together with -fno-gnu-unique.
        optional_flags=("-fno-gnu-unique", "-Wno-pragmas", *FAST_COMPILE_FLAGS),
        entry=f"{project_name}_double",
        runtime_weights_dir="firmware/weights",
        unhashed_line_prefixes=("static std::string s_weights_dir",),
    )


def catapult_target(tech: str = "fpga") -> Hls4mlTarget:
    return Hls4mlTarget(
        name="catapult",
        hls4ml_backend="Catapult",
        options={"tech": tech},
        cpp_spelling=catapult_spelling,
        csim=catapult_csim_recipe,
        check_type=check_catapult_type,
        writes_tarball=True,
        widens_pooling_accum=True,
        averages_in_input_type=True,
        plain_parallel_depthwise=True,
    )


def catapult_backend(tech: str = "fpga") -> Hls4mlBackend:
    return Hls4mlBackend(catapult_target(tech))
