"""`integer-requant`: quantizers with any scales -> integer codes and proven dyadic requantizations.

A quantizer whose scale is not a power of two has no fixed-point type. This pass moves such scales
out of the data: every value downstream of one carries integers v, and its real value is
`scale * v + offset` (exact rationals per element, tracked here, not computed). Weights become
their integer codes, rescales by constants (Mul, Div, a BatchNormalization, a float bias) change
only the tracked scale and offset, and at the next quantizer the exact meaning

    code = R(clip(g(r * v + t)))        r = scale / s, t = offset / s, g a pending Relu or nothing

becomes a multiply-add `(v * m + c) / 2^e` whose codes are **proven** equal to the exact meaning's
for every v the interval analysis allows (`hawqc.ir.dyadic_requant`), with the fewest bits of m:

    Mul(v, m/2^e) [-> Add(c/2^e)] [-> Relu] -> Quant(scale 1, or s when s is a power of two)

What the pass keeps exact is the exact meaning (`hawqc.sim.exact`), not semantic mode's float32
arithmetic: float32 rounds some products and quotients of the original graph near a rounding
boundary, and the rewritten graph's products of m/2^e differently. Hardware mode of the result
computes the exact meaning; `--verify` reports the float32 difference.

Interfaces (`hawqc.ir.interfaces`): a graph input that reaches a non-power-of-two quantizer
through constant rescales (`Mul`, `Div`, `Add`, `Sub` by constants) becomes a port of that
quantizer's integer codes; the host computes them. A graph output reached with a scale or offset
that is not the identity is delivered as v, with its affine map recorded.

Refused, naming the node: a zero point other than 0, a quantizer reached with a pending Relu on a
negative scale, an op the pass has no rule for on a rescaled value (it could only compute it in
float), two rescaled values added with scales whose ratio is not dyadic, a requantization no dyadic
reproduces (naming the accumulator value and the tie), or integer codes beyond float32's 2^24.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.dyadic_requant import NoDyadic, Requantization, solve
from hawqc.ir.interfaces import InputCodes, OutputAffine, write_input, write_output
from hawqc.ir.io import copy_model
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import onnx_op, op_key
from hawqc.ir.ops.quantizer import BIPOLAR_QUANTIZER, INTEGER_QUANTIZERS, TRUNC, code_bounds, quantizer
from hawqc.ir.ops.window import Windows
from hawqc.ir.qtypes import power_of_two_exponent
from hawqc.ir.quant_annotation import QuantAnnotation, annotate
from hawqc.passes.base import Pass, PassResult, option
from hawqc.sim import ops as sim_ops
from hawqc.sim.exact import Exact, ExactExecutor, conv_ints, matmul_ints

FLOAT32_EXACT_INT = 1 << 24
MULTIPLIER_BITS_KEY = "hawqc.requant.multiplier_bits"
# Why the pass left a model with float scales as it was (read by the compile driver).
REFUSAL_KEY = "hawqc.integer_requant.refused"

COUNTERS = ("requantizations-made-dyadic", "input-code-ports", "output-affine-maps", "widest-multiplier-bits")

_frac = np.frompyfunc(lambda x: Fraction(float(x)) if not isinstance(x, Fraction) else x, 1, 1)


def _label(node: ir.Node) -> str:
    """A node's name, or its first output's where it has none (text IR leaves nodes unnamed)."""
    return node.name or node.outputs[0].name or node.op_type.lower()


def _objects(value, shape) -> np.ndarray:
    out = np.empty(shape, dtype=object)
    out[...] = value
    return out


def _fractions(array) -> np.ndarray:
    array = np.asarray(array)
    result = _frac(array)
    return result if isinstance(result, np.ndarray) else _objects(result, ())


def _is_power_of_two(values: np.ndarray) -> bool:
    return all(power_of_two_exponent(float(v)) is not None for v in np.asarray(values).reshape(-1))


def _is_dyadic(f: Fraction) -> bool:
    return f.denominator & (f.denominator - 1) == 0


def _float32_exact(values: np.ndarray, double: bool = False) -> np.ndarray | None:
    """The Fractions as float32 (float64 with `double`), or None where one is not exactly that."""
    flat = [Fraction(v) for v in np.asarray(values, dtype=object).reshape(-1)]
    out = np.array([float(v) for v in flat], dtype=np.float64 if double else np.float32)
    if any(Fraction(float(o)) != v for o, v in zip(out, flat)):
        return None
    return out.reshape(np.shape(values))


_AFFINE_OPS = ("Mul", "Div", "Add", "Sub")
_MOVE_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


@dataclass(frozen=True)
class InputChain:
    """A graph input (`source`, None if there is none) under moves and constant rescales `nodes`
    (listed from the reader up): the rescales map x to x * scale + offset."""

    source: ir.Value | None
    scale: Fraction
    offset: Fraction
    nodes: list

    @property
    def trivial(self) -> bool:
        return self.scale == 1 and self.offset == 0 and not any(n.op_type in _AFFINE_OPS for n in self.nodes)


@dataclass(frozen=True)
class Affine:
    """A rescaled value: the graph computes `n * 2^exp` for integers n in [lo, hi], and the model's
    value is `relu?(scale * n + offset)`. Every array has the value's rank with a batch axis of size 1
    and the per-sample dims (or 1 where it does not vary)."""

    scale: np.ndarray
    offset: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    relu: bool = False
    exp: int = 0

    def full(self, dims: tuple[int, ...]) -> Affine:
        shape = (1, *dims)
        arrays = (np.broadcast_to(a, shape).copy() for a in (self.scale, self.offset, self.lo, self.hi))
        return Affine(*arrays, self.relu, self.exp)


class _Rewriter:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.names = FreshNames(self.graph)
        self.values: dict[ir.Value, Affine] = {}
        self.statistics: Counter = Counter()
        self.widths: list[int] = []
        self._exact = ExactExecutor.constants_of(model)

    # ---- helpers -------------------------------------------------------------------------------

    def constant(self, value: ir.Value | None) -> Exact | None:
        if value is None:
            return None
        known = self._exact.get(value)
        if known is None:
            return None
        return known if isinstance(known, Exact) else Exact.of_float(np.asarray(known))

    def dims(self, value: ir.Value, node: ir.Node) -> tuple[int, ...]:
        shape = value.shape
        if shape is None or any(not isinstance(d, int) for d in list(shape.dims)[1:]):
            raise UnsupportedModelError(f"{describe(node)}: the shape of {value.name!r} is unknown")
        return tuple(int(d) for d in list(shape.dims)[1:])

    def initializer(self, array: np.ndarray, name: str, like: ir.Value | None = None) -> ir.Value:
        """A float32 constant, or one of `like`'s float type (HAWQ's lifted graphs requantize in double)."""
        dtype = np.float64 if like is not None and like.dtype == ir.DataType.DOUBLE else np.float32
        value = make_initializer(np.asarray(array, dtype=dtype), self.names(name))
        self.graph.register_initializer(value)
        return value

    def integer_weight(self, ints: np.ndarray, node: ir.Node) -> ir.Value:
        """Integer weight codes as a constant annotated as a scale-1 quantizer's output (its bit width
        the narrowest holding them), so that BOPs and the report count their real width."""
        value = self.initializer(ints.astype(np.float32), f"{_label(node)}_integer_weight")
        largest = int(np.max(np.abs(ints))) if ints.size else 0
        signed = bool(np.any(ints < 0))
        bits = max(1, largest.bit_length() + (1 if signed else 0)) if largest else 1
        annotate(value, QuantAnnotation(bits, signed, False, 1.0, 0.0))
        return value

    def offsets(self, before: ir.Node, value: ir.Value, constant: np.ndarray, name: str, double: bool) -> ir.Value:
        """Add the exact dyadic offsets (Fractions): one Add per float32-exact part, so that an offset
        wider than 24 bits (a BatchNorm's bias in fine units) stays exact in the hardware's sums."""
        rest = np.asarray(constant, dtype=object)
        for part_index in range(4):
            if all(v == 0 for v in rest.reshape(-1)):
                return value
            part = np.frompyfunc(lambda v: Fraction(float(np.float64(float(v)).astype(np.float64 if double else np.float32))), 1, 1)(rest)
            part = np.asarray(part, dtype=object).reshape(rest.shape)
            exact = _float32_exact(part, double)
            assert exact is not None
            suffix = "" if part_index == 0 else f"_{part_index}"
            value = self.insert(before, "Add", [value, self.initializer(_compact(exact), f"{name}_dyadic_offset{suffix}", like=value)], f"{name}_requant_add{suffix}")
            rest = rest - part
        if not all(v == 0 for v in rest.reshape(-1)):
            raise UnsupportedModelError(f"{describe(before)}: the exact requantization's offset needs more than four float parts")
        return value

    def insert(self, before: ir.Node, op_type: str, inputs: list[ir.Value], name: str) -> ir.Value:
        if inputs[0].dtype == ir.DataType.DOUBLE:  # constants in the data's type
            inputs = [inputs[0], *(self.initializer(v.const_value.numpy(), f"{v.name}_double", like=inputs[0]) if v.const_value is not None else v for v in inputs[1:])]
        node = ir.node(op_type, inputs, name=self.names(name))
        node.outputs[0].name = self.names(f"{node.name}_out")
        node.outputs[0].shape, node.outputs[0].type = inputs[0].shape, inputs[0].type
        self.graph.insert_before(before, node)
        return node.outputs[0]

    def bypass(self, node: ir.Node, source: ir.Value) -> None:
        """Replace a node that only rescaled by an Identity of `source`: its rescale is tracked, and
        the Identity's output carries the new tracking (`source` may have other readers)."""
        out = node.outputs[0]
        identity = ir.node("Identity", [source], name=self.names(f"{_label(node)}_rescaled"))
        result = identity.outputs[0]
        result.shape, result.type = out.shape, out.type
        self.graph.insert_before(node, identity)
        self.values[result] = self.values.pop(out)
        if out.is_graph_output():
            self.graph.outputs[self.graph.outputs.index(out)] = result
        ir.convenience.replace_all_uses_with(out, result)
        name = out.name
        out.name = self.names(f"{name}_rescaled_away")
        result.name = name
        self.graph.remove(node, safe=True)

    # ---- the walk -------------------------------------------------------------------------------

    def run(self) -> None:
        if not self.has_float_scales():
            return
        for node in list(self.graph):
            if node.graph is None:
                continue  # removed by an earlier rewrite
            if any(v in self.values for v in node.inputs if v is not None):
                self.rewrite(node)
            elif self.is_root(node):
                self.root(node)
        for value in list(self.graph.outputs):
            if value in self.values:
                self.finish_output(value)
        self.graph.sort()  # a quantizer moved in front of its input's reshapes

    def has_float_scales(self) -> bool:
        """Whether any quantizer has a scale that is not a power of two (on data or on weights), or a
        graph input reaches its quantizer through a rescale that is not one: then the whole model is
        taken to integers (a model of powers of two only is left as it is)."""
        for node in self.graph:
            view = quantizer(node)
            if view is None or view.scale is None or op_key(node) not in (*INTEGER_QUANTIZERS, BIPOLAR_QUANTIZER):
                continue
            if not _is_power_of_two(view.scale):
                return True
            if node.inputs[0] is not None and self.constant(node.inputs[0]) is None:
                chain = self.input_chain(node.inputs[0])
                if chain.source is not None and not chain.trivial:
                    return True
        return False

    def is_root(self, node: ir.Node) -> bool:
        """A quantizer of a runtime value that is not rescaled yet (a graph input's, or a float value's)."""
        if op_key(node) not in (*INTEGER_QUANTIZERS, BIPOLAR_QUANTIZER) or not node.inputs or node.inputs[0] is None:
            return False
        return self.constant(node.inputs[0]) is None

    def root(self, node: ir.Node) -> None:
        """Where integers start: a quantizer of a graph input (possibly moved, reshaped or rescaled by
        constants on the way). With a power-of-two scale and no rescale it stays: the port takes real
        values. Otherwise the port takes the quantizer's integer codes; the host computes them."""
        view = quantizer(node)
        assert view is not None
        chain = self.input_chain(node.inputs[0])
        if chain.source is None:
            raise UnsupportedModelError(
                f"{describe(node)}: quantizes {node.inputs[0].name!r}, which is computed in float, in a model with "
                "scales that are not powers of two (only a graph input, possibly reshaped or rescaled by constants, "
                "can become a port of integer codes)"
            )
        if view.is_bipolar:
            self.root_bipolar(node, chain)
            return
        scale, low, high, mode = self.quant_parameters(node)
        if scale.size != 1:
            raise UnsupportedModelError(f"{describe(node)}: a per-channel scale on a graph input is not supported")
        s = Fraction(float(scale.reshape(-1)[0]))
        dims = self.dims(node.outputs[0], node)
        shape = (1,) * (len(dims) + 1)
        zero = _objects(Fraction(0), shape)
        if chain.trivial and _is_power_of_two(scale):
            exp = power_of_two_exponent(float(s))
            self.values[node.outputs[0]] = Affine(_objects(s, shape), zero, _objects(low, shape), _objects(high, shape), exp=exp)
            return
        write_input(self.model, InputCodes(
            chain.source.name, s, int(view.bits), view.signed, view.narrow, mode, low, high, chain.scale, chain.offset,
        ))  # fmt: skip
        codes = self.reroot(node, chain)
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{_label(node)}_unit_scale"))
        self.values[codes] = Affine(_objects(s, shape), zero, _objects(low, shape), _objects(high, shape))
        self.statistics["input-code-ports"] += 1

    def root_bipolar(self, node: ir.Node, chain: InputChain) -> None:
        """BipolarQuant of a graph input: `+s` where the (rescaled) input is >= 0, else `-s`. Unless
        the input reaches it unchanged with a power-of-two scale, the port takes the +1 / -1 codes
        (the host compares its value, rescaled exactly, with 0)."""
        view = quantizer(node)
        assert view is not None
        scale = view.scale
        if scale is None or scale.size != 1 or float(scale.reshape(-1)[0]) <= 0:
            raise UnsupportedModelError(f"{describe(node)}: a binary quantizer of a graph input needs one positive scale")
        s = Fraction(float(scale.reshape(-1)[0]))
        dims = self.dims(node.outputs[0], node)
        shape = (1,) * (len(dims) + 1)
        if chain.trivial and _is_power_of_two(scale):
            self.values[node.outputs[0]] = Affine(
                _objects(s, shape), _objects(Fraction(0), shape), _objects(-1, shape), _objects(1, shape), exp=power_of_two_exponent(float(s))
            )  # fmt: skip
            return
        write_input(self.model, InputCodes(
            chain.source.name, s, 1, True, False, "ROUND", -1, 1, chain.scale, chain.offset, bipolar=True,
        ))  # fmt: skip
        codes = self.reroot(node, chain)
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{_label(node)}_unit_scale"))
        self.values[codes] = Affine(_objects(s, shape), _objects(Fraction(0), shape), _objects(-1, shape), _objects(1, shape))
        self.statistics["input-code-ports"] += 1

    def reroot(self, node: ir.Node, chain: InputChain) -> ir.Value:
        """Put the quantizer straight on the graph input: the moves of the chain then act on its codes
        (a quantizer with one scale commutes with them), its constant rescales go (the host applies
        them). Returns the value the quantizer's readers read now."""
        if not chain.nodes:
            return node.outputs[0]
        if node.outputs[0].is_graph_output():
            raise UnsupportedModelError(f"{describe(node)}: a rescaled input's quantizer is a graph output")
        readers = list(node.outputs[0].uses())
        node.replace_input_with(0, chain.source)
        value = node.outputs[0]
        for mover in reversed(chain.nodes):  # from the graph input towards the quantizer
            if mover.op_type in _AFFINE_OPS:
                continue
            mover.replace_input_with(0, value)
            value = mover.outputs[0]
        for reader, index in readers:
            reader.replace_input_with(index, value)
        for rescale in chain.nodes:
            if rescale.op_type in _AFFINE_OPS:
                self.graph.remove(rescale, safe=True)
        return value

    def input_chain(self, value: ir.Value) -> InputChain:
        """The graph input under `value` through moves and scalar Mul/Div/Add/Sub by constants (each
        read only there), with the exact affine map of the rescales: x -> x * scale + offset."""
        nodes: list[ir.Node] = []
        while not value.is_graph_input():
            producer = value.producer()
            if producer is None or len(list(value.uses())) != 1 or value.is_graph_output():
                return InputChain(None, Fraction(1), Fraction(0), nodes)
            if producer.op_type in _MOVE_OPS and op_key(producer) in RULES:
                nodes.append(producer)
                value = producer.inputs[0]
                continue
            if op_key(producer) not in {onnx_op(o) for o in _AFFINE_OPS}:
                return InputChain(None, Fraction(1), Fraction(0), nodes)
            x, c = producer.inputs[0], producer.inputs[1]
            if self.constant(c) is None and producer.op_type in ("Mul", "Add"):
                x, c = c, x
            k = self.constant(c)
            if k is None or x is None or k.ints.size != 1 or c is producer.inputs[0]:
                return InputChain(None, Fraction(1), Fraction(0), nodes)
            if producer.op_type == "Div" and k.fractions().reshape(-1)[0] == 0:
                return InputChain(None, Fraction(1), Fraction(0), nodes)
            nodes.append(producer)
            value = x
        if len(list(value.uses())) != 1:
            return InputChain(None, Fraction(1), Fraction(0), nodes)
        scale, offset = Fraction(1), Fraction(0)
        for producer in reversed(nodes):  # from the graph input up
            if producer.op_type not in _AFFINE_OPS:
                continue
            k = self.constant(producer.inputs[1]) if self.constant(producer.inputs[1]) is not None else self.constant(producer.inputs[0])
            f = k.fractions().reshape(-1)[0]
            scale, offset = {
                "Mul": (scale * f, offset * f), "Div": (scale / f, offset / f), "Add": (scale, offset + f), "Sub": (scale, offset - f),
            }[producer.op_type]  # fmt: skip
        return InputChain(value, scale, offset, nodes)

    def quant_parameters(self, node: ir.Node) -> tuple[np.ndarray, int, int, str]:
        view = quantizer(node)
        assert view is not None
        scale, zero, bits = view.scale, view.zero_point, view.bits
        if scale is None or zero is None or bits is None:
            raise UnsupportedModelError(f"{describe(node)}: scale, zero point and bit width must be constants")
        if np.any(zero != 0):
            raise UnsupportedModelError(f"{describe(node)}: a non-zero zero point is not supported")
        if np.any(scale <= 0) or not np.all(np.isfinite(scale)):
            raise UnsupportedModelError(f"{describe(node)}: scale {scale.reshape(-1).tolist()} is not positive")
        low, high = code_bounds(int(bits), view.signed, view.narrow)
        return scale, int(low), int(high), view.rounding_mode

    # ---- rules ----------------------------------------------------------------------------------

    def rewrite(self, node: ir.Node) -> None:
        key = op_key(node)
        rule = RULES.get(key)
        if rule is None:
            which = next(v for v in node.inputs if v in self.values)
            raise UnsupportedModelError(
                f"{describe(node)}: its input {which.name!r} carries a quantization scale that is not a power of two, "
                f"and {node.op_type} has no exact integer form"
            )
        rule(self, node)

    def requantize(self, node: ir.Node) -> None:
        """A Quant of a rescaled value: a proven dyadic multiply-add, then the Quant at scale 1 (or at
        its own scale, a power of two); its codes are the next rescaled value."""
        scale, low, high, mode = self.quant_parameters(node)
        value, sigma = self.dyadic(node, node.inputs[0], scale, low, high, mode)
        p2 = _is_power_of_two(scale)
        node.replace_input_with(0, value)
        node.replace_input_with(1, self.initializer(sigma, f"{_label(node)}_unit_scale" if not p2 else f"{_label(node)}_scale", like=node.inputs[1]))
        self.values[node.outputs[0]] = self.codes_of(node, self._last, scale, sigma)

    def dyadic(self, node: ir.Node, x: ir.Value, scale: np.ndarray, low: int, high: int, mode: str) -> tuple[ir.Value, np.ndarray]:
        """Insert before `node` the multiply-add whose Quant at scale sigma (returned: 1, or `scale` when
        that is a power of two) gives the codes `R(clip(relu?(real(x) / scale)))` exactly. Sets
        `self._last` to (the input's tracking, r, t, the codes' range)."""
        dims = self.dims(x, node)
        a = self.values[x].full(dims)
        s = np.broadcast_to(_fractions(scale.astype(np.float64)).reshape((1,) * (len(dims) + 1 - scale.ndim) + scale.shape), a.scale.shape)
        r, t = a.scale / s, a.offset / s
        if a.relu and any(v < 0 for v in r.reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: a Relu before it acts on a negatively scaled value")
        solved: dict[tuple, object] = {}
        m = np.empty(r.shape, dtype=object)
        c = np.empty(r.shape, dtype=object)
        for index in np.ndindex(r.shape):
            key = (r[index], t[index], int(a.lo[index]), int(a.hi[index]))
            if key not in solved:
                q = Requantization(key[0], key[1], key[2], key[3], low, high, mode, a.relu)
                try:
                    solved[key] = solve(q)
                except NoDyadic as refusal:
                    raise UnsupportedModelError(f"{describe(node)}: no dyadic requantization is exact: {refusal.reason}") from None
            m[index], c[index] = solved[key].multiplier, solved[key].offset
        p2 = _is_power_of_two(scale)
        sigma = scale.astype(np.float32) if p2 else np.ones_like(scale, dtype=np.float32)
        sigma_f = np.broadcast_to(_fractions(sigma.astype(np.float64)).reshape((1,) * (len(dims) + 1 - sigma.ndim) + sigma.shape), m.shape)
        # The graph holds n * 2^exp: multiply by m / 2^(e + exp), and scale the codes by sigma.
        double = x.dtype == ir.DataType.DOUBLE
        multiplier = _float32_exact(m * sigma_f / Fraction(2) ** a.exp, double)
        if multiplier is None:
            width = "float64's 53" if double else "float32's 24"
            raise UnsupportedModelError(f"{describe(node)}: the exact requantization needs a multiplier wider than {width} bits")
        name = _label(node)
        value = self.insert(node, "Mul", [x, self.initializer(_compact(multiplier), f"{name}_dyadic_multiplier", like=x)], f"{name}_requant_mul")
        bits = max(d.mantissa_bits for d in solved.values())
        value.producer().metadata_props[MULTIPLIER_BITS_KEY] = str(bits)
        value = self.offsets(node, value, c * sigma_f, name, double)
        if a.relu:
            value = self.insert(node, "Relu", [value], f"{name}_relu")
        self.statistics["requantizations-made-dyadic"] += 1
        self.statistics["widest-multiplier-bits"] = max(self.statistics["widest-multiplier-bits"], bits)
        self.widths.append(bits)
        self._last = (a, r, t, low, high, mode)
        return value, sigma

    def codes_of(self, node: ir.Node, last, scale: np.ndarray, sigma: np.ndarray) -> Affine:
        """The tracking of a requantized value: codes (times sigma in the graph), real = code * scale."""
        a, r, t, low, high, mode = last
        out_dims = self.dims(node.outputs[0], node)
        rank = len(out_dims) + 1
        lo, hi = _requantized_range(a, r, t, low, high, mode)
        s = _fractions(scale.astype(np.float64)).reshape((1,) * (rank - scale.ndim) + scale.shape)
        exp = power_of_two_exponent(float(sigma.reshape(-1)[0])) if sigma.size else 0
        return Affine(s, _objects(Fraction(0), s.shape), lo, hi, exp=exp)

    def finish_output(self, value: ir.Value) -> None:
        a = self.values[value]
        if a.relu:
            raise UnsupportedModelError(
                f"graph output {value.name!r}: a Relu of a rescaled value with a float offset ends the graph; "
                "add a quantizer before the output"
            )
        write_output(self.model, OutputAffine(value.name, a.scale, a.offset))
        self.statistics["output-affine-maps"] += 1


def _compact(array: np.ndarray) -> np.ndarray:
    """One number when all are equal, else the array reduced to size 1 along every axis it is
    constant along (a per-channel constant stays per channel)."""
    array = np.asarray(array)
    array = array if array.dtype == np.float64 else array.astype(np.float32)
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0], dtype=array.dtype)
    for axis in range(array.ndim):
        first = np.take(array, [0], axis=axis)
        if np.all(array == first):
            array = first
    return array


