"""ONNX files shaped like HAWQ's own QONNX exporter writes them, made from hawqc's HAWQ modules.

No real HAWQ export is on disk, so the tests make their own. The layout follows HAWQ's exporter
(the `hawq/utils/export/` package of the HAWQ fork used for the jet-tagging / TRETS 2024 work:
`function.py`, `export_modules.py`, `manager.py`), read from its source; what could not be read
there is marked *assumed* below.

From the exporter's source:
- `torch.onnx.export(..., opset_version=11, custom_opsets={"hawq2qonnx": 1})`; QONNX ops are
  `hawq2qonnx::Quant(x, scale, zero_point, bit_width)` with attributes `signed`, `narrow`,
  `rounding_mode` (always `narrow=0`, `"ROUND"`; `signed = 1` for HAWQ's "symmetric" mode).
- `QuantAct` (newer branch): `Quant(x, act_scaling_factor, 0, activation_bit)`, scale of shape [1],
  zero point and bit width 0-d float tensors; the older main branch returns x unchanged (no node):
  the scale is only carried along to the next layer (`activation_quants=False` here).
- `QuantLinear`: `x / prev_act_scaling_factor.view(-1)[0]` (a `Div` by a 0-d constant), then
  `MatMul(x, Quant(W_int^T, 1, 0, weight_bit))` (the weight stored transposed, [in, out]),
  `Add(., Quant(b_int, 1, 0, bias_bit))`, then `Mul(., (s_w * s_prev).item())`: the float32
  product of the two scales, a 0-d constant. Per-tensor weight scales only (the exporter calls
  `.item()` on the product).
- `QuantConv2d` (newer branch): `Quant(W_int, 1, 0, weight_bit)`, `Div(x, s_prev.item())`,
  `Quant(b_int, 1, 0, bias_bit)`, standard `Conv(x, W, b)` with `dilations`, `group`,
  `kernel_shape`, `pads`, `strides` written out, then `Mul(., s_w * s_prev)` (the exporter takes the
  first channel's scale: per-tensor only). The older branch wrote `hawq2qonnx::Conv(x, W)` without
  bias (`conv_domain="hawq2qonnx"` here makes that form, bias then omitted).
- Models put `ReLU` between the layer and the next `QuantAct` (`act(dense(x, s))`, then
  `quant_act(x, s)`), so `Mul(s_w * s_prev) -> Relu -> Quant(s_a)`; the last layer's `Mul` output is
  the model's output (the jet tagger's final softmax is left out here, as hardware flows do).
- `F.max_pool2d(x, 2)` and `torch.flatten(x, 1)` export as opset-11 `MaxPool` and `Flatten`.

Assumed (not visible in the source, or varying between exporter versions):
- every constant stays a `Constant` node (torch's tracer keeps tensors that are not module
  parameters as constants; the manager of one version then ran onnxoptimizer's
  `extract_constant_to_initializer` and qonnx `cleanup`, which would make them initializers:
  `constants="initializers"` gives that form);
- value and node names in torch 2.x's scoped style (`/fc1/Div_output_0`), `ir_version` 6.

The scales are HAWQ's own (`symmetric_linear_quantization_params` of the calibrated ranges), so not
powers of two, except the input's: it is set to 2^-5 so that the graph input is a fixed-point
number (a non-power-of-two input scale cannot be the input of a fixed-point project).

Without an input QuantAct (`input_quant=False`, as HAWQ's jet-tagging scripts build the model: the
first layer is given its `prev_act_scaling_factor` by hand, `input_scale` here) the exporter writes
nothing for the input: `input -> Div(input, s_in) -> MatMul -> ...`. Such a graph input has no
fixed-point type of its own; `--input-precision` gives it one. When `x / s_in` is not an integer
(`s_in` not a multiple of the input's LSB), upstream HAWQ's `QuantLinear` rounds the float
accumulator (`ste_round(F.linear(x / s_prev, W_int, b_int))`) and the next QuantAct recovers that
integer; hawqc's own modules round `x / s_in` element by element instead (they assume codes in).
`hawq_first_layer` computes upstream's rounding exactly and the models use it for their first layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from hawqc.frontends.hawq import QuantAct, QuantConv2d, QuantLinear, freeze_model

HAWQ_DOMAIN = "hawq2qonnx"
INPUT_SCALE = 2.0**-5


def _linear(n_in: int, n_out: int, weight_bit: int) -> QuantLinear:
    layer = QuantLinear(weight_bit=weight_bit, bias_bit=32, per_channel=False)
    layer.set_param(nn.Linear(n_in, n_out))
    return layer


def _input(model: nn.Module, input_quant: bool, input_scale: float) -> None:
    """The input: a QuantAct (scale set to INPUT_SCALE by `calibrated`), or none and the first
    layer's `prev_act_scaling_factor` given by hand (`input_scale`, a float32 buffer)."""
    model.quant_input = QuantAct(8) if input_quant else None
    if not input_quant:
        model.register_buffer("input_scale", torch.tensor([input_scale], dtype=torch.float32))


