"""Strategy and reuse factor per layer: into hls4ml's config, and back out checked.

hls4ml does not always build what its config asks for: with the Resource strategy its
`init_dense` / `init_conv*` replace a reuse factor it considers invalid by "the closest valid one"
and only print a warning (`FPGABackend.set_closest_reuse_factor`). hawqc never lets a setting change
silently: after hls4ml's flows ran, every layer's reuse factor and strategy must be the requested
ones, or the compile stops naming the layer and the values hls4ml would accept.
"""

from __future__ import annotations

from hawqc.backends.hls4ml_plan import Plan
from hawqc.backends.hls_settings import HlsSettings
from hawqc.errors import UserInputError

# The layer classes whose kernels hls4ml chooses by strategy (Latency or Resource dense products).
_STRATEGY_CLASSES = ("Dense", "Conv1D", "Conv2D", "PointwiseConv1D", "PointwiseConv2D", "DepthwiseConv1D", "DepthwiseConv2D")


def hls4ml_layer_settings(name: str, settings: HlsSettings) -> dict[str, object]:
    """The `ReuseFactor` / `Strategy` entries of one layer in hls4ml's `HLSConfig.LayerName`."""
    return {"ReuseFactor": settings.reuse_factor_of(name), "Strategy": settings.strategy_of(name).capitalize()}


def hls4ml_model_settings(settings: HlsSettings) -> dict[str, object]:
    return {"ReuseFactor": settings.reuse_factor, "Strategy": settings.strategy.capitalize()}


def check_settings_honoured(model_graph: object, plan: Plan, settings: HlsSettings) -> None:
    """Every planned layer hls4ml kept has the requested reuse factor and, where its kernel has
    one, strategy; raises UserInputError naming the layer otherwise."""
    backend = model_graph.config.backend  # type: ignore[attr-defined]
    for layer in model_graph.get_layers():  # type: ignore[attr-defined]
        if layer.name not in plan.by_name:
            continue  # a copy hls4ml inserted (io_stream); it computes nothing
        wanted_rf = settings.reuse_factor_of(layer.name)
        wanted_strategy = settings.strategy_of(layer.name)
        has_strategy = layer.class_name in _STRATEGY_CLASSES
        got_rf = layer.get_attr("reuse_factor")
        if got_rf != wanted_rf:
            raise UserInputError(_reuse_factor_refusal(backend, layer, wanted_rf, got_rf, wanted_strategy))
        if has_strategy and str(layer.get_attr("strategy")).lower() != wanted_strategy:
            raise UserInputError(
                f"layer {layer.name!r} ({layer.class_name}): hls4ml's {backend.name} backend would use the "
                f"{layer.get_attr('strategy')} strategy, not {wanted_strategy}"
            )
        _check_kernel_limits(backend, model_graph.config.get_config_value("IOType"), layer, wanted_rf, wanted_strategy)
        own = settings.layers.get(layer.name)
        if own is not None and own.strategy is not None and not has_strategy:
            raise UserInputError(
                f"{settings.source}: layers.{layer.name}.strategy: layer {layer.name!r} ({layer.class_name}) "
                f"has no strategy in hls4ml (only {', '.join(_STRATEGY_CLASSES)} kernels have one)"
            )


def _check_kernel_limits(backend: object, io_type: str, layer: object, rf: int, strategy: str) -> None:
    """Settings hls4ml's flows accept but its C++ kernels do not: they end in a failed `assert` (an
    aborted C simulation) or in a kernel that computes something else. Read from hls4ml 1.3.0's
    templates; refused here, before anything is compiled."""
    if strategy != "resource":
        return
    name, cls = layer.name, layer.class_name  # type: ignore[attr-defined]
    if "Depthwise" in cls:
        # Vivado/Vitis io_parallel (nnet_sepconv1d.h / nnet_sepconv2d.h) and Catapult io_stream
        # (nnet_sepconv_stream.h) assert "Resource strategy for DepthwiseConv is not supported";
        # the other combinations are not checked bit-exact by hawqc's tests.
        raise UserInputError(f"layer {name!r} ({cls}): hawqc supports only the latency strategy for depthwise convolutions (set its strategy in --config)")
    if backend.name in ("Vivado", "Vitis") and io_type == "io_parallel" and "Conv" in cls:  # type: ignore[attr-defined]
        # conv_1d_resource_cl / conv_2d_resource_cl assert reuse_factor <= filter size x channels,
        # although hls4ml's list of valid reuse factors goes up to n_in x n_out.
        n_in, _ = backend.get_layer_mult_size(layer)  # type: ignore[attr-defined]
        if rf > n_in:
            raise UserInputError(
                f"layer {name!r} ({cls}): hls4ml's {backend.name} io_parallel Resource convolution works only for "
                f"reuse factors up to {n_in} (filter size x channels), got {rf}"
            )


def _reuse_factor_refusal(backend: object, layer: object, wanted: int, got: object, strategy: str) -> str:
    where = f"layer {layer.name!r} ({layer.class_name})"  # type: ignore[attr-defined]
    try:
        n_in, n_out = backend.get_layer_mult_size(layer)  # type: ignore[attr-defined]
        valid = backend.get_valid_reuse_factors(n_in, n_out)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 -- hls4ml raises a bare Exception for a layer without a product size
        valid = None
    accepted = "" if valid is None else f"; valid reuse factors for its {n_in}x{n_out} product: {_ranges(valid)}"
    return (
        f"{where}: reuse factor {wanted} is not one hls4ml's {backend.name} backend "  # type: ignore[attr-defined]
        f"implements with the {strategy} strategy (it would use {got}){accepted}"
    )


def _ranges(values: list[int]) -> str:
    """`1,2,4,8` stays; long lists are cut so that the message stays one readable line."""
    shown = ", ".join(str(v) for v in values[:24])
    return shown + (f", ... ({len(values)} in all, up to {values[-1]})" if len(values) > 24 else "")


def hardware_summary(config: dict, plan: Plan, settings: HlsSettings) -> dict[str, object]:
    """What the project is built for, as written into hls4ml_config.yml (defaults included)."""
    return {
        "part": config.get("Part"),
        "clock_period": config.get("ClockPeriod"),
        "strategy": settings.strategy,
        "reuse_factor": settings.reuse_factor,
        "layers": {
            planned.name: {"reuse_factor": settings.reuse_factor_of(planned.name), "strategy": settings.strategy_of(planned.name)}
            for planned in plan.layers
        },
    }
