"""Lower a quantized MLP to an hls4ml project, with every type chosen by hawqc.

The graph is matched into hls4ml layers:
    Quant(graph input)                 -> InputLayer   (the float->fixed conversion of the C
                                                        bridge rounds and saturates: it IS the Quant)
    MatMul(x, W) [+ Add(constant b)]   -> Dense        (weight, bias, accum, result from precision.py)
    Relu [-> Quant]                    -> Activation relu   (result: the Quant's type when fused)
    Quant(activation)                  -> Activation linear (a cast to the Quant's type)
anything else raises UnsupportedModelError naming the node.

`ModelGraph.from_layer_list` then runs hls4ml's own flows, which may retype or drop layers. hawqc
asserts afterwards, on the ModelGraph and again on the written `firmware/defines.h`, that every
value-carrying type is the one it chose; hls4ml types that no kernel of these layers reads (the
lookup-table type of relu/linear, the sparse index type of a dense layer) are listed explicitly.
"""

from __future__ import annotations

import contextlib
import io
import keyword
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx_ir as ir

from hawqc.backends.project import CSimRecipe, LayerReport, LoweredProject
from hawqc.errors import BackendError, UnsupportedModelError
from hawqc.ir.domains import is_quant
from hawqc.ir.diagnostics import describe
from hawqc.ir.precision import PrecisionResult, infer_types
from hawqc.ir.qtypes import FixedType

IO_TYPES = ("io_parallel", "io_stream")

# (hls4ml layer class, type attribute) pairs that exist on a layer but that no kernel used here reads.
UNUSED_TYPES = frozenset({("Activation", "table_t"), ("Dense", "index_t")})

# Model-wide fallback precision. hawqc sets every layer's types by name, so this must never appear
# in a written project; the checks below would name the layer if it did.
FALLBACK_PRECISION = "fixed<1,1>"

# C++ keywords that a graph name might spell; hls4ml uses layer names as C++ identifiers.
_CPP_KEYWORDS = frozenset(
    "alignas alignof and asm auto bitand bitor bool break case catch char class compl const constexpr "
    "continue default delete do double else enum explicit export extern false float for friend goto if "
    "inline int long mutable namespace new noexcept not nullptr operator or private protected public "
    "register return short signed sizeof static struct switch template this throw true try typedef "
    "typeid typename union unsigned using virtual void volatile while xor".split()
)


@dataclass(frozen=True)
class Hls4mlTarget:
    """What differs between the hls4ml backends hawqc lowers to."""

    name: str
    hls4ml_backend: str
    options: Mapping[str, object]
    cpp_spelling: Callable[[FixedType], str]
    csim: Callable[[str], CSimRecipe]
    # Restrictions of the backend's type translation; raises UnsupportedModelError.
    check_type: Callable[[FixedType, str], None] = lambda fixed, where: None
    # hls4ml's Catapult writer always leaves `<outdir>.tar.gz` next to the project.
    writes_tarball: bool = False


@dataclass
class _Planned:
    name: str
    op: str
    source: str
    layer: dict
    types: dict[str, FixedType]
    # hls4ml's eliminate_linear_activation drops a linear activation whose input type equals its
    # result type; that cast is the identity, so the drop is harmless.
    removable: bool = False


@dataclass
class _Plan:
    layers: list[_Planned] = field(default_factory=list)
    by_name: dict[str, _Planned] = field(default_factory=dict)
    value_layer: dict[str, str] = field(default_factory=dict)
    used_names: set[str] = field(default_factory=set)
    input_name: str = ""
    input_shape: tuple[int, ...] = ()

    def add(self, planned: _Planned) -> None:
        self.layers.append(planned)
        self.by_name[planned.name] = planned

    def unique_name(self, raw: str) -> str:
        """A valid C++ identifier, unique case-insensitively (hls4ml lower-cases names in its config)."""
        name = re.sub(r"\W", "_", raw) or "layer"
        if name[0].isdigit():
            name = "n_" + name
        if name.lower() == "input" or name in _CPP_KEYWORDS or keyword.iskeyword(name):
            name += "_"
        candidate, i = name, 1
        while candidate.lower() in self.used_names:
            candidate = f"{name}_{i}"
            i += 1
        self.used_names.add(candidate.lower())
        return candidate


def _consumers(value: ir.Value) -> list[ir.Node]:
    return list(value.consumers())


def _only_consumer(value: ir.Value) -> ir.Node | None:
    users = _consumers(value)
    if len(users) != 1 or value.is_graph_output():
        return None
    return users[0]


