"""`--hawq-export-semantics hawq`: read a HAWQ export as the integer inference HAWQ itself runs.

HAWQ's own exporter (`hawq2qonnx`, see `hawqc.passes.hawq_export_layers`) writes every
requantization as float32 rescales,

    acc -> Mul(k = fl32(s_w * s_prev)) -> Relu? -> Quant(s_a) -> (selection ops)* -> Div(s_a) -> next layer

while HAWQ's integer inference computes `clamp(round(relu(acc) * m / 2^e))` in double, with
`(m, e) = batch_frexp(k / s_a)` (`../shared/specs/hawq.md`). The two differ: float32 `(q * s_a) / s_a`
gives some codes back one ulp off, and `fl32(acc * k) / s_a` rounds across .5 where `acc * m / 2^e`
does not. `exact-requant` rewrites a layer only where it proves the file's float32 arithmetic equal
to a dyadic multiply; with HAWQ's calibrated scales that proof fails on most layers.

This module is a FRONTEND NORMALIZATION, not a pass: it deliberately changes the graph's meaning
from the file's float32 arithmetic to HAWQ's integer arithmetic (the model the user trained), so
it runs once after loading, before the pass pipeline and its translation validation, and only when
asked (`hawqc --hawq-export-semantics hawq`, `CompileOptions(hawq_export_semantics="hawq")`, or
`read_as_hawq(model)` from Python). It writes the canonical form of the HAWQ lifter
(`hawqc.frontends.hawq.lift`), whose graph carries integer codes:

- the input `Quant(x, s_in) -> Div(s_in)`: `Quant(x, s_in) -> Mul(1 / s_in)` for a power-of-two
  `s_in`, else `Div(x, s_in) -> Quant(x, 1)`: HAWQ's `clamp(round(x / s_in))`, as the lifter writes it;
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

The result (`HawqExportReading`) says how many requantizations were read so, with their `(m, e)`,
and how often the file's own float32 arithmetic differs from HAWQ's on sample inputs: it runs the
file as loaded and the normalized graph in semantic mode and counts the samples where any
requantized code differs, and where the output differs (the file's float output against
`fl32(accumulator * k)`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import OptionError, UnsupportedModelError, UserInputError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.dyadic import dyadic
from hawqc.ir.shape_inference import infer_shapes
from hawqc.ir.verifier import verify
from hawqc.passes.hawq_export_layers import (
    Layer,
    constant,
    is_power_of_two,
    match_layer,
    quant_params,
    reading_divs,
    scalar_operand,
    selection_source,
    single_use,
)

SEMANTICS = ("file", "hawq")
# How the refusals below name the option that asked for this reading (the command line: its flag).
OPTION = "hawq_export_semantics='hawq'"
READING_KEY = "hawqc.hawq_export.reading"
# Codes entering a layer are enumerated by nobody here: the matcher's limit only bounds the
# round-trip check of the codes a Div gives back, which is linear in the number of codes.
CODE_LIMIT = 1 << 24


def check_semantics(semantics: str) -> None:
    if semantics not in SEMANTICS:
        raise OptionError(f"{{}} must be one of {', '.join(SEMANTICS)}, got {semantics!r}", "hawq_export_semantics")


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
    samples: int  # inputs the file's float32 arithmetic was compared on (0: not measured)
    samples_with_other_codes: int  # some requantized code differs from HAWQ's
    samples_with_other_outputs: int  # the file's float output differs from fl32(HAWQ's accumulator * k)

    def summary(self) -> str:
        count = len(self.requantizations)
        line = (
            f"hawq export: {count} requantization{'s' if count != 1 else ''} read as HAWQ's integer "
            f"requantization (m / 2^e)"
        )
        if not self.samples:
            return line
        return (
            f"{line}; the file's float32 arithmetic differs from it on {self.samples_with_other_codes} of "
            f"{self.samples} samples (codes), {self.samples_with_other_outputs} (outputs)"
        )

    def as_dict(self) -> dict:
        return {"semantics": "hawq", **asdict(self)}


@dataclass(frozen=True)
class _OutputLayer:
    """The last layer: `core -> Add(b)? -> Mul(acc, k)` as the graph output."""

    core: ir.Node
    mul: ir.Node
    accumulator: ir.Value
    k: float


def read_as_hawq(model: ir.Model, *, source: str = "the model", samples: int = 1000, seed: int = 0) -> HawqExportReading:
    """Rewrite `model` (a HAWQ export as loaded) in place into HAWQ's integer inference; measure
    on `samples` inputs (seed `seed`) how often the file's own float32 arithmetic differs from it."""
    graph = model.graph
    layers = [layer for node in graph if (layer := _layer(node)) is not None]
    if not layers:
        raise UserInputError(
            f"{source}: {{}}: no HAWQ-export requantization (Mul(k) -> Relu? -> Quant(s_a) -> Div(s_a)) "
            f"found; compile this file without the option", option=OPTION
        )
    input_quant, input_divs = _input_quantizer(graph, source)
    output = _output_layer(graph, source)
    code_divs = {div for layer in layers for div in layer.readers} | set(input_divs)
    for core in [layer.core for layer in layers] + [output.core]:
        div = selection_source(core.inputs[0]).producer()
        if div not in code_divs:
            raise UnsupportedModelError(
                f"{describe(core)}: {{}}: its input is not the codes of a HAWQ-export activation "
                f"(Quant(s_a) -> Div(s_a))", option=OPTION
            )
    leftover = [node for node in graph if node.op_type == "Div" and node.domain == "" and node not in code_divs]
    if leftover:
        raise UnsupportedModelError(f"{describe(leftover[0])}: {{}}: a Div that is not part of a HAWQ-export layer", option=OPTION)

    original = ir.serde.deserialize_model(ir.serde.serialize_model(model)) if samples else None
    requantizations = tuple(_rewrite_layer(graph, layer) for layer in layers)
    input_scale = _rewrite_input(graph, input_quant, input_divs)
    _rewrite_output(graph, output)
    _drop_unused_initializers(graph)
    model.metadata_props["hawqc.hawq.output_scale"] = json.dumps([output.k])
    infer_shapes(model)
    verify(model)
    reading = HawqExportReading(requantizations, input_scale, output.k, 0, 0, 0)
    if original is not None:
        reading = _measure(original, model, reading, samples, seed)
    model.metadata_props[READING_KEY] = json.dumps(reading.as_dict())
    return reading


