"""`read-as-hawq`: read a HAWQ export as the integer inference HAWQ itself runs (changes the meaning).

HAWQ's own exporter (`hawq2qonnx`, see `hawqc.passes.hawq_export_layers`) writes every
requantization as float32 rescales,

    acc -> Mul(k = fl32(s_w * s_prev)) -> Relu? -> Quant(s_a) -> (selection ops)* -> Div(s_a) -> next layer

while HAWQ's integer inference computes `clamp(round(relu(acc) * m / 2^e))` in double, with
`(m, e) = batch_frexp(k / s_a)` (upstream HAWQ's `quant_utils.py`). The two differ: float32 `(q * s_a) / s_a`
gives some codes back one ulp off, and `fl32(acc * k) / s_a` rounds across .5 where `acc * m / 2^e`
does not. `exact-requant` rewrites a layer only where it proves the file's float32 arithmetic equal
to a dyadic multiply; with HAWQ's calibrated scales that proof fails on most layers.

This pass deliberately changes the graph's meaning from the file's float32 arithmetic to HAWQ's
integer arithmetic (the model the user trained), so it declares `changes_meaning`: translation
validation takes the graph after it as the new reference. `hawqc --hawq-export-semantics hawq` runs
it right after loading, before the pipeline (`hawqc.flow.hawq_export`, which also measures how often
the file's arithmetic differs from HAWQ's); `hawqc-opt -p read-as-hawq` replays it. It writes the
canonical form of the HAWQ lifter (`hawqc.frontends.hawq.lift`), whose graph carries integer codes:

- the input `Quant(x, s_in) -> Div(s_in)` (an input QuantAct): `Quant(x, s_in) -> Mul(1 / s_in)` for
  a power-of-two `s_in`, else `Div(x, s_in) -> Quant(x, 1)`: HAWQ's `clamp(round(x / s_in))`, as the
  lifter writes it;
- the input of a model without an input QuantAct (its first layer given `s_in` by hand): `x ->
  Div(x, s_in)` in the file, `Quant(x, 2^-F) -> Div(s_in)` once `--input-precision` has given the
  input a type (without it: refused, naming the option): HAWQ rounds the first layer's float
  accumulator, `Quant(scale 1)` of it where `x / s_in` can be other than an integer, else `Mul(1 /
  s_in)` (`hawqc.passes.hawq_export_input` says why and what it proves);
- each requantization: `acc -> Relu? -> Cast(DOUBLE) -> Mul(m * 2^-e, float64) -> Quant(scale 1, same
  bits, signedness and rounding)`, its reading Divs removed (the codes flow on through the selection
  ops). Relu comes first as in HAWQ (`QuantAct(relu(acc))`) and in the lifted graph;
  `relu(a) * D == relu(a * D)` for `D > 0`. `(m, e)` is HAWQ's `batch_frexp` of the ratio computed
  as HAWQ computes it: `float64(fl32(s_w * s_prev)) / float64(fl32(s_a))`, and the file's `k` is
  that float32 product (HAWQ's `requantization_ratio` rounds the double product to float32);
- the last layer's float output `Mul(acc, k)`: removed, as the lifter does: the graph outputs HAWQ's
  integer accumulator and records `k` as `hawqc.hawq.output_scale` (HAWQ's float output is
  `fl32(code * k)`, which is also what the file computes from the same accumulator). So the whole
  graph is integer-only, and hardware mode equals semantic mode with no declared float parts.

What was read (`HawqExportReading`: each requantization with its `(m, e)`, the input and output
scales) is recorded as model metadata (`READING_KEY`), where the flow finds it. A graph without a
HAWQ-export requantization is left unchanged; one that has some but does not fit the pattern
around them is refused, naming the node.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.dyadic import dyadic
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.quantizer import quantizer
from hawqc.ir.shape_inference import infer_shapes
from hawqc.passes.base import Pass, PassResult
from hawqc.passes.hawq_export_input import HawqInput, divided_graph_input, first_layer_cores, round_accumulator, rounds_first_layers
from hawqc.passes.hawq_export_layers import (
    Layer,
    constant,
    incoming_codes,
    is_power_of_two,
    match_layer,
    quant_params,
    reading_divs,
    scalar_operand,
    selection_source,
    single_use,
)

READING_KEY = "hawqc.hawq_export.reading"
# Codes entering a layer are enumerated by nobody here: the matcher's limit only bounds the
# round-trip check of the codes a Div gives back, which is linear in the number of codes.
CODE_LIMIT = 1 << 24


@dataclass(frozen=True)
class Requantization:
    """One layer read as HAWQ's `round(relu?(acc) * m / 2^e)`."""

    quant: str  # the Quant node
    codes: str  # its output value (the same value before and after: the layer's codes)
    accumulator_scale: float  # k = fl32(s_w * s_prev), from the file
    activation_scale: float  # s_a, from the file
    mantissa: int
    exponent: int


