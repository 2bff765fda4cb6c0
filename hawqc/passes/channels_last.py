"""`channels-last`: store a channels-first (NCHW / NCW) graph channels-last, whole, without Transposes.

hls4ml, like most hardware, streams images pixel by pixel with the channels innermost. The pass
decides once how every data tensor is stored from now on, relative to what it held before:

- **images**: every data tensor of rank 3 or 4 connected (through any op but Transpose, see below)
  to the data input of a Conv, pool or BatchNormalization is stored channels-last,
  `stored = original.transpose(0, 2, ..., 1)`;
- **flattened images**: Flatten (or Reshape to [N, C*H*W]) of a channels-last image holds the same
  numbers in another column order, `stored[:, j] = original[:, order[j]]`; the dense layer that reads
  it (MatMul / Gemm) gets the rows of its weight permuted by `order` where the weight is stored, and
  its output is in its original layout again. No Transpose, and no runtime cost;
- every other tensor keeps its layout.

Each node that reads or writes a relaid-out tensor is rewritten to compute the stored form of its
outputs from the stored form of its inputs: Conv / pools / BatchNormalization move to
`CHANNELS_LAST_DOMAIN` (their ONNX defaults written out, which qonnx's versions require), the Conv
weight becomes [M, k..., C/group]; constants that broadcast against a relaid-out tensor (per-channel
scales and biases [C,1,1] -> [C]) are relaid out where they are stored, a quantizer on constants
(`Quant(W, scale [M,1,1,1])`) rebuilt on the relaid-out constant and parameters; axes are remapped
(Concat, Softmax, Squeeze, Unsqueeze, Pad, Resize); a Transpose composes with the layout change on
either side and is removed when the composition is the identity (a graph exported from NHWC, like
Keras', wraps its convolutions in exactly such a pair). An op that cannot compute the stored form
without a new Transpose is an UnsupportedModelError naming the node; the pass never adds one. (The
nodes before it are converted by then: like every pass, it mutates in place, and the pass manager's
reproducer keeps the IR it was given.)

A graph without channels-first image ops (an MLP, or a graph already channels-last such as
Brevitas' channels-last exports) is left as it is; one that mixes both layouts is refused.

The graph inputs and outputs that are images change layout too; each is recorded with
`hawqc.ir.layout.record_layout`, so that whoever feeds the model transposes its data alike.

Exactness: every rewrite computes the same float32 operations on the same numbers, only stored at
other addresses, so results are identical bit for bit (translation validation checks it, transposing
inputs and outputs by the recorded layouts). For the same reason, ops whose floating-point result
could depend on how the data is laid out (linear Resize, Softmax over a flattened image) are refused.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.domains import CHANNELS_LAST_DOMAIN, QONNX_DOMAIN
from hawqc.ir.layout import (
    Permutation,
    channels_last_perm,
    compose,
    invert,
    is_identity,
    record_layout,
)
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.keys import onnx_op, op_key, qonnx_op
from hawqc.ir.ops.traits import Trait, has_trait, ops_with
from hawqc.ir.quant_annotation import QuantAnnotation, annotate, read_annotation
from hawqc.passes.base import Pass, PassResult

# Ops that apply one function per element, with numpy (ONNX multidirectional) broadcasting of all
# inputs (QONNX quantizers: input 0 is the data, the others are parameters broadcasting against it);
# relaying out every input alike relays out the result.
ELEMENTWISE_OPS = ops_with(Trait.ELEMENTWISE)
ELEMENTWISE_QONNX_OPS = ops_with(Trait.ELEMENTWISE, QONNX_DOMAIN)
# Softmax and its kin: relaying out moves their axis.
SOFTMAX_OPS = ops_with(Trait.ALONG_AXIS)
# Standard ops with a channels-last twin (`hawqc.ir.ops.traits`).
IMAGE_OPS = ops_with(Trait.CHANNELS_FIRST)


@dataclass(frozen=True)
class Transposed:
    """A tensor stored as `original.transpose(perm)` (an image channels-last)."""

    perm: Permutation
    suffix: ClassVar[str] = "channels_last"

    @property
    def rank(self) -> int:
        return len(self.perm)

    def stored_shape(self, shape: ir.Shape) -> ir.Shape:
        return ir.Shape([shape[axis] for axis in self.perm])

    def relayout(self, array: np.ndarray) -> np.ndarray:
        """`array` as it must be stored to broadcast against the stored tensor as it did against the
        original: aligned to the tensor's rank, transposed, and (if it was shorter) stripped of the
        leading unit dims again, so that a per-channel [C,1,1] becomes [C]."""
        if array.ndim > self.rank:
            raise ValueError(f"a constant of rank {array.ndim} broadcasts a rank-{self.rank} tensor up")
        aligned = array.reshape((1,) * (self.rank - array.ndim) + array.shape).transpose(self.perm)
        if array.ndim < self.rank:
            while aligned.ndim > 1 and aligned.shape[0] == 1:
                aligned = aligned[0]
        return aligned


@dataclass(frozen=True)
class PermutedAxis:
    """A tensor whose axis `axis` (counted from the end) holds the original entries `order[j]`:
    `stored = original.take(order, axis)` (a flattened image, or a dense weight's rows)."""

    axis: int
    order: tuple[int, ...]
    suffix: ClassVar[str] = "permuted"

    def stored_shape(self, shape: ir.Shape) -> ir.Shape:
        return shape

    def relayout(self, array: np.ndarray) -> np.ndarray:
        if array.ndim < -self.axis or array.shape[self.axis] == 1:
            return array  # broadcast along that axis: every entry is the same
        if array.shape[self.axis] != len(self.order):
            raise ValueError(f"a constant of shape {list(array.shape)} does not match {len(self.order)} entries")
        return np.take(array, self.order, axis=self.axis)


Layout = Transposed | PermutedAxis


def channels_last(rank: int) -> Transposed:
    return Transposed(channels_last_perm(rank))


@dataclass(frozen=True)
class ChannelsLast(Pass):
    name: ClassVar[str] = "channels-last"
    summary: ClassVar[str] = (
        "Store an NCHW/NCW graph channels-last: Conv/pools/BatchNormalization to the channels-last "
        "domain, constants and axes relaid out, dense weights after a flatten permuted, Transposes "
        "composed away; graph input/output layouts recorded."
    )

    def run(self, model: ir.Model) -> PassResult:
        graph = model.graph
        constant = constant_values(graph)
        # BatchNormalization of a rank-2 [N, C] tensor (BatchNorm1d after a dense layer) is no image op.
        anchors = [
            node
            for node in graph
            if node.domain == "" and node.op_type in IMAGE_OPS
            and node.inputs and node.inputs[0] is not None and node.inputs[0] not in constant
            and _rank(node.inputs[0]) >= 3
        ]  # fmt: skip
        if not anchors:
            return PassResult(False)  # no image ops, or all of them channels-last already
        already = next((node for node in graph if node.domain == CHANNELS_LAST_DOMAIN), None)
        if already is not None:
            raise UnsupportedModelError(
                f"{describe(anchors[0])} is channels-first but {describe(already)} is "
                "channels-last already; a graph that mixes both is not supported"
            )
        for node in anchors:
            rank = _rank(node.inputs[0])
            if rank not in (3, 4):
                raise UnsupportedModelError(
                    f"{describe(node)} works on a rank-{rank} tensor; only 1-D and 2-D "
                    "images (rank 3 and 4) are supported"
                )
        conversion = _Conversion(model, image_region(graph, anchors, constant), constant)
        conversion.convert()
        return PassResult(True, dict(conversion.statistics))


def constant_values(graph: ir.Graph) -> set[ir.Value]:
    """Values known before any run: initializers, and results of nodes reading only those."""
    constant = set(graph.initializers.values())
    for node in graph:
        if has_trait(node, Trait.NEVER_FOLD):
            continue
        if all(value is None or value in constant for value in node.inputs):
            constant.update(node.outputs)
    return constant


def image_region(graph: ir.Graph, anchors: list[ir.Node], constant: set[ir.Value]) -> set[ir.Value]:
    """The data tensors to store channels-last: rank >= 3, connected to an anchor's data input.

    Two tensors are connected when one node reads or writes both; a Transpose does not connect its
    input and output (it is where a graph changes layout itself, and the pass composes with it).
    """
    parent: dict[ir.Value, ir.Value] = {}

    def find(value: ir.Value) -> ir.Value:
        parent.setdefault(value, value)
        while parent[value] is not value:
            parent[value] = parent[parent[value]]
            value = parent[value]
        return value

    for node in graph:
        if node.op_type == "Transpose" and node.domain == "":
            continue
        images = [
            value
            for value in (*node.inputs, *node.outputs)
            if value is not None and value not in constant and _rank(value) >= 3
        ]
        for value in images[1:]:
            parent[find(value)] = find(images[0])
    roots = {find(node.inputs[0]) for node in anchors}
    return {value for value in list(parent) if find(value) in roots}


def _rank(value: ir.Value) -> int:
    return -1 if value.shape is None else len(value.shape)


class _Conversion:
    """One conversion of one graph: the stored layout of every value, and the rewrites."""

    def __init__(self, model: ir.Model, region: set[ir.Value], constant: set[ir.Value]) -> None:
        self.model = model
        self.graph = model.graph
        self.region = region
        self.constant = constant
        self.layouts: dict[ir.Value, Layout] = {}
        self.names = FreshNames(self.graph)
        self.relaid_out: dict[tuple[ir.Value, Layout], ir.Value] = {}
        self.new_constants: dict[tuple, ir.Value] = {}
        self.identities: list[ir.Node] = []  # Transposes that the layout change cancels
        self.replaced: list[ir.Value] = []  # values the rewrites may have left without readers
        self.statistics: Counter[str] = Counter()

    # -- driver -------------------------------------------------------------------------------

    def convert(self) -> None:
        graph = self.graph
        self.model.opset_imports.setdefault(CHANNELS_LAST_DOMAIN, 1)
        interface: dict[str, Permutation] = {}
        for value in graph.inputs:
            if value in self.region:
                layout = channels_last(_rank(value))
                self._set_layout(value, layout)
                interface[value.name] = layout.perm
        outputs = list(graph.outputs)
        for node in list(graph):
            if node.graph is graph:
                self._visit(node)
        for index, value in enumerate(outputs):
            layout = self.layouts.get(value)
            if isinstance(layout, PermutedAxis):
                raise UnsupportedModelError(
                    f"graph output '{value.name}' is a flattened image, which would hold "
                    "its elements in channels-last order; only a dense layer can take that order back"
                )
            if layout is not None:
                interface[graph.outputs[index].name] = layout.perm
        for node in self.identities:
            self._bypass(node, node.inputs[0])
        for name, perm in interface.items():
            record_layout(self.model, name, perm)
            self.statistics["interface-values-relaid-out"] += 1
        self._remove_unused()

    def _visit(self, node: ir.Node) -> None:
        touched = any(value in self.layouts for value in node.inputs if value is not None)
        touched = touched or any(value in self.region for value in node.outputs)
        if not touched:
            return
        rule = self._rule(node)
        if rule is None:
            raise UnsupportedModelError(
                f"{describe(node)} reads or writes an image and has no channels-last form"
            )
        rule(node)
        for value in node.outputs:
            if value in self.region and self.layouts.get(value) != channels_last(_rank(value)):
                raise UnsupportedModelError(
                    f"{describe(node)} cannot write its output '{value.name}' channels-last"
                )

    def _rule(self, node: ir.Node):
        """The rule that relays out `node`, by its traits, else by the table of the ops with a rule
        of their own (keyed by `op_key`); None: the node needs no relayout of its own."""
        if has_trait(node, Trait.CHANNELS_FIRST) and node.inputs[0] in self.region:
            return self._image_op
        if has_trait(node, Trait.ELEMENTWISE):
            return self._elementwise
        if has_trait(node, Trait.ALONG_AXIS):
            return self._softmax
        rules = {
            qonnx_op("MultiThreshold"): self._multithreshold,
            # Not an image op: a BatchNormalization of [N, C] features.
            onnx_op("BatchNormalization"): self._batch_norm_on_features,
            onnx_op("Concat"): self._concat,
            onnx_op("Flatten"): self._flatten,
            onnx_op("Reshape"): self._reshape,
            onnx_op("Squeeze"): self._unit_axes,
            onnx_op("Unsqueeze"): self._unit_axes,
            onnx_op("Transpose"): self._transpose,
            onnx_op("Pad"): self._pad,
            onnx_op("Resize"): self._resize,
            onnx_op("MatMul"): self._dense,
            onnx_op("Gemm"): self._dense,
        }
        return rules.get(op_key(node))

    # -- layouts and constants ----------------------------------------------------------------

    def _set_layout(self, value: ir.Value, layout: Layout | None, node: ir.Node | None = None) -> None:
        if layout is None or (isinstance(layout, Transposed) and is_identity(layout.perm)):
            return
        if isinstance(layout, Transposed) and layout.rank != _rank(value):
            where = describe(node) if node is not None else f"graph input '{value.name}'"
            raise UnsupportedModelError(
                f"{where}: output '{value.name}' has rank {_rank(value)}, the image it comes from rank {layout.rank}"
            )
        self.layouts[value] = layout
        value.shape = layout.stored_shape(value.shape)

    def _data_layout(self, node: ir.Node, inputs: list[ir.Value]) -> Layout:
        """The one layout the data inputs of `node` share (data inputs in no layout must be scalars)."""
        laid_out = {self.layouts[value] for value in inputs if value in self.layouts}
        if len(laid_out) != 1:
            what = "tensors in different layouts" if laid_out else "no relaid-out tensor"
            raise UnsupportedModelError(f"{describe(node)} combines {what}")
        for value in inputs:
            if value not in self.layouts and not _single_element(value):
                raise UnsupportedModelError(
                    f"{describe(node)} combines an image with '{value.name}', a tensor "
                    "of another layout computed at run time"
                )
        return next(iter(laid_out))

    def _relayout(self, value: ir.Value, layout: Layout, reader: ir.Node) -> ir.Value:
        """The constant `value` as it must be stored to serve its reader in `layout` (see `relayout`
        of the layouts). An elementwise op on constants (a weight quantizer) is rebuilt on the
        relaid-out constants; the originals stay for other readers, or go if nobody reads them."""
        key = (value, layout)
        if key in self.relaid_out:
            return self.relaid_out[key]
        if value.const_value is not None:
            array = value.const_value.numpy()
            try:
                stored = array if array.size == 1 else layout.relayout(array)
            except ValueError as err:
                raise UnsupportedModelError(f"{describe(reader)} reads '{value.name}': {err}") from None
            if stored.shape == array.shape and np.array_equal(stored, array, equal_nan=array.dtype.kind == "f"):
                result = value
            else:
                result = make_initializer(np.ascontiguousarray(stored), self.names(f"{value.name}_{layout.suffix}"))
                self.graph.register_initializer(result)
                self._carry_quant_annotation(value, result, layout)
                self.statistics["constants-relaid-out"] += 1
        else:
            result = self._relayout_computed(value, layout, reader)
        if result is not value:
            self.replaced.append(value)
        self.relaid_out[key] = result
        return result

    @staticmethod
    def _carry_quant_annotation(value: ir.Value, stored: ir.Value, layout: Layout) -> None:
        """A quantized constant (fold-quant's annotation) keeps its quantizer; a per-channel scale or
        zero point is relaid out like the constant, so that it stays on its channels."""
        annotation = read_annotation(value)
        if annotation is None:
            return
        scale, zeropt = annotation.scale_array(), annotation.zeropt_array()
        annotate(
            stored,
            QuantAnnotation.from_arrays(
                annotation.bits,
                annotation.signed,
                annotation.narrow,
                scale if scale.size == 1 else layout.relayout(scale),
                zeropt if zeropt.size == 1 else layout.relayout(zeropt),
                annotation.rounding_mode,
            ),
        )

    def _relayout_computed(self, value: ir.Value, layout: Layout, reader: ir.Node) -> ir.Value:
        producer = value.producer()
        elementwise = producer is not None and len(producer.outputs) == 1 and (
            has_trait(producer, Trait.ELEMENTWISE)
        )
        if not elementwise:
            source = describe(producer) if producer is not None else "no node"
            raise UnsupportedModelError(
                f"{describe(reader)} reads '{value.name}', computed from constants by "
                f"{source}; only elementwise ops on constants are relaid out (run fold-constants first)"
            )
        inputs = [None if v is None else self._relayout(v, layout, reader) for v in producer.inputs]
        if all(new is old for new, old in zip(inputs, producer.inputs)):
            return value
        node = ir.node(
            producer.op_type,
            inputs,
            {attr.name: attr for attr in producer.attributes.values()},
            domain=producer.domain,
            name=self.names(f"{producer.name}_{layout.suffix}") if producer.name else None,
        )
        result = node.outputs[0]
        result.name = self.names(f"{value.name}_{layout.suffix}")
        result.type = value.type
        result.shape = ir.Shape(np.broadcast_shapes(*(tuple(v.shape) for v in inputs if v is not None)))
        self.graph.insert_after(producer, node)
        return result

    def _relayout_constant_inputs(self, node: ir.Node, layout: Layout, indices=None) -> None:
        for index, value in enumerate(node.inputs):
            if value is None or value not in self.constant or (indices is not None and index not in indices):
                continue
            stored = self._relayout(value, layout, node)
            if stored is not value:
                node.replace_input_with(index, stored)

    def _new_constant_input(self, node: ir.Node, index: int, array: np.ndarray) -> None:
        """Replace the constant input `index` (axes, pads, scales) by `array`; one initializer per
        original and new content, however many nodes share them."""
        old = node.inputs[index]
        key = (old, array.dtype.str, array.shape, array.tobytes())
        value = self.new_constants.get(key)
        if value is None:
            value = make_initializer(array, self.names(f"{old.name}_{Transposed.suffix}"))
            self.graph.register_initializer(value)
            self.new_constants[key] = value
        node.replace_input_with(index, value)
        self.replaced.append(old)

    def _constant_ints(self, node: ir.Node, index: int, what: str) -> list[int] | None:
        if index >= len(node.inputs) or node.inputs[index] is None:
            return None
        value = node.inputs[index]
        if value.const_value is None:
            raise UnsupportedModelError(f"{describe(node)}: its {what} must be a constant")
        return [int(v) for v in value.const_value.numpy().reshape(-1)]

    def _image_layout(self, node: ir.Node) -> Transposed:
        layout = self.layouts.get(node.inputs[0])
        if not isinstance(layout, Transposed):
            raise UnsupportedModelError(f"{describe(node)} needs an image as input 0")
        return layout

    # -- rules ----------------------------------------------------------------------------------

    def _image_op(self, node: ir.Node) -> None:
        """Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, BatchNormalization."""
        layout = self._image_layout(node)
        rank = layout.rank
        for extra in node.outputs[1:]:
            if extra.uses() or extra.is_graph_output():
                raise UnsupportedModelError(
                    f"{describe(node)}: its output '{extra.name}' has no channels-last form"
                )
        for index, value in enumerate(node.inputs[1:], start=1):
            if value is not None and value not in self.constant:
                raise UnsupportedModelError(f"{describe(node)}: input {index} must be a constant")
        _write_default_attributes(node, rank)
        if node.op_type == "Conv":
            weight = node.inputs[1]
            if _rank(weight) != rank:
                raise UnsupportedModelError(f"{describe(node)}: the weight must have rank {rank}")
            node.replace_input_with(1, self._relayout(weight, layout, node))
        node.domain = CHANNELS_LAST_DOMAIN
        self._set_layout(node.outputs[0], layout, node)
        self.statistics["ops-converted"] += 1

    def _elementwise(self, node: ir.Node) -> None:
        data = [value for value in node.inputs if value is not None and value not in self.constant]
        layout = self._data_layout(node, data)
        self._relayout_constant_inputs(node, layout)
        for value in node.outputs:
            self._set_layout(value, layout, node)

    def _multithreshold(self, node: ir.Node) -> None:
        """MultiThreshold(v, thresholds [C, T]) thresholds each element by its channel, the axis
        named by "C" in `data_layout` (qonnx guesses the layout from the rank when there is none).
        Channels-last: the attribute names the channel's new position (qonnx executes that), the
        thresholds stay as they are. A flattened image ([N, K], columns permuted): the rows of
        per-column thresholds are permuted alike, where they are stored."""
        v = node.inputs[0]
        if v not in self.layouts or (len(node.inputs) > 1 and node.inputs[1] in self.layouts):
            raise UnsupportedModelError(f"{describe(node)}: only the data input may be relaid out")
        layout = self.layouts[v]
        rank = _rank(v)
        attr = node.attributes.get("data_layout")
        declared = attr.as_string() if attr is not None else ""
        guessed = declared or {2: "NC", 3: "NWC", 4: "NCHW"}.get(rank, "")
        channel = guessed.index("C") if "C" in guessed else 1
        if isinstance(layout, Transposed):
            new_channel = list(layout.perm).index(channel)
            # qonnx only looks for "C": the other letters name spatial axes for a human reader.
            spatial = "DHW"[3 - (rank - 2):] if rank <= 5 else "S" * (rank - 2)
            names = list("N" + spatial)
            names.insert(new_channel, "C")
            node.attributes["data_layout"] = ir.AttrString("data_layout", "".join(names))
        else:
            thresholds = node.inputs[1]
            if thresholds is None or thresholds not in self.constant or thresholds.const_value is None:
                raise UnsupportedModelError(f"{describe(node)}: the thresholds must be a constant")
            if channel != rank - 1 or rank != 2:
                raise UnsupportedModelError(f"{describe(node)}: thresholds a permuted flattened image along axis {channel}")
            data = thresholds.const_value.numpy()
            if data.shape[0] != 1:
                stored = make_initializer(np.take(data, layout.order, axis=0), self.names(f"{thresholds.name}_permuted"))
                self.graph.register_initializer(stored)
                node.replace_input_with(1, stored)
                self.statistics["constants-relaid-out"] += 1
        for value in node.outputs:
            self._set_layout(value, layout, node)

    def _batch_norm_on_features(self, node: ir.Node) -> None:
        # BatchNormalization of a flattened image ([N, K]): its per-feature parameters follow the columns.
        layout = self.layouts.get(node.inputs[0])
        if not isinstance(layout, PermutedAxis) or _rank(node.inputs[0]) != 2 or len(node.outputs) != 1:
            raise UnsupportedModelError(f"{describe(node)} has no channels-last form here")
        if any(value is not None and value not in self.constant for value in node.inputs[1:]):
            raise UnsupportedModelError(f"{describe(node)}: its parameters must be constants")
        self._relayout_constant_inputs(node, layout, indices={1, 2, 3, 4})
        self._set_layout(node.outputs[0], layout, node)

    def _concat(self, node: ir.Node) -> None:
        data = [value for value in node.inputs if value is not None and value not in self.constant]
        layout = self._data_layout(node, data)
        if not isinstance(layout, Transposed):
            raise UnsupportedModelError(f"{describe(node)} concatenates flattened images")
        axis = _normalized_axis(node.attributes.get_int("axis", 0), layout.rank)
        node.attributes["axis"] = ir.AttrInt64("axis", layout.perm.index(axis))
        self._relayout_constant_inputs(node, layout)
        self._set_layout(node.outputs[0], layout, node)

    def _softmax(self, node: ir.Node) -> None:
        layout = self._image_layout(node)
        if self.model.opset_imports.get("", 1) < 13:
            # Before opset 13, Softmax normalizes over all axes from `axis` on, flattened.
            raise UnsupportedModelError(
                f"{describe(node)} on an image needs opset 13 or later (one axis)"
            )
        axis = _normalized_axis(node.attributes.get_int("axis", -1), layout.rank)
        node.attributes["axis"] = ir.AttrInt64("axis", layout.perm.index(axis))
        self._set_layout(node.outputs[0], layout, node)

    def _flatten(self, node: ir.Node) -> None:
        layout = self._image_layout(node)
        image = node.inputs[0]
        axis = _normalized_axis(node.attributes.get_int("axis", 1), layout.rank)
        if axis == 0 and image.shape[0] == 1:
            axis = 1  # one sample flattens alike at axis 0 and 1
        if axis != 1:
            raise UnsupportedModelError(
                f"{describe(node)} flattens at axis {axis}; only a flatten of each sample "
                "(axis 1) has a channels-last form"
            )
        self._flattened(node, image, layout)

    def _flattened(self, node: ir.Node, image: ir.Value, layout: Transposed) -> None:
        original_dims = _original_dims(image, layout)[1:]
        if not all(isinstance(d, int) for d in original_dims):
            raise UnsupportedModelError(f"{describe(node)} flattens an image of unknown size")
        index = np.arange(int(np.prod(original_dims))).reshape(original_dims)
        order = index.transpose([axis - 1 for axis in layout.perm[1:]]).reshape(-1)
        if not np.array_equal(order, np.arange(order.size)):
            self._set_layout(node.outputs[0], PermutedAxis(-1, tuple(int(i) for i in order)), node)
        self.statistics["flattens-resolved"] += 1

    def _reshape(self, node: ir.Node) -> None:
        layout = self._image_layout(node)
        image, result = node.inputs[0], node.outputs[0]
        in_dims = _original_dims(image, layout)
        out_dims = list(result.shape)
        same_batch = out_dims[0] == in_dims[0]
        if result in self.region:
            if not (same_batch and out_dims[1] == in_dims[1]) or not all(isinstance(d, int) for d in out_dims[1:]):
                raise UnsupportedModelError(
                    f"{describe(node)} reshapes an image across its channels; only "
                    "reshapes that keep the batch and the channels have a channels-last form"
                )
            target = self._constant_ints(node, 1, "shape")
            stored = np.array([target[0], *out_dims[2:], out_dims[1]], dtype=np.int64)
            self._new_constant_input(node, 1, stored)
            self._set_layout(result, channels_last(len(out_dims)), node)
            return
        if len(out_dims) == 2 and same_batch and out_dims[1] == _product(in_dims[1:]):
            self._flattened(node, image, layout)
            return
        raise UnsupportedModelError(
            f"{describe(node)} reshapes an image to {out_dims}; only [N, C*H*W] (a flatten) "
            "or a reshape keeping batch and channels has a channels-last form"
        )

    def _unit_axes(self, node: ir.Node) -> None:
        """Squeeze / Unsqueeze: where the stored order of the kept axes is the order the output's layout
        wants, the same op on the remapped axes does it."""
        source, result = node.inputs[0], node.outputs[0]
        layout = self.layouts.get(source)
        if isinstance(layout, PermutedAxis):
            raise UnsupportedModelError(f"{describe(node)} reshapes a flattened image")
        rank_in, rank_out = _rank(source), _rank(result)
        stored_in = layout.perm if layout is not None else tuple(range(rank_in))
        stored_out = channels_last_perm(rank_out) if result in self.region else tuple(range(rank_out))
        axes = self._constant_ints(node, 1, "axes")
        from_attribute = axes is None and "axes" in node.attributes
        if from_attribute:
            axes = list(node.attributes.get_ints("axes"))
        if node.op_type == "Squeeze":
            dims = _original_dims(source, layout)
            removed = (
                {_normalized_axis(a, rank_in) for a in axes} if axes is not None
                else {axis for axis, d in enumerate(dims) if d == 1}
            )  # fmt: skip
            kept = [axis for axis in range(rank_in) if axis not in removed]
            fits = [kept.index(axis) for axis in stored_in if axis not in removed] == list(stored_out)
            new_axes = sorted(stored_in.index(axis) for axis in removed)
        else:
            inserted = {_normalized_axis(a, rank_out) for a in axes or ()}
            kept = [axis for axis in range(rank_out) if axis not in inserted]
            fits = [axis for axis in stored_out if axis not in inserted] == [kept[axis] for axis in stored_in]
            new_axes = sorted(stored_out.index(axis) for axis in inserted)
        if not fits:
            raise UnsupportedModelError(
                f"{describe(node)} would need a Transpose to keep its output's layout"
            )
        if axes is not None:
            if from_attribute:
                node.attributes["axes"] = ir.AttrInt64s("axes", new_axes)
            else:
                self._new_constant_input(node, 1, np.array(new_axes, dtype=np.int64))
        self._set_layout(result, Transposed(stored_out), node)

    def _transpose(self, node: ir.Node) -> None:
        source, result = node.inputs[0], node.outputs[0]
        layout = self.layouts.get(source)
        if isinstance(layout, PermutedAxis):
            raise UnsupportedModelError(f"{describe(node)} transposes a flattened image")
        rank = _rank(source)
        perm = node.attributes.get_ints("perm", None)
        perm = tuple(perm) if perm is not None else tuple(reversed(range(rank)))
        stored_in = layout.perm if layout is not None else tuple(range(rank))
        stored_out = channels_last_perm(rank) if result in self.region else tuple(range(rank))
        total = compose(compose(invert(stored_in), perm), stored_out)
        self._set_layout(result, Transposed(stored_out), node)
        if is_identity(total):
            # Removed once every node is converted: until then its readers find their input's
            # layout under the output's name.
            self.identities.append(node)
            self.statistics["transposes-removed"] += 1
        else:
            node.attributes["perm"] = ir.AttrInt64s("perm", list(total))
            self.statistics["transposes-kept"] += 1

    def _bypass(self, node: ir.Node, source: ir.Value) -> None:
        result = node.outputs[0]
        interface = source.is_graph_input() or source.is_initializer() or source.is_graph_output()
        if result.is_graph_output() and interface:
            node.op_type = "Identity"  # the interface needs both names
            node.attributes.clear()
            return
        name, was_output = result.name, result.is_graph_output()
        ir.convenience.replace_all_uses_with(result, source, replace_graph_outputs=True)
        self.graph.remove(node, safe=True)
        if was_output:
            result.name = None
            source.name = name

    def _pad(self, node: ir.Node) -> None:
        layout = self._image_layout(node)
        if any(value is not None and value not in self.constant for value in node.inputs[1:]):
            raise UnsupportedModelError(f"{describe(node)}: pads, value and axes must be constants")
        axes = self._constant_ints(node, 3, "axes")
        if axes is not None:
            stored_axes = [layout.perm.index(_normalized_axis(a, layout.rank)) for a in axes]
            self._new_constant_input(node, 3, np.array(stored_axes, dtype=np.int64))
        else:
            pads = self._constant_ints(node, 1, "pads")
            from_attribute = pads is None
            if from_attribute:
                pads = list(node.attributes.get_ints("pads", [0] * 2 * layout.rank))
            begins, ends = pads[: layout.rank], pads[layout.rank:]
            stored = [begins[axis] for axis in layout.perm] + [ends[axis] for axis in layout.perm]
            if from_attribute:
                node.attributes["pads"] = ir.AttrInt64s("pads", stored)
            else:
                self._new_constant_input(node, 1, np.array(stored, dtype=np.int64))
        self._set_layout(node.outputs[0], layout, node)

    def _resize(self, node: ir.Node) -> None:
        layout = self._image_layout(node)
        if node.attributes.get_string("mode", "nearest") != "nearest":
            # Linear and cubic interpolations round in an order that depends on the layout.
            raise UnsupportedModelError(
                f"{describe(node)}: only nearest-neighbour Resize has an exact channels-last form"
            )
        if any(value is not None and value not in self.constant for value in node.inputs[1:]):
            raise UnsupportedModelError(f"{describe(node)}: roi, scales and sizes must be constants")
        perm = list(layout.perm)
        if "axes" in node.attributes:
            axes = [_normalized_axis(a, layout.rank) for a in node.attributes.get_ints("axes")]
            node.attributes["axes"] = ir.AttrInt64s("axes", [perm.index(a) for a in axes])
        else:
            for index in (1, 2, 3):  # roi [begins..., ends...], scales, sizes: one entry per axis
                value = node.inputs[index] if index < len(node.inputs) else None
                if value is None or value.const_value is None or value.const_value.numpy().size == 0:
                    continue
                array = value.const_value.numpy()
                if index == 1:
                    halves = array.reshape(2, layout.rank)
                    stored = halves[:, perm].reshape(-1)
                else:
                    stored = array[perm]
                self._new_constant_input(node, index, np.ascontiguousarray(stored))
        self._set_layout(node.outputs[0], layout, node)

    def _dense(self, node: ir.Node) -> None:
        """MatMul / Gemm reading a flattened image: permute the weight's rows (inputs) instead."""
        features, weight = node.inputs[0], node.inputs[1]
        layout = self.layouts.get(features)
        if not isinstance(layout, PermutedAxis) or layout.axis != -1 or _rank(features) != 2:
            raise UnsupportedModelError(
                f"{describe(node)} multiplies an image; flatten it first (Flatten or "
                "Reshape to [N, C*H*W])"
            )
        if any(value in self.layouts for value in node.inputs[1:] if value is not None):
            raise UnsupportedModelError(f"{describe(node)}: weight and bias cannot be images")
        if weight not in self.constant:
            raise UnsupportedModelError(
                f"{describe(node)} reads a flattened image with a weight computed at run time"
            )
        if node.op_type == "Gemm" and node.attributes.get_int("transA", 0):
            raise UnsupportedModelError(f"{describe(node)} transposes its flattened input")
        transposed = node.op_type == "Gemm" and node.attributes.get_int("transB", 0)
        rows = PermutedAxis(-1 if transposed or _rank(weight) == 1 else -2, layout.order)
        node.replace_input_with(1, self._relayout(weight, rows, node))
        self.statistics["dense-weights-permuted"] += 1

    # -- cleanup --------------------------------------------------------------------------------

    def _remove_unused(self) -> None:
        """Drop what the rewrites replaced and nothing reads any more (weights, their quantizers)."""
        graph = self.graph
        pending = list(self.replaced)
        while pending:
            value = pending.pop()
            if value.uses() or value.is_graph_output() or value.is_graph_input():
                continue
            if value.is_initializer():
                graph.initializers.pop(value.name)
                continue
            producer = value.producer()
            if producer is None or producer.graph is not graph:
                continue
            if any(out.uses() or out.is_graph_output() for out in producer.outputs):
                continue
            graph.remove(producer, safe=True)
            pending.extend(v for v in producer.inputs if v is not None)


def _write_default_attributes(node: ir.Node, rank: int) -> None:
    """Spell out the ONNX defaults of Conv / MaxPool / AveragePool (qonnx's channels-last ops require
    them, and later floors then read one form)."""
    spatial = rank - 2
    attributes = node.attributes
    if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
        return
    defaults: dict[str, list[int]] = {"strides": [1] * spatial}
    if attributes.get_string("auto_pad", "NOTSET") == "NOTSET":
        defaults["pads"] = [0] * (2 * spatial)
    if node.op_type == "Conv":
        defaults["dilations"] = [1] * spatial
        defaults["kernel_shape"] = [int(d) for d in list(node.inputs[1].shape)[2:]]
        if "group" not in attributes:
            attributes["group"] = ir.AttrInt64("group", 1)
    for name, value in defaults.items():
        if name not in attributes:
            attributes[name] = ir.AttrInt64s(name, value)


def _normalized_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _original_dims(value: ir.Value, layout: Layout | None) -> list:
    """The dims `value` had before the pass (its shape is relaid out already)."""
    dims = list(value.shape)
    if not isinstance(layout, Transposed):
        return dims
    return [dims[layout.perm.index(axis)] for axis in range(layout.rank)]


def _product(dims: list) -> int | None:
    return int(np.prod(dims)) if all(isinstance(d, int) for d in dims) else None


def _single_element(value: ir.Value) -> bool:
    return value.shape is not None and all(d == 1 for d in value.shape)
