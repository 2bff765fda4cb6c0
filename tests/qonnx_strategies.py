"""Hypothesis strategies: random valid QONNX graphs, in the forms real exporters write them.

`qonnx_graphs()` draws a `GeneratedGraph`: an `onnx.ModelProto` (serialized, so that every load is
a fresh, independent model) and the set of features it exercises. The graphs use only the ops the
semantic executor runs (`hawqc.sim.ops.OP_TABLE`), and are built so that:

- every value is finite: scales are tied to the bit width (the largest quantized magnitude is
  0.25..4), layers are narrow, so no product overflows float32;
- dim 0 is the batch, declared 1, and no op mixes it with other dims (Reshape targets keep dim 0 as
  1, -1 or 0; Flatten only at axis 0 or 1), so the executor's batched run means what ONNX means;
- every QONNX quantization parameter is a constant (an initializer, a `Constant` node, or a graph
  input shadowed by an initializer), as the verifier requires;
- no pass has to emit an op the executor cannot run. In particular, Gemm's transA is never 1 and a
  Gemm with transB=1 reads its weight straight from a constant or from a quantizer of a constant:
  otherwise `gemm-to-matmul` must emit a `Transpose`, which the executor does not run yet.

What the graphs cover (the feature names in `GeneratedGraph.features`; `FEATURES` lists them all):
MLPs (input Quant -> MatMul/Gemm with quantized weights and biases -> Relu -> activation Quant),
HAWQ-style layers (Div -> MatMul(Quant(W_int, 1)) -> Add(Quant(b_int, 1)) -> Mul), bit widths
1..16, signed and unsigned, narrow, the seven rounding modes (also spelled in lower case, and
absent), absent `signed`/`narrow`, the four QONNX domain names, Quant / IntQuant / BipolarQuant,
per-tensor / per-output-channel / per-input-channel / per-element scales and zero points, non-zero
zero points, power-of-two and arbitrary scales, Gemm with transB, alpha, beta (absent, 1, powers of
two, others, 0) and absent or empty bias, branches that rejoin through Add/Sub/Mul, a second graph
input, Identity chains (on data, on weights, onto a graph output), dead nodes and initializers,
constant subexpressions (Add/Sub/Mul/Div/Reshape/MatMul/Gemm of constants), `Constant` nodes (every
attribute form), graph inputs shadowed by initializers, Reshape and Flatten around the batch dim
(rank-3 and rank-4 tensors), batched rank-3 MatMul, two graph outputs, a graph output that is also
read by other nodes, unnamed and duplicate node names, nodes in a shuffled topological order,
undeclared output shapes and missing opset imports of the QONNX domain.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hawqc.ir.normalize import normalize
from hawqc.ir.shape_inference import infer_shapes
from hawqc.ir.verifier import verify

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas", "hawq2qonnx", "finn.custom_op.general")
ROUNDING_MODES = ("ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN")
# opset -> an IR version that declares it (HAWQ's exporter writes opset 11, Brevitas 13..17).
OPSETS = {11: 7, 13: 7, 17: 8, 19: 9}
# Gemm factors: powers of two split exactly (gemm-to-matmul rewrites them), the others do not.
POWER_OF_TWO_FACTORS = (1.0, 0.5, 2.0, 0.25, 4.0)
OTHER_FACTORS = (0.75, 1.5, 3.0, 0.1, -1.0, -0.5, 0.3)

FEATURES = frozenset(
    {
        # structure
        "mlp", "layer:matmul", "layer:gemm", "layer:hawq", "relu", "activation-quant",
        "branch", "join:Add", "join:Sub", "join:Mul", "second-input", "identity-chain",
        "identity-on-weight", "identity-to-output", "dead-node", "dead-initializer",
        "constant-subexpression", "constant-gemm", "constant-gemm:inexact-alpha-with-bias",
        "constant-node", "shadowed-input", "reshape", "flatten", "flatten-axis0", "input-rank>2",
        "matmul-rank3", "rescale", "two-outputs", "output-also-consumed",
        "identity-chain-between-outputs", "unnamed-nodes", "duplicate-node-names", "shuffled-order",
        "output-shape-undeclared", "pass-like-names", "qonnx-opset-import-missing",
        # quantizers
        "op:Quant", "op:IntQuant", "op:BipolarQuant", "bits:1", "bits:2-8", "bits:9-16",
        "signed", "unsigned", "narrow", "signed/narrow-absent", "zero-point-nonzero",
        "scale:per-tensor", "scale:per-out-channel", "scale:per-in-channel", "scale:per-element",
        "zeropt:per-tensor", "zeropt:per-out-channel", "zeropt:per-in-channel", "zeropt:per-element",
        "scale:power-of-two", "scale:arbitrary", "rounding-absent", "rounding-lowercase",
        "unquantized-weight", "float-bias", "quantized-bias",
        # Gemm
        "gemm:transB=1", "gemm:transB=0", "gemm:transB-absent", "gemm:transA=0",
        "gemm:alpha-power-of-two", "gemm:alpha-other", "gemm:beta-power-of-two", "gemm:beta-other",
        "gemm:beta=0", "gemm:no-bias", "gemm:empty-bias",
        *(f"rounding:{mode}" for mode in ROUNDING_MODES),
        *(f"domain:{domain}" for domain in QONNX_DOMAINS),
        *(f"opset:{opset}" for opset in OPSETS),
    }
)  # fmt: skip


@dataclass(frozen=True)
class GeneratedGraph:
    """One drawn graph. Its repr is the graph as ONNX text, so a failing example can be read."""

    data: bytes  # the serialized ModelProto
    features: frozenset[str]

    @property
    def proto(self) -> onnx.ModelProto:
        return onnx.ModelProto.FromString(self.data)

    def load(self) -> ir.Model:
        """A fresh model, loaded as `hawqc.frontends.onnx.load_onnx` loads a file."""
        model = ir.from_proto(self.proto)
        normalize(model)
        infer_shapes(model)
        verify(model)
        return model

    def __repr__(self) -> str:
        return (
            f"GeneratedGraph(features={sorted(self.features)}, text=\n{onnx.printer.to_text(self.proto)}\n)"
        )

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints for a failing example
        printer.text(repr(self))


Shape = tuple[int, ...]


class _GraphBuilder:
    """Collects nodes, constants and shapes while a graph is drawn.

    Structure (which layers, which attributes, which parameter shapes) is drawn through hypothesis,
    so that it shrinks; the numbers inside the tensors come from a numpy generator seeded by one
    drawn integer, which keeps drawing fast.
    """

    def __init__(self, draw: Callable, opset: int) -> None:
        self.draw = draw
        self.opset = opset
        self.rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="tensor seed"))
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.shadowed: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, Shape] = {}
        self.data_values: list[str] = []  # values computed from graph inputs (dead code reads them)
        self.input_names: set[str] = set()
        self.features: set[str] = set()
        self.domains_used: set[str] = set()
        self._count = 0

    # -- drawing ---------------------------------------------------------------------------------

    def chance(self, percent: int) -> bool:
        """True with about `percent`% probability; shrinks toward False."""
        return self.draw(st.integers(0, 99)) >= 100 - percent

    def choice(self, options):
        return self.draw(st.sampled_from(options))

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    # -- graph pieces ----------------------------------------------------------------------------

    def node(
        self, op: str, inputs: list[str], shape: Shape, *, domain: str = "", data: bool = True, **attrs
    ) -> str:
        out = self.fresh(op.lower() + "_")
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"node_{out}", domain=domain, **attrs))
        self.shapes[out] = shape
        if data:
            self.data_values.append(out)
        return out

    def constant(self, array: np.ndarray, prefix: str) -> str:
        """A constant as an initializer, a `Constant` node, or a graph input shadowed by an initializer."""
        name = self.fresh(prefix)
        self.shapes[name] = array.shape
        kind = self.draw(st.sampled_from(["initializer"] * 6 + ["constant-node", "shadowed-input"]))
        if kind == "constant-node":
            self.features.add("constant-node")
            self.nodes.append(self._constant_node(name, array))
            return name
        self.initializers.append(numpy_helper.from_array(array, name))
        if kind == "shadowed-input":
            self.features.add("shadowed-input")
            elem = helper.np_dtype_to_tensor_dtype(array.dtype)
            self.shadowed.append(helper.make_tensor_value_info(name, elem, list(array.shape)))
        return name

    def _constant_node(self, name: str, array: np.ndarray) -> onnx.NodeProto:
        # value_float(s) / value_int(s) exist from opset 12 on; `value` (a tensor) always.
        forms = ["value"]
        if self.opset >= 12 and array.size > 0:  # (onnx's helper cannot type an empty list)
            if array.dtype == np.float32 and array.ndim == 0:
                forms.append("value_float")
            if array.dtype == np.float32 and array.ndim == 1:
                forms.append("value_floats")
            if array.dtype == np.int64 and array.ndim == 1:
                forms.append("value_ints")
        form = self.choice(forms)
        if form == "value":
            attr = {"value": numpy_helper.from_array(array, name + "_value")}
        elif form == "value_float":
            attr = {"value_float": float(array)}
        elif form in ("value_floats", "value_ints"):
            attr = {form: array.tolist()}
        return helper.make_node("Constant", [], [name], name=f"node_{name}", **attr)

    # -- quantizers ------------------------------------------------------------------------------

    def quantizer(
        self,
        source: str | Callable[[np.ndarray, np.ndarray, float, float], str],
        *,
        role: str,
        shape: Shape | None = None,
        out_axis: int | None = None,
        in_axis: int | None = None,
        after_relu: bool = False,
    ) -> str:
        """A Quant / IntQuant / BipolarQuant of `source`.

        role: "input" (of a graph input: `draw_inputs` draws inside its range), "weight" (a constant
        [rows, cols] with `out_axis` / `in_axis` naming its output and input channel), "bias", or
        "activation". A constant `source` may be
        given as a function of (scale, zero point, min_int, max_int) that makes it, so that its
        values can sit on the quantizer's grid and on its rounding ties.
        """
        shape = self.shapes[source] if isinstance(source, str) else shape
        data = role in ("input", "activation")
        domain = self.choice(QONNX_DOMAINS)
        self.domains_used.add(domain)
        self.features.add(f"domain:{domain}")
        if role in ("weight", "activation") and self.chance(8):
            self.features.add("op:BipolarQuant")
            scale = self._scale(shape, role, out_axis, in_axis, bits=1, signed=True)
            x = source if isinstance(source, str) else source(scale, np.float32(0), -1, 1)
            return self.node(
                "BipolarQuant", [x, self.constant(scale, "scale")], shape, domain=domain, data=data
            )
        op = self.choice(["Quant", "IntQuant"])
        self.features.add(f"op:{op}")
        bits = self.integer(1, 16)
        self.features.add("bits:1" if bits == 1 else "bits:2-8" if bits <= 8 else "bits:9-16")
        signed = self.choice([1, 0]) if not after_relu else self.choice([0, 0, 1])
        narrow = self.choice([0, 0, 1])
        attrs: dict = {}
        if self.chance(10):
            signed, narrow = 1, 0  # absent: the QONNX spec's defaults, which the executor applies
            self.features.add("signed/narrow-absent")
        else:
            attrs = {"signed": signed, "narrow": narrow}
        self.features.add("signed" if signed else "unsigned")
        if narrow:
            self.features.add("narrow")
        if self.chance(8):
            self.features.add("rounding-absent")
            self.features.add("rounding:ROUND")
        else:
            mode = self.choice(ROUNDING_MODES)
            self.features.add(f"rounding:{mode}")
            if self.chance(10):
                self.features.add("rounding-lowercase")
                mode = mode.lower()
            attrs["rounding_mode"] = mode
        scale = self._scale(shape, role, out_axis, in_axis, bits=bits, signed=signed)
        zero_point = self._zero_point(shape, role, out_axis, in_axis)
        if signed:
            low, high = -(2 ** (bits - 1)) + narrow, 2 ** (bits - 1) - 1
        else:
            low, high = 0, 2**bits - 1 - narrow
        x = source if isinstance(source, str) else source(scale, zero_point, low, high)
        bitwidth = np.array(bits, dtype=np.float32)
        if self.chance(30):
            bitwidth = bitwidth.reshape(1)
        inputs = [
            x,
            self.constant(scale, "scale"),
            self.constant(zero_point, "zeropt"),
            self.constant(bitwidth, "bits"),
        ]
        return self.node(op, inputs, shape, domain=domain, data=data, **attrs)

    def _parameter_shape(
        self, shape: Shape, role: str, out_axis: int | None, in_axis: int | None, what: str
    ) -> Shape:
        rank = len(shape)
        options = ["per-tensor"] * 3
        if role == "weight":
            options += ["per-out-channel"] * 3 + ["per-in-channel", "per-element"]
        elif rank >= 1 and shape[-1] > 1:
            options += ["per-out-channel"] * 2 + ["per-element"]  # the last axis: an activation's channels
        kind = self.choice(options)
        self.features.add(f"{what}:{kind}")
        if kind == "per-tensor":
            return self.choice([(), (1,)] if rank else [()])
        if kind == "per-element":
            return shape
        if role in ("input", "activation", "bias"):
            # [C] or [1, ..., 1, C] (Brevitas spells it with the batch dim, [1, C, 1, 1]).
            return self.choice([(shape[-1],)] + ([(1,) * (rank - 1) + (shape[-1],)] if rank >= 2 else []))
        axis = out_axis if kind == "per-out-channel" else in_axis
        param = [1, 1]
        param[axis] = shape[axis]
        if axis == 1 and self.chance(50):
            return (shape[1],)  # [C] broadcasts like [1, C]
        return tuple(param)

    def _scale(self, shape: Shape, role: str, out_axis, in_axis, *, bits: int, signed: int) -> np.ndarray:
        """Scales that keep the largest quantized magnitude within 0.25..4 (so nothing overflows)."""
        pshape = self._parameter_shape(shape, role, out_axis, in_axis, "scale")
        levels = 2.0 ** (bits - 1) if signed and bits > 1 else 2.0**bits if not signed else 1.0
        if self.chance(50):
            self.features.add("scale:power-of-two")
            exponents = self.rng.integers(-2, 3, size=pshape)
            return (2.0**exponents / levels).astype(np.float32)
        self.features.add("scale:arbitrary")
        return (self.rng.uniform(0.25, 4.0, size=pshape) / levels).astype(np.float32)

    def _zero_point(self, shape: Shape, role: str, out_axis, in_axis) -> np.ndarray:
        if not self.chance(35):
            return np.zeros(self.choice([(), (1,)] if shape else [()]), dtype=np.float32)
        self.features.add("zero-point-nonzero")
        pshape = self._parameter_shape(shape, role, out_axis, in_axis, "zeropt")
        values = self.rng.integers(-2, 3, size=pshape).astype(np.float32)
        if self.chance(15):
            values += np.float32(0.5)  # QONNX allows any float zero point
        return values

    def _grid_values(
        self, shape: Shape, scale: np.ndarray, zero_point: np.ndarray, low: float, high: float
    ) -> np.ndarray:
        """Values on the quantizer's grid, on its half-steps (rounding ties) and in between,
        reaching one step beyond either end of the range (so that clamping happens too)."""
        grid = self.rng.integers(int(low) - 1, int(high) + 2, size=shape).astype(np.float64)
        kind = self.rng.integers(0, 3, size=shape)
        steps = np.where(
            kind == 0, grid, np.where(kind == 1, grid + 0.5, grid + self.rng.uniform(-0.5, 0.5, size=shape))
        )
        return ((steps - zero_point) * scale).astype(np.float32)

    def _float_values(self, shape: Shape, magnitude: float) -> np.ndarray:
        steps = self.rng.integers(-8, 9, size=shape) + self.rng.choice([0.0, 0.5, 0.3], size=shape)
        return (steps * magnitude / 8).astype(np.float32)

    # -- constant weights and biases -------------------------------------------------------------

    def weight(self, rows: int, cols: int, *, out_axis: int, direct: bool) -> str:
        """A weight [rows, cols], quantized or not. `direct`: the quantizer reads a constant itself."""
        shape = (rows, cols)
        if not self.chance(90):
            self.features.add("unquantized-weight")
            return self._constant_tensor(self._float_values(shape, 1.0), "w", allow_computed=not direct)
        through_identity = not direct and self.chance(12)

        def source(scale, zero_point, low, high) -> str:
            values = self._grid_values(shape, scale, zero_point, low, high)
            w = self._constant_tensor(values, "w", allow_computed=not direct)
            if through_identity:
                self.features.add("identity-on-weight")
                w = self.node("Identity", [w], shape, data=False)
            return w

        return self.quantizer(source, role="weight", shape=shape, out_axis=out_axis, in_axis=1 - out_axis)

    def bias(self, shape: Shape) -> str:
        if not self.chance(70):
            self.features.add("float-bias")
            return self._constant_tensor(
                self._float_values(shape, 2.0), "b", allow_computed=True, computed_percent=40
            )
        self.features.add("quantized-bias")

        def source(scale, zero_point, low, high) -> str:
            return self._constant_tensor(
                self._grid_values(shape, scale, zero_point, low, high), "b", allow_computed=True
            )

        return self.quantizer(source, role="bias", shape=shape)

    def _constant_tensor(
        self, array: np.ndarray, prefix: str, *, allow_computed: bool, computed_percent: int = 20
    ) -> str:
        """`array` as a constant, or (sometimes) computed from constants by standard ops."""
        if not allow_computed or not self.chance(computed_percent):
            return self.constant(array, prefix)
        self.features.add("constant-subexpression")
        kind = self.choice(["Add", "Sub", "Mul", "Div", "Reshape", "MatMul", "Gemm", "Gemm"])
        shape = array.shape
        if kind in ("Add", "Sub"):
            other = self.rng.integers(-2, 3, size=shape).astype(np.float32) / 8
            first = array - other if kind == "Add" else array + other
            return self.node(
                kind,
                [self.constant(first.astype(np.float32), prefix), self.constant(other, "c")],
                shape,
                data=False,
            )
        if kind in ("Mul", "Div"):
            factor = np.float32(2.0 ** self.integer(-2, 2))
            first = array / factor if kind == "Mul" else array * factor
            return self.node(
                kind,
                [self.constant(first.astype(np.float32), prefix), self.constant(np.array(factor), "c")],
                shape,
                data=False,
            )
        if kind == "Reshape":
            flat = self.constant(array.reshape(-1), prefix)
            return self.node(
                "Reshape", [flat, self.constant(np.array(shape, dtype=np.int64), "shape")], shape, data=False
            )
        if len(shape) == 1:
            # A vector: the product as a [1, n] matrix, reshaped (a chain of constant ops).
            matrix = self._constant_product(kind, (1, shape[0]), prefix)
            return self.node(
                "Reshape",
                [matrix, self.constant(np.array(shape, dtype=np.int64), "shape")],
                shape,
                data=False,
            )
        if len(shape) != 2:
            return self.constant(array, prefix)
        return self._constant_product(kind, shape, prefix)

    def _constant_product(self, kind: str, shape: Shape, prefix: str) -> str:
        """MatMul, or Gemm with any attributes but transA (see the module docstring), of constants."""
        k = self.integer(1, 3)
        left = self._float_values((shape[0], k), 1.0)
        right = self._float_values((k, shape[1]), 1.0)
        if kind == "MatMul":
            return self.node(
                "MatMul", [self.constant(left, prefix), self.constant(right, "b")], shape, data=False
            )
        self.features.add("constant-gemm")
        trans_b = self.choice([None, 0, 1])
        if trans_b:
            right = np.ascontiguousarray(right.T)
        # Half the alphas are not powers of two: those round differently when computed in two steps.
        alpha = self.choice([None, *POWER_OF_TWO_FACTORS]) if self.chance(50) else self.choice(OTHER_FACTORS)
        beta = self.choice([None, *POWER_OF_TWO_FACTORS, *OTHER_FACTORS])
        inputs = [self.constant(left, prefix), self.constant(right, "b")]
        if self.chance(70):
            inputs.append(self.constant(self.rng.integers(-4, 5, size=shape[1:]).astype(np.float32) / 4, "c"))
            exact_alpha = alpha is None or np.frexp(np.float32(abs(alpha)))[0] == 0.5
            if not exact_alpha and beta != 0:
                # onnxruntime rounds alpha * AB + beta * C once; rounding alpha * AB first differs.
                self.features.add("constant-gemm:inexact-alpha-with-bias")
        return self.node("Gemm", inputs, shape, data=False, transB=trans_b, alpha=alpha, beta=beta)

    # -- data path blocks ------------------------------------------------------------------------

    def identities(self, h: str) -> str:
        if self.chance(15):
            self.features.add("identity-chain")
            for _ in range(self.integer(1, 3)):
                h = self.node("Identity", [h], self.shapes[h])
        return h

    def dense(self, h: str, out_dim: int) -> str:
        """One dense layer [1, in] -> [1, out] (or [1, a, in] -> [1, a, out] for MatMul)."""
        shape = self.shapes[h]
        in_dim = shape[-1]
        out_shape = (*shape[:-1], out_dim)
        kind = self.choice(["matmul", "gemm", "hawq"] if len(shape) == 2 else ["matmul"])
        self.features.add(f"layer:{kind}")
        if kind == "matmul":
            y = self.node("MatMul", [h, self.weight(in_dim, out_dim, out_axis=1, direct=False)], out_shape)
            if self.chance(60):
                b = self.bias(self.choice([(out_dim,), (1,) * (len(shape) - 1) + (out_dim,)]))
                y = self.node("Add", [y, b] if self.chance(50) else [b, y], out_shape)
            return y
        if kind == "hawq":
            return self._hawq_dense(h, out_dim)
        return self._gemm(h, out_dim)

    def _gemm(self, h: str, out_dim: int) -> str:
        in_dim = self.shapes[h][-1]
        trans_b = self.choice([None, 0, 1, 1])
        self.features.add("gemm:transB-absent" if trans_b is None else f"gemm:transB={trans_b}")
        trans_a = self.choice([None, None, 0])
        if trans_a == 0:
            self.features.add("gemm:transA=0")
        if trans_b:
            w = self.weight(out_dim, in_dim, out_axis=0, direct=True)
        else:
            w = self.weight(in_dim, out_dim, out_axis=1, direct=False)
        alpha = self._gemm_factor("alpha")
        beta = self._gemm_factor("beta")
        inputs = [h, w]
        bias = self.choice(["none", "present", "present", "present", "empty"])
        if bias == "none":
            self.features.add("gemm:no-bias")
        elif bias == "empty":
            self.features.add("gemm:empty-bias")
            inputs.append("")
        else:
            inputs.append(self.bias(self.choice([(out_dim,), (1, out_dim), ()])))
        return self.node("Gemm", inputs, (1, out_dim), transA=trans_a, transB=trans_b, alpha=alpha, beta=beta)

    def _gemm_factor(self, name: str) -> float | None:
        kind = self.choice(
            ["absent", "absent", "power-of-two", "other"] + (["zero"] if name == "beta" else [])
        )
        if kind == "absent":
            return None
        if kind == "zero":
            self.features.add("gemm:beta=0")
            return 0.0
        self.features.add(f"gemm:{name}-{kind}")
        return self.choice(POWER_OF_TWO_FACTORS if kind == "power-of-two" else OTHER_FACTORS)

    def _hawq_dense(self, h: str, out_dim: int) -> str:
        """HAWQ's exporter: Div(s_prev) -> MatMul(Quant(W_int, 1, 0)) -> Add(Quant(b_int, 1, 0)) -> Mul(s)."""
        shape = self.shapes[h]
        in_dim = shape[-1]
        domain = self.choice(QONNX_DOMAINS)
        self.domains_used.add(domain)
        self.features.add(f"domain:{domain}")
        s_prev = np.float32(self.rng.uniform(0.05, 1.0) if self.chance(50) else 2.0 ** self.integer(-4, 0))
        x = self.node("Div", [h, self.constant(np.array(s_prev), "s_prev")], shape)
        bits = self.integer(2, 8)
        limit = 2 ** (bits - 1)
        w_int = self.rng.integers(-limit, limit, size=(in_dim, out_dim)).astype(np.float32)
        one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)

        def int_quant(values: np.ndarray, bits: int) -> str:
            op = self.choice(["Quant", "IntQuant"])
            self.features.update(
                {f"op:{op}", "signed", "rounding:ROUND", "scale:per-tensor", "scale:power-of-two"}
            )
            inputs = [
                self.constant(values, "int"),
                self.constant(one, "scale"),
                self.constant(zero, "zeropt"),
                self.constant(np.array(bits, np.float32), "bits"),
            ]
            return self.node(
                op, inputs, values.shape, domain=domain, data=False, signed=1, narrow=0, rounding_mode="ROUND"
            )

        y = self.node("MatMul", [x, int_quant(w_int, bits)], (1, out_dim))
        if self.chance(80):
            b_int = self.rng.integers(-100, 101, size=(out_dim,)).astype(np.float32)
            y = self.node("Add", [y, int_quant(b_int, 16)], (1, out_dim))
        s_out = np.float32(s_prev * self.rng.uniform(0.001, 0.05))
        return self.node("Mul", [y, self.constant(np.array(s_out), "s")], (1, out_dim))

    def activation(self, h: str) -> str:
        relu = self.chance(60)
        if relu:
            self.features.add("relu")
            h = self.node("Relu", [h], self.shapes[h])
        h = self.identities(h)
        if self.chance(70):
            self.features.add("activation-quant")
            h = self.quantizer(h, role="activation", after_relu=relu)
        return h

    def layer(self, h: str) -> str:
        self.features.add("mlp")
        out_dim = self.integer(1, 6)
        return self.activation(self.dense(h, out_dim))

    def branch(self, h: str, second_input: Callable[[int], str] | None) -> str:
        """Two paths from `h` (or from a second graph input) rejoined by Add / Sub / Mul."""
        self.features.add("branch")
        in_dim = self.shapes[h][-1]
        out_dim = self.choice([in_dim, self.integer(1, 6)])
        a = self.activation(self.dense(h, out_dim))
        if second_input is not None and self.chance(40):
            self.features.add("second-input")
            b = self.activation(self.dense(second_input(out_dim), out_dim))
        elif out_dim == in_dim:
            kind = self.choice(["identity", "relu", "quant", "rescale", "dense"])
            if kind == "identity":
                b = self.node("Identity", [h], self.shapes[h])
            elif kind == "relu":
                b = self.node("Relu", [h], self.shapes[h])
            elif kind == "quant":
                b = self.quantizer(h, role="activation")
            elif kind == "rescale":
                b = self.rescale(h)
            else:
                b = self.dense(h, out_dim)
        else:
            b = self.dense(h, out_dim)
        op = self.choice(["Add", "Sub", "Mul"])
        self.features.add(f"join:{op}")
        return self.node(op, [a, b] if self.chance(50) else [b, a], self.shapes[a])

    def rescale(self, h: str) -> str:
        """Mul or Div by a constant (scalar or per-channel), sometimes a constant subexpression."""
        self.features.add("rescale")
        shape = self.shapes[h]
        pshape = self.choice([(), (shape[-1],), (1,) * (len(shape) - 1) + (shape[-1],)])
        factor = (
            2.0 ** self.rng.integers(-3, 3, size=pshape)
            * (1 if self.chance(50) else self.rng.uniform(0.5, 1.5, size=pshape))
        ).astype(np.float32)
        op = self.choice(["Mul", "Div"])
        # Unlike a quantizer's input, a factor reaches the output unrounded: a folding error shows.
        c = self._constant_tensor(factor, "k", allow_computed=True, computed_percent=50)
        return self.node(op, [h, c] if op == "Div" or self.chance(50) else [c, h], shape)

    def reshape_block(self, h: str) -> str:
        """[1, F] -> Reshape [1, a, b] -> an op on the rank-3 tensor -> Flatten / Reshape -> [1, F']."""
        self.features.add("reshape")
        size = self.shapes[h][-1]
        a = self.choice([d for d in range(1, size + 1) if size % d == 0])
        b = size // a
        target = self.choice([[1, a, b], [-1, a, b], [0, a, b], [1, -1, b], [1, a, -1], [0, -1, b]])
        x = self._reshape(h, target, (1, a, b))
        kind = self.choice(["relu", "quant", "rescale", "matmul", "identity"])
        if kind == "relu":
            x = self.node("Relu", [x], (1, a, b))
        elif kind == "quant":
            x = self.quantizer(x, role="activation")
        elif kind == "rescale":
            x = self.rescale(x)
        elif kind == "matmul":
            self.features.add("matmul-rank3")
            x = self.activation(self.dense(x, self.integer(1, 4)))
        else:
            x = self.node("Identity", [x], (1, a, b))
        return self.to_rank2(x)

    def _reshape(self, h: str, target: list[int], shape: Shape) -> str:
        allowzero = 0 if self.opset >= 14 and self.chance(20) else None
        spec = self.constant(np.array(target, dtype=np.int64), "shape")
        return self.node("Reshape", [h, spec], shape, allowzero=allowzero)

    def to_rank2(self, x: str) -> str:
        shape = self.shapes[x]
        size = int(np.prod(shape[1:]))
        if self.chance(50):
            self.features.add("flatten")
            axis = self.choice([None, 1, 0, 0, 1 - len(shape)])
            if axis == 0:
                self.features.add("flatten-axis0")
            return self.node("Flatten", [x], (1, size), axis=axis)
        self.features.add("reshape")
        return self._reshape(x, self.choice([[1, -1], [-1, size], [0, -1], [1, size]]), (1, size))

    def graph_input(self, name: str, shape: Shape) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        self.input_names.add(name)
        self.shapes[name] = shape
        self.data_values.append(name)
        return name

    def quantized_input(self, name: str, shape: Shape) -> str:
        x = self.graph_input(name, shape)
        if self.chance(85):
            x = self.quantizer(x, role="input")
        return x

    def dead_code(self) -> None:
        for _ in range(self.integer(1, 3)):
            v = self.choice(self.data_values)
            kind = self.choice(["relu", "quant", "rescale", "identity", "layer", "initializer", "constant"])
            self.features.add("dead-initializer" if kind == "initializer" else "dead-node")
            if kind == "relu":
                self.node("Relu", [v], self.shapes[v])
            elif kind == "quant":
                self.quantizer(v, role="activation")
            elif kind == "rescale":
                self.rescale(v)
            elif kind == "identity":
                self.node("Identity", [v], self.shapes[v])
            elif kind == "layer" and len(self.shapes[v]) == 2:
                self.layer(v)
            elif kind == "initializer":
                self.initializers.append(
                    numpy_helper.from_array(np.ones(2, np.float32), self.fresh("unused"))
                )
            else:
                self._constant_tensor(np.ones((2, 2), np.float32), "deadc", allow_computed=True)


