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
    # Catapult's average pooling ignores accum_t except in io_stream global pooling: it sums in the
    # input type (io_parallel `avg` widens by log2(N) integer bits only for a signed ac_fixed with
    # default modes; io_stream `reduce_pool<data_T::value_type>` not at all), divides at the
    # input's LSB, and in io_parallel then multiplies by `data_T(pool width) / count`.
    averages_in_input_type: bool = False
    # Catapult's io_parallel depthwise_conv_2d_cl ignores padding and strides and sums in the result
    # type; Catapult has no io_parallel DepthwiseConv1D at all (only nnet_sepconv1d_stream.h).
    plain_parallel_depthwise: bool = False
