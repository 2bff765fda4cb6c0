"""How the user wants the hardware built: strategy, reuse factors, part, clock, per layer where it matters.

These settings change the generated kernels (hls4ml's Latency and Resource dense/convolution
kernels are different C++), never a type: the C simulation must stay bit-exact with any of them.

A settings file (YAML or JSON) holds model-wide defaults and per-layer overrides, with the layer
names of the report (`hawqc_report.json` "layers", the names in hls4ml_config.yml):

    strategy: resource          # latency (default) or resource
    reuse_factor: 4
    layers:
      dense_2_matmul: {reuse_factor: 8}
      dense_4_matmul: {strategy: latency, reuse_factor: 1}

The command line's `--strategy` / `--reuse-factor` override the file's model-wide values; a layer's
own entry overrides both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hawqc.errors import OptionError, UserInputError

STRATEGIES = ("latency", "resource")
# Vendor part names are letters, digits, dashes, dots and underscores; anything else would break
# the Tcl scripts hls4ml writes the part into (`set part "..."`).
_PART = re.compile(r"[A-Za-z0-9_.\-]+")
_FILE_KEYS = ("layers", "reuse_factor", "strategy")
# hls4ml's Resource kernels count the reuse factor in a C `int` (`const int rufactor`); beyond it
# the generated constant wraps and the project builds something else.
MAX_REUSE_FACTOR = 2**31 - 1
# No HLS flow targets clocks outside these (in ns): a value out here is a unit mistake (s, ps, MHz).
MIN_CLOCK_PERIOD, MAX_CLOCK_PERIOD = 0.01, 1e6
_LAYER_KEYS = ("reuse_factor", "strategy")


@dataclass(frozen=True)
class LayerSettings:
    """A layer's overrides; None leaves the model-wide value."""

    reuse_factor: int | None = None
    strategy: str | None = None


@dataclass(frozen=True)
class HlsSettings:
    """Everything about the hardware a backend needs beyond the graph and its types
    (`hawqc --strategy --reuse-factor --part --clock-period --config`).

    Attributes:
        strategy: "latency" or "resource": hls4ml's dense / convolution kernels, every layer.
        reuse_factor: multiplications that share one multiplier, every layer.
        part: the FPGA part; None keeps the hls4ml backend's default.
        clock_period: the target clock period in ns; None keeps the hls4ml backend's default.
        layers: per-layer overrides (`LayerSettings`), by the layer names of the report.
        source: how messages about `layers` name where they came from (a settings file).
    """

    strategy: str = "latency"
    reuse_factor: int = 1
    part: str | None = None
    clock_period: float | None = None
    layers: Mapping[str, LayerSettings] = field(default_factory=dict)
    source: str = "HlsSettings"

    def __post_init__(self) -> None:
        check_strategy(self.strategy)
        check_reuse_factor(self.reuse_factor)
        if self.part is not None and not _PART.fullmatch(self.part):
            raise OptionError(f"{{}} {self.part!r}: a part name is letters, digits, '-', '.' and '_'", "part")
        if self.clock_period is not None and not (0 < self.clock_period < float("inf")):
            raise OptionError(f"{{}} must be a positive number of nanoseconds, got {self.clock_period}", "clock_period")
        if self.clock_period is not None and not (MIN_CLOCK_PERIOD <= self.clock_period <= MAX_CLOCK_PERIOD):
            raise UserInputError(
                f"--clock-period {self.clock_period} ns is outside {MIN_CLOCK_PERIOD:g}..{MAX_CLOCK_PERIOD:g} ns "
                "(100 GHz..1 kHz); the period is in nanoseconds"
            )

    def reuse_factor_of(self, layer: str) -> int:
        own = self.layers.get(layer)
        return own.reuse_factor if own is not None and own.reuse_factor is not None else self.reuse_factor

    def strategy_of(self, layer: str) -> str:
        own = self.layers.get(layer)
        return own.strategy if own is not None and own.strategy is not None else self.strategy

    def check_layer_names(self, known: list[str]) -> None:
        """Every per-layer entry names a layer of the project (names as in the report)."""
        for name in self.layers:
            if name not in known:
                raise UserInputError(f"{self.source}: layers.{name}: no such layer; layers: {', '.join(known)}")


