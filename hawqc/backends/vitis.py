"""Vitis HLS projects (ap_fixed types), through the shared hls4ml lowering."""

from __future__ import annotations

from pathlib import Path

import onnx_ir as ir

from hawqc.backends.hls4ml_lowering import Hls4mlTarget, lower_with_hls4ml
from hawqc.backends.project import LoweredProject
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


class VitisBackend:
    name = "vitis"

    def lower(
        self, model: ir.Model, outdir: Path, *, project_name: str = "myproject", io_type: str = "io_parallel"
    ) -> LoweredProject:
        return lower_with_hls4ml(model, outdir, vitis_target(), project_name=project_name, io_type=io_type)
