"""Lift a HAWQ PyTorch model into a QONNX graph that keeps HAWQ's integer-only arithmetic.

    model = lift(hawq_model, example_input)    # onnx_ir.Model

The model is traced with torch.fx, HAWQ's modules (recognized by class name and attributes, so
upstream HAWQ's classes work without importing HAWQ) kept as leaves, and then run once on the
example input (eval mode, CPU) so that every scale the modules pass each other (activation scales,
per-channel weight scales) is a known constant. The graph is then built from the traced calls.
A stateless module built inside `forward` (HAWQ's ResNet blocks call `nn.ReLU()(x)`) is traced
through; fx alone cannot name it.

`lift` never changes the model it is given: it traces and runs a FROZEN DEEP COPY (`frozen_copy`:
eval mode, on the CPU, `fix()` on every HAWQ module, as HAWQ's `freeze_model` prepares inference).
HAWQ's forward stores what it computes in the module (`weight_integer`, `bias_integer`, scales) and
upstream HAWQ's `QuantAct` moves its range (`x_min` / `x_max`) on every forward while its
`running_stat` is set, in eval mode too: the trace run would have recalibrated the user's model on
the example input, and made the graph depend on that input. The lifted model says so in its
metadata (`hawqc.hawq.lifted_from`).

Graph design: the graph carries HAWQ's INTEGER CODES, not their real values. HAWQ's integer
inference is `out_int = clamp(round(z_int * m / 2^e))` on integers; the real values (`code * s`
with an arbitrary float `s`) only exist to pass scales along. So every tensor in the lifted graph
holds integers (in float32), every Quant has scale 1, and every scale ends up inside a requantizing
multiply:

- input `QuantAct` (plain quantization; also any QuantAct with `fixed_point_quantization`, after
  `Mul(codes, float32 scale)` rebuilds HAWQ's float activation): `Div(x, s_a) -> Quant(., 1, 0,
  bits, signed)`. qonnx's
  Quant divides by its scale too, so this is `Quant(x, s_a)` divided back by `s_a`, without the
  inexact multiply-then-divide; for a power-of-two `s_a` the Div is exact in hardware too.
- `QuantLinear` / `QuantConv2d` / `QuantBnConv2d` (folded): `MatMul(x_int, Quant(W_int^T, 1, 0,
  weight_bit, signed=1))` or `Conv(x_int, Quant(W_int, ...), Quant(b_int, ...))`, then (Linear)
  `Add(Quant(b_int, 1, 0, bias_bit, signed=1))`. Binary and ternary weights keep the forms the
  binary/ternary lowering recognizes: `weight_bit=1` (hawqc's sign weights, codes +-1) is QONNX's
  1-bit signed Quant (`x >= 0 ? +1 : -1`, the codes unchanged); `weight_bit=2` with codes in
  {-1, 0, 1} (always, unless a `weight_percentile` clipped the range to reach -2) is a 2-bit
  signed NARROW Quant, the ternary spelling, which returns those codes unchanged too. The accumulator is the exact integer `z_int` as
  long as every partial sum stays below 2^24 in magnitude (float32's integer range): `lift` checks
  that bound from the weights and the input codes' bit width and names a layer that can break it
  (a warning, and the model's `hawqc.hawq.float32_inexact_layers` metadata).
  The per-channel weight scale `s_w` is not multiplied in: it is part of the next requantization.
- requantizing `QuantAct` (dyadic): `m, e = frexp-dyadic((s_prev * s_w) / s_a_new)` per channel as
  HAWQ computes them. HAWQ multiplies in double (`z_int.double() * m / 2^e`), and so does the graph:
  `Cast(z, DOUBLE) -> Mul(., m * 2^-e as a float64 constant) -> Quant(., 1, 0, bits, signed,
  ROUND)`. (float32 cannot hold `m * 2^-e`: m has up to 31 significant bits.) The Quant's result
  is float32, as qonnx's Quant always returns, so the rest of the graph stays float32. With a
  residual (`identity`) the second branch gets its own Cast and factor, and the two double terms
  are added before the one rounding.
- `QuantMaxPool2d` -> `MaxPool`; `QuantAveragePool2d` -> `AveragePool -> Add(0.01) ->
  Quant(., 1, 0, bits, signed, DOWN)` (HAWQ's `trunc(avg + 0.01)`, DOWN is truncation toward zero).
  HAWQ averages in float64, the graph in float32: `S/n + 0.01` is at least `1/(100 n)` away from
  an integer (n < 100), so float32 truncates the same way while codes stay below
  `2^22 / (100 n)`; a wider pooling is named in the inexact-layers warning / metadata;
  `QuantDropout` / Dropout -> nothing; ReLU -> `Relu` (codes and values have the same sign);
  flatten / view -> `Flatten` / `Reshape`.
- the graph output is the last integer code tensor; its scale (real = code * scale) is recorded
  in `model.metadata_props["hawqc.hawq.output_scale"]` (JSON); `dequantize_output=True` appends
  `Mul(codes, scale)` instead, which is HAWQ's float32 output bit for bit.

Exactness argument:
- Integer codes are exact in float32 below 2^24; Quant with scale 1 and zero point 0 is
  `round(clamp(x))`, i.e. HAWQ's `clamp(round(.))`; MatMul / Conv / Add / MaxPool / Relu of such
  integers are exact (bounded sums). So every value up to a requantization is HAWQ's integer.
- The requantization: `z * (m * 2^-e)` in float64 is exactly `z * m / 2^e` while `|z| * m < 2^53`
  (e.g. a 22-bit accumulator and a 31-bit m), and scaling by a power of two never rounds, so even
  beyond that the graph computes what HAWQ's double arithmetic computes. hawqc's HAWQ modules
  (`quant_functions.round_dyadic_sum`) and hardware mode compute the exact value, so the four
  agree (HAWQ == semantic == hardware == C simulation) while every product (and, for a residual,
  the sum of the two terms on their common grid) fits 53 bits. Beyond, precision inference names
  the value as float-inexact and `--verify` reports semantic-vs-hardware differences: e.g. `z * m`
  of a 16-bit input through 8-bit weights (a 26-bit accumulator, 31-bit m) needs 57 bits, which
  hardware mode computes exactly in extended precision and double rounds.
"""