def _feature_dims(value: ir.Value, node: ir.Node) -> tuple[int, ...]:
    """Dims without the batch dimension (the first); hls4ml's C function takes one sample."""
    if value.shape is None:
        raise UnsupportedModelError(f"{describe(node)}: shape of {value.name!r} is unknown (run shape inference)")
    dims = tuple(value.shape)
    if len(dims) < 2 or not all(isinstance(d, int) for d in dims[1:]):
        raise UnsupportedModelError(
            f"{describe(node)}: {value.name!r} must be [batch, features...] with static features, got {list(dims)}"
        )
    return tuple(int(d) for d in dims[1:])


class _Planner:
    def __init__(self, model: ir.Model, precision: PrecisionResult, target: Hls4mlTarget) -> None:
        self.model = model
        self.graph = model.graph
        self.precision = precision
        self.target = target
        self.plan = _Plan()
        self.consumed: set[int] = set()

    def source_layer(self, node: ir.Node, value: ir.Value | None) -> str:
        if value is None or value.name not in self.plan.value_layer:
            name = value.name if value is not None else "<missing>"
            raise UnsupportedModelError(
                f"{describe(node)}: input {name!r} is not produced by a lowered layer "
                "(unsupported producer, or the graph is not topologically sorted)"
            )
        return self.plan.value_layer[value.name]

    def typed(self, value_name: str, node: ir.Node) -> FixedType:
        fixed = self.precision.types.get(value_name)
        if fixed is None:
            raise UnsupportedModelError(f"{describe(node)}: no type inferred for {value_name!r}")
        return fixed

    def run(self) -> _Plan:
        if len(self.graph.inputs) != 1 or len(self.graph.outputs) != 1:
            raise UnsupportedModelError(
                f"graph has {len(self.graph.inputs)} inputs and {len(self.graph.outputs)} outputs; "
                "the hls4ml lowering takes exactly one of each"
            )
        for node in self.graph:
            if id(node) in self.consumed:
                continue
            self.lower_node(node)
        out = self.graph.outputs[0]
        if out.name not in self.plan.value_layer:
            raise UnsupportedModelError(f"graph output {out.name!r} is not produced by a lowered layer")
        for planned in self.plan.layers:
            for role, fixed in planned.types.items():
                self.target.check_type(fixed, f"layer {planned.name!r} ({planned.source}) {role}")
        return self.plan

    def lower_node(self, node: ir.Node) -> None:
        if is_quant(node.op_type, node.domain):
            out = node.outputs[0].name
            if out in self.precision.constants:
                return  # a weight or bias quantizer: folded into the layer that reads it
            x = node.inputs[0]
            if x is not None and x.is_graph_input():
                self.input_layer(node, x)
            else:
                self.linear_layer(node)
            return
        if node.domain in ("", "ai.onnx"):
            if node.op_type == "MatMul":
                self.dense_layer(node)
                return
            if node.op_type == "Relu":
                self.relu_layer(node)
                return
            if node.op_type == "Add":
                raise UnsupportedModelError(
                    f"{describe(node)}: only an Add of a constant bias directly after a MatMul is lowered"
                )
        raise UnsupportedModelError(f"{describe(node)}: op is not supported by the hls4ml lowering")

    def input_layer(self, node: ir.Node, x: ir.Value) -> None:
        if len(_consumers(x)) != 1:
            raise UnsupportedModelError(f"{describe(node)}: graph input {x.name!r} must feed only its Quant")
        shape = _feature_dims(x, node)
        name = self.plan.unique_name(x.name)
        out = node.outputs[0].name
        layer = {"class_name": "InputLayer", "name": name, "input_shape": list(shape), "inputs": []}
        self.plan.add(_Planned(name, "Input", describe(node), layer, {"result": self.typed(out, node)}))
        self.plan.value_layer[out] = name
        self.plan.input_name, self.plan.input_shape = name, shape

    def dense_layer(self, node: ir.Node) -> None:
        x, w = node.inputs[0], node.inputs[1]
        prev = self.source_layer(node, x)
        if w is None or w.name not in self.precision.constants:
            raise UnsupportedModelError(f"{describe(node)}: the right operand must be constant weights")
        weights = self.precision.constants[w.name]
        if weights.ndim != 2:
            raise UnsupportedModelError(f"{describe(node)}: weights must be 2-D, got {list(weights.shape)}")
        n_in, n_out = weights.shape
        if x is not None and len(_feature_dims(x, node)) != 1:
            # hls4ml turns a Dense on a multi-dimensional input into a pointwise convolution.
            raise UnsupportedModelError(f"{describe(node)}: only [batch, features] inputs are lowered to Dense")
        result_value = node.outputs[0]
        bias = None
        bias_type = None
        add = _only_consumer(result_value)
        if add is not None and add.op_type == "Add" and add.domain in ("", "ai.onnx"):
            other = add.inputs[1] if add.inputs[0] is result_value else add.inputs[0]
            if other is not None and other.name in self.precision.constants:
                data = self.precision.constants[other.name]
                if data.size not in (1, n_out) or (data.ndim > 0 and data.shape[-1] not in (1, n_out)):
                    raise UnsupportedModelError(f"{describe(add)}: bias of shape {list(data.shape)} is not per output")
                bias = np.broadcast_to(data.reshape(-1), (n_out,)).astype(np.float64)
                bias_type = self.typed(other.name, add)
                result_value = add.outputs[0]
                self.consumed.add(id(add))
        accum = self.precision.accumulators.get(result_value.name)
        if accum is None:
            raise UnsupportedModelError(f"{describe(node)}: no accumulator type inferred")
        if bias is None:
            # hls4ml always adds a bias array; a zero one of the narrowest type, chosen here.
            bias = np.zeros(n_out)
            bias_type = FixedType.covering(Fraction(0), Fraction(0), accum.lsb_exponent)
        name = self.plan.unique_name(node.name or result_value.name)
        layer = {
            "class_name": "Dense",
            "name": name,
            "inputs": [prev],
            "n_in": int(n_in),
            "n_out": int(n_out),
            # [n_in, n_out], the layout hls4ml's ONNX MatMul path hands to Dense.
            "weight_data": np.ascontiguousarray(weights, dtype=np.float64),
            "bias_data": bias,
            "use_bias": True,
        }
        types = {
            "weight": self.typed(w.name, node),
            "bias": bias_type,
            "accum": accum,
            "result": self.typed(result_value.name, node),
        }
        self.plan.add(_Planned(name, "Dense", describe(node), layer, types))
        self.plan.value_layer[result_value.name] = name

    def relu_layer(self, node: ir.Node) -> None:
        prev = self.source_layer(node, node.inputs[0])
        result_value = node.outputs[0]
        quant = _only_consumer(result_value)
        if quant is not None and is_quant(quant.op_type, quant.domain):
            # relu writes `res = data` (or 0) into the result type, which rounds and saturates like
            # the Quant; fusing saves a layer and an intermediate array.
            result_value = quant.outputs[0]
            self.consumed.add(id(quant))
        name = self.plan.unique_name(node.name or result_value.name)
        layer = {"class_name": "Activation", "name": name, "activation": "relu", "inputs": [prev]}
        types = {"result": self.typed(result_value.name, node)}
        self.plan.add(_Planned(name, "Activation(relu)", describe(node), layer, types))
        self.plan.value_layer[result_value.name] = name

    def linear_layer(self, node: ir.Node) -> None:
        prev = self.source_layer(node, node.inputs[0])
        result_value = node.outputs[0]
        name = self.plan.unique_name(node.name or result_value.name)
        layer = {"class_name": "Activation", "name": name, "activation": "linear", "inputs": [prev]}
        fixed = self.typed(result_value.name, node)
        removable = self.plan.by_name[prev].types["result"] == fixed
        self.plan.add(_Planned(name, "Activation(linear)", describe(node), layer, {"result": fixed}, removable))
        self.plan.value_layer[result_value.name] = name