def _quantized_input(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, model.input_scale) if model.quant_input is None else model.quant_input(x)


def _input_step(model: nn.Module) -> tuple:
    return ("act", model.quant_input) if model.quant_input is not None else ("input", model.input_scale)


def _first_layer(model: nn.Module, layer: nn.Module, x: torch.Tensor, s: torch.Tensor):
    """The first weighted layer: as the module computes it after an input QuantAct (or while
    calibrating), upstream HAWQ's rounding of the accumulator without one."""
    if model.quant_input is not None or model.training:
        return layer(x, s)
    return hawq_first_layer(layer, x, s)


def hawq_first_layer(layer: nn.Module, x: torch.Tensor, s_in: torch.Tensor):
    """Upstream HAWQ's first QuantLinear / QuantConv2d on an input with no QuantAct before it:
    `round(linear(x / s_in, W_int, b_int))` (upstream's `ste_round` of the float accumulator, which
    the next QuantAct's `round(z / (s_in * s_w))` gives back), times the float32 `s_w * s_in`, as
    the layer returns it. The rounding is of the exact accumulator (half to even), computed in
    integers: x's values are exact binary fractions, s_in an exact float32.

    hawqc's modules round `x / s_in` element by element instead; where every `x / s_in` is an
    integer (s_in divides the input's grid) the two agree."""
    out = layer(x, s_in)  # the module's own forward: W_int, b_int and the weight scale, as buffers
    conv = isinstance(out, tuple)
    weight_scale = out[1] if conv else layer.fc_scaling_factor
    x64 = x.detach().to(torch.float64)
    fraction_bits = max(Fraction(v).denominator for v in x64.reshape(-1).tolist()).bit_length() - 1
    n = x64 * 2.0**fraction_bits  # integers, exactly
    weight = layer.weight_integer.to(torch.float64)
    if conv:
        sums = F.conv2d(n, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    else:
        sums = F.linear(n, weight)
    bound = float(n.abs().max()) * float(weight.abs().reshape(weight.shape[0], -1).sum(dim=1).max())
    assert bound < 2.0**53, "the integer sums are not exact in float64"
    scale = Fraction(float(s_in.reshape(-1)[0])) * 2**fraction_bits  # the accumulator's step: S / (s_in * 2^G)
    bias = np.zeros(sums.shape[1], dtype=object) if layer.bias_integer is None else np.array([int(b) for b in layer.bias_integer.tolist()], dtype=object)
    bias = bias.reshape(1, -1, *([1] * (sums.dim() - 2)))
    numerators = np.array(sums.to(torch.int64).numpy(), dtype=object) * scale.denominator + bias * scale.numerator
    accumulator = torch.tensor(_round_half_even(numerators, scale.numerator).astype(np.float64))
    k = (weight_scale.reshape(1, -1) * s_in.reshape(1, -1)).reshape(-1).to(torch.float64)  # float32 product, as HAWQ's
    result = (accumulator * k.reshape(1, -1, *([1] * (sums.dim() - 2)))).to(x.dtype)
    return (result, out[1]) if conv else result


def _round_half_even(numerators: np.ndarray, denominator: int) -> np.ndarray:
    """round(n / d) half to even, of Python integers (object arrays), d > 0."""
    quotients = numerators // denominator
    twice_remainders = 2 * (numerators - quotients * denominator)
    up = (twice_remainders > denominator) | ((twice_remainders == denominator) & (quotients % 2 == 1))
    return quotients + up.astype(object)


class ExportMLP(nn.Module):
    """16-8-6-5: QuantAct, (QuantLinear, ReLU, QuantAct) x 2, QuantLinear: one asymmetric and one
    symmetric hidden QuantAct, as HAWQ's jet tagger (which keeps them symmetric) and scripts do."""

    def __init__(self, input_quant: bool = True, input_scale: float = INPUT_SCALE):
        super().__init__()
        _input(self, input_quant, input_scale)
        self.fc1 = _linear(16, 8, 6)
        self.act1 = QuantAct(8, quant_mode="asymmetric")
        self.fc2 = _linear(8, 6, 5)
        self.act2 = QuantAct(7)
        self.fc3 = _linear(6, 5, 6)
        self.relu = nn.ReLU()

    def forward(self, x):
        x, s = _quantized_input(self, x)
        x = self.relu(_first_layer(self, self.fc1, x, s))
        x, s = self.act1(x, s, self.fc1.fc_scaling_factor)
        x = self.relu(self.fc2(x, s))
        x, s = self.act2(x, s, self.fc2.fc_scaling_factor)
        return self.fc3(x, s)

    def export_steps(self):
        return [
            _input_step(self), ("linear", self.fc1), ("relu", None), ("act", self.act1),
            ("linear", self.fc2), ("relu", None), ("act", self.act2), ("linear", self.fc3),
        ]  # fmt: skip


class ExportCNN(nn.Module):
    """1x6x6 -> QuantConv2d(1->3, 3x3, pad 1) -> ReLU -> QuantAct -> MaxPool 2 -> flatten -> QuantLinear(27->4)."""

    def __init__(self, input_quant: bool = True, input_scale: float = INPUT_SCALE):
        super().__init__()
        _input(self, input_quant, input_scale)
        self.conv = QuantConv2d(weight_bit=6, bias_bit=32, per_channel=False)
        self.conv.set_param(nn.Conv2d(1, 3, 3, padding=1))
        self.act1 = QuantAct(8, quant_mode="asymmetric")
        self.pool = nn.MaxPool2d(2)
        self.fc = _linear(27, 4, 6)
        self.relu = nn.ReLU()

    def forward(self, x):
        x, s = _quantized_input(self, x)
        x, ws = _first_layer(self, self.conv, x, s)
        x, s = self.act1(self.relu(x), s, ws)
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x, s)

    def export_steps(self):
        return [
            _input_step(self), ("conv", self.conv), ("relu", None), ("act", self.act1),
            ("maxpool", 2), ("flatten", None), ("linear", self.fc),
        ]  # fmt: skip