@dataclass(frozen=True)
class HawqExportReading:
    requantizations: tuple[Requantization, ...]
    input_scale: float
    output_scale: float  # k of the last layer: HAWQ's float output is fl32(output code * output_scale)
    input_act: bool = True  # False: no input QuantAct in the file, the first layer given input_scale by hand
    first_layers_rounded: int = 0  # of those, the layers whose float accumulator HAWQ rounds (x / s_in not integral)
    samples: int = 0  # inputs the file's float32 arithmetic was compared on (0: not measured)
    samples_with_other_codes: int = 0  # some requantized code differs from HAWQ's
    samples_with_other_outputs: int = 0  # the file's float output differs from fl32(HAWQ's accumulator * k)

    def summary(self) -> str:
        count = len(self.requantizations)
        line = (
            f"hawq export: {count} requantization{'s' if count != 1 else ''} read as HAWQ's integer "
            f"requantization (m / 2^e)"
        )
        if not self.input_act:
            line += f"; no input QuantAct (input scale {self.input_scale!r} given by hand)"
            if self.first_layers_rounded:
                count = self.first_layers_rounded
                line += f": the float accumulator of {count} first layer{'s' if count != 1 else ''} rounded, as HAWQ does"
        if not self.samples:
            return line
        return (
            f"{line}; the file's float32 arithmetic differs from it on {self.samples_with_other_codes} of "
            f"{self.samples} samples (codes), {self.samples_with_other_outputs} (outputs)"
        )

    def as_dict(self) -> dict:
        return {"semantics": "hawq", **asdict(self)}

    @classmethod
    def from_dict(cls, facts: dict) -> HawqExportReading:
        """The reading back from `as_dict` (the model metadata `READING_KEY`)."""
        fields = {key: value for key, value in facts.items() if key not in ("semantics", "requantizations")}
        return cls(tuple(Requantization(**r) for r in facts["requantizations"]), **fields)


def recorded_reading(model: ir.Model) -> HawqExportReading | None:
    """What `read-as-hawq` recorded on `model`, or None if it read nothing there."""
    text = model.metadata_props.get(READING_KEY)
    return None if text is None else HawqExportReading.from_dict(json.loads(text))


def record_reading(model: ir.Model, reading: HawqExportReading) -> None:
    model.metadata_props[READING_KEY] = json.dumps(reading.as_dict())


@dataclass(frozen=True)
class ReadAsHawq(Pass):
    name: ClassVar[str] = "read-as-hawq"
    summary: ClassVar[str] = (
        "Read a HAWQ export's float32 rescales as HAWQ's integer requantization m / 2^e (changes the outputs)."
    )
    changes_meaning: ClassVar[bool] = True

    def run(self, model: ir.Model) -> PassResult:
        export = find_hawq_export(model)
        if export is None:
            return PassResult(False, {"requantizations-read": 0})
        reading = rewrite_hawq_export(model, export)
        return PassResult(True, {"requantizations-read": len(reading.requantizations)})


# ---- matching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OutputLayer:
    """The last layer: `core -> Add(b)? -> Mul(acc, k)` as the graph output."""

    core: ir.Node
    mul: ir.Node
    accumulator: ir.Value
    k: float


@dataclass(frozen=True)
class HawqExport:
    """The pieces of a HAWQ export that `rewrite_hawq_export` rewrites."""

    layers: list[Layer]
    input: HawqInput
    output: _OutputLayer


@dataclass(frozen=True)
class _Refusals:
    """How a refusal says where it happened (`source`: the model's file) and who asked for the
    reading: an option (`asker`, its Python name, spelled as its flag on the command line), or
    nobody named (the pass in a pipeline, which the manager names)."""

    source: str
    asker: str | None

    def error(self, kind: type[UserInputError], where: str, text: str, *, options: tuple[str, str] = ()) -> UserInputError:
        """`options`: (Python name, as a pass names it) of each option `{}` in `text` names."""
        if self.asker is None:
            return kind(f"{where}: {text.format(*(spelling for _, spelling in options))}")
        return kind(f"{where}: {{}}: {text}", option=(self.asker, *(name for name, _ in options)))