def _requantized_range(a: Affine, r, t, low: int, high: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    los, his = np.empty(r.shape, dtype=object), np.empty(r.shape, dtype=object)
    for index in np.ndindex(r.shape):
        q = Requantization(r[index], t[index], int(a.lo[index]), int(a.hi[index]), low, high, mode, a.relu)
        ends = (q.exact_code(q.lo), q.exact_code(q.hi))
        los[index], his[index] = min(ends), max(ends)
    return los, his


# ---- per-op rules ------------------------------------------------------------------------------------


def _data_and_constant(self: _Rewriter, node: ir.Node) -> tuple[ir.Value, Affine, Exact | None, int]:
    first, second = node.inputs[0], node.inputs[1]
    if first in self.values:
        return first, self.values[first], self.constant(second), 1
    return second, self.values[second], self.constant(first), 0


def _rescale(self: _Rewriter, node: ir.Node) -> None:
    """Mul / Div / Add / Sub by a constant: only the tracked scale and offset change."""
    x, a, k, index = _data_and_constant(self, node)
    if k is None:
        _add_rescaled(self, node)
        return
    dims = self.dims(node.outputs[0], node)
    f = k.fractions()
    f = f.reshape((1,) * (len(dims) + 1 - f.ndim) + f.shape) if f.ndim <= len(dims) + 1 else f
    a = a.full(dims)
    if node.op_type == "Mul":
        if a.relu and any(v < 0 for v in np.asarray(f).reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: multiplies a Relu'd rescaled value by a negative constant")
        new = replace(a, scale=a.scale * f, offset=a.offset * f)
    elif node.op_type == "Div":
        if index == 0 or any(v == 0 for v in np.asarray(f).reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: divides by a rescaled value or by zero")
        if a.relu and any(v < 0 for v in np.asarray(f).reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: divides a Relu'd rescaled value by a negative constant")
        new = replace(a, scale=a.scale / f, offset=a.offset / f)
    else:
        if a.relu:
            raise UnsupportedModelError(f"{describe(node)}: adds to a Relu of a value with a float offset")
        sign = -1 if node.op_type == "Sub" else 1
        if node.op_type == "Sub" and index == 0:  # c - x
            new = replace(a, scale=-a.scale, offset=f - a.offset)
        else:
            new = replace(a, offset=a.offset + sign * f)
    self.values[node.outputs[0]] = Affine(*(np.broadcast_to(v, (1, *dims)).copy() for v in (new.scale, new.offset, new.lo, new.hi)), new.relu, new.exp)
    self.bypass(node, x)


def _add_rescaled(self: _Rewriter, node: ir.Node) -> None:
    """Add / Sub of two rescaled values: their scales must be equal (then the integers add)."""
    if node.op_type not in ("Add", "Sub") or any(v not in self.values for v in node.inputs):
        raise UnsupportedModelError(f"{describe(node)}: {node.op_type} of a rescaled value and a value computed in float")
    dims = self.dims(node.outputs[0], node)
    a, b = (self.values[v].full(dims) for v in node.inputs)
    if a.relu or b.relu:
        raise UnsupportedModelError(f"{describe(node)}: adds a Relu of a value with a float offset")
    if not np.all(a.scale == b.scale) or a.exp != b.exp:
        a, b = _aligned(self, node, a, b)
    if node.op_type == "Add":
        self.values[node.outputs[0]] = Affine(a.scale, a.offset + b.offset, a.lo + b.lo, a.hi + b.hi, exp=a.exp)
    else:
        self.values[node.outputs[0]] = Affine(a.scale, a.offset - b.offset, a.lo - b.hi, a.hi - b.lo, exp=a.exp)


def _aligned(self: _Rewriter, node: ir.Node, a: Affine, b: Affine) -> tuple[Affine, Affine]:
    """Two rescaled values on one scale, exactly: with g the rational gcd of their scales (per element),
    each integer n becomes n * (scale / g), an integer product the graph computes exactly (a residual's
    two branches requantized by different dyadics, as HAWQ writes them). Refused where the product
    would outgrow the float type's integers."""
    g = np.frompyfunc(lambda x, y: Fraction(math.gcd(abs(x.numerator) * y.denominator, abs(y.numerator) * x.denominator), x.denominator * y.denominator) or Fraction(1), 2, 1)(a.scale, b.scale)
    limit = 1 << (53 if any(v.dtype == ir.DataType.DOUBLE for v in node.inputs) else 24)
    aligned = []
    for index, (value, tracked) in enumerate(zip(node.inputs, (a, b))):
        k = tracked.scale / g  # integers
        ends = [tracked.lo * k, tracked.hi * k]
        lo, hi = np.minimum(*ends), np.maximum(*ends)
        if max(abs(int(v)) for v in (*lo.reshape(-1), *hi.reshape(-1))) >= limit:
            raise UnsupportedModelError(
                f"{describe(node)}: adds values quantized with different scales ({float(a.scale.reshape(-1)[0]):.6g} and "
                f"{float(b.scale.reshape(-1)[0]):.6g}) whose common integer form outgrows the float type; requantize both to one scale first"
            )
        multiplier = _float32_exact(k * Fraction(2) ** -tracked.exp) if limit == 1 << 24 else np.frompyfunc(lambda v: float(v), 1, 1)(k * Fraction(2) ** -tracked.exp).astype(np.float64)
        if multiplier is None:
            raise UnsupportedModelError(f"{describe(node)}: the alignment of its inputs' scales does not fit float32")
        if not (np.all(multiplier == 1)):
            scaled = self.insert(node, "Mul", [value, self.initializer(_compact(multiplier), f"{_label(node)}_align{index}", like=value)], f"{_label(node)}_align{index}")
            node.replace_input_with(index, scaled)
        aligned.append(Affine(g, tracked.offset, lo.astype(object), hi.astype(object), exp=0))
    return aligned[0], aligned[1]


def _batch_norm(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    view = batch_norm(node)
    coefficients = view.coefficients()
    if coefficients is None or not view.inference_mode or view.channels_last:
        raise UnsupportedModelError(f"{describe(node)}: needs an inference-mode BatchNormalization with constant parameters")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    if a.relu:
        raise UnsupportedModelError(f"{describe(node)}: normalizes a Relu of a value with a float offset")
    shape = (1, -1) + (1,) * (len(dims) - 1)
    ca = _fractions(np.asarray(coefficients[0], dtype=np.float64)).reshape(shape)
    cb = _fractions(np.asarray(coefficients[1], dtype=np.float64)).reshape(shape)
    self.values[node.outputs[0]] = Affine(a.scale * ca, a.offset * ca + cb, a.lo, a.hi, exp=a.exp)
    self.bypass(node, x)


def _relu(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    if any(v < 0 for v in a.scale.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: Relu of a negatively scaled value")
    if a.relu:
        self.values[node.outputs[0]] = a
        self.bypass(node, x)
        return
    if all(v == 0 for v in a.offset.reshape(-1)):
        self.values[node.outputs[0]] = replace(a, lo=np.maximum(a.lo, 0), hi=np.maximum(a.hi, 0))
        return
    if all(v != 0 for v in a.scale.reshape(-1)):
        shift = a.offset / a.scale  # in the integers' units
        if all(Fraction(v).denominator == 1 for v in shift.reshape(-1)):
            constant = _float32_exact(shift * Fraction(2) ** a.exp)
            if constant is not None:
                # relu(s * n + o) = s * relu(n + o/s) for s > 0, o/s an integer: exact in the graph.
                value = self.insert(node, "Add", [x, self.initializer(_compact(constant), f"{_label(node)}_offset")], f"{_label(node)}_offset_add")
                node.replace_input_with(0, value)
                lo = np.maximum(a.lo + shift, 0).astype(object)
                hi = np.maximum(a.hi + shift, 0).astype(object)
                self.values[node.outputs[0]] = Affine(a.scale, _objects(Fraction(0), a.scale.shape), lo, hi, exp=a.exp)
                return
    # The offset is no dyadic multiple of the scale: the Relu waits for the next quantizer.
    self.values[node.outputs[0]] = replace(a, relu=True)
    self.bypass(node, x)


def _matmul(self: _Rewriter, node: ir.Node) -> None:
    x, w_value = node.inputs[0], node.inputs[1]
    if w_value in self.values or x not in self.values:
        raise UnsupportedModelError(f"{describe(node)}: a product of two computed values has no exact integer form here")
    w = self.constant(w_value)
    if w is None or w.ints.ndim != 2:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant matrix")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    _check_no_relu(node, a)
    # W_eff[k, j] = scale[k] * W[k, j]: factor each column into integers times one scale.
    scale_k = a.scale.reshape(-1, dims[-1])[0] if len(dims) == 1 else None
    if scale_k is None:
        raise UnsupportedModelError(f"{describe(node)}: MatMul on a rank-{len(dims) + 1} rescaled value")
    weight = w.fractions() * scale_k[:, None]
    ints, column_scale = _factor_columns(node, weight)
    offset = (a.offset.reshape(-1)[None, :] @ w.fractions()) if any(v != 0 for v in a.offset.reshape(-1)) else _objects(Fraction(0), (1, ints.shape[1]))
    lo_k, hi_k = a.lo.reshape(1, -1), a.hi.reshape(1, -1)
    lo, hi = _interval_matmul(lo_k, hi_k, ints)
    node.replace_input_with(1, self.integer_weight(ints, node))
    self.values[node.outputs[0]] = Affine(column_scale.reshape(1, -1), np.asarray(offset, dtype=object).reshape(1, -1), lo, hi, exp=a.exp)


def _gemm(self: _Rewriter, node: ir.Node) -> None:
    attrs = {k: v.value for k, v in node.attributes.items()}
    if attrs.get("transA", 0):
        raise UnsupportedModelError(f"{describe(node)}: Gemm with transA on a rescaled value")
    w = self.constant(node.inputs[1])
    if w is None:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant")
    weight = w.fractions()
    if attrs.get("transB", 0):
        weight = weight.T
    weight = weight * Fraction(float(attrs.get("alpha", 1.0)))
    matmul = ir.node("MatMul", [node.inputs[0], self.initializer(np.zeros(weight.shape, np.float32), f"{_label(node)}_weight")], name=self.names(f"{_label(node)}_matmul"))
    matmul.outputs[0].name = self.names(f"{matmul.name}_out")
    matmul.outputs[0].shape = node.outputs[0].shape
    matmul.outputs[0].type = node.outputs[0].type
    self.graph.insert_before(node, matmul)
    self._exact[matmul.inputs[1]] = Exact(*_as_exact_parts(weight))
    _matmul(self, matmul)
    result = self.values[matmul.outputs[0]]
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = self.constant(node.inputs[2])
        if bias is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias must be a constant")
        beta = Fraction(float(attrs.get("beta", 1.0)))
        result = replace(result, offset=result.offset + np.broadcast_to(bias.fractions() * beta, result.offset.shape))
    self.values[node.outputs[0]] = result
    self.bypass(node, matmul.outputs[0])


def _as_exact_parts(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    den = 1
    for v in weight.reshape(-1):
        den = den * v.denominator // math.gcd(den, v.denominator)
    ints = np.frompyfunc(lambda v: int(v * den), 1, 1)(weight)
    return ints, _objects(Fraction(1, den), (1, 1))


def _factor_columns(node: ir.Node, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight[k, j] = ints[k, j] * scale[j], scale[j] the largest rational that keeps ints integers."""
    ints = np.empty(weight.shape, dtype=object)
    scales = np.empty(weight.shape[1], dtype=object)
    for j in range(weight.shape[1]):
        column = [Fraction(v) for v in weight[:, j]]
        nums = [v.numerator for v in column]
        dens = [v.denominator for v in column]
        lcm = 1
        for d in dens:
            lcm = lcm * d // math.gcd(lcm, d)
        g = 0
        for v in column:
            g = math.gcd(g, int(v * lcm))
        g = g or 1
        scale = Fraction(g, lcm)
        scales[j] = scale
        ints[:, j] = [int(v / scale) for v in column]
        del nums
    if max((abs(int(v)) for v in ints.reshape(-1)), default=0) >= FLOAT32_EXACT_INT:
        raise UnsupportedModelError(f"{describe(node)}: the integer weights exceed 2^24 (float32 would round them)")
    return ints.astype(np.int64), scales


def _interval_matmul(lo: np.ndarray, hi: np.ndarray, ints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    positive, negative = np.maximum(ints, 0), np.minimum(ints, 0)
    lo_i = np.asarray(lo, dtype=object)
    hi_i = np.asarray(hi, dtype=object)
    low = matmul_ints(lo_i, positive) + matmul_ints(hi_i, negative)
    high = matmul_ints(hi_i, positive) + matmul_ints(lo_i, negative)
    return np.asarray(low, dtype=object), np.asarray(high, dtype=object)


def _check_no_relu(node: ir.Node, a: Affine) -> None:
    if a.relu:
        raise UnsupportedModelError(
            f"{describe(node)}: reads a Relu of a value whose float offset is no integer in its scale "
            "(a float bias before the Relu) without a quantizer in between"
        )


def _conv(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    if x not in self.values or any(v in self.values for v in node.inputs[1:] if v is not None):
        raise UnsupportedModelError(f"{describe(node)}: the weights must be constants")
    w = self.constant(node.inputs[1])
    if w is None:
        raise UnsupportedModelError(f"{describe(node)}: the weight must be a constant")
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    _check_no_relu(node, a)
    channels = dims[0]
    per_channel = a.scale.reshape(channels, -1)
    offsets = a.offset.reshape(channels, -1)
    if any(len(set(row)) != 1 for row in per_channel) or any(len(set(row)) != 1 for row in offsets):
        raise UnsupportedModelError(f"{describe(node)}: the input's scale varies within a channel")
    if any(v != 0 for v in offsets.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: the input has a float offset (a float bias before this Conv)")
    windows = Windows.read(node, tuple(w.ints.shape[2:]))
    group = windows.group
    cg = channels // group
    weight = w.fractions()  # [M, C/g, k...]
    out_channels = weight.shape[0]
    # W_eff[o, c, ...] = scale[input channel of (o, c)] * W[o, c, ...]; factor per output channel.
    in_scale = per_channel[:, 0]
    effective = np.empty(weight.shape, dtype=object)
    for o in range(out_channels):
        g = o // (out_channels // group)
        effective[o] = weight[o] * in_scale[g * cg : (g + 1) * cg].reshape((cg,) + (1,) * (weight.ndim - 2))
    flat = effective.reshape(out_channels, -1).T
    ints, scales = _factor_columns(node, flat)
    ints = ints.T.reshape(weight.shape)
    lo_c = np.asarray([min(row) for row in a.lo.reshape(channels, -1)], dtype=object)
    hi_c = np.asarray([max(row) for row in a.hi.reshape(channels, -1)], dtype=object)
    low, high = conv_ints(lo_c, hi_c, ints, group)
    pads = windows.pads_for(dims[1:])
    if any(pads):
        low, high = np.minimum(low, 0), np.maximum(high, 0)
    spatial = (1,) * (len(dims) - 1)
    offset = _objects(Fraction(0), (1, out_channels) + spatial)
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = self.constant(node.inputs[2])
        if bias is None:
            raise UnsupportedModelError(f"{describe(node)}: the bias must be a constant")
        offset = bias.fractions().reshape((1, out_channels) + spatial)
        node.resize_inputs(2) if hasattr(node, "resize_inputs") else node.replace_input_with(2, None)
    node.replace_input_with(1, self.integer_weight(ints, node))
    self.values[node.outputs[0]] = Affine(
        scales.reshape((1, out_channels) + spatial), offset,
        low.reshape((1, out_channels) + spatial), high.reshape((1, out_channels) + spatial), exp=a.exp,
    )  # fmt: skip


def _pool_max(self: _Rewriter, node: ir.Node) -> None:
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    channels = dims[0]
    for arr in (a.scale, a.offset):
        if any(len(set(row)) != 1 for row in arr.reshape(channels, -1)):
            raise UnsupportedModelError(f"{describe(node)}: the scale varies within a channel")
    if any(v <= 0 for v in a.scale.reshape(-1)):
        raise UnsupportedModelError(f"{describe(node)}: a maximum of a non-positively scaled value")
    out_dims = self.dims(node.outputs[0], node)
    per = lambda arr, f: np.asarray([f(row) for row in arr.reshape(channels, -1)], dtype=object).reshape((1, channels) + (1,) * (len(out_dims) - 1))  # noqa: E731
    self.values[node.outputs[0]] = Affine(per(a.scale, lambda r: r[0]), per(a.offset, lambda r: r[0]), per(a.lo, min), per(a.hi, max), a.relu, a.exp)


def _move(self: _Rewriter, node: ir.Node) -> None:
    """Ops that move elements: the tracked arrays move with them (the op's own kernel on indices)."""
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    constants = tuple(None if i == 0 else (None if v is None else self._exact.get(v)) for i, v in enumerate(node.inputs))
    plain = tuple(c if not isinstance(c, Exact) else c.to_float64() for c in constants)
    kernel = sim_ops.builder_for(node)(sim_ops.NodeSpec(node, plain, None))
    index = np.arange(int(np.prod(dims)), dtype=np.float64).reshape((1, *dims))
    moved = np.asarray(kernel([index, *plain[1:]])[0]).astype(np.int64)
    pick = lambda arr: arr.reshape(-1)[moved]  # noqa: E731
    self.values[node.outputs[0]] = Affine(pick(a.scale), pick(a.offset), pick(a.lo), pick(a.hi), a.relu, a.exp)


def _concat(self: _Rewriter, node: ir.Node) -> None:
    if any(v is not None and v not in self.values for v in node.inputs):
        raise UnsupportedModelError(f"{describe(node)}: concatenates a rescaled value with a value computed in float")
    axis_attr = node.attributes.get("axis")
    parts = [self.values[v].full(self.dims(v, node)) for v in node.inputs]
    if len({p.relu for p in parts}) != 1 or len({p.exp for p in parts}) != 1:
        raise UnsupportedModelError(f"{describe(node)}: concatenates values with and without a pending Relu")
    rank = parts[0].scale.ndim
    axis = int(axis_attr.value) % rank if axis_attr is not None else 0
    if axis == 0:
        raise UnsupportedModelError(f"{describe(node)}: Concat along the batch axis")
    joined = [np.concatenate([getattr(p, f) for p in parts], axis=axis) for f in ("scale", "offset", "lo", "hi")]
    self.values[node.outputs[0]] = Affine(*joined, parts[0].relu, parts[0].exp)


def _identity(self: _Rewriter, node: ir.Node) -> None:
    self.values[node.outputs[0]] = self.values[node.inputs[0]]


def _cast(self: _Rewriter, node: ir.Node) -> None:
    """A Cast between float types keeps the integers (HAWQ's lifted graphs requantize in double); the
    planner lowers it to nothing. float32 holds them: every rescaled value is an integer below 2^24
    times a power of two (checked where weights and requantizations are made)."""
    to = node.attributes.get("to")
    if to is None or int(to.value) not in (int(ir.DataType.FLOAT), int(ir.DataType.DOUBLE)):
        raise UnsupportedModelError(f"{describe(node)}: a Cast of a rescaled value to a type that is not float")
    _identity(self, node)


def _quant(self: _Rewriter, node: ir.Node) -> None:
    if node.inputs[0] not in self.values or any(v in self.values for v in node.inputs[1:] if v is not None):
        raise UnsupportedModelError(f"{describe(node)}: its parameters must be constants")
    view = quantizer(node)
    assert view is not None
    if view.is_bipolar:
        _bipolar(self, node)
    else:
        self.requantize(node)


def _bipolar(self: _Rewriter, node: ir.Node) -> None:
    """`+s` where relu?(scale * n + offset) >= 0, else `-s`: a threshold on the integers, per element
    (n >= ceil(-offset/scale) for a positive scale, n <= floor(-offset/scale) for a negative one),
    as `BipolarQuant(sign * n + shift)`, exact in the graph's integers."""
    view = quantizer(node)
    assert view is not None
    scale = view.scale
    if scale is None or scale.size != 1 or not float(scale.reshape(-1)[0]) > 0:
        raise UnsupportedModelError(f"{describe(node)}: a binary quantizer needs one positive scale")
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    sign = np.empty(a.scale.shape, dtype=object)
    shift = np.empty(a.scale.shape, dtype=object)
    for index in np.ndindex(a.scale.shape):
        k, o = a.scale[index], a.offset[index]
        if a.relu:  # relu(...) >= 0 always
            sign[index], shift[index] = 0, 1
        elif k == 0:
            sign[index], shift[index] = 0, (1 if o >= 0 else -1)
        elif k > 0:
            theta = -(o / k)
            sign[index], shift[index] = 1, -math.ceil(theta)
        else:
            phi = -(o / k)
            sign[index], shift[index] = -1, math.floor(phi)
    name = _label(node)
    multiplier = _float32_exact(sign * Fraction(2) ** -a.exp)
    offset = _float32_exact(shift)
    if multiplier is None or offset is None:
        raise UnsupportedModelError(f"{describe(node)}: the threshold does not fit float32's 24 bits")
    value = self.insert(node, "Mul", [x, self.initializer(_compact(multiplier), f"{name}_sign")], f"{name}_sign_mul")
    value = self.insert(node, "Add", [value, self.initializer(_compact(offset), f"{name}_threshold")], f"{name}_threshold_add")
    node.replace_input_with(0, value)
    p2 = _is_power_of_two(scale)
    if not p2:
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{name}_unit_scale"))
    s = Fraction(float(scale.reshape(-1)[0]))
    out_dims = self.dims(node.outputs[0], node)
    shape = (1,) * (len(out_dims) + 1)
    self.values[node.outputs[0]] = Affine(
        _objects(s, shape), _objects(Fraction(0), shape), _objects(-1, shape), _objects(1, shape),
        exp=power_of_two_exponent(float(s)) if p2 else 0,
    )  # fmt: skip


def _average_pool(self: _Rewriter, node: ir.Node) -> None:
    """An average over 2^k elements is exact in the graph's integers: n sums, the grid gets finer."""
    x = node.inputs[0]
    dims = self.dims(x, node)
    a = self.values[x].full(dims)
    channels = dims[0]
    if a.relu:
        raise UnsupportedModelError(f"{describe(node)}: averages a Relu of a value with a float offset")
    for arr in (a.scale, a.offset):
        if any(len(set(row)) != 1 for row in arr.reshape(channels, -1)):
            raise UnsupportedModelError(f"{describe(node)}: the scale varies within a channel")
    if node.op_type == "GlobalAveragePool":
        count, padded = int(np.prod(dims[1:])), False
    else:
        kernel = node.attributes.get("kernel_shape")
        windows = Windows.read(node, tuple(kernel.value) if kernel is not None else ())
        count = int(np.prod(windows.kernel))
        padded = any(windows.pads_for(dims[1:]))
        if padded and not windows.count_include_pad:
            raise UnsupportedModelError(f"{describe(node)}: an average over padded windows of varying size")
        if padded and any(v != 0 for v in a.offset.reshape(-1)):
            raise UnsupportedModelError(f"{describe(node)}: pads a value with a float offset")
    k = power_of_two_exponent(float(count))
    if k is None:
        raise UnsupportedModelError(
            f"{describe(node)}: an average over {count} elements of a value with a scale that is not a power of two "
            "(only averages over 2^k elements are exact in fixed point)"
        )
    out_dims = self.dims(node.outputs[0], node)
    per = lambda arr, f: np.asarray([f(row) for row in arr.reshape(channels, -1)], dtype=object).reshape((1, channels) + (1,) * (len(out_dims) - 1))  # noqa: E731
    lo, hi = per(a.lo, min) * count, per(a.hi, max) * count
    if padded:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    scale = per(a.scale, lambda r: r[0]) / count
    self.values[node.outputs[0]] = Affine(scale, per(a.offset, lambda r: r[0]), lo, hi, exp=a.exp - k)


def _trunc(self: _Rewriter, node: ir.Node) -> None:
    """qonnx's Trunc: round(x / scale + z) onto the input grid (half to even, no clamp), divide by a power
    of two t, clamp (v2) and round with the node's mode. The first rounding is a proven dyadic
    requantization; the second is exact: Mul(1/t) -> Quant(scale 1)."""
    view = quantizer(node)
    assert view is not None
    x = node.inputs[0]
    scale, zero = view.scale, view.zero_point
    if scale is None or zero is None or np.any(zero != 0) or scale.size != 1:
        raise UnsupportedModelError(f"{describe(node)}: Trunc needs one constant scale and a zero point of 0")
    in_bits = view.constant("in_bit_width")
    out_bits = view.bits
    if in_bits is None or out_bits is None:
        raise UnsupportedModelError(f"{describe(node)}: Trunc's bit widths must be constants")
    a = self.values[x].full(self.dims(x, node))
    # The first rounding's codes: wide enough that no clamp binds.
    ends = [Fraction(v) * k / Fraction(float(scale.reshape(-1)[0])) + o / Fraction(float(scale.reshape(-1)[0]))
            for v in (*a.lo.reshape(-1), *a.hi.reshape(-1)) for k, o in ((a.scale.reshape(-1)[0], a.offset.reshape(-1)[0]),)]  # fmt: skip
    reach = max(abs(math.floor(e)) + 2 for e in ends)
    width = max(2, reach.bit_length() + 1)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    first, sigma = self.dyadic(node, x, scale, low, high, "ROUND")
    first_quant = ir.node(
        "Quant", [first, self.initializer(np.float32(1), f"{_label(node)}_grid_scale"),
                  self.initializer(np.float32(0), f"{_label(node)}_grid_zero"), self.initializer(np.float32(width), f"{_label(node)}_grid_bits")],
        attributes={"signed": 1, "narrow": 0, "rounding_mode": "ROUND"}, domain=node.domain, name=self.names(f"{_label(node)}_grid"),
    )  # fmt: skip
    first_quant.outputs[0].name = self.names(f"{first_quant.name}_out")
    first_quant.outputs[0].shape, first_quant.outputs[0].type = x.shape, x.type
    self.graph.insert_before(node, first_quant)
    if view.layout == "Trunc v2":
        out_scale = view.constant("out_scale")
        shift = float(2.0 ** np.round(np.log2(np.asarray(out_scale, dtype=np.float64) / scale.astype(np.float64))).reshape(-1)[0])
        signed, narrow = view.signed, view.narrow
        low2, high2 = code_bounds(int(out_bits), signed, narrow)
        final = Fraction(float(np.asarray(out_scale).reshape(-1)[0]))
    else:
        shift = float(2.0 ** (float(np.asarray(in_bits).reshape(-1)[0]) - float(out_bits)))
        low2, high2 = -(1 << 62), 1 << 62
        signed, narrow = True, False
        final = Fraction(float(scale.reshape(-1)[0]))
    divided = self.insert(node, "Mul", [first_quant.outputs[0], self.initializer(np.float32(1.0 / shift), f"{_label(node)}_shift")], f"{_label(node)}_shift_mul")
    bits2 = out_bits if view.layout == "Trunc v2" else width
    second = ir.node(
        "Quant", [divided, self.initializer(np.float32(1), f"{_label(node)}_unit_scale"),
                  self.initializer(np.float32(0), f"{_label(node)}_zero"), self.initializer(np.float32(bits2), f"{_label(node)}_bits")],
        attributes={"signed": int(signed), "narrow": int(narrow), "rounding_mode": view.rounding_mode},
        domain=node.domain if view.layout != "Trunc v2" else node.domain, name=self.names(f"{_label(node)}_truncated"),
    )  # fmt: skip
    second.domain = "qonnx.custom_op.general"
    first_quant.domain = "qonnx.custom_op.general"
    second.outputs[0].name = self.names(f"{second.name}_out")
    second.outputs[0].shape, second.outputs[0].type = node.outputs[0].shape, node.outputs[0].type
    self.graph.insert_before(node, second)
    a0, r, t, _, _, _ = self._last
    lo1, hi1 = _requantized_range(a0, r, t, low, high, "ROUND")
    lo2 = np.frompyfunc(lambda v: max(low2, min(high2, math.floor(Fraction(v) / Fraction(shift)) - 1)), 1, 1)(lo1)
    hi2 = np.frompyfunc(lambda v: max(low2, min(high2, math.ceil(Fraction(v) / Fraction(shift)) + 1)), 1, 1)(hi1)
    shape = (1,) * len(lo1.shape)
    self.values[node.outputs[0]] = Affine(_objects(final, shape), _objects(Fraction(0), shape), lo2, hi2)
    self.bypass(node, second.outputs[0])


RULES = {
    **{key: _quant for key in INTEGER_QUANTIZERS},
    onnx_op("Mul"): _rescale,
    onnx_op("Div"): _rescale,
    onnx_op("Add"): _rescale,
    onnx_op("Sub"): _rescale,
    onnx_op("BatchNormalization"): _batch_norm,
    onnx_op("Relu"): _relu,
    onnx_op("MatMul"): _matmul,
    onnx_op("Gemm"): _gemm,
    onnx_op("Conv"): _conv,
    onnx_op("MaxPool"): _pool_max,
    onnx_op("AveragePool"): _average_pool,
    onnx_op("GlobalAveragePool"): _average_pool,
    TRUNC: _trunc,
    BIPOLAR_QUANTIZER: _quant,
    onnx_op("GlobalMaxPool"): _pool_max,
    onnx_op("Reshape"): _move,
    onnx_op("Flatten"): _move,
    onnx_op("Transpose"): _move,
    onnx_op("Squeeze"): _move,
    onnx_op("Unsqueeze"): _move,
    onnx_op("Concat"): _concat,
    onnx_op("Identity"): _identity,
    onnx_op("Cast"): _cast,
    onnx_op("Dropout"): _identity,
}


@dataclass(frozen=True)
class IntegerRequant(Pass):
    name: ClassVar[str] = "integer-requant"
    summary: ClassVar[str] = (
        "Quantizers with scales that are not powers of two -> integer codes, ports of codes, and proven "
        "fewest-bit dyadic requantizations (the exact meaning, not float32's, is kept)."
    )
    preserves: ClassVar[str] = "exact"
    strict: bool = option(False, "refuse (an error naming the node) a model it cannot take to integers, instead of leaving it")

    def run(self, model: ir.Model) -> PassResult:
        """All or nothing: the model is rewritten on a copy, which replaces it only when every part
        could be taken to integers. A refusal leaves the model as it was and is recorded in its
        metadata (`REFUSAL_KEY`): the compile driver reports it, since precision inference would
        refuse the float scales left behind with a less useful reason."""
        model.metadata_props.pop(REFUSAL_KEY, None)
        trial = copy_model(model)
        rewriter = _Rewriter(trial)
        try:
            rewriter.run()
        except UnsupportedModelError as refusal:
            if self.strict:
                raise
            model.metadata_props[REFUSAL_KEY] = str(refusal)
            return PassResult(False, {**{key: 0 for key in COUNTERS}, "models-refused": 1})
        statistics = {key: rewriter.statistics[key] for key in COUNTERS}
        changed = any(rewriter.statistics[key] for key in COUNTERS[:3])
        if changed:
            model.graph = trial.graph
            model.metadata_props.clear()
            model.metadata_props.update(trial.metadata_props)
        return PassResult(changed, {**statistics, "models-refused": 0})