from __future__ import annotations

import copy
import inspect
import json
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from hawqc.errors import UnsupportedModelError
from hawqc.ir.constants import make_initializer
from hawqc.ir.domains import QONNX_DOMAIN
from hawqc.ir.dyadic import dyadic
from hawqc.ir.names import FreshNames
from hawqc.ir.shape_inference import infer_shapes

FLOAT32_EXACT_INTEGERS = 2**24
OUTPUT_SCALE_KEY = "hawqc.hawq.output_scale"
INEXACT_LAYERS_KEY = "hawqc.hawq.float32_inexact_layers"
LIFTED_FROM_KEY = "hawqc.hawq.lifted_from"
LIFTED_FROM = "a frozen deep copy of the model (HAWQ modules fixed, eval mode); the model itself is unchanged"
OPSET = 13

ACT_CLASSES = frozenset({"QuantAct"})
LINEAR_CLASSES = frozenset({"QuantLinear"})
CONV_CLASSES = frozenset({"QuantConv2d", "QuantBnConv2d"})
MAX_POOL_CLASSES = frozenset({"QuantMaxPool2d", "MaxPool2d"})
AVERAGE_POOL_CLASSES = frozenset({"QuantAveragePool2d"})
PASS_THROUGH_CLASSES = frozenset({"QuantDropout", "Dropout", "Identity"})
RELU_CLASSES = frozenset({"ReLU"})
FLATTEN_CLASSES = frozenset({"Flatten"})
# The modules HAWQ's `freeze_model` fixes (activation ranges frozen, BatchNorm folded).
FIXABLE_CLASSES = ACT_CLASSES | LINEAR_CLASSES | CONV_CLASSES
HAWQ_LEAVES = ACT_CLASSES | LINEAR_CLASSES | CONV_CLASSES | MAX_POOL_CLASSES | AVERAGE_POOL_CLASSES | {
    "QuantDropout"
}


@dataclass(frozen=True)
class Codes:
    """A graph value holding integer codes; the real value is `code * scale` (per tensor or per
    channel along axis 1). `bits` / `signed` bound the codes when a quantizer produced them."""

    value: ir.Value
    scale: np.ndarray  # float32, 0-d or [C]
    rank: int
    bits: int | None = None
    signed: bool = True

    def max_abs(self) -> int | None:
        if self.bits is None:
            return None
        return 2 ** (self.bits - 1) if self.signed else 2**self.bits - 1


@dataclass(frozen=True)
class RealInput:
    """The graph input: real (float) values, not yet quantized."""

    value: ir.Value


