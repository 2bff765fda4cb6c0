"""What differs between the hls4ml backends hawqc lowers to (Vivado, Vitis, Catapult)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hawqc.backends.project import CSimRecipe
from hawqc.ir.qtypes import FixedType


@dataclass(frozen=True)
class Hls4mlTarget:
    name: str
    hls4ml_backend: str
    options: Mapping[str, object]
    cpp_spelling: Callable[[FixedType], str]
    csim: Callable[[str], CSimRecipe]
    # Restrictions of the backend's type translation; raises UnsupportedModelError.
    check_type: Callable[[FixedType, str], None] = lambda fixed, where: None
    # hls4ml's Catapult writer always leaves `<outdir>.tar.gz` next to the project.
    writes_tarball: bool = False
    # Catapult's init_pooling1d/2d and init_global_pooling1d/2d widen the configured accum_t of
    # every pooling layer by `log2 = (pool size).bit_length() - 1` integer and as many fractional bits.
    widens_pooling_accum: bool = False
    # Catapult's io_parallel average pooling (nnet_pooling.h `avg`) ignores accum_t: it sums in the
    # input type (widened by log2(N) integer bits only if that is a signed ac_fixed with default
    # modes), divides at the input's LSB, and then multiplies by `data_T(pool size) / count`.
    averages_in_input_type: bool = False
