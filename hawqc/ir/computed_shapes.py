"""Shapes a graph computes that are constants in fact: the target of a `Reshape` read from `Shape`.

Exporters (FINN, Brevitas, torch.onnx of `x.view(x.size(0), -1)`) write a flatten as

    Shape(x) -> Gather(indices=0) -> Unsqueeze -> Concat([that, [-1]]) -> Reshape(x, ...)

(or `Slice` for `Gather`, indices in `Constant` nodes, opset 9 attributes or opset 13 inputs). Its
target is computed at run time, so onnx's shape inference leaves the Reshape's output, and everything
after it, unknown. But the only run-time facts it reads are dims, and the dims are known: static ones
are numbers, and the batch dim, symbolic or unset, is the same dim wherever it is read.

So the shape subgraph is evaluated partially, at load (`fold_computed_shapes`): each integer value of
rank 0 or 1 it computes is a tuple of elements, each a number or a `Dim` (a dim known by name only:
an input's `N`, or an unset dim followed through the ops that keep it, see `_dim`). Rules: `Shape`
(with `start` / `end`), `Gather` (axis 0, constant indices), `Slice`, `Concat`, `Unsqueeze` /
`Squeeze` of a scalar / one-element vector, `Cast` to an integer type, `Identity`, and integer `Add`,
`Sub`, `Mul` on numbers. A Reshape target evaluated to numbers, and to `Dim`s that are the data's own
dim at the same position (`[N, -1]` from `Shape(x)[0]` for `Reshape(x)`: written 0, ONNX's "copy
this dim", which is the same at every batch), becomes a constant; the nodes that only computed it go.
This is exact: for every input of the declared shape, the constant is what the subgraph computes.

A target that reads anything else (a value computed from data, a dim that is not the data's own at
that position) is not folded; `prepare_model` refuses it, naming the Reshape and the node the
evaluation stopped at. Only Reshape targets are folded: they are what exporters compute; other
readers of computed shapes (Expand, Tile, ConstantOfShape, Resize sizes) are left to onnx.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.keys import STANDARD_DOMAINS
from hawqc.ir.ops.reading import opset_version
from hawqc.ir.ops.traits import Trait, has_trait

_INTEGER_TYPES = frozenset(
    {ir.DataType.INT64, ir.DataType.INT32, ir.DataType.INT16, ir.DataType.INT8, ir.DataType.UINT64, ir.DataType.UINT32,
     ir.DataType.UINT16, ir.DataType.UINT8}
)  # fmt: skip


@dataclass(frozen=True)
class Dim:
    """A dim known by identity only: the graph's symbolic dim `name` (`unset` False: equal wherever
    the name is, as ONNX means a dim_param), or an unset dim, named after the value and axis it was
    first seen at (`unset` True: equal only to itself)."""

    name: str
    unset: bool = False

    def __str__(self) -> str:
        return f"(unset) {self.name}" if self.unset else repr(self.name)


Element = int | Dim


@dataclass(frozen=True)
class Evaluated:
    """An integer value of the shape subgraph: its elements, and whether it is a scalar."""

    elements: tuple[Element, ...]
    scalar: bool = False


class NotAShape(Exception):
    """The value is not computed from dims alone; `node` is where the evaluation stopped."""

    def __init__(self, node: ir.Node | None, reason: str) -> None:
        super().__init__(reason)
        self.node, self.reason = node, reason


@dataclass
class FoldOutcome:
    folded: int = 0
    # Reshapes whose target is computed and could not be evaluated: (the Reshape, why).
    unresolved: list[tuple[ir.Node, str]] = field(default_factory=list)


def fold_computed_shapes(model: ir.Model) -> FoldOutcome:
    """Replace every computed Reshape target that is a constant in fact by that constant; the nodes
    that only computed it are removed. Needs the shapes onnx infers (run `infer_shapes` first)."""
    graph = model.graph
    outcome = FoldOutcome()
    names = FreshNames(graph)
    evaluator = _Evaluator()
    renames: list[tuple[ir.Value, str]] = []
    for node in list(graph):
        if node.domain not in STANDARD_DOMAINS or node.op_type != "Reshape" or len(node.inputs) < 2:
            continue
        target = node.inputs[1]
        if target is None or target.const_value is not None or target.producer() is None:
            continue
        try:
            dims = _reshape_target(node, evaluator.evaluate(target))
        except NotAShape as stop:
            where = "" if stop.node is None or stop.node is node else f" at {describe(stop.node)}"
            outcome.unresolved.append((node, f"its target shape {target.name!r} is computed from more than shapes{where}: {stop.reason}"))
            continue
        constant = make_initializer(np.asarray(dims, dtype=np.int64), names(f"{target.name}_static"))
        graph.register_initializer(constant)
        node.replace_input_with(1, constant)
        renames.append((constant, target.name))
        outcome.folded += 1
    if outcome.folded:
        _remove_unused(graph, evaluator.visited)
        # The constant takes the computed value's name where that value went with its chain (as a
        # folded result keeps its name in fold-constants): the user finds the name of their file.
        taken = {v.name for v in graph.inputs} | {v.name for n in graph for v in n.outputs}
        for constant, name in renames:
            if name not in taken and name not in graph.initializers:
                constant.name = name
                constant.const_value.name = name
    return outcome


def _reshape_target(reshape: ir.Node, target: Evaluated) -> list[int]:
    """The constant target: numbers as they are, a `Dim` only where it is the data's own dim at that
    position (written 0: copy it), which needs allowzero = 0."""
    if target.scalar:
        raise NotAShape(reshape, "the shape input is a scalar")
    data = reshape.inputs[0]
    allowzero = reshape.attributes.get_int("allowzero", 0)
    dims = []
    for index, element in enumerate(target.elements):
        if isinstance(element, int):
            dims.append(element)
            continue
        own = _dim(data, index) if data is not None and data.shape is not None and index < len(data.shape) else None
        if own != element:
            raise NotAShape(reshape, f"dim {index} of the target is the dim {element} of unknown size, not the data's dim {index}")
        if allowzero:
            raise NotAShape(reshape, f"dim {index} of the target is the data's own dim of unknown size, and allowzero=1 cannot copy it")
        dims.append(0)
    return dims


def _dim(value: ir.Value, axis: int) -> Element:
    """Dim `axis` of `value`: a number, a symbolic dim by its name, or an unset dim followed back
    through the ops that keep it (the same dim of input 0: quantizers, Relu and other elementwise ops
    whose other inputs broadcast along it; Transpose by its perm; dim 0 through convolutions, pools,
    BatchNorm, Flatten and MatMul), to the dim it was first seen at."""
    if axis >= len(value.shape):
        return Dim(f"{value.name}[{axis}]", unset=True)
    dim = value.shape[axis]
    if isinstance(dim, int):
        return dim
    if isinstance(dim, ir.SymbolicDim) and dim.value is not None:
        return Dim(dim.value)
    source = _kept_from(value, axis)
    if source is not None:
        return _dim(*source)
    return Dim(f"{value.name}[{axis}]", unset=True)


def _kept_from(value: ir.Value, axis: int) -> tuple[ir.Value, int] | None:
    node = value.producer()
    if node is None or not node.inputs or node.inputs[0] is None or node.inputs[0].shape is None:
        return None
    first = node.inputs[0]
    rank = len(value.shape)
    if has_trait(node, Trait.KEEPS_INPUT_SHAPE):
        return first, axis
    if has_trait(node, Trait.ELEMENTWISE) and len(first.shape) == rank:
        others_broadcast = all(
            other is not None and other.shape is not None and _broadcasts_along(other.shape, rank, axis)
            for other in node.inputs[1:]
        )
        return (first, axis) if others_broadcast else None
    if node.domain in STANDARD_DOMAINS and node.op_type == "Transpose":
        perm = node.attributes.get_ints("perm", None)
        perm = list(perm) if perm is not None else list(reversed(range(rank)))
        return first, perm[axis]
    keeps_batch = has_trait(node, Trait.CHANNELS_FIRST) or has_trait(node, Trait.CHANNELS_LAST) or (
        node.domain in STANDARD_DOMAINS and node.op_type in ("Flatten", "MatMul", "Gemm")
    )
    if axis == 0 and keeps_batch and len(first.shape) >= 2 and (node.op_type != "Flatten" or node.attributes.get_int("axis", 1) >= 1):
        return first, 0
    return None


def _broadcasts_along(shape: ir.Shape, rank: int, axis: int) -> bool:
    """A tensor of `shape` broadcast to rank `rank` has size 1 at `axis` (or lacks it)."""
    offset = rank - len(shape)
    return axis < offset or shape[axis - offset] == 1


class _Evaluator:
    """Partial evaluation of integer values of rank 0 or 1 (see the module docstring)."""

    def __init__(self) -> None:
        self.values: dict[ir.Value, Evaluated] = {}
        self.visited: set[ir.Node] = set()

    def evaluate(self, value: ir.Value) -> Evaluated:
        if value not in self.values:
            self.values[value] = self._evaluate(value)
        return self.values[value]

    def _evaluate(self, value: ir.Value) -> Evaluated:
        if value.const_value is not None:
            data = value.const_value.numpy()
            if data.dtype.kind not in "iu" or data.ndim > 1:
                raise NotAShape(None, f"{value.name!r} is not an integer scalar or vector")
            return Evaluated(tuple(int(v) for v in data.reshape(-1)), scalar=data.ndim == 0)
        node = value.producer()
        if node is None:
            raise NotAShape(None, f"{value.name!r} is a graph input")
        if node.domain not in STANDARD_DOMAINS or node.op_type not in _RULES:
            raise NotAShape(node, "it computes from data values, not from shapes")
        least = 2 if node.op_type in _TWO_INPUTS else 1
        if len(node.inputs) < least or any(v is None for v in node.inputs[:least]):
            raise NotAShape(node, f"it has fewer than {least} inputs")
        result = _RULES[node.op_type](self, node)
        self.visited.add(node)
        return result

    def ints(self, node: ir.Node, index: int, what: str) -> list[int] | None:
        """Input `index` as numbers (None if absent); a dim of unknown size there is refused."""
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None:
            return None
        elements = self.evaluate(value).elements
        if not all(isinstance(e, int) for e in elements):
            raise NotAShape(node, f"its {what} are not numbers")
        return list(elements)  # type: ignore[arg-type]


def _opset(node: ir.Node) -> int:
    return opset_version(node, "") or 1


def _shape(ev: _Evaluator, node: ir.Node) -> Evaluated:
    x = node.inputs[0]
    if x is None or x.shape is None:
        raise NotAShape(node, "the rank of its input is unknown")
    dims = tuple(_dim(x, axis) for axis in range(len(x.shape)))
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", len(dims))
    return Evaluated(dims[slice(start, end)])


def _gather(ev: _Evaluator, node: ir.Node) -> Evaluated:
    data = ev.evaluate(node.inputs[0])
    if data.scalar or node.attributes.get_int("axis", 0) not in (0, -1):
        raise NotAShape(node, "it gathers along an axis other than 0 of a vector")
    indices_value = node.inputs[1]
    indices = ev.ints(node, 1, "indices")
    size = len(data.elements)
    if any(not -size <= i < size for i in indices):
        raise NotAShape(node, f"index out of range for {size} dims")
    picked = tuple(data.elements[i] for i in indices)
    return Evaluated(picked, scalar=ev.evaluate(indices_value).scalar)


def _slice(ev: _Evaluator, node: ir.Node) -> Evaluated:
    data = ev.evaluate(node.inputs[0])
    if _opset(node) < 10:
        starts, ends = list(node.attributes.get_ints("starts", [])), list(node.attributes.get_ints("ends", []))
        axes, steps = node.attributes.get_ints("axes", None), None
    else:
        starts, ends = ev.ints(node, 1, "starts"), ev.ints(node, 2, "ends")
        axes, steps = ev.ints(node, 3, "axes"), ev.ints(node, 4, "steps")
    if data.scalar or len(starts or []) != 1 or len(ends or []) != 1 or (axes is not None and list(axes) not in ([0], [-1])):
        raise NotAShape(node, "it slices something other than one vector")
    step = 1 if not steps else steps[0]
    if step == 0:
        raise NotAShape(node, "its step is 0")
    return Evaluated(data.elements[slice(starts[0], ends[0], step)])


def _concat(ev: _Evaluator, node: ir.Node) -> Evaluated:
    parts = [ev.evaluate(v) for v in node.inputs if v is not None]
    if any(part.scalar for part in parts):
        raise NotAShape(node, "it concatenates scalars")
    return Evaluated(tuple(e for part in parts for e in part.elements))


def _axes(ev: _Evaluator, node: ir.Node) -> list[int]:
    if _opset(node) < 13:
        return list(node.attributes.get_ints("axes", []))
    return ev.ints(node, 1, "axes") or []


def _unsqueeze(ev: _Evaluator, node: ir.Node) -> Evaluated:
    x = ev.evaluate(node.inputs[0])
    if not x.scalar or _axes(ev, node) not in ([0], [-1]):
        raise NotAShape(node, "it unsqueezes something other than a scalar into a vector")
    return Evaluated(x.elements)


def _squeeze(ev: _Evaluator, node: ir.Node) -> Evaluated:
    x = ev.evaluate(node.inputs[0])
    if x.scalar or len(x.elements) != 1 or _axes(ev, node) not in ([], [0], [-1]):
        raise NotAShape(node, "it squeezes something other than a one-element vector")
    return Evaluated(x.elements, scalar=True)


def _cast(ev: _Evaluator, node: ir.Node) -> Evaluated:
    if ir.DataType(node.attributes.get_int("to", 0)) not in _INTEGER_TYPES:
        raise NotAShape(node, "it casts to a type that is not an integer")
    return ev.evaluate(node.inputs[0])


def _identity(ev: _Evaluator, node: ir.Node) -> Evaluated:
    return ev.evaluate(node.inputs[0])


def _arithmetic(ev: _Evaluator, node: ir.Node) -> Evaluated:
    a, b = ev.evaluate(node.inputs[0]), ev.evaluate(node.inputs[1])
    left, right = ev.ints(node, 0, "operands"), ev.ints(node, 1, "operands")
    if len(left) != len(right) and 1 not in (len(left), len(right)):
        raise NotAShape(node, "its operands do not broadcast")
    operation = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}[node.op_type]
    result = operation(np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64))
    return Evaluated(tuple(int(v) for v in result.reshape(-1)), scalar=a.scalar and b.scalar)


_TWO_INPUTS = frozenset({"Gather", "Add", "Sub", "Mul"})
_RULES = {
    "Shape": _shape,
    "Gather": _gather,
    "Slice": _slice,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Cast": _cast,
    "Identity": _identity,
    "Add": _arithmetic,
    "Sub": _arithmetic,
    "Mul": _arithmetic,
}


def _remove_unused(graph: ir.Graph, candidates: set[ir.Node]) -> None:
    """The shape nodes nothing reads any more, last first (a chain goes whole)."""
    outputs = set(graph.outputs)
    read: set[ir.Value] = set()
    for node in reversed(list(graph)):
        if node in candidates and all(not out.uses() and out not in outputs for out in node.outputs):
            read.update(v for v in node.inputs if v is not None)
            graph.remove(node, safe=True)
    # Their constants (indices, axes) too, where nothing else reads them.
    for value in read:
        if value.is_initializer() and not value.uses() and value not in outputs:
            del graph.initializers[value.name]