@dataclass(frozen=True)
class PendingSum:
    """`a + b` of two differently scaled code tensors: HAWQ adds a residual branch in float before
    the requantizing QuantAct, which splits the sum again (`identity=`) into its two integer terms.
    Nothing is emitted for it; only a QuantAct with an identity may consume it."""

    terms: tuple[Codes, Codes]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _per_channel(scale: np.ndarray, rank: int, dtype: type = np.float32) -> np.ndarray:
    """A per-tensor or per-channel constant shaped to broadcast along axis 1 of a rank-`rank` tensor."""
    scale = np.asarray(scale, dtype=dtype).reshape(-1)
    if scale.size == 1:
        return scale.reshape(())
    return scale.reshape((scale.size,) + (1,) * (rank - 2))


class _GraphBuilder:
    """Collects nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []
        self._names = FreshNames(first_suffix=2)

    def unique(self, name: str) -> str:
        return self._names(name.replace(".", "_") or "v")

    def constant(self, array: np.ndarray, name: str, dtype: type = np.float32) -> ir.Value:
        value = make_initializer(np.asarray(array, dtype=dtype), self.unique(name))
        self.initializers.append(value)
        return value

    def node(
        self, op: str, inputs: list[ir.Value], name: str, *, domain: str = "", **attributes: Any
    ) -> ir.Value:
        node = ir.node(op, inputs, attributes=attributes, domain=domain, name=self.unique(name))
        node.outputs[0].name = self.unique(f"{name}_out")
        self.nodes.append(node)
        return node.outputs[0]

    def quant(
        self, x: ir.Value, bits: int, signed: bool, name: str, mode: str = "ROUND", narrow: bool = False
    ) -> ir.Value:
        """Quant with scale 1 and zero point 0: `round(clamp(x))` to `bits` integer codes."""
        return self.node(
            "Quant",
            [x, self.constant(np.float32(1.0), f"{name}_scale"), self.constant(np.float32(0.0), f"{name}_zeropt"),
             self.constant(np.float32(bits), f"{name}_bitwidth")],
            name, domain=QONNX_DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode=mode,
        )  # fmt: skip

    def weight_quant(self, codes: np.ndarray, bits: int, name: str) -> ir.Value:
        """A weight's integer codes as a constant under its quantizer (see the module docstring:
        1 bit is the 1-bit signed Quant, ternary 2-bit codes a narrow Quant)."""
        ternary = bits == 2 and bool(np.all(np.abs(codes) <= 1))
        return self.quant(self.constant(codes, f"{name}_int"), bits, True, name, narrow=ternary)


class _Tracer(torch.fx.Tracer):
    """HAWQ modules (and modules without children, which fx could not see into usefully) are leaves."""

    submodule_ids: set[int] | None = None  # of the traced root's modules, on the first call_module

    def is_leaf_module(self, module: torch.nn.Module, qualified_name: str) -> bool:
        if type(module).__name__ in HAWQ_LEAVES:
            return True
        return super().is_leaf_module(module, qualified_name) or not any(True for _ in module.children())

    def call_module(self, module: torch.nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        """A module built inside `forward` (HAWQ's ResNet blocks call `nn.ReLU()(x)`) is not a
        submodule, so fx cannot name it as a leaf: a stateless one is traced through (its `forward`
        calls `F.relu`, a function the lifter knows); one with parameters or buffers is refused."""
        if self.submodule_ids is None:
            self.submodule_ids = {id(installed) for installed in self.root.modules()}
        if id(module) in self.submodule_ids:
            return super().call_module(module, forward, args, kwargs)
        if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
            raise UnsupportedModelError(
                f"a {type(module).__name__} created inside forward (not a submodule) holds parameters or buffers: "
                "make it an attribute of the model"
            )
        return forward(*args, **kwargs)


def _bound_arguments(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    signature = inspect.signature(module.forward)
    bound = signature.bind(*args, **kwargs)
    return dict(bound.arguments)


def _split_tuple(x: Any) -> tuple[Any, Any]:
    """HAWQ passes `(x, scale)` tuples as a first argument; returns (x, scale or None)."""
    if isinstance(x, tuple | list) and len(x) == 2:
        return x[0], x[1]
    return x, None


class _Lifter(torch.fx.Interpreter):
    """Runs the traced module on the example input, building the graph next to each concrete call."""

    def __init__(self, graph_module: torch.fx.GraphModule, example_input: torch.Tensor) -> None:
        super().__init__(graph_module)
        self.builder = _GraphBuilder()
        self.symbolic: dict[torch.fx.Node, Any] = {}
        self.example_input = example_input
        self.graph_input: ir.Value | None = None
        self.result: Any = None
        self.inexact_layers: list[str] = []

    # ---- driving -----------------------------------------------------------------------------
    def run_node(self, n: torch.fx.Node) -> Any:
        concrete = super().run_node(n)
        self.symbolic[n] = self.lift_node(n, concrete)
        return concrete

    def sym(self, arg: Any) -> Any:
        return torch.fx.node.map_arg(arg, lambda node: self.symbolic[node])

    def lift_node(self, n: torch.fx.Node, concrete: Any) -> Any:
        if n.op == "placeholder":
            shape = ir.Shape(list(self.example_input.shape))
            self.graph_input = ir.Value(name=self.builder.unique(n.name), shape=shape,
                                        type=ir.TensorType(ir.DataType.FLOAT))  # fmt: skip
            return RealInput(self.graph_input)
        if n.op == "get_attr":
            return None
        if n.op == "output":
            self.result = self.sym(n.args[0])
            return None
        sym_args, sym_kwargs = self.sym(n.args), self.sym(n.kwargs)
        if not _holds_data((sym_args, sym_kwargs)):
            return None  # a computation on constants (scales, sizes): its concrete value is used
        concrete_args, concrete_kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            module = self.fetch_attr(n.target)
            return self.lift_module(str(n.target), module, sym_args, sym_kwargs, concrete_args, concrete_kwargs,
                                    concrete)  # fmt: skip
        if n.op == "call_function":
            return self.lift_function(n, n.target, sym_args, concrete_args, concrete_kwargs, concrete)
        if n.op == "call_method":
            return self.lift_method(n, str(n.target), sym_args, concrete_args, concrete_kwargs, concrete)
        raise UnsupportedModelError(f"traced node '{n.name}' ({n.op}) is not supported")

    # ---- modules -----------------------------------------------------------------------------
    def lift_module(self, path, module, sym_args, sym_kwargs, args, kwargs, concrete) -> Any:
        kind = type(module).__name__
        if getattr(module, "full_precision_flag", False):
            raise UnsupportedModelError(
                f"module '{path}' ({kind}) runs in full precision (full_precision_flag): it has no integer form"
            )
        if kind in ACT_CLASSES and hasattr(module, "activation_bit"):
            return self.lift_act(path, module, sym_args, sym_kwargs, args, kwargs, concrete)
        if kind in LINEAR_CLASSES and hasattr(module, "weight_integer"):
            return self.lift_linear(path, module, sym_args, args, concrete)
        if kind in CONV_CLASSES and hasattr(module, "weight_integer"):
            return self.lift_conv(path, module, sym_args, args, concrete)
        x, _ = _split_tuple(sym_args[0]) if sym_args else (None, None)
        if kind in PASS_THROUGH_CLASSES:
            return (x, None) if kind.startswith("Quant") else x
        if kind in RELU_CLASSES:
            return self.relu(path, x)
        if kind in MAX_POOL_CLASSES:
            pooled = self.max_pool(path, _pool_module(module), x)
            return (pooled, None) if kind.startswith("Quant") else pooled
        if kind in AVERAGE_POOL_CLASSES:
            return (self.average_pool(path, _pool_module(module), x), None)
        if kind in FLATTEN_CLASSES:
            return self.flatten(path, x, module.start_dim, _output_tensor(concrete))
        raise UnsupportedModelError(f"module '{path}' ({kind}) is not supported")

    def codes_of(self, path: str, x: Any) -> Codes:
        if not isinstance(x, Codes):
            raise UnsupportedModelError(f"module '{path}': its input is not a HAWQ-quantized tensor")
        return x

    def lift_act(self, path, module, sym_args, sym_kwargs, args, kwargs, concrete) -> tuple[Codes, None]:
        sym = _bound_arguments(module, sym_args, sym_kwargs)
        real = _bound_arguments(module, args, kwargs)
        x_sym = _split_tuple(sym["x"])[0]
        x, tuple_scale = _split_tuple(real["x"])
        pre_act = real.get("pre_act_scaling_factor")
        if pre_act is None:
            pre_act = tuple_scale
        pre_weight = real.get("pre_weight_scaling_factor")
        identity_sym = _split_tuple(sym.get("identity"))[0]
        out_scale = _numpy(concrete[1]).astype(np.float32)
        bits = int(module.activation_bit)
        signed = getattr(module, "quant_mode", "symmetric") == "symmetric"
        rank = x.dim()
        plain = pre_act is None or bool(getattr(module, "fixed_point_quantization", False))
        if isinstance(x_sym, RealInput) or plain:
            source = x_sym.value if isinstance(x_sym, RealInput) else self.dequantize(path, x_sym)
            return Codes(self.plain_quant(path, source, out_scale, bits, signed), out_scale, rank, bits, signed), None
        if isinstance(x_sym, PendingSum):
            main = [term for term in x_sym.terms if term is not identity_sym]
            if identity_sym is None or len(main) != 1:
                raise UnsupportedModelError(f"module '{path}': a residual sum is requantized without its identity")
            x_sym = main[0]
        z = self.codes_of(path, x_sym)
        if pre_weight is None:
            pre_weight = getattr(module, "pre_weight_scaling_factor", None)
        terms = [self.dyadic_multiply(path, z.value, _accumulator_scale(pre_act, pre_weight), out_scale, rank)]
        if identity_sym is not None:
            identity = self.codes_of(path, identity_sym)
            identity_weight = real.get("identity_weight_scaling_factor")
            if identity_weight is None:
                identity_weight = getattr(module, "identity_weight_scaling_factor", None)
            id_scale = _accumulator_scale(real.get("identity_scaling_factor"), identity_weight)
            terms.append(self.dyadic_multiply(f"{path}_identity", identity.value, id_scale, out_scale, rank))
        total = terms[0]
        for index, term in enumerate(terms[1:]):
            total = self.builder.node("Add", [total, term], f"{path}_residual_add{index}")
        return Codes(self.builder.quant(total, bits, signed, f"{path}_quant"), out_scale, rank, bits, signed), None

    def plain_quant(self, path: str, x: ir.Value, scale: np.ndarray, bits: int, signed: bool) -> ir.Value:
        """HAWQ's `clamp(round(x / s))` as codes. A power-of-two s: `Quant(x, s) -> Mul(1/s)` (both
        exact; precision inference needs a Quant right on a graph input). Otherwise `Div(x, s) ->
        Quant(., 1)`: the same float32 quotient, without multiplying by s and dividing back."""
        scale = np.asarray(scale, dtype=np.float32).reshape(())
        mantissa, _ = np.frexp(float(scale))
        if mantissa == 0.5:
            quantized = self.builder.node(
                "Quant",
                [x, self.builder.constant(scale, f"{path}_scale"), self.builder.constant(np.float32(0.0), f"{path}_zeropt"),
                 self.builder.constant(np.float32(bits), f"{path}_bitwidth")],
                f"{path}_quant", domain=QONNX_DOMAIN, signed=int(signed), narrow=0, rounding_mode="ROUND",
            )  # fmt: skip
            inverse = self.builder.constant(np.float32(1.0) / scale, f"{path}_inverse_scale")
            return self.builder.node("Mul", [quantized, inverse], f"{path}_to_codes")
        scaled = self.builder.node("Div", [x, self.builder.constant(scale, f"{path}_scale")], f"{path}_div")
        return self.builder.quant(scaled, bits, signed, f"{path}_quant")

    def dyadic_multiply(self, name: str, z: ir.Value, z_scale: np.ndarray, out_scale: np.ndarray, rank: int):
        """`z * m / 2^e` with HAWQ's (m, e) for the ratio z_scale / out_scale, in double as HAWQ does."""
        ratio = z_scale / out_scale.astype(np.float32).astype(np.float64)
        factor = dyadic(ratio).as_float64()
        wide = self.builder.node("Cast", [z], f"{name}_to_double", to=int(ir.DataType.DOUBLE))
        constant = self.builder.constant(_per_channel(factor, rank, np.float64), f"{name}_dyadic", np.float64)
        return self.builder.node("Mul", [wide, constant], f"{name}_dyadic_mul")

    def dequantize(self, path: str, x: Any) -> ir.Value:
        codes = self.codes_of(path, x)
        scale = self.builder.constant(_per_channel(codes.scale, codes.rank), f"{path}_in_scale")
        return self.builder.node("Mul", [codes.value, scale], f"{path}_dequantize")

    def lift_linear(self, path, module, sym_args, args, concrete) -> Codes:
        x_sym, _ = _split_tuple(sym_args[0])
        x, tuple_scale = _split_tuple(args[0])
        prev = args[1] if len(args) > 1 and args[1] is not None else tuple_scale
        x_codes = self.codes_of(path, x_sym)
        weight = _numpy(module.weight_integer).astype(np.float32)  # [out, in]
        bias = _bias(module)
        self.check_accumulator(path, x_codes, weight.reshape(weight.shape[0], -1), bias)
        w_bits = int(module.weight_bit)
        w = self.builder.weight_quant(weight.T, w_bits, f"{path}_weight")
        acc = self.builder.node("MatMul", [x_codes.value, w], f"{path}_matmul")
        if bias is not None:
            b = self.builder.quant(self.builder.constant(bias, f"{path}_bias_int"), _bias_bits(module), True,
                                   f"{path}_bias")  # fmt: skip
            acc = self.builder.node("Add", [acc, b], f"{path}_bias_add")
        s_w = _numpy(module.fc_scaling_factor)
        scale = _accumulator_scale(prev, s_w).astype(np.float32)
        return Codes(acc, scale, x.dim())

    def lift_conv(self, path, module, sym_args, args, concrete) -> tuple[Codes, None]:
        x_sym, _ = _split_tuple(sym_args[0])
        _, tuple_scale = _split_tuple(args[0])
        prev = args[1] if len(args) > 1 and args[1] is not None else tuple_scale
        x_codes = self.codes_of(path, x_sym)
        weight = _numpy(module.weight_integer).astype(np.float32)  # [M, C/g, kh, kw]
        bias = _bias(module)
        self.check_accumulator(path, x_codes, weight.reshape(weight.shape[0], -1), bias)
        conv = _conv_params(module)
        inputs = [x_codes.value,
                  self.builder.weight_quant(weight, int(module.weight_bit), f"{path}_weight")]
        if bias is not None:
            inputs.append(self.builder.quant(self.builder.constant(bias, f"{path}_bias_int"), _bias_bits(module), True,
                                             f"{path}_bias"))  # fmt: skip
        acc = self.builder.node("Conv", inputs, f"{path}_conv", kernel_shape=list(weight.shape[2:]), **conv)
        s_w = _numpy(concrete[1])
        return Codes(acc, _accumulator_scale(prev, s_w).astype(np.float32), 4), None

    def check_accumulator(self, path: str, x: Codes, weight: np.ndarray, bias: np.ndarray | None) -> None:
        """Note a layer whose integer sums could leave float32's exact integer range on SOME input.

        hawqc's HAWQ modules accumulate in float64, hardware mode exactly; semantic mode's float32
        may round there. The layer is named in a warning and in the model's metadata
        (`hawqc.hawq.float32_inexact_layers`), not refused: real inputs rarely come close.
        """
        max_abs = x.max_abs()
        if max_abs is None:
            return
        bound = np.abs(weight.astype(np.float64)).sum(axis=1) * max_abs
        if bias is not None:
            bound = bound + np.abs(bias.astype(np.float64))
        if float(bound.max(initial=0.0)) >= FLOAT32_EXACT_INTEGERS:
            self.note_inexact(
                path,
                f"its integer accumulator can reach {int(bound.max())} in the worst case, beyond float32's exact "
                f"integers (2^24): semantic mode may round there",
            )

    def note_inexact(self, path: str, why: str) -> None:
        """A layer whose float32 (semantic-mode) result may differ from HAWQ's on some input."""
        self.inexact_layers.append(path)
        warnings.warn(f"module '{path}': {why}", stacklevel=3)

    # ---- element-wise and layout ops ---------------------------------------------------------
    def relu(self, name: str, x: Any) -> Any:
        codes = self.codes_of(name, x)
        return Codes(self.builder.node("Relu", [codes.value], f"{name}_relu"), codes.scale, codes.rank, codes.bits,
                     codes.signed)  # fmt: skip

    def max_pool(self, path: str, pool: torch.nn.Module, x: Any) -> Codes:
        codes = self.codes_of(path, x)
        kernel, stride, padding = _pool_geometry(pool)
        dilation = _pair(getattr(pool, "dilation", 1))
        value = self.builder.node("MaxPool", [codes.value], f"{path}_maxpool", kernel_shape=kernel, strides=stride,
                                  pads=padding, dilations=dilation, ceil_mode=int(getattr(pool, "ceil_mode", False)))  # fmt: skip
        return Codes(value, codes.scale, codes.rank, codes.bits, codes.signed)

    def average_pool(self, path: str, pool: torch.nn.Module, x: Any) -> Codes:
        codes = self.codes_of(path, x)
        kernel, stride, padding = _pool_geometry(pool)
        value = self.builder.node("AveragePool", [codes.value], f"{path}_avgpool", kernel_shape=kernel,
                                  strides=stride, pads=padding,
                                  count_include_pad=int(getattr(pool, "count_include_pad", True)),
                                  ceil_mode=int(getattr(pool, "ceil_mode", False)))  # fmt: skip
        # HAWQ's trunc(avg + 0.01): the 0.01 lifts averages that float32 left just below an integer.
        nudged = self.builder.node("Add", [value, self.builder.constant(np.float32(0.01), f"{path}_nudge")],
                                   f"{path}_nudge_add")  # fmt: skip
        window = int(np.prod(kernel))
        if codes.bits is None or 2.0 ** (codes.bits + 1) * 100 * window >= 2.0**22:
            self.note_inexact(path, "float32 may round its average + 0.01 across an integer (HAWQ pools in float64)")
        bits = codes.bits if codes.bits is not None else 32
        truncated = self.builder.quant(nudged, bits, codes.signed, f"{path}_trunc", mode="DOWN")
        return Codes(truncated, codes.scale, codes.rank, codes.bits, codes.signed)

    def flatten(self, name: str, x: Any, start_dim: int, output: torch.Tensor) -> Codes:
        codes = self.codes_of(name, x)
        if codes.scale.size != 1 and codes.rank != 2:
            raise UnsupportedModelError(f"'{name}': flattening a per-channel scaled tensor is not supported")
        if start_dim not in (1, -codes.rank + 1) or output.dim() != 2:
            raise UnsupportedModelError(f"'{name}': only flattening to [batch, features] is supported")
        return Codes(self.builder.node("Flatten", [codes.value], f"{name}_flatten", axis=1), codes.scale, 2,
                     codes.bits, codes.signed)  # fmt: skip

    # ---- functions and methods ---------------------------------------------------------------
    def lift_function(self, n, target: Callable, sym_args, args, kwargs, concrete) -> Any:
        if target is operator.getitem:
            container, index = sym_args
            return container[index] if isinstance(container, tuple | list) else _unsupported(n, "indexing")
        if target in (operator.add, torch.add) and len(sym_args) == 2:
            if all(isinstance(arg, Codes) for arg in sym_args):
                return PendingSum((sym_args[0], sym_args[1]))
            return _unsupported(n, "an addition of anything but two quantized tensors")
        if target in (torch.relu, torch.nn.functional.relu):
            return self.relu(n.name, sym_args[0])
        if target is torch.flatten:
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            return self.flatten(n.name, sym_args[0], start, concrete)
        if target in (torch.nn.functional.dropout,):
            return sym_args[0]
        return _unsupported(n, f"function '{getattr(target, '__name__', target)}'")

    def lift_method(self, n, method: str, sym_args, args, kwargs, concrete) -> Any:
        if method in ("view", "reshape", "flatten"):
            if method == "flatten":
                return self.flatten(n.name, sym_args[0], args[1] if len(args) > 1 else 0, concrete)
            return self.flatten(n.name, sym_args[0], 1, concrete)
        if method == "relu":
            return self.relu(n.name, sym_args[0])
        if method in ("size", "dim"):
            return None
        return _unsupported(n, f"method '{method}'")