def check_strategy(value: object, where: str | None = None) -> str:
    """`value` lowercased if it names a strategy; else an error naming `where` (a settings file's
    entry), or the option `strategy` itself."""
    if not isinstance(value, str) or value.lower() not in STRATEGIES:
        problem = f"must be one of {', '.join(STRATEGIES)}, got {value!r}"
        if where is None:
            raise OptionError(f"{{}} {problem}", "strategy")
        raise UserInputError(f"{where}: strategy {problem}")
    return value.lower()


def check_reuse_factor(value: object, where: str | None = None) -> int:
    """`value` if it is a reuse factor hls4ml can take; else an error naming `where` (a settings
    file's entry), or the option `reuse_factor` itself."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        problem = f"must be a positive integer, got {value!r}"
    elif value > MAX_REUSE_FACTOR:
        problem = f"{value} is above {MAX_REUSE_FACTOR} (hls4ml's kernels hold it in a C int)"
    else:
        return value
    if where is None:
        raise OptionError(f"{{}} {problem}", "reuse_factor")
    raise UserInputError(f"{where}: reuse factor {problem}")


def read_settings_file(path: Path) -> tuple[LayerSettings, dict[str, LayerSettings]]:
    """The model-wide values and the per-layer entries of a YAML or JSON settings file."""
    data = _load(path)
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a mapping with keys {', '.join(_FILE_KEYS)}")
    for key in data:
        if key not in _FILE_KEYS:
            raise UserInputError(f"{path}: unknown key {key!r}; known: {', '.join(_FILE_KEYS)}")
    model_wide = _layer_settings(data, f"{path}: ")
    layers = data.get("layers") or {}
    if not isinstance(layers, dict):
        raise UserInputError(f"{path}: layers: expected a mapping of layer names to settings")
    per_layer = {}
    for name, entry in layers.items():
        where = f"{path}: layers.{name}"
        if not isinstance(entry, dict):
            raise UserInputError(f"{where}: expected a mapping with keys {', '.join(_LAYER_KEYS)}")
        for key in entry:
            if key not in _LAYER_KEYS:
                raise UserInputError(f"{where}: unknown key {key!r}; known: {', '.join(_LAYER_KEYS)}")
        per_layer[str(name)] = _layer_settings(entry, f"{where}.")
    return model_wide, per_layer


def _layer_settings(entry: dict[str, Any], where: str) -> LayerSettings:
    """`where` is how a message names the entry's keys: `FILE: ` for the model-wide ones,
    `FILE: layers.NAME.` for a layer's."""
    reuse = entry.get("reuse_factor")
    strategy = entry.get("strategy")
    return LayerSettings(
        reuse_factor=None if reuse is None else check_reuse_factor(reuse, f"{where}reuse_factor"),
        strategy=None if strategy is None else check_strategy(strategy, f"{where}strategy"),
    )


def _load(path: Path) -> Any:
    from hawqc.ir.io import read_text_file

    if not path.is_file():
        raise UserInputError(f"{path}: no such settings file")
    text = read_text_file(path)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise UserInputError(f"{path}: not valid JSON: {error}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserInputError(f"{path}: not valid YAML: {first_line}") from None


def settings_from_options(
    *,
    strategy: str | None = None,
    reuse_factor: int | None = None,
    part: str | None = None,
    clock_period: float | None = None,
    config_file: Path | None = None,
) -> HlsSettings:
    """Command-line values over the settings file's model-wide values over the defaults."""
    model_wide, per_layer = (LayerSettings(), {}) if config_file is None else read_settings_file(Path(config_file))
    if strategy is not None:
        strategy = check_strategy(strategy)
    if reuse_factor is not None:
        reuse_factor = check_reuse_factor(reuse_factor)
    return HlsSettings(
        strategy=strategy or model_wide.strategy or "latency",
        reuse_factor=reuse_factor or model_wide.reuse_factor or 1,
        part=part,
        clock_period=clock_period,
        layers=per_layer,
        source=str(config_file) if config_file is not None else "HlsSettings",
    )
