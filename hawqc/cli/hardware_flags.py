"""The command-line flags that say how the hardware is built (strategy, reuse factor, part, clock,
project name, a per-layer settings file): `hawqc` takes them; hawqc.backends.hls_settings checks them."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_hardware_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("hardware (written into the project and its hls4ml_config.yml)")
    group.add_argument("--strategy", help="latency (default) or resource: hls4ml's dense / convolution kernels")
    group.add_argument("--reuse-factor", type=int, metavar="N", help="multiplications shared per multiplier, every layer (default 1)")  # fmt: skip
    group.add_argument("--part", help="FPGA part, e.g. xcu250-figd2104-2L-e (default: the hls4ml backend's)")
    group.add_argument("--clock-period", type=float, metavar="NS", help="target clock period in ns (default: the hls4ml backend's, 5)")  # fmt: skip
    group.add_argument("--project-name", default="myproject", help="the project's top function and file names (default myproject)")  # fmt: skip
    group.add_argument("--config", type=Path, metavar="FILE",
                       help="YAML/JSON settings: strategy, reuse_factor, and per layer (names as in the report) under `layers`")  # fmt: skip


def hardware_settings(args: argparse.Namespace):
    from hawqc.backends.hls_settings import settings_from_options

    return settings_from_options(
        strategy=args.strategy,
        reuse_factor=args.reuse_factor,
        part=args.part,
        clock_period=args.clock_period,
        config_file=args.config,
    )