def _holds_data(tree: Any) -> bool:
    if isinstance(tree, Codes | RealInput | PendingSum):
        return True
    if isinstance(tree, tuple | list):
        return any(_holds_data(item) for item in tree)
    if isinstance(tree, dict):
        return any(_holds_data(item) for item in tree.values())
    return False


def _unsupported(n: torch.fx.Node, what: str) -> Any:
    stack = n.meta.get("nn_module_stack") or {}
    where = f" in module '{next(reversed(stack.values()))[0]}'" if stack else ""
    raise UnsupportedModelError(f"{what} (traced node '{n.name}'){where} is not supported")


def _output_tensor(concrete: Any) -> torch.Tensor:
    return concrete[0] if isinstance(concrete, tuple | list) else concrete


def _accumulator_scale(act_scale: Any, weight_scale: Any) -> np.ndarray:
    """HAWQ's accumulator scale `s_prev * s_w`: a float32 product (as HAWQ's tensors compute it), as float64."""
    a = _numpy(act_scale).astype(np.float32).reshape(-1)
    if weight_scale is None:
        return a.astype(np.float64)
    w = _numpy(weight_scale).astype(np.float32).reshape(-1)
    return (a * w).astype(np.float64)


def _bias(module: torch.nn.Module) -> np.ndarray | None:
    bias = getattr(module, "bias_integer", None)
    if bias is None or getattr(module, "bias", 0) is None and not _is_folded_bn(module):
        return None
    return _numpy(bias).astype(np.float32).reshape(-1)