def round_trips(scale: float, low: int, high: int) -> bool:
    """Whether float32 `(q * scale) / scale == q` for every code q in [low, high]."""
    codes = np.arange(low, high + 1, dtype=np.float32)
    return bool(np.array_equal((codes * np.float32(scale)).astype(np.float32) / np.float32(scale), codes))


def _code_range(act: QuantAct) -> tuple[int, int]:
    bits = act.activation_bit
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if act.quant_mode == "symmetric" else (0, 2**bits - 1)


def calibrated(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0, round_trip_scales: bool = True) -> nn.Module:
    """`model` with activation ranges set by one training-mode pass on random data, frozen, and its
    integer buffers computed by one eval pass; the input scale set to INPUT_SCALE.

    `round_trip_scales`: widen each hidden QuantAct's range by the smallest step (0.01% at a time)
    that makes its scale round-trip every code in float32 (`(q * s) / s == q`; about 7% of float32
    scales do, for 8 bits). Then the file's float semantics is an integer network and hawqc compiles
    it exactly (`hawqc.passes.exact_requant`); the scales stay arbitrary non-powers of two. With
    HAWQ's scales as calibrated, the next layer reads codes one float32 ulp off for some codes, and
    hawqc refuses unless it proves that this never changes a code (the tests check both)."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(256, *input_shape[1:]))
    if model.quant_input is not None:
        top = (2 ** (model.quant_input.activation_bit - 1) - 1) * INPUT_SCALE
        model.quant_input.x_min.fill_(-top)
        model.quant_input.x_max.fill_(top)
    freeze_model(model)
    model.eval()
    probe = torch.round(torch.randn(4, *input_shape[1:]) * 2**10) / 2**10  # on a grid (hawq_first_layer's exact sums)
    with torch.no_grad():
        model(probe)
        hidden = [module for kind, module in model.export_steps() if kind == "act" and module is not model.quant_input]
        for act in hidden if round_trip_scales else []:
            x_min, x_max = act.x_min.clone(), act.x_max.clone()
            for step in range(1, 20000):
                if round_trips(float(act.act_scaling_factor), *_code_range(act)):
                    break
                act.x_min.copy_(x_min * (1 + step * 1e-4))
                act.x_max.copy_(x_max * (1 + step * 1e-4))
                model(probe)
            else:
                raise AssertionError("no round-tripping scale found")
    return model


def export_mlp(
    seed: int = 0, round_trip_scales: bool = True, input_quant: bool = True, input_scale: float = INPUT_SCALE
) -> tuple[nn.Module, tuple[int, ...]]:
    """`input_quant=False`: no input QuantAct, `fc1` given `input_scale` by hand (HAWQ's jet-tagging
    scripts), which the exporter writes as `input -> Div(input, input_scale)`."""
    torch.manual_seed(seed)  # the layers' initial weights
    return calibrated(ExportMLP(input_quant, input_scale), (1, 16), seed, round_trip_scales), (1, 16)


def export_cnn(
    seed: int = 0, round_trip_scales: bool = True, input_quant: bool = True, input_scale: float = INPUT_SCALE
) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    return calibrated(ExportCNN(input_quant, input_scale), (1, 1, 6, 6), seed, round_trip_scales), (1, 1, 6, 6)


@dataclass
class _Writer:
    """Accumulates nodes in trace order, naming values as torch 2.x's exporter does."""

    constants_as_nodes: bool
    nodes: list
    initializers: list
    counter: int = 0

    def constant(self, scope: str, array: np.ndarray) -> str:
        self.counter += 1
        name = f"/{scope}/Constant_{self.counter}_output_0"
        tensor = numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)
        if self.constants_as_nodes:
            self.nodes.append(helper.make_node("Constant", [], [name], name=f"/{scope}/Constant_{self.counter}", value=tensor))
        else:
            self.initializers.append(tensor)
        return name

    def node(self, scope: str, op: str, inputs: list[str], domain: str = "", **attributes) -> str:
        self.counter += 1
        name = f"/{scope}/{op}_{self.counter}"
        out = f"{name}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, domain=domain, **attributes))
        return out

    def quant(self, scope: str, x: str, scale, bits: int, signed: int) -> str:
        inputs = [x, self.constant(scope, scale), self.constant(scope, np.float32(0)), self.constant(scope, np.float32(bits))]
        return self.node(scope, "Quant", inputs, HAWQ_DOMAIN, signed=signed, narrow=0, rounding_mode="ROUND")


