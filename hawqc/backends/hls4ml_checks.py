"""What hls4ml built and wrote is what hawqc planned: layers, wiring, and every type.

`ModelGraph.from_layer_list` runs hls4ml's flows on the planned layers; they may replace, drop or
insert layers and retype values. The checks here run twice: on the ModelGraph (hls4ml's objects),
and on the written `firmware/defines.h` (the C++ types the compiler will see).

What hls4ml may do, and is accepted:
- replace a planned layer by a same-named layer of a subclass (Conv2D with a 1x1 kernel becomes
  PointwiseConv2D, optimize_pointwise_conv);
- drop a planned layer that changes no value (`Planned.removable`: a linear activation into its
  input's own type, a reshape: io_parallel keeps data flat);
- in io_stream, insert `Clone` layers where a value has several readers (clone_output) and replace a
  reshape by `Repack` (reshape_stream): copies whose every output must have the type of the value
  they copy, which is checked, never assumed;
and nothing else: another inserted layer, a lost layer, a changed type or a rewired input is a
BackendError naming the layer.
"""

from __future__ import annotations

import re
from pathlib import Path

from hawqc.backends.hls4ml_binary_types import special_cpp_spelling
from hawqc.backends.hls4ml_plan import Plan, Planned
from hawqc.backends.hls4ml_target import Hls4mlTarget
from hawqc.backends.project import LayerReport
from hawqc.errors import BackendError

# (hls4ml layer class, type attribute) pairs that exist on a layer but that no kernel used here reads.
# Catapult's init_depconv2d gives every DepthwiseConv2D a `dw_output_t` (the intermediate type of
# a separable convolution), which only the SeparableConv templates read.
UNUSED_TYPES = frozenset(
    {
        ("Activation", "table_t"),
        ("ParametrizedActivation", "table_t"),
        ("Dense", "index_t"),
        ("DepthwiseConv2D", "dw_output_t"),
        # normalize_binary_tanh / normalize_ternary_tanh only compare the input with its thresholds.
        ("BatchNormalizationQuantizedTanh", "accum_t"),
    }
)

# Layers hls4ml inserts that only copy a value (io_stream).
COPY_CLASSES = frozenset({"Clone", "Repack"})


def _role(attr_name: str) -> str:
    return attr_name.removesuffix("_t")


class GraphMatch:
    """The layers of a ModelGraph, each matched to the planned layer it computes (or to none: a copy)."""

    def __init__(self, model_graph: object, plan: Plan) -> None:
        from hls4ml.model.layers import layer_map

        self.plan = plan
        self.layers = list(model_graph.get_layers())  # type: ignore[attr-defined]
        self.outputs = list(model_graph.outputs)  # type: ignore[attr-defined]
        self.producers = {out: layer for layer in self.layers for out in layer.outputs}
        self.planned: dict[str, Planned] = {}
        for layer in self.layers:
            planned = self._stand_in(layer)
            if planned is None:
                if layer.class_name not in COPY_CLASSES:
                    raise BackendError(f"hls4ml added layer {layer.name!r} ({layer.class_name}) that hawqc did not plan")
                continue
            expected_class = layer_map[planned.layer["class_name"]]
            if not isinstance(layer, expected_class) and layer.name == planned.name:
                raise BackendError(
                    f"hls4ml made layer {layer.name!r} ({planned.source}) a {layer.class_name}, not a {expected_class.__name__}"
                )
            self.planned[layer.name] = planned
        self.kept = {planned.name for planned in self.planned.values()}

    def _stand_in(self, layer: object) -> Planned | None:
        name = layer.name  # type: ignore[attr-defined]
        if name in self.plan.by_name:
            return self.plan.by_name[name]
        if layer.class_name == "Repack" and name.startswith("repack_"):  # type: ignore[attr-defined]
            replaced = self.plan.by_name.get(name[len("repack_") :])
            if replaced is not None and replaced.layer["class_name"] == "Reshape":
                return replaced
        return None

    def computed_by(self, output: str) -> str:
        """The planned layer whose value hls4ml's tensor `output` carries (through copies)."""
        layer = self.producers.get(output)
        if layer is None:
            raise BackendError(f"hls4ml tensor {output!r} has no producing layer")
        if layer.name in self.planned:
            return self.planned[layer.name].name
        return self.computed_by(layer.inputs[0])

    def expected_source(self, planned_name: str) -> str:
        """A planned input, or what it reads if hls4ml dropped it (it changes no value)."""
        while planned_name not in self.kept:
            planned = self.plan.by_name[planned_name]
            if not planned.removable:
                raise BackendError(f"hls4ml removed layer {planned_name!r} ({planned.source})")
            planned_name = planned.inputs[0]
        return planned_name