def _is_folded_bn(module: torch.nn.Module) -> bool:
    return type(module).__name__ == "QuantBnConv2d"


def _bias_bits(module: torch.nn.Module) -> int:
    bits = getattr(module, "bias_bit", None)
    return 32 if bits is None else int(bits)


def _pair(value: Any) -> list[int]:
    if isinstance(value, int):
        return [value, value]
    return [int(v) for v in value]


def _pool_module(module: torch.nn.Module) -> torch.nn.Module:
    """The module holding the pooling geometry: the module itself, or the torch pool it wraps
    (HAWQ's QuantMaxPool2d keeps `pool`, QuantAveragePool2d `final_pool`)."""
    for child in module.children():
        if hasattr(child, "kernel_size"):
            return child
    if hasattr(module, "kernel_size"):
        return module
    raise UnsupportedModelError(f"{type(module).__name__}: no pooling geometry (kernel_size) found")


def _pool_geometry(pool: torch.nn.Module) -> tuple[list[int], list[int], list[int]]:
    kernel = _pair(pool.kernel_size)
    stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
    pad = _pair(pool.padding)
    return kernel, stride, pad + pad


def _conv_params(module: torch.nn.Module) -> dict[str, Any]:
    """stride / padding / dilation / groups from the module, or from its wrapped `conv`."""
    source = module if hasattr(module, "stride") else module.conv
    padding = source.padding
    if isinstance(padding, str):
        raise UnsupportedModelError(f"padding '{padding}' is not supported")
    pad = _pair(padding)
    return {"strides": _pair(source.stride), "pads": pad + pad, "dilations": _pair(source.dilation),
            "group": int(source.groups)}  # fmt: skip


def frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of `model` for inference: on the CPU, in eval mode, every HAWQ module fixed.

    `fix()` is what HAWQ's `freeze_model` calls: a `QuantAct` stops tracking its range
    (`running_stat`), a `QuantBnConv2d` folds its BatchNorm with the running statistics (upstream
    HAWQ's unfolded eval path normalizes with the batch's own statistics: not an integer layer). A
    module without `fix` but with `running_stat` has that cleared."""
    try:
        copied = copy.deepcopy(model)
    except Exception as error:  # a module holding something deepcopy refuses (a lock, a file handle)
        raise UnsupportedModelError(
            f"the model cannot be copied ({type(error).__name__}: {str(error).partition(chr(10))[0]}); "
            "hawqc.lift works on a copy so that the model is never changed"
        ) from None
    copied = copied.cpu().eval()
    for module in copied.modules():
        if type(module).__name__ not in FIXABLE_CLASSES:
            continue
        if callable(getattr(module, "fix", None)):
            module.fix()
        elif hasattr(module, "running_stat"):
            module.running_stat = False
    return copied


def lift(model: torch.nn.Module, example_input: torch.Tensor, *, dequantize_output: bool = False) -> ir.Model:
    """The QONNX graph of a HAWQ model (see the module docstring for its design and exactness).

    `model` is not changed: the graph is that of `frozen_copy(model)`, HAWQ's frozen inference."""
    model = frozen_copy(model)
    graph_module = torch.fx.GraphModule(model, _Tracer().trace(model))
    lifter = _Lifter(graph_module, example_input)
    try:
        with torch.no_grad():
            lifter.run(example_input)
    except UnsupportedModelError as error:
        # torch.fx's interpreter appends the traced node to the message: keep hawqc's one line.
        raise UnsupportedModelError(str(error).splitlines()[0]) from None
    result = lifter.result
    output = result[0] if isinstance(result, tuple | list) else result
    if not isinstance(output, Codes):
        raise UnsupportedModelError("the model's output is not a HAWQ-quantized tensor")
    builder = lifter.builder
    value = output.value
    if dequantize_output:
        scale = builder.constant(_per_channel(output.scale, output.rank), "output_scale")
        value = builder.node("Mul", [value, scale], "dequantize_output")
    value.name = "output"
    graph = ir.Graph([lifter.graph_input], [value], nodes=builder.nodes, initializers=builder.initializers,
                     opset_imports={"": OPSET, QONNX_DOMAIN: 1}, name="hawq_lifted")  # fmt: skip
    lifted = ir.Model(graph, ir_version=8, producer_name="hawqc.frontends.hawq")
    # Every value typed and shaped, the output too: a file without the output's type makes qonnx's
    # own shape inference add a second ValueInfo for it, and its executor then refuses the file.
    infer_shapes(lifted)
    lifted.metadata_props[LIFTED_FROM_KEY] = LIFTED_FROM
    if lifter.inexact_layers:
        lifted.metadata_props[INEXACT_LAYERS_KEY] = json.dumps(lifter.inexact_layers)
    if not dequantize_output:
        lifted.metadata_props[OUTPUT_SCALE_KEY] = json.dumps(np.asarray(output.scale, dtype=np.float64).tolist())
    return lifted