# ---- matching ----------------------------------------------------------------------------------


def _layer(node: ir.Node) -> Layer | None:
    """A requantized layer whose reading Divs divide by the Quant's own scale (HAWQ passes s_a on)."""
    if quant_params(node) is None:
        return None
    layer = match_layer(node, CODE_LIMIT)
    if layer is None:
        return None
    if layer.divisor.reshape(-1).view(np.uint32)[0] != layer.quant.scale.reshape(-1).view(np.uint32)[0]:
        raise UnsupportedModelError(
            f"{describe(layer.readers[0])}: {{}}: divides by {float(layer.divisor.reshape(-1)[0])!r}, not by "
            f"the activation scale {float(layer.quant.scale.reshape(-1)[0])!r} of {describe(node)}", option=OPTION
        )
    return layer


def _input_quantizer(graph: ir.Graph, source: str) -> tuple[ir.Node, list[ir.Node]]:
    """The graph input's `Quant(x, s_in)` and the Divs by `s_in` that turn it into codes."""
    data_inputs = [value for value in graph.inputs if value.name not in graph.initializers]
    if len(data_inputs) != 1:
        raise UnsupportedModelError(f"{source}: {{}}: a HAWQ export has one input, this graph has {len(data_inputs)}", option=OPTION)
    uses = data_inputs[0].uses()
    node = uses[0][0] if len(uses) == 1 else None
    params = quant_params(node) if node is not None and uses[0][1] == 0 else None
    divs = reading_divs(node.outputs[0]) if params is not None else None
    if not divs:
        raise UnsupportedModelError(
            f"{source}: {{}}: the graph input '{data_inputs[0].name}' is not read by a HAWQ-export input "
            f"quantizer Quant(x, s_in) -> Div(s_in)", option=OPTION
        )
    if any(constant(div.inputs[1]).reshape(-1).view(np.uint32)[0] != params.scale.reshape(-1).view(np.uint32)[0] for div in divs):
        raise UnsupportedModelError(f"{describe(divs[0])}: {{}}: does not divide by the input scale of {describe(node)}", option=OPTION)
    return node, divs


def _output_layer(graph: ir.Graph, source: str) -> _OutputLayer:
    outputs = list(graph.outputs)
    mul = outputs[0].producer() if len(outputs) == 1 else None
    operands = scalar_operand(mul) if mul is not None and mul.op_type == "Mul" and mul.domain == "" else None
    if operands is None or not float(operands[1].reshape(-1)[0]) > 0:
        raise UnsupportedModelError(
            f"{source}: {{}}: the graph output is not a HAWQ-export last layer's Mul(acc, s_w * s_prev)", option=OPTION
        )
    accumulator, k = operands
    core = accumulator.producer()
    if core is not None and core.op_type == "Add" and core.domain == "" and single_use(accumulator) is mul:
        data = [value for value in core.inputs if constant(value) is None]
        core = data[0].producer() if len(data) == 1 else None
    if core is None or core.domain != "" or core.op_type not in ("MatMul", "Conv") or constant(core.inputs[1]) is None:
        raise UnsupportedModelError(f"{describe(mul)}: {{}}: not the Mul of a MatMul / Conv layer's accumulator", option=OPTION)
    return _OutputLayer(core, mul, accumulator, float(k.reshape(-1)[0]))