def check_graph(model_graph: object, plan: Plan, output_layer: str) -> GraphMatch:
    """Every layer hls4ml kept is planned (or a copy), has hawqc's types, reads what it should."""
    match = GraphMatch(model_graph, plan)
    for planned in plan.layers:
        if planned.name not in match.kept:
            match.expected_source(planned.name)  # raises unless removable
    for layer in match.layers:
        planned = match.planned.get(layer.name)
        if planned is None:
            _check_copy(layer)
            continue
        _check_layer_types(layer, planned)
        if planned.layer["class_name"] == "InputLayer":
            continue
        got = [match.computed_by(name) for name in layer.inputs]
        want = [match.expected_source(name) for name in planned.inputs]
        if got != want:
            raise BackendError(f"hls4ml wired layer {layer.name!r} ({planned.source}) to {got}; hawqc planned {want}")
    if [match.computed_by(name) for name in match.outputs] != [match.expected_source(output_layer)]:
        raise BackendError(f"hls4ml's model output is {match.outputs}; hawqc planned layer {output_layer!r}")
    return match


def _check_copy(layer: object) -> None:
    source = layer.get_input_variable().type.precision  # type: ignore[attr-defined]
    for variable in layer.variables.values():  # type: ignore[attr-defined]
        if variable.type.precision != source:
            raise BackendError(
                f"hls4ml's {layer.class_name} {layer.name!r} copies a value of type {source} "  # type: ignore[attr-defined]
                f"into {variable.type.precision}"
            )


def _check_layer_types(layer: object, planned: Planned) -> None:
    name, class_name = layer.name, layer.class_name  # type: ignore[attr-defined]
    for attr_name, named_type in layer.types.items():  # type: ignore[attr-defined]
        expected = planned.types.get(_role(attr_name))
        if expected is None:
            if (class_name, attr_name) in UNUSED_TYPES:
                continue
            raise BackendError(
                f"hls4ml gave layer {name!r} ({class_name}) a type {attr_name}={named_type.precision} that hawqc did not choose"
            )
        if named_type.precision != expected.to_hls4ml():
            raise BackendError(f"hls4ml changed {attr_name} of layer {name!r} to {named_type.precision}; hawqc chose {expected}")
    for variable in layer.variables.values():  # type: ignore[attr-defined]
        if variable.type.precision != planned.types["result"].to_hls4ml():
            raise BackendError(
                f"hls4ml changed the result of layer {name!r} to {variable.type.precision}; hawqc chose {planned.types['result']}"
            )
    for role, weight in layer.weights.items():  # type: ignore[attr-defined]
        expected = planned.types.get(role)
        if expected is None:
            raise BackendError(f"hls4ml gave layer {name!r} ({class_name}) weights {role!r} that hawqc did not plan")
        if weight.type.precision != expected.to_hls4ml():
            raise BackendError(f"hls4ml stores {role} of layer {name!r} as {weight.type.precision}; hawqc chose {expected}")


_TYPEDEF = re.compile(r"^\s*typedef\s+(.+?)\s+(\w+)\s*;", re.MULTILINE)


def read_typedefs(defines_h: Path) -> dict[str, str]:
    """name -> C++ type of every typedef in a written `defines.h`."""
    return {name: re.sub(r"\s+", "", text) for text, name in _TYPEDEF.findall(defines_h.read_text())}


def element_type(text: str) -> str:
    """`nnet::array<T,N>` (the io_stream packing of a value) -> `T`; anything else unchanged."""
    if not (text.startswith("nnet::array<") and text.endswith(">")):
        return text
    inner = text[len("nnet::array<") : -1]
    depth = 0
    for i in range(len(inner) - 1, -1, -1):
        depth += {">": 1, "<": -1}.get(inner[i], 0)
        if inner[i] == "," and depth == 0:
            return inner[:i]
    return text


def check_written_types(match: GraphMatch, target: Hls4mlTarget, defines_h: Path) -> list[LayerReport]:
    """The written defines.h spells exactly hawqc's types; returns the per-layer report, in the
    order of the generated code, hls4ml's copies included."""
    typedefs = read_typedefs(defines_h)

    def written(type_name: str) -> str | None:
        text = typedefs.get(type_name)
        return element_type(text) if text is not None else None

    reports = []
    for layer in match.layers:
        planned = match.planned.get(layer.name)
        if planned is None:
            source = match.plan.by_name[match.computed_by(layer.inputs[0])]
            expected = re.sub(r"\s+", "", target.cpp_spelling(source.types["result"]))
            for variable in layer.variables.values():
                text = written(variable.type.name)
                if text != expected:
                    raise BackendError(
                        f"{defines_h}: {variable.type.name} of hls4ml's {layer.class_name} {layer.name!r} is {text!r}; "
                        f"it copies {expected!r}"
                    )
            op = f"{layer.class_name} (inserted by hls4ml)"
            reports.append(LayerReport(layer.name, op, str(source.types["result"]), {"result": expected}))
            continue
        named = {_role(attr): t for attr, t in layer.types.items() if (layer.class_name, attr) not in UNUSED_TYPES}
        named["result"] = layer.get_output_variable().type
        types: dict[str, str] = {}
        for role, fixed in planned.types.items():
            type_name = named[role].name
            text = written(type_name)
            expected = re.sub(r"\s+", "", special_cpp_spelling(fixed, target.hls4ml_backend) or target.cpp_spelling(fixed))
            if text != expected:
                raise BackendError(f"{defines_h}: {type_name} of layer {layer.name!r} is {text!r}; hawqc chose {expected!r}")
            types[role] = text
        reports.append(LayerReport(layer.name, planned.op, str(planned.types["result"]), types))
    return reports