def find_hawq_export(model: ir.Model, *, source: str = "the model", asker: str | None = None) -> HawqExport | None:
    """The HAWQ-export layers of `model`, or None if it has no requantization of that form; a graph
    that has some but does not fit the pattern around them is refused (`UnsupportedModelError`)."""
    refusals = _Refusals(source, asker)
    graph = model.graph
    layers = [layer for node in graph if (layer := _layer(node, refusals)) is not None]
    if not layers:
        return None
    hawq_input = _input_quantizer(graph, refusals)
    output = _output_layer(graph, refusals)
    code_divs = {div for layer in layers for div in layer.readers} | set(hawq_input.divs)
    for core in [layer.core for layer in layers] + [output.core]:
        div = selection_source(core.inputs[0]).producer()
        if div not in code_divs:
            raise refusals.error(
                UnsupportedModelError, describe(core),
                "its input is not the codes of a HAWQ-export activation (Quant(s_a) -> Div(s_a))",
            )  # fmt: skip
    layer_cores = {layer.core for layer in layers} | {output.core}
    for core in first_layer_cores(hawq_input) if hawq_input.by_hand else []:
        if core not in layer_cores:
            raise refusals.error(
                UnsupportedModelError, describe(core), "reads the graph input but is not a HAWQ-export layer (no Mul(s_w * s_in) after it)"
            )
    leftover = [node for node in graph if node.op_type == "Div" and node.domain == "" and node not in code_divs]
    if leftover:
        raise refusals.error(UnsupportedModelError, describe(leftover[0]), "a Div that is not part of a HAWQ-export layer")
    return HawqExport(layers, hawq_input, output)


def _layer(node: ir.Node, refusals: _Refusals) -> Layer | None:
    """A requantized layer whose reading Divs divide by the Quant's own scale (HAWQ passes s_a on)."""
    if quant_params(node) is None:
        return None
    layer = match_layer(node, CODE_LIMIT, _codes_entering)
    if layer is None:
        return None
    if layer.divisor.reshape(-1).view(np.uint32)[0] != layer.quant.scale.reshape(-1).view(np.uint32)[0]:
        raise refusals.error(
            UnsupportedModelError, describe(layer.readers[0]),
            f"divides by {float(layer.divisor.reshape(-1)[0])!r}, not by the activation scale "
            f"{float(layer.quant.scale.reshape(-1)[0])!r} of {describe(node)}",
        )  # fmt: skip
    return layer


def _codes_entering(value: ir.Value, limit: int) -> tuple[int, int, float] | None:
    """What may enter a layer: an earlier activation's codes, or (the first layer of a model
    without an input QuantAct) the graph input divided by the scale given by hand, which
    `_input_quantizer` reads (its range is not a code range: (0, 0, 0.0) stands for it)."""
    codes = incoming_codes(value, limit)
    return codes if codes is not None or not divided_graph_input(value) else (0, 0, 0.0)


def _input_quantizer(graph: ir.Graph, refusals: _Refusals) -> HawqInput:
    """The graph input's `Quant(x, s)` and the Divs by `s_in` that read it: `s_in == s` (an input
    QuantAct's codes), or another scale (no input QuantAct, `s` the input's type)."""
    data_inputs = [value for value in graph.inputs if value.name not in graph.initializers]
    if len(data_inputs) != 1:
        raise refusals.error(
            UnsupportedModelError, refusals.source, f"a HAWQ export has one input, this graph has {len(data_inputs)}"
        )
    x = data_inputs[0]
    if reading_divs(x):
        raise refusals.error(
            UnsupportedModelError, refusals.source,
            f"the graph input '{x.name}' is divided by the first layer's input scale with no quantizer before it "
            "(a HAWQ model without an input QuantAct): give the input its fixed-point type with {}"
            + ("" if refusals.asker is None else " (hawqc-opt: the pass input-precision before read-as-hawq)"),
            options=(("input_precision", "the pass input-precision{type=...} before read-as-hawq"),),
        )  # fmt: skip
    uses = x.uses()
    node = uses[0][0] if len(uses) == 1 else None
    view = quantizer(node) if node is not None and uses[0][1] == 0 else None
    parameters = view.integer_parameters(constant) if view is not None else None
    divs = reading_divs(node.outputs[0]) if parameters is not None else None
    if not divs or view.code_bounds is None or parameters[0].size != 1 or float(parameters[1].reshape(-1)[0]) != 0:
        raise refusals.error(
            UnsupportedModelError, refusals.source,
            f"the graph input '{x.name}' is not read by a HAWQ-export input quantizer Quant(x, s_in) -> Div(s_in)",
        )  # fmt: skip
    scale = constant(divs[0].inputs[1])
    if scale.reshape(-1).view(np.uint32)[0] == parameters[0].reshape(-1).view(np.uint32)[0]:
        if quant_params(node) is None:  # HAWQ's input QuantAct: round half to even, as torch.round
            raise refusals.error(UnsupportedModelError, describe(node), "not a HAWQ-export input quantizer (per tensor, zero point 0, ROUND)")
        return HawqInput(node, divs, scale, by_hand=False)
    if not float(scale.reshape(-1)[0]) > 0 or not is_power_of_two(float(parameters[0].reshape(-1)[0])):
        raise refusals.error(
            UnsupportedModelError, describe(divs[0]),
            f"divides the input by {float(scale.reshape(-1)[0])!r}, neither the scale of {describe(node)} nor, "
            "for a model without an input QuantAct, a positive scale after a fixed-point input type",
        )  # fmt: skip
    return HawqInput(node, divs, scale, by_hand=True)


