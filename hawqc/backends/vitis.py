"""Vitis HLS projects (ap_fixed types), through the shared hls4ml lowering."""

from __future__ import annotations

from hawqc.backends.hls4ml_lowering import Hls4mlBackend, Hls4mlTarget
from hawqc.backends.vivado import ap_csim_recipe
from hawqc.ir.qtypes import FixedType


def vitis_target() -> Hls4mlTarget:
    return Hls4mlTarget(
        name="vitis",
        hls4ml_backend="Vitis",
        options={"write_weights_txt": False},
        cpp_spelling=FixedType.ap_cpp,
        # Vitis's build_lib.sh is Vivado's: same sources, same flags.
        csim=ap_csim_recipe,
    )


def vitis_backend() -> Hls4mlBackend:
    return Hls4mlBackend(vitis_target())