def _signed(module) -> int:
    return int(module.quant_mode == "symmetric")


def _scalar(tensor: torch.Tensor) -> np.float32:
    return np.float32(tensor.reshape(-1)[0].item())


def to_hawq_export(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    activation_quants: bool = True,
    constants: str = "nodes",
    conv_domain: str = "",
) -> onnx.ModelProto:
    """The file HAWQ's exporter would write for `model` (see the module docstring for the layout);
    a model without an input QuantAct gives `input -> Div(input, s_in) -> ...`."""
    assert constants in ("nodes", "initializers")
    w = _Writer(constants == "nodes", [], [])
    x, scale, shape = "input", None, list(input_shape)
    for kind, module in model.export_steps():
        name = _module_name(model, module) if isinstance(module, nn.Module) else kind
        if kind == "input":  # no input QuantAct: the first layer's scale, given by hand; no node
            scale = module
        elif kind == "act":
            if activation_quants:
                x = w.quant(name, x, module.act_scaling_factor.detach().numpy().reshape(1), module.activation_bit, _signed(module))
            scale = module.act_scaling_factor
        elif kind == "linear":
            x = w.node(name, "Div", [x, w.constant(name, _scalar(scale))])
            weight = module.weight_integer.detach().numpy().T
            x = w.node(name, "MatMul", [x, w.quant(name, w.constant(name, weight), np.float32(1), module.weight_bit, _signed(module))])
            bias = module.bias_integer.detach().numpy()
            x = w.node(name, "Add", [x, w.quant(name, w.constant(name, bias), np.float32(1), module.bias_bit, _signed(module))])
            x = w.node(name, "Mul", [x, w.constant(name, _scalar(module.fc_scaling_factor * scale))])
            shape = [shape[0], weight.shape[1]]
        elif kind == "conv":
            weight = w.quant(name, w.constant(name, module.weight_integer.detach().numpy()), np.float32(1), module.weight_bit, _signed(module))
            x = w.node(name, "Div", [x, w.constant(name, _scalar(scale))])
            inputs = [x, weight]
            if conv_domain == "":
                bias = module.bias_integer.detach().numpy()
                inputs.append(w.quant(name, w.constant(name, bias), np.float32(1), module.bias_bit, _signed(module)))
            (kh, kw), (ph, pw) = module.kernel_size, module.padding
            x = w.node(name, "Conv", inputs, conv_domain, dilations=list(module.dilation), group=module.groups,
                       kernel_shape=[kh, kw], pads=[ph, ph, pw, pw], strides=list(module.stride))  # fmt: skip
            x = w.node(name, "Mul", [x, w.constant(name, _scalar(module.conv_scaling_factor.reshape(-1)[:1] * scale))])
            shape = [shape[0], module.out_channels, shape[2] + 2 * ph - kh + 1, shape[3] + 2 * pw - kw + 1]
        elif kind == "relu":
            x = w.node(name, "Relu", [x])
        elif kind == "maxpool":
            x = w.node(name, "MaxPool", [x], ceil_mode=0, kernel_shape=[module, module], pads=[0, 0, 0, 0],
                       strides=[module, module])  # fmt: skip
            shape = [shape[0], shape[1], shape[2] // module, shape[3] // module]
        elif kind == "flatten":
            x = w.node(name, "Flatten", [x], axis=1)
            shape = [shape[0], int(np.prod(shape[1:]))]
    graph = helper.make_graph(
        w.nodes,
        "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)],
        initializer=w.initializers,
    )
    opsets = [helper.make_opsetid("", 11), helper.make_opsetid(HAWQ_DOMAIN, 1)]
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="pytorch", producer_version="1.12.1")
    proto.ir_version = 6
    return proto


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)