def _hls_config(plan: _Plan) -> dict:
    layer_names = {
        planned.name: {
            "Precision": {role: fixed.hls4ml_string() for role, fixed in planned.types.items()},
            "ReuseFactor": 1,
            "Strategy": "Latency",
        }
        for planned in plan.layers
    }
    return {
        "Model": {"Precision": {"default": FALLBACK_PRECISION}, "ReuseFactor": 1, "Strategy": "Latency"},
        "LayerName": layer_names,
    }


def _check_graph_types(model_graph: object, plan: _Plan) -> None:
    """Every type of every layer hls4ml kept is hawqc's (or listed as unused)."""
    present = set()
    for layer in model_graph.get_layers():  # type: ignore[attr-defined]
        planned = plan.by_name.get(layer.name)
        if planned is None:
            raise BackendError(f"hls4ml added layer {layer.name!r} ({layer.class_name}) that hawqc did not plan")
        present.add(layer.name)
        for attr_name, named_type in layer.types.items():
            role = attr_name[:-2] if attr_name.endswith("_t") else attr_name
            expected = planned.types.get(role)
            if expected is None:
                if (layer.class_name, attr_name) in UNUSED_TYPES:
                    continue
                raise BackendError(
                    f"hls4ml gave layer {layer.name!r} ({layer.class_name}) a type {attr_name}="
                    f"{named_type.precision} that hawqc did not choose"
                )
            if named_type.precision != expected.to_hls4ml():
                raise BackendError(
                    f"hls4ml changed {attr_name} of layer {layer.name!r} to {named_type.precision}; hawqc chose {expected}"
                )
        result = layer.get_output_variable().type.precision
        if result != planned.types["result"].to_hls4ml():
            raise BackendError(
                f"hls4ml changed the result of layer {layer.name!r} to {result}; hawqc chose {planned.types['result']}"
            )
        for role in ("weight", "bias"):
            if role in planned.types:
                var_precision = layer.weights[role].type.precision
                if var_precision != planned.types[role].to_hls4ml():
                    raise BackendError(f"hls4ml stores {role} of layer {layer.name!r} as {var_precision}")
    for planned in plan.layers:
        if planned.name not in present and not planned.removable:
            raise BackendError(f"hls4ml removed layer {planned.name!r} ({planned.source})")


