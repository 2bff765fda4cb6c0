"""The per-layer table of a compiled project: what `hawqc` prints after a compile and `hawqc report` shows.

One row per layer of the written project: op, input and output shapes (channels last, no batch),
weight / accumulator / result types (hawqc's, which the lowering checked hls4ml wrote), the
multiplications (dense and convolution: fan-in x outputs x positions; a BatchNormalization: one per
element), BOPs (`hawqc.report.bops`), the reuse factor and strategy (read back from the project's own
`hls4ml_config.yml`, so it shows what the HLS tool will see), and totals.

Latency is an ESTIMATE, only for io_parallel designs whose every layer uses the Latency strategy
(the top function is one pipeline, layers in sequence), in clock cycles, from a simple model of
the pipeline depth of hls4ml's latency-strategy kernels:
- dense / convolution: `reuse factor` cycles of multiplications, then one cycle per level of the
  adder tree over the fan-in (`ceil(log2(fan-in))`);
- pooling: one cycle per level of the comparison / addition tree over the window;
- BatchNormalization (a multiply and an add), activations, merges: 1 cycle;
- reshapes, flattens, concatenations, the input: 0 (wiring).
It assumes one adder level per cycle; at slow clocks the HLS tool chains several in one cycle, at
fast clocks a DSP multiply takes more than one. Only C synthesis gives the real figure (`hawqc build`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import onnx_ir as ir

from hawqc.backends.project import LoweredProject
from hawqc.passes.integer_requant import MULTIPLIER_BITS_KEY
from hawqc.report.bops import layer_bops

_TYPE_ROLES = ("weight", "accum", "result")
_WIRING = ("Input", "InputLayer", "Reshape", "Flatten", "Concatenate", "Transpose")


def compact_type(text: str | None) -> str:
    """`fixed<8,4,TRN,WRAP>` -> `fixed<8,4>`: the default modes left out, the others kept."""
    if not text:
        return ""
    return text.replace(",TRN,WRAP>", ">")


def _hls4ml_settings(outdir: Path) -> tuple[dict, dict]:
    """(model-wide, per-layer) settings of the written hls4ml_config.yml."""
    path = outdir / "hls4ml_config.yml"
    if not path.is_file():
        return {}, {}
    from hawqc.backends.hls4ml_config_file import load_hls4ml_config

    config = (load_hls4ml_config(path.read_text()) or {}).get("HLSConfig", {}) or {}
    return config.get("Model", {}) or {}, config.get("LayerName", {}) or {}


def _pool_window(layer: dict) -> int:
    if layer.get("class_name", "").startswith("Global"):
        return int(layer.get("in_height", 1)) * int(layer.get("in_width", layer.get("n_in", 1)))
    return int(layer.get("pool_height", 1)) * int(layer.get("pool_width", 1))


def latency_cycles(op: str, fan_in: int | None, reuse: int, window: int) -> int:
    """Estimated pipeline depth of one layer (see the module docstring for the model)."""
    if op in _WIRING or op.startswith("ZeroPadding"):
        return 0
    if fan_in:
        return reuse + math.ceil(math.log2(fan_in)) if fan_in > 1 else reuse
    if "Pooling" in op:
        return max(1, math.ceil(math.log2(window))) if window > 1 else 1
    return 1


def _layer_of(value: ir.Value, value_layer: dict[str, str]) -> str | None:
    """The layer that computes `value`, or the one its only consumer chain (bias Add, scale Mul) is
    fused into: the planner maps a fused dense layer to the value at the end of the chain."""
    for _ in range(4):
        if value.name in value_layer:
            return value_layer[value.name]
        consumers = list(value.consumers())
        if len(consumers) != 1 or not consumers[0].outputs:
            return None
        value = consumers[0].outputs[0]
    return None


def build_table(model: ir.Model, project: LoweredProject) -> dict[str, Any]:
    """Rows and totals, as plain data for `hawqc_report.json` (key `layer_table`)."""
    plan = project.plan
    model_settings, layer_settings = _hls4ml_settings(project.outdir)
    by_node = {node.name: node for node in model.graph}
    dot_products = {}
    for entry in layer_bops(model):
        node = by_node.get(entry.name)
        layer = _layer_of(node.outputs[0], plan.value_layer) if node is not None and plan else None
        if layer is not None:
            dot_products[layer] = entry

    # Proven dyadic requantizations (integer-requant): the significant bits of each layer's multiplier.
    multiplier_bits = {}
    for node in model.graph:
        bits = node.metadata_props.get(MULTIPLIER_BITS_KEY)
        layer = _layer_of(node.outputs[0], plan.value_layer) if bits is not None and plan else None
        if layer is not None:
            multiplier_bits[layer] = int(bits)

    rows = []
    for written in project.layers:
        planned = plan.by_name.get(written.name) if plan else None
        layer_dict = planned.layer if planned else {}
        op = planned.op if planned else written.op
        settings = layer_settings.get(written.name, {}) or {}
        reuse = int(settings.get("ReuseFactor", model_settings.get("ReuseFactor", 1)))
        strategy = str(settings.get("Strategy", model_settings.get("Strategy", "Latency")))
        out_shape = list(plan.shapes.get(written.name, ())) if plan else []
        sources = planned.inputs if planned else []
        in_shape = list(plan.shapes.get(sources[0], plan.input_shape if sources[0] == plan.input_name else ())) if plan and sources else []
        types = {role: str(planned.types[role]) for role in _TYPE_ROLES if planned and role in planned.types}
        if planned and "weight" not in types and "scale" in planned.types:
            types["weight"] = str(planned.types["scale"])  # a BatchNormalization's multiplier
        if not types.get("result"):
            types["result"] = written.precision
        dot = dot_products.get(written.name)
        if dot is not None:
            multiplications = dot.n * dot.m * dot.positions
        elif op == "BatchNormalization":
            multiplications = math.prod(out_shape) if out_shape else 0
        else:
            multiplications = 0
        rows.append(
            {
                "name": written.name,
                "op": op,
                "input_shape": in_shape,
                "output_shape": out_shape,
                "weight": types.get("weight"),
                "accum": types.get("accum"),
                "result": types.get("result"),
                "multiplications": multiplications,
                "bops": None if dot is None else dot.bops,
                "reuse_factor": reuse,
                "strategy": strategy,
                "latency_cycles": latency_cycles(op, dot.n if dot else None, reuse, _pool_window(layer_dict)),
                "requant_multiplier_bits": multiplier_bits.get(written.name),
            }
        )
    # The model is of hls4ml's kernels: a project another backend wrote (a plugin's) gets no estimate.
    estimable = plan is not None and project.io_type == "io_parallel" and all(r["strategy"].lower() == "latency" for r in rows)
    if not estimable:
        for row in rows:
            row["latency_cycles"] = None
    return {
        "layers": rows,
        "totals": {
            "layers": len(rows),
            "multiplications": sum(r["multiplications"] for r in rows),
            "bops": sum(r["bops"] or 0 for r in rows),
            "latency_cycles_estimate": sum(r["latency_cycles"] for r in rows) if estimable else None,
        },
        "io_type": project.io_type,
        "latency_note": (
            "estimate: sum of per-layer pipeline depths of hls4ml's latency-strategy kernels "
            "(reuse factor + adder-tree levels per dot product; not from C synthesis)"
            if estimable
            else "no estimate: only io_parallel designs with the Latency strategy on every layer are estimated"
        ),
    }
