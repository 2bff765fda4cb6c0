"""integer-requant's walk over the graph: where integers start (ports of codes), the rules per op,
the proven requantizations, the outputs' affine maps."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.constants import make_initializer
from hawqc.ir.diagnostics import describe
from hawqc.ir.dyadic_requant import NoDyadic, Requantization, SumDyadic, SumRequantization, solve, solve_sum
from hawqc.ir.interfaces import InputCodes, OutputAffine, write_input, write_output
from hawqc.ir.names import FreshNames
from hawqc.ir.ops.keys import onnx_op, op_key
from hawqc.ir.ops.quantizer import BIPOLAR_QUANTIZER, INTEGER_QUANTIZERS, code_bounds, quantizer
from hawqc.ir.qtypes import power_of_two_exponent
from hawqc.ir.quant_annotation import QuantAnnotation, annotate
from hawqc.ir.rationals import exact_fractions
from hawqc.passes.integer_requant.rules import RULES
from hawqc.passes.integer_requant.tracking import (
    AFFINE_OPS,
    FEWEST_PROVEN_KEY,
    MOVE_OPS,
    MULTIPLIER_BITS_KEY,
    Affine,
    InputChain,
    PendingSum,
    compact,
    float_exact,
    is_power_of_two,
    label,
    objects,
    one_power_of_two,
    requantized_range,
)
from hawqc.sim.exact import Exact, ExactExecutor


class Rewriter:
    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.names = FreshNames(self.graph)
        self.values: dict[ir.Value, Affine] = {}
        # Sums of two rescaled values of different scales, waiting for the quantizer that reads them.
        self.sums: dict[ir.Value, PendingSum] = {}
        self.statistics: Counter = Counter()
        self._constants: dict[ir.Value, object] | None = None

    @property
    def _exact(self) -> dict[ir.Value, object]:
        """Every constant, exactly; folded on first use (seconds on millions of weights), so that a
        model of powers of two only is passed over without it."""
        if self._constants is None:
            self._constants = ExactExecutor.constants_of(self.model)
        return self._constants

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
        value = self.initializer(ints.astype(np.float32), f"{label(node)}_integer_weight")
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
            exact = float_exact(part, double)
            assert exact is not None
            suffix = "" if part_index == 0 else f"_{part_index}"
            value = self.insert(before, "Add", [value, self.initializer(compact(exact), f"{name}_dyadic_offset{suffix}", like=value)], f"{name}_requant_add{suffix}")
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
        identity = ir.node("Identity", [source], name=self.names(f"{label(node)}_rescaled"))
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
        runtime = self.runtime_values()
        for node in self.graph:
            if not node.outputs or (not any(True for _ in node.outputs[0].uses()) and not node.outputs[0].is_graph_output()):
                continue  # dead (a weight quantizer this pass already read): a second run changes nothing
            view = quantizer(node)
            if view is None or view.scale is None or op_key(node) not in (*INTEGER_QUANTIZERS, BIPOLAR_QUANTIZER):
                continue
            if not is_power_of_two(view.scale):
                return True
            if node.inputs[0] is not None and node.inputs[0] in runtime:
                chain = self.input_chain(node.inputs[0])
                if chain.source is not None and not chain.trivial:
                    return True
        return False

    def runtime_values(self) -> set[ir.Value]:
        """The values computed from a graph input (the others are constants), found without folding."""
        runtime = {v for v in self.graph.inputs if v.name not in self.graph.initializers}
        for node in self.graph:  # topological order
            if any(v in runtime for v in node.inputs if v is not None):
                runtime.update(node.outputs)
        return runtime

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
        zero = objects(Fraction(0), shape)
        if chain.trivial and is_power_of_two(scale):
            exp = power_of_two_exponent(float(s))
            self.values[node.outputs[0]] = Affine(objects(s, shape), zero, objects(low, shape), objects(high, shape), exp=exp)
            return
        write_input(self.model, InputCodes(
            chain.source.name, s, int(view.bits), view.signed, view.narrow, mode, low, high, chain.scale, chain.offset,
        ))  # fmt: skip
        codes = self.reroot(node, chain)
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{label(node)}_unit_scale"))
        self.values[codes] = Affine(objects(s, shape), zero, objects(low, shape), objects(high, shape))
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
        if chain.trivial and is_power_of_two(scale):
            self.values[node.outputs[0]] = Affine(
                objects(s, shape), objects(Fraction(0), shape), objects(-1, shape), objects(1, shape), exp=power_of_two_exponent(float(s))
            )  # fmt: skip
            return
        write_input(self.model, InputCodes(
            chain.source.name, s, 1, True, False, "ROUND", -1, 1, chain.scale, chain.offset, bipolar=True,
        ))  # fmt: skip
        codes = self.reroot(node, chain)
        node.replace_input_with(1, self.initializer(np.ones_like(scale), f"{label(node)}_unit_scale"))
        self.values[codes] = Affine(objects(s, shape), objects(Fraction(0), shape), objects(-1, shape), objects(1, shape))
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
            if mover.op_type in AFFINE_OPS:
                continue
            mover.replace_input_with(0, value)
            value = mover.outputs[0]
        for reader, index in readers:
            reader.replace_input_with(index, value)
        for rescale in chain.nodes:
            if rescale.op_type in AFFINE_OPS:
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
            if producer.op_type in MOVE_OPS and op_key(producer) in RULES:
                nodes.append(producer)
                value = producer.inputs[0]
                continue
            if op_key(producer) not in {onnx_op(o) for o in AFFINE_OPS}:
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
            if producer.op_type not in AFFINE_OPS:
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
        try:
            rule(self, node)
        except (ValueError, IndexError, TypeError, AttributeError, KeyError) as err:
            # A layout the rule was not written for (a rank, a broadcast, a scale's shape): the pass
            # cannot take this model to integers, and says where; the model is left as it was.
            raise UnsupportedModelError(
                f"{describe(node)}: integer-requant has no rule for this layout of {node.op_type} ({type(err).__name__}: {err})"
            ) from err

    def requantize(self, node: ir.Node) -> None:
        """A Quant of a rescaled value: a proven dyadic multiply-add, then the Quant at scale 1 (or at
        its own scale, a power of two); its codes are the next rescaled value."""
        scale, low, high, mode = self.quant_parameters(node)
        if node.inputs[0] in self.sums:
            value, sigma, (lo, hi) = self.dyadic_sum(node, node.inputs[0], scale, low, high, mode)
        else:
            value, sigma = self.dyadic(node, node.inputs[0], scale, low, high, mode)
            lo, hi = requantized_range(*self._last)
        p2 = one_power_of_two(scale)
        node.replace_input_with(0, value)
        node.replace_input_with(1, self.initializer(sigma, f"{label(node)}_unit_scale" if not p2 else f"{label(node)}_scale", like=node.inputs[1]))
        self.values[node.outputs[0]] = self.codes_of(node, lo, hi, scale, sigma)

    def dyadic(self, node: ir.Node, x: ir.Value, scale: np.ndarray, low: int, high: int, mode: str) -> tuple[ir.Value, np.ndarray]:
        """Insert before `node` the multiply-add whose Quant at scale sigma (returned: 1, or `scale` when
        that is a power of two) gives the codes `R(clip(relu?(real(x) / scale)))` exactly. Sets
        `self._last` to (the input's tracking, r, t, the codes' range)."""
        dims = self.dims(x, node)
        a = self.values[x].full(dims)
        s, sigma, sigma_f = self.requant_units(scale, dims, a.scale.shape)
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
        # The graph holds n * 2^exp: multiply by m / 2^(e + exp), and scale the codes by sigma.
        double = x.dtype == ir.DataType.DOUBLE
        multiplier = float_exact(m * sigma_f / Fraction(2) ** a.exp, double)
        if multiplier is None:
            width = "float64's 53" if double else "float32's 24"
            raise UnsupportedModelError(f"{describe(node)}: the exact requantization needs a multiplier wider than {width} bits")
        name = label(node)
        value = self.insert(node, "Mul", [x, self.initializer(compact(multiplier), f"{name}_dyadic_multiplier", like=x)], f"{name}_requant_mul")
        if not all(d.fewest for d in solved.values()):
            value.producer().metadata_props[FEWEST_PROVEN_KEY] = "false"
        value = self.finish_requant(node, value, value.producer(), list(solved.values()), c * sigma_f, a.relu)
        self._last = (a, r, t, low, high, mode)
        return value, sigma

    def dyadic_sum(self, node: ir.Node, x: ir.Value, scale: np.ndarray, low: int, high: int, mode: str):
        """`dyadic` for a sum of two rescaled values of different scales (`rules_arithmetic.add_rescaled`):
        each branch multiplied by its own dyadic m_i / 2^e before the Add, then the offset, Relu and
        the Quant; proven on every pair of branch values. Returns the value, sigma and the codes' range."""
        pending = self.sums.pop(x)
        add = pending.node
        dims = self.dims(x, node)
        a, b = pending.a.full(dims), pending.b.full(dims)
        if a.relu or b.relu:
            raise UnsupportedModelError(f"{describe(add)}: adds a Relu of a value with a float offset")
        sign = 1 if add.op_type == "Add" else -1
        s, sigma, sigma_f = self.requant_units(scale, dims, a.scale.shape)
        r1, r2, t = a.scale / s, sign * b.scale / s, (a.offset + sign * b.offset) / s
        solved: dict[tuple, SumDyadic] = {}
        m1, m2, c = (np.empty(r1.shape, dtype=object) for _ in range(3))
        los, his = np.empty(r1.shape, dtype=object), np.empty(r1.shape, dtype=object)
        for index in np.ndindex(r1.shape):
            key = (r1[index], r2[index], t[index], int(a.lo[index]), int(a.hi[index]), int(b.lo[index]), int(b.hi[index]))
            if key not in solved:
                q = SumRequantization(*key, low, high, mode, pending.relu)
                try:
                    solved[key] = solve_sum(q)
                except NoDyadic as refusal:
                    raise UnsupportedModelError(f"{describe(node)}: no dyadic requantization of the sum {describe(add)} is exact: {refusal.reason}") from None
                # The codes are monotone in each branch: their extremes lie at the corners of the box.
                corners = q.exact_codes(np.array([q.lo1, q.lo1, q.hi1, q.hi1]), np.array([q.lo2, q.hi2, q.lo2, q.hi2]))
                solved[key] = (solved[key], int(corners.min()), int(corners.max()))
            d, los[index], his[index] = solved[key]
            unit = Fraction(1, 1 << d.e)
            m1[index], m2[index], c[index] = d.m1 * unit, d.m2 * unit, d.c * unit
        name = label(node)
        for index, (multiplier, tracked) in enumerate(((m1, a), (m2, b))):
            branch = add.inputs[index]
            exact = float_exact(multiplier * sigma_f / Fraction(2) ** tracked.exp, branch.dtype == ir.DataType.DOUBLE)
            if exact is None:
                raise UnsupportedModelError(f"{describe(node)}: the exact requantization of the sum {describe(add)} needs a multiplier wider than its float type")
            scaled = self.insert(add, "Mul", [branch, self.initializer(compact(exact), f"{name}_dyadic_multiplier{index}", like=branch)], f"{name}_requant_mul{index}")
            add.replace_input_with(index, scaled)
        if add.op_type == "Sub":  # the sign is in m2: an Add (the lowering has no Sub of two tensors)
            x = self.insert(add, "Add", list(add.inputs), f"{label(add)}_as_add")
            ir.convenience.replace_all_uses_with(add.outputs[0], x)
            self.graph.remove(add, safe=True)
            add = x.producer()
        value = self.finish_requant(node, x, add, [d for d, _, _ in solved.values()], c * sigma_f, pending.relu)
        return value, sigma, (los, his)

    def requant_units(self, scale: np.ndarray, dims: tuple[int, ...], shape: tuple[int, ...]):
        """For a requantization to the quantizer scale `scale`: that scale as exact fractions broadcast
        to `shape`, and sigma, the scale the rewritten Quant keeps (itself when it is one power of two,
        else 1), as float32 and as exact fractions broadcast to `shape`."""
        rank = len(dims) + 1
        s = np.broadcast_to(exact_fractions(scale.astype(np.float64)).reshape((1,) * (rank - scale.ndim) + scale.shape), shape)
        sigma = scale.astype(np.float32) if one_power_of_two(scale) else np.ones_like(scale, dtype=np.float32)
        sigma_f = np.broadcast_to(exact_fractions(sigma.astype(np.float64)).reshape((1,) * (rank - sigma.ndim) + sigma.shape), shape)
        return s, sigma, sigma_f

    def finish_requant(self, node: ir.Node, value: ir.Value, multiplying: ir.Node, dyadics: list, offset: np.ndarray, relu: bool) -> ir.Value:
        """After the multiply (by `multiplying`, which records the widest multiplier's bits): the
        exact offset, the Relu if one waits, and the statistics; the value the Quant `node` reads."""
        bits = max(d.mantissa_bits for d in dyadics)
        multiplying.metadata_props[MULTIPLIER_BITS_KEY] = str(bits)
        name = label(node)
        value = self.offsets(node, value, offset, name, value.dtype == ir.DataType.DOUBLE)
        if relu:
            value = self.insert(node, "Relu", [value], f"{name}_relu")
        self.statistics["requantizations-made-dyadic"] += 1
        self.statistics["widest-multiplier-bits"] = max(self.statistics["widest-multiplier-bits"], bits)
        return value

    def codes_of(self, node: ir.Node, lo: np.ndarray, hi: np.ndarray, scale: np.ndarray, sigma: np.ndarray) -> Affine:
        """The tracking of a requantized value: codes in [lo, hi] (times sigma in the graph), real = code * scale."""
        out_dims = self.dims(node.outputs[0], node)
        rank = len(out_dims) + 1
        s = exact_fractions(scale.astype(np.float64)).reshape((1,) * (rank - scale.ndim) + scale.shape)
        exp = power_of_two_exponent(float(sigma.reshape(-1)[0])) if sigma.size else 0
        return Affine(s, objects(Fraction(0), s.shape), lo, hi, exp=exp)

    def finish_output(self, value: ir.Value) -> None:
        a = self.values[value]
        if a.relu:
            raise UnsupportedModelError(
                f"graph output {value.name!r}: a Relu of a rescaled value with a float offset ends the graph; "
                "add a quantizer before the output"
            )
        # The port carries the graph's value n * 2^exp; the model's value is scale * n + offset.
        write_output(self.model, OutputAffine(value.name, a.scale / Fraction(2) ** a.exp, a.offset))
        self.statistics["output-affine-maps"] += 1