# ---- rewriting ---------------------------------------------------------------------------------


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


def _rewrite_input(graph: ir.Graph, quant: ir.Node, divs: list[ir.Node]) -> float:
    """The lifter's input quantizer (`plain_quant`): codes `clamp(round(x / s_in))`."""
    params = quant_params(quant)
    scale = params.scale.reshape(-1)[0]
    name = quant.name or quant.outputs[0].name
    if is_power_of_two(float(scale)):
        # Dividing by a power of two is multiplying by its inverse, exactly: the lifter's Mul.
        inverse = _initializer(graph, np.float32(1) / params.scale, f"{name}_inverse_scale")
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
    quant.replace_input_with(1, _initializer(graph, np.ones_like(params.scale), f"{name}_unit_scale"))
    for div in divs:
        ir.convenience.replace_all_uses_with(div.outputs[0], div.inputs[0])
        graph.remove(div, safe=True)
    return float(scale)


def _rewrite_output(graph: ir.Graph, output: _OutputLayer) -> None:
    """The accumulator becomes the graph output, under the output's name (HAWQ's codes; the scale
    goes to the metadata)."""
    old = output.mul.outputs[0]
    name = old.name
    index = list(graph.outputs).index(old)
    graph.outputs[index] = output.accumulator
    graph.remove(output.mul, safe=True)
    old.name = None
    output.accumulator.name = name


def _initializer(graph: ir.Graph, array: np.ndarray, name: str) -> ir.Value:
    value = make_initializer(np.asarray(array), _fresh(graph, name))
    graph.register_initializer(value)
    return value


def _fresh(graph: ir.Graph, name: str) -> str:
    taken = set(graph.initializers) | {v.name for n in graph for v in n.outputs} | {v.name for v in graph.inputs}
    taken |= {n.name for n in graph}
    candidate, index = name, 1
    while candidate in taken:
        index += 1
        candidate = f"{name}_{index}"
    return candidate


def _drop_unused_initializers(graph: ir.Graph) -> None:
    """Initializers nothing reads any more: the scales of the removed Divs and Muls (a HAWQ export
    has no others)."""
    outputs = set(graph.outputs)
    for name, value in list(graph.initializers.items()):
        if not value.uses() and value not in outputs:
            del graph.initializers[name]


# ---- measuring ---------------------------------------------------------------------------------


def _measure(original: ir.Model, normalized: ir.Model, reading: HawqExportReading, samples: int, seed: int) -> HawqExportReading:
    """Count the samples where the file's arithmetic gives other codes or outputs than HAWQ's, in
    slices (`hawqc.sim.slicing`): `--verify 1000000000` measures on that many samples in the memory
    of one slice. The samples are `draw_inputs(original, samples, seed)`, drawn a slice at a time."""
    from hawqc.sim.executor import Executor
    from hawqc.sim.inputs import draw_input_slices
    from hawqc.sim.slicing import slice_size

    name = original.graph.inputs[0].name
    file_run, hawq_run = Executor(original), Executor(normalized)
    other_codes = other_outputs = 0
    for x in draw_input_slices(original, samples, seed, slice_size(original)):
        file_values = file_run.run({name: x}, keep_intermediates=True)
        hawq_values = hawq_run.run({name: x}, keep_intermediates=True)
        codes_differ = np.zeros(len(x), dtype=bool)
        for requantization in reading.requantizations:
            codes = requantization.codes
            file_codes = np.rint(file_values[codes].astype(np.float64) / requantization.activation_scale)
            codes_differ |= (file_codes != hawq_values[codes]).reshape(len(x), -1).any(axis=1)
        output = original.graph.outputs[0].name
        hawq_output = hawq_values[normalized.graph.outputs[0].name].astype(np.float32) * np.float32(reading.output_scale)
        other_codes += int(codes_differ.sum())
        other_outputs += int((file_values[output] != hawq_output).reshape(len(x), -1).any(axis=1).sum())
    return HawqExportReading(
        reading.requantizations, reading.input_scale, reading.output_scale, samples, other_codes, other_outputs
    )