def _output_layer(graph: ir.Graph, refusals: _Refusals) -> _OutputLayer:
    outputs = list(graph.outputs)
    mul = outputs[0].producer() if len(outputs) == 1 else None
    operands = scalar_operand(mul) if mul is not None and mul.op_type == "Mul" and mul.domain == "" else None
    if operands is None or not float(operands[1].reshape(-1)[0]) > 0:
        raise refusals.error(
            UnsupportedModelError, refusals.source, "the graph output is not a HAWQ-export last layer's Mul(acc, s_w * s_prev)"
        )
    accumulator, k = operands
    core = accumulator.producer()
    if core is not None and core.op_type == "Add" and core.domain == "" and single_use(accumulator) is mul:
        data = [value for value in core.inputs if constant(value) is None]
        core = data[0].producer() if len(data) == 1 else None
    if core is None or core.domain != "" or core.op_type not in ("MatMul", "Conv") or constant(core.inputs[1]) is None:
        raise refusals.error(UnsupportedModelError, describe(mul), "not the Mul of a MatMul / Conv layer's accumulator")
    return _OutputLayer(core, mul, accumulator, float(k.reshape(-1)[0]))


# ---- rewriting ---------------------------------------------------------------------------------


def rewrite_hawq_export(model: ir.Model, export: HawqExport) -> HawqExportReading:
    """Rewrite `model` in place into HAWQ's integer inference (see the module doc); record and
    return what was read."""
    graph = model.graph
    rounded = _round_first_layers(model, export) if rounds_first_layers(export.input) else 0
    requantizations = tuple(_rewrite_layer(graph, layer) for layer in export.layers)
    input_scale = _rewrite_input(graph, export.input, rounded)
    _rewrite_output(graph, export.output)
    _drop_unused_initializers(graph)
    model.metadata_props["hawqc.hawq.output_scale"] = json.dumps([export.output.k])  # the lifter's record
    infer_shapes(model)
    reading = HawqExportReading(
        requantizations, input_scale, export.output.k, input_act=not export.input.by_hand, first_layers_rounded=rounded
    )
    record_reading(model, reading)
    return reading


def hawq_dyadic(accumulator_scale: np.float32, activation_scale: np.float32) -> tuple[int, int, float]:
    """(m, e, m * 2^-e as float64): HAWQ's `batch_frexp` of its ratio `float64(k) / float64(s_a)`."""
    ratio = np.float64(np.float32(accumulator_scale)) / np.float64(np.float32(activation_scale))
    factor = dyadic(np.asarray(ratio))
    return int(factor.mantissa), int(factor.exponent), float(factor.as_float64())


def _rewrite_layer(graph: ir.Graph, layer: Layer) -> Requantization:
    quant = layer.quant.node
    name = quant.name or quant.outputs[0].name
    k, s_a = layer.k.reshape(-1)[0], layer.quant.scale.reshape(-1)[0]
    m, e, factor = hawq_dyadic(k, s_a)
    accumulator = next(value for value in layer.mul.inputs if constant(value) is None)
    old = [quant.inputs[0].producer(), layer.mul] if layer.relu else [layer.mul]
    new: list[ir.Node] = []
    value = accumulator
    if layer.relu:
        new.append(ir.node("Relu", [value], name=_fresh(graph, f"{name}_relu")))
        value = new[-1].outputs[0]
    new.append(ir.node("Cast", [value], attributes={"to": int(ir.DataType.DOUBLE)}, name=_fresh(graph, f"{name}_to_double")))
    multiplier = _initializer(graph, np.float64(factor), f"{name}_dyadic")
    new.append(ir.node("Mul", [new[-1].outputs[0], multiplier], name=_fresh(graph, f"{name}_dyadic_mul")))
    for node in new:
        node.outputs[0].name = _fresh(graph, f"{node.name}_out")
    graph.insert_before(quant, new)
    quant.replace_input_with(0, new[-1].outputs[0])
    quant.replace_input_with(1, _initializer(graph, np.ones_like(layer.quant.scale), f"{name}_unit_scale"))
    graph.remove(old, safe=True)
    for div in layer.readers:
        ir.convenience.replace_all_uses_with(div.outputs[0], div.inputs[0])
        graph.remove(div, safe=True)
    return Requantization(name, quant.outputs[0].name, float(k), float(s_a), m, e)