_TYPEDEF = re.compile(r"^\s*typedef\s+(.+?)\s+(\w+)\s*;", re.MULTILINE)


def read_typedefs(defines_h: Path) -> dict[str, str]:
    """name -> C++ type of every typedef in a written `defines.h`."""
    return {name: re.sub(r"\s+", "", text) for text, name in _TYPEDEF.findall(defines_h.read_text())}


def _element_type(text: str) -> str:
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


def _check_written_types(
    model_graph: object, plan: _Plan, target: Hls4mlTarget, defines_h: Path
) -> list[LayerReport]:
    """The written defines.h spells exactly hawqc's types; returns the per-layer report."""
    typedefs = read_typedefs(defines_h)
    reports = []
    for layer in model_graph.get_layers():  # type: ignore[attr-defined]
        planned = plan.by_name[layer.name]
        named = {
            (attr[:-2] if attr.endswith("_t") else attr): t
            for attr, t in layer.types.items()
            if (layer.class_name, attr) not in UNUSED_TYPES
        }
        named["result"] = layer.get_output_variable().type
        written: dict[str, str] = {}
        for role, fixed in planned.types.items():
            type_name = named[role].name
            text = typedefs.get(type_name)
            text = _element_type(text) if text is not None else None
            expected = re.sub(r"\s+", "", target.cpp_spelling(fixed))
            if text != expected:
                raise BackendError(
                    f"{defines_h}: {type_name} of layer {layer.name!r} is {text!r}; hawqc chose {expected!r}"
                )
            written[role] = text
        reports.append(LayerReport(layer.name, planned.op, str(planned.types["result"]), written))
    return reports


def lower_with_hls4ml(
    model: ir.Model,
    outdir: Path,
    target: Hls4mlTarget,
    *,
    project_name: str = "myproject",
    io_type: str = "io_parallel",
) -> LoweredProject:
    """Plan the layers, build the ModelGraph, check its types, write the project, check it again."""
    if io_type not in IO_TYPES:
        raise UnsupportedModelError(f"io_type {io_type!r}; known: {', '.join(IO_TYPES)}")
    if not re.fullmatch(r"[A-Za-z_]\w*", project_name):
        raise BackendError(f"project name {project_name!r} is not a C identifier")
    precision = infer_types(model)
    plan = _Planner(model, precision, target).run()

    from hls4ml.model.graph import ModelGraph
    from hls4ml.utils.config import create_config

    outdir = Path(outdir).resolve()
    config = create_config(
        output_dir=str(outdir),
        project_name=project_name,
        backend=target.hls4ml_backend,
        io_type=io_type,
        **target.options,
    )
    config["HLSConfig"] = _hls_config(plan)
    output_layer = plan.value_layer[model.graph.outputs[0].name]
    tarball = outdir.with_name(outdir.name + ".tar.gz")
    tarball_existed = tarball.exists()
    # hls4ml prints progress and warns about attributes it overrides from the config (which is the
    # point of the config here); keep both off the user's terminal.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore", UserWarning)
        model_graph = ModelGraph.from_layer_list(
            config, [p.layer for p in plan.layers], inputs=[plan.input_name], outputs=[output_layer]
        )
        _check_graph_types(model_graph, plan)
        model_graph.write()
    if target.writes_tarball and not tarball_existed and tarball.exists():
        tarball.unlink()

    layers = _check_written_types(model_graph, plan, target, outdir / "firmware" / "defines.h")
    output_var = model_graph.get_output_variables()[0]
    return LoweredProject(
        outdir=outdir,
        backend=target.name,
        project_name=project_name,
        io_type=io_type,
        layers=layers,
        input_shape=plan.input_shape,
        output_shape=tuple(int(d) for d in output_var.shape),
        input_name=model.graph.inputs[0].name,
        output_name=model.graph.outputs[0].name,
        csim=target.csim(project_name),
    )


@dataclass(frozen=True)
class Hls4mlBackend:
    """The `Backend` of one hls4ml target: Vivado, Vitis and Catapult differ only in their target."""

    target: Hls4mlTarget

    @property
    def name(self) -> str:
        return self.target.name

    def lower(
        self, model: ir.Model, outdir: Path, *, project_name: str = "myproject", io_type: str = "io_parallel"
    ) -> LoweredProject:
        return lower_with_hls4ml(model, outdir, self.target, project_name=project_name, io_type=io_type)