@st.composite
def qonnx_graphs(draw) -> GeneratedGraph:
    """Random valid QONNX graphs (see the module docstring for what they cover)."""
    opset = draw(st.sampled_from(sorted(OPSETS)))
    g = _GraphBuilder(draw, opset)
    g.features.add(f"opset:{opset}")

    # The input: [1, F], or a rank-3/4 tensor flattened (a Brevitas export's flatten folds to that).
    if g.chance(25):
        g.features.add("input-rank>2")
        dims = tuple(g.integer(1, 3) for _ in range(g.integer(2, 3)))
        h = g.to_rank2(g.identities(g.quantized_input("x", (1, *dims))))
    else:
        h = g.identities(g.quantized_input("x", (1, g.integer(1, 6))))

    second_used = []

    def second_input(dim: int) -> str:
        second_used.append(True)
        return g.quantized_input("x2", (1, dim))

    taps: list[str] = []
    for _ in range(g.integer(1, 4)):
        kind = g.choice(["layer", "layer", "branch", "reshape", "rescale", "identity"])
        if kind == "layer":
            h = g.layer(h)
        elif kind == "branch":
            h = g.branch(h, None if second_used else second_input)
        elif kind == "reshape":
            h = g.reshape_block(h)
        elif kind == "rescale":
            h = g.rescale(h)
        else:
            h = g.node("Identity", [h], g.shapes[h])
            g.features.add("identity-chain")
        if h != "x" and g.chance(10):
            taps.append(h)  # this value becomes a graph output and is read on
    if g.chance(10):
        g.features.add("identity-to-output")
        h = g.node("Identity", [h], g.shapes[h])
    outputs = [h]
    if taps and taps[0] != h:
        g.features.update({"two-outputs", "output-also-consumed"})
        outputs.append(taps[0])
    elif g.chance(10) and len(g.data_values) > 1:
        g.features.add("two-outputs")
        outputs.append(g.data_values[-2])
    if g.chance(30):
        g.dead_code()

    nodes = g.nodes
    if g.chance(25):
        g.features.add("shuffled-order")
        nodes = _shuffled_topological_order(nodes, g.rng)
    if g.chance(15):
        g.features.add("unnamed-nodes")
        for node in nodes:
            if g.rng.random() < 0.5:
                node.name = ""
    elif g.chance(5) and len(nodes) >= 2:
        g.features.add("duplicate-node-names")
        nodes[1].name = nodes[0].name

    if g.chance(10):
        g.features.add("pass-like-names")
        outputs = _rename_like_pass_results(g, nodes, outputs)
    if _identity_chain_between_outputs(nodes, outputs):
        g.features.add("identity-chain-between-outputs")
    output_infos = []
    for name in dict.fromkeys(outputs):
        # (A graph input that is also an output keeps its declared shape: onnx_ir takes the
        # output's declaration for the one value, and a load would then find no shape.)
        if name not in g.input_names and g.chance(15):
            g.features.add("output-shape-undeclared")
            output_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        else:
            output_infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(g.shapes[name])))
    graph = helper.make_graph(nodes, "generated", g.inputs + g.shadowed, output_infos, g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    if g.chance(15):
        g.features.add("qonnx-opset-import-missing")
    else:
        opsets += [helper.make_opsetid(domain, 1) for domain in sorted(g.domains_used)]
    model = helper.make_model(
        graph, opset_imports=opsets, ir_version=OPSETS[opset], producer_name="hawqc-tests"
    )
    return GeneratedGraph(model.SerializeToString(), frozenset(g.features))


def _shuffled_topological_order(
    nodes: list[onnx.NodeProto], rng: np.random.Generator
) -> list[onnx.NodeProto]:
    """Another valid topological order: a random ready node at each step."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output}
    waiting = [{producer[x] for x in node.input if x in producer} for node in nodes]
    done: set[int] = set()
    order: list[onnx.NodeProto] = []
    while len(order) < len(nodes):
        ready = [i for i in range(len(nodes)) if i not in done and waiting[i] <= done]
        i = ready[int(rng.integers(len(ready)))]
        done.add(i)
        order.append(nodes[i])
    return order


def _rename_like_pass_results(g: _GraphBuilder, nodes: list[onnx.NodeProto], outputs: list[str]) -> list[str]:
    """Rename some values to names that passes make up for what they add (gemm-to-matmul's
    `<gemm>_matmul_out`, `<weight>_transposed`, onnx_ir's `v` / `node`), so that a pass that does
    not check its new names against the graph's would collide."""
    taken = set(g.shapes)
    candidates = ["v", "v_1", "node", "gemm", "gemm_matmul", "gemm_matmul_out", "gemm_alpha", "gemm_beta"]
    for node in nodes:
        if node.op_type == "Gemm":
            base = node.name or "gemm"
            candidates += [
                f"{base}_{suffix}"
                for suffix in (
                    "matmul",
                    "matmul_out",
                    "alpha",
                    "alpha_out",
                    "beta",
                    "beta_out",
                    "bias",
                    "bias_out",
                    "transpose_b_out",
                )
            ]
            candidates += [f"{name}_transposed" for name in node.input[1:2]]
        if node.op_type in ("Quant", "IntQuant", "BipolarQuant"):
            candidates += [f"{name}_transposed" for name in node.input]
    candidates = [name for name in dict.fromkeys(candidates) if name not in taken]
    renamable = sorted(taken)
    count = min(len(candidates), len(renamable), 1 + int(g.rng.integers(0, 4)))
    mapping = dict(
        zip(g.rng.permutation(renamable)[:count].tolist(), g.rng.permutation(candidates)[:count].tolist())
    )

    def rename(names) -> list[str]:
        return [mapping.get(name, name) for name in names]

    for node in nodes:
        node.input[:] = rename(node.input)
        node.output[:] = rename(node.output)
    for tensor in g.initializers:
        tensor.name = mapping.get(tensor.name, tensor.name)
    for info in (*g.inputs, *g.shadowed):
        info.name = mapping.get(info.name, info.name)
    g.shapes = {mapping.get(name, name): shape for name, shape in g.shapes.items()}
    return rename(outputs)


def _identity_chain_between_outputs(nodes: list[onnx.NodeProto], outputs: list[str]) -> bool:
    """Whether a chain of Identity nodes leads from one graph output to another."""
    identity_of = {node.output[0]: node.input[0] for node in nodes if node.op_type == "Identity"}
    for output in outputs:
        value = output
        while value in identity_of:
            value = identity_of[value]
            if value in outputs:
                return True
    return False