def _round_first_layers(model: ir.Model, export: HawqExport) -> int:
    """HAWQ's rounding of the float accumulator of each layer reading the input (no input QuantAct,
    `x / s_in` not always an integer: `hawqc.passes.hawq_export_input`); how many layers."""
    muls = {layer.core: layer.mul for layer in export.layers} | {export.output.core: export.output.mul}
    cores = first_layer_cores(export.input)
    for core in cores:  # each one a layer: find_hawq_export checked it
        round_accumulator(model.graph, core, muls[core], export.input)
    model.opset_imports.setdefault(QONNX_DOMAIN, 1)
    return len(cores)


def _rewrite_input(graph: ir.Graph, hawq_input: HawqInput, rounded: int) -> float:
    """The lifter's input quantizer (`plain_quant`): codes `clamp(round(x / s_in))`; without an input
    QuantAct, `x / s_in` (rounded in the accumulators when `rounded`, else integers)."""
    quant, divs, scale = hawq_input.quant, hawq_input.divs, hawq_input.scale.reshape(-1)[0]
    name = quant.name or quant.outputs[0].name
    if hawq_input.by_hand and rounded:
        return float(scale)  # the Divs stay: the accumulators' Quants round their sums
    if is_power_of_two(float(scale)):
        # Dividing by a power of two is multiplying by its inverse, exactly: the lifter's Mul.
        inverse = _initializer(graph, np.float32(1) / hawq_input.scale, f"{name}_inverse_scale")
        for div in divs:
            mul = ir.node("Mul", [div.inputs[0], inverse], name=_fresh(graph, f"{div.name}_to_codes"))
            mul.outputs[0].name = _fresh(graph, f"{mul.name}_out")
            graph.insert_before(div, mul)
            ir.convenience.replace_all_uses_with(div.outputs[0], mul.outputs[0])
            graph.remove(div, safe=True)
        return float(scale)
    # Otherwise Div(x, s_in) -> Quant(1): the same float32 quotient, without multiplying by s_in and
    # dividing back (which gives some codes back one ulp off).
    scaled = ir.node("Div", [quant.inputs[0], quant.inputs[1]], name=_fresh(graph, f"{name}_div"))
    scaled.outputs[0].name = _fresh(graph, f"{scaled.name}_out")
    graph.insert_before(quant, scaled)
    quant.replace_input_with(0, scaled.outputs[0])
    quant.replace_input_with(1, _initializer(graph, np.ones_like(hawq_input.scale), f"{name}_unit_scale"))
    for div in divs:
        ir.convenience.replace_all_uses_with(div.outputs[0], div.inputs[0])
        graph.remove(div, safe=True)
    return float(scale)


def _rewrite_output(graph: ir.Graph, output: _OutputLayer) -> None:
    """The accumulator becomes the graph output, under the output's name (HAWQ's codes; the scale
    goes to the metadata). The accumulator is read from the Mul now: HAWQ's rounding of a first
    layer's accumulator may stand between them since matching."""
    accumulator = next(value for value in output.mul.inputs if constant(value) is None)
    old = output.mul.outputs[0]
    name = old.name
    index = list(graph.outputs).index(old)
    graph.outputs[index] = accumulator
    graph.remove(output.mul, safe=True)
    old.name = None
    accumulator.name = name


def _initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    value = make_initializer(np.asarray(array), _fresh(graph, name))
    graph.register_initializer(value)
    return value


def _fresh(graph: ir.Graph, name: str) -> str:
    # Names are taken afresh at each call: the nodes built so far are inserted only at the end.
    return FreshNames(graph, first_suffix=2)(name)


def _drop_unused_initializers(graph: ir.Graph) -> None:
    """Initializers nothing reads any more: the scales of the removed Divs and Muls (a HAWQ export
    has no others)."""
    outputs = set(graph.outputs)
    for name, value in list(graph.initializers.items()):
        if not value.uses() and value not in outputs:
            del graph.initializers[name]
