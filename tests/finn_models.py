"""QONNX/FINN models in the layouts of the QONNX model zoo's files, written with onnx.helper.

Three families, each a builder with the zoo file's op order and attributes, smaller by default so
tests stay fast (the real sizes are one argument away):
- `tfc`: FINN's tiny fully connected MNIST MLP (TFC w1a1, w1a2, w2a2),
- `kws_mlp`: the keyword-spotting MLP (finn-examples' KWS MLP w3a3),
- `unsw_nb15_mlp`: the UNSW-NB15 network intrusion MLP (w2a2), whose graph input has no quantizer.

What the layouts are based on (public sources, read through the search tool; none of the zoo's
`.onnx` files could be read, they are binary, so the exact tensor names and opsets are our best
reading of the exporter, said where they are assumptions):
- Xilinx/brevitas `src/brevitas/export/onnx/qonnx/manager.py` (`QONNXManager.onnx_passes`:
  `extract_constant_to_initializer`, so constants are initializers, no `Constant` nodes);
- fastmachinelearning/qonnx_model_zoo `models/MNIST/Brevitas_FINN_TFC/README.md`, `models/GSCV2/README.md`,
  `models/UNSW_NB15/README.md`: the three families, their bit widths and sizes;
- fastmachinelearning/qonnx `src/qonnx/util/test.py` (`FINN-TFC_W*A*`: input `(1, 1, 28, 28)` in
  `[0, 1]`) and `tests/analysis/test_inference_cost.py` (TFC_2W2A: `op_mac_INT2_INT2` 59008 =
  784*64 + 2*64*64 + 64*10, `mem_o_INT32` 202 = 64+64+64+10: four bias-free MatMuls on 2-bit
  operands whose quantizers have scale 1);
- Xilinx/brevitas `src/brevitas_examples/bnn_pynq/models/FC.py`, `common.py`, `tensor_norm.py` (the
  TFC network: `x.view(x.shape[0], -1)`, `2.0 * x - 1.0`, input `QuantIdentity`, bias-free
  `QuantLinear` -> `BatchNorm1d` -> `QuantIdentity` per hidden layer, a last `QuantLinear` and a
  `TensorNorm`; `CommonQuant`: constant scaling, signed, narrow range, 1 bit = binary);
- Xilinx/finn `tests/end2end/test_end2end_cybsec_mlp.py` and
  `notebooks/end2end_example/cybersecurity/` (UNSW-NB15: `CybSecMLPForExport`, `(x + 1) / 2` on a
  bipolar `(1, 600)` input, `QuantLinear(bias=True, weight_bit_width=2)` -> `BatchNorm1d` ->
  `QuantReLU(bit_width=2)` three times, `QuantLinear(64, 1)`, a binary `QuantIdentity` output;
  after export and FINN's `ConvertQONNXtoFINN`, which runs `GemmToMatMul`, the first nodes are
  `Add`, `Div`, `MatMul`);
- Xilinx/brevitas `src/brevitas/export/onnx/qonnx/function.py` (the symbolic functions: domain
  `onnx.brevitas`, `Quant(x, scale, zero_point, bit_width)` with attributes `rounding_mode`,
  `signed`, `narrow`; `BipolarQuant(x, scale)`); torch.onnx's `symbolic_opset9.linear` (`t(weight)`,
  then `addmm` = `Gemm` on a 2-D input with a bias, else `MatMul`), whence qonnx's
  `FoldTransposeIntoQuantInit` (`Quant(W) -> Transpose -> MatMul`) and `GemmToMatMul`;
- Xilinx/finn-examples `build/kws/build.py`, `folding_config/kws_folding_config.json`,
  `finn_examples/notebooks/4_keyword_spotting.ipynb` (KWS: input `(1, 1, 10, 49)` MFCC features,
  flattened to 490, quantized to 8 bits by `x / 0.8298503756523132`, clamped to +-127 and rounded;
  four MVAUs; the model name `MLP_W3A3_scale_init-0.1_no_per_channel_scaling_at_output_usigned_non-
  narrow_relu_act`: per-channel weight scales except at the output, unsigned non-narrow ReLU
  activations; opset 9, raised to 11 by the build script).

Weights come from a seeded numpy generator; BatchNorm statistics are calibrated on sample inputs
(a float64 forward pass) so that the activations neither saturate nor vanish; every float scale is
a realistic non-power-of-two (`max|w| / (2**(b-1) - 1)` for weights, a learned-looking value for
activations) unless `zoo_scales` asks for the constant scale 1.0 the bnn_pynq TFC files have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Brevitas writes its quantizers in this domain (`DOMAIN_STRING` of its QONNX export handlers, every
# version); qonnx reads it as its own `qonnx.custom_op.general`.
BREVITAS = "onnx.brevitas"


def is_power_of_two(value: float) -> bool:
    mantissa, _ = np.frexp(np.float32(abs(value)))
    return bool(mantissa == 0.5)


class _Graph:
    """Nodes, initializers and fresh names for one model, and a float64 mirror of each value on
    calibration samples (`calib`), which the builders use to set BatchNorm statistics and scales."""

    def __init__(self, seed: int, domain: str, numeric_names: bool) -> None:
        self.rng = np.random.default_rng(seed)
        self.domain = domain
        self.numeric_names = numeric_names
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, stem: str) -> str:
        """torch.onnx (1.x) names every tensor by a number; a cleaned-up file has readable names."""
        self.count += 1
        return str(self.count) if self.numeric_names else f"{stem}_{self.count}"

    def init(self, array: np.ndarray, stem: str, dtype: type = np.float32) -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{op}_{self.count}", domain=domain, **attrs))
        return out

    # ---- quantizers, with their float64 mirror -------------------------------------------------

    def quant(self, x: str, calib: np.ndarray, scale: np.ndarray | float, bits: int, *, signed: bool, narrow: bool,
              rounding: str = "ROUND") -> tuple[str, np.ndarray]:  # fmt: skip
        scale = np.asarray(scale, np.float32)
        inputs = [x, self.init(scale, "scale"), self.init(np.float32(0.0), "zeropt"), self.init(np.float32(bits), "bitwidth")]
        out = self.node("Quant", inputs, domain=self.domain, rounding_mode=rounding, signed=int(signed), narrow=int(narrow))
        return out, quantize(calib, scale.astype(np.float64), bits, signed=signed, narrow=narrow)

    def bipolar(self, x: str, calib: np.ndarray, scale: float) -> tuple[str, np.ndarray]:
        out = self.node("BipolarQuant", [x, self.init(np.float32(scale), "scale")], domain=self.domain)
        return out, np.where(calib >= 0, 1.0, -1.0) * np.float64(np.float32(scale))

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto], opset: int,
              ir_version: int) -> onnx.ModelProto:  # fmt: skip
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(self.domain, 1)],
            producer_name="pytorch",
        )  # fmt: skip
        model.ir_version = ir_version
        onnx.checker.check_model(model)
        return model


def quantize(x: np.ndarray, scale: np.ndarray, bits: int, *, signed: bool, narrow: bool) -> np.ndarray:
    """qonnx's Quant (zero point 0, ROUND = half to even) in float64: calibration only."""
    if signed:
        low, high = -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1 - int(narrow)
    return np.clip(np.round(x / scale), low, high) * scale


def _float_scale(value: float) -> np.float32:
    """A scale as a trained quantizer has it: a float32 that is not a power of two."""
    scale = np.float32(value)
    if is_power_of_two(scale):
        scale = np.float32(value * 1.0137)
    return scale


# ---- layers ----------------------------------------------------------------------------------


def _flatten(g: _Graph, x: str, opset: int, computed: bool) -> str:
    """`x.view(x.shape[0], -1)` as torch.onnx traces it: `Shape -> Gather(0) -> Unsqueeze -> Concat
    with [-1] -> Reshape`. The index, the axes and the -1 are int64 initializers: torch.onnx writes
    them as `Constant` nodes and Brevitas' QONNX manager runs onnxoptimizer's
    `extract_constant_to_initializer` on every export. Unsqueeze takes its axes as an attribute up
    to opset 12, as an input from 13. `computed=False`: the same Reshape with the target `[1, -1]`
    as an initializer, what the chain computes at batch 1 (for executors that cannot run `Shape`
    and `Gather`)."""
    if not computed:
        return g.node("Reshape", [x, g.init(np.array([1, -1], np.int64), "shape", dtype=np.int64)])
    shape = g.node("Shape", [x])
    batch = g.node("Gather", [shape, g.init(np.int64(0), "index", dtype=np.int64)], axis=0)
    if opset < 13:
        batch_1d = g.node("Unsqueeze", [batch], axes=[0])
    else:
        batch_1d = g.node("Unsqueeze", [batch, g.init(np.array([0], np.int64), "axes", dtype=np.int64)])
    target = g.node("Concat", [batch_1d, g.init(np.array([-1], np.int64), "minus_one", dtype=np.int64)], axis=0)
    return g.node("Reshape", [x, target])


def _quant_linear(g: _Graph, x: str, calib: np.ndarray, n_in: int, n_out: int, *, bits: int, per_channel: bool,
                  zoo_scales: bool, bias: bool) -> tuple[str, np.ndarray]:  # fmt: skip
    """Brevitas' `QuantLinear` exported to QONNX: the float weight `[out, in]` as an initializer and
    its quantizer, then what torch.onnx makes of `F.linear` on a 2-D input: without a bias,
    `Transpose -> MatMul` (what qonnx's `FoldTransposeIntoQuantInit` exists to remove); with a bias
    (a float one, Brevitas' default: not quantized), `addmm`, i.e. `Gemm(x, W', b)` whose transpose
    the exporter's peephole folds into `transB=1` (what qonnx's `GemmToMatMul` exists to undo). Weight quantizers are
    signed and narrow (`CommonWeightQuant`, `Int8WeightPerTensorFloat`); 1 bit is `BipolarQuant`.
    Scales: per output channel `[out, 1]` or per tensor (a scalar)."""
    w = g.rng.uniform(-1.0, 1.0, (n_out, n_in))
    if bits == 1:
        scale = 1.0 if zoo_scales else _float_scale(np.mean(np.abs(w)))
        wq_name, wq = g.bipolar(g.init(w, "weight"), w, scale)
    else:
        max_code = 2 ** (bits - 1) - 1
        if zoo_scales:
            scale = np.float32(1.0)
        elif per_channel:
            scale = np.array([_float_scale(m / max_code) for m in np.abs(w).max(axis=1)], np.float32).reshape(n_out, 1)
        else:
            scale = _float_scale(np.abs(w).max() / max_code)
        wq_name, wq = g.quant(g.init(w, "weight"), w, scale, bits, signed=True, narrow=True)
    if bias:
        b = g.rng.normal(0.0, 0.1, n_out).astype(np.float32)
        out = g.node("Gemm", [x, wq_name, g.init(b, "bias")], alpha=1.0, beta=1.0, transB=1)
        return out, calib @ wq.T + b
    wt = g.node("Transpose", [wq_name], perm=[1, 0])
    return g.node("MatMul", [x, wt]), calib @ wq.T


def _batchnorm(g: _Graph, x: str, calib: np.ndarray, channels: int) -> tuple[str, np.ndarray]:
    """`BatchNorm1d` on `[N, C]` as torch.onnx exports it (epsilon 1e-5, momentum 0.9), its running
    statistics those of the calibration samples (so its output is about N(beta, gamma))."""
    gamma = g.rng.uniform(0.6, 1.4, channels).astype(np.float32)
    beta = g.rng.normal(0.0, 0.3, channels).astype(np.float32)
    mean = calib.mean(axis=0).astype(np.float32)
    var = (calib.var(axis=0) + 0.05).astype(np.float32)
    inputs = [x, g.init(gamma, "bn_weight"), g.init(beta, "bn_bias"), g.init(mean, "bn_mean"), g.init(var, "bn_var")]
    out = g.node("BatchNormalization", inputs, epsilon=1e-5, momentum=0.9)
    value = (calib - mean) / np.sqrt(var.astype(np.float64) + np.float32(1e-5)) * gamma + beta
    return out, value


# ---- TFC ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TfcSpec:
    """weight_bits, act_bits: (1, 1), (1, 2) or (2, 2) as the zoo's TFC_1W1A, TFC_1W2A, TFC_2W2A.
    image: the input's height and width (28 in the zoo: 784 features); hidden: 64, 64, 64 in the zoo."""

    weight_bits: int = 2
    act_bits: int = 2
    image: tuple[int, int] = (8, 8)
    hidden: tuple[int, ...] = (32, 32, 32)
    classes: int = 10
    seed: int = 0
    zoo_scales: bool = False
    domain: str = BREVITAS
    opset: int = 9
    computed_reshape: bool = True

    @property
    def features(self) -> int:
        return self.image[0] * self.image[1]


def tfc(spec: TfcSpec = TfcSpec()) -> onnx.ModelProto:
    """FINN's TFC (`models/MNIST/Brevitas_FINN_TFC/TFC/TFC_{w}W{a}A.onnx` of
    fastmachinelearning/qonnx_model_zoo), input `(1, 1, H, W)` of pixels in `[0, 1]`. Based on
    Xilinx/brevitas `src/brevitas_examples/bnn_pynq/models/FC.py`, `common.py`, `tensor_norm.py` (the
    network), `src/brevitas/export/onnx/qonnx/function.py` and `manager.py` (its export), and
    fastmachinelearning/qonnx `src/qonnx/util/test.py` and `tests/analysis/test_inference_cost.py`
    (input shape and range; the MatMuls' sizes and 2-bit operands of scale 1):

        Shape -> Gather -> Unsqueeze -> Concat -> Reshape      x.view(x.shape[0], -1)
        Mul(2.0) -> Sub(1.0)                                   2.0 * x - 1.0
        input QuantIdentity: BipolarQuant (act 1 bit; w1a1) or Quant(2 bits, signed, narrow)
        per hidden layer: Quant/BipolarQuant(W) -> Transpose -> MatMul (no bias)
                          -> BatchNormalization -> Quant/BipolarQuant (the activation)
        last layer: Quant/BipolarQuant(W) -> Transpose -> MatMul
        TensorNorm: Sub(mean) -> Div(sqrt(var + 1e-4)) -> Mul(weight) -> Add(bias), scalars

    The zoo's quantizers all have scale 1.0 (`CommonQuant`: constant scaling 1.0; the activation's
    `max_val` 1.0 over `2**(b-1) - 1` = 1 code); `zoo_scales=True` keeps that, the default gives
    them trained-looking float scales (never powers of two). Either way the TensorNorm's `Div` is by
    a non-power-of-two constant and BatchNorm parameters are floats. Tensors are numbered as by
    torch.onnx 1.x (`0` the input); opset 9 (an assumption: the KWS build script says its model,
    of the same exporter, had opset 9)."""
    if (spec.weight_bits, spec.act_bits) not in {(1, 1), (1, 2), (2, 2)}:
        raise ValueError(f"TFC has w1a1, w1a2, w2a2, not w{spec.weight_bits}a{spec.act_bits}")
    g = _Graph(spec.seed, spec.domain, numeric_names=True)
    g.count = 0
    h, w = spec.image
    calib = g.rng.uniform(0.0, 1.0, (256, spec.features)) * (g.rng.random((256, spec.features)) < 0.4)

    x = _flatten(g, "0", spec.opset, spec.computed_reshape)
    x = g.node("Mul", [x, g.init(np.float32(2.0), "two")])
    x = g.node("Sub", [x, g.init(np.array([1.0], np.float32), "one")])
    value = 2.0 * calib - 1.0

    def activation(x: str, value: np.ndarray, bits: int) -> tuple[str, np.ndarray]:
        # Drawn also for the zoo's scales, so that both variants get the same weights.
        drawn = _float_scale(g.rng.uniform(0.6, 1.2) if bits == 1 else g.rng.uniform(0.45, 0.9))
        scale = np.float32(1.0) if spec.zoo_scales else drawn
        if bits == 1:
            return g.bipolar(x, value, scale)
        return g.quant(x, value, scale, bits, signed=True, narrow=True)

    x, value = activation(x, value, spec.act_bits)  # in_bit_width = act_bit_width in bnn_pynq's cfgs
    n_in = spec.features
    for n_out in spec.hidden:
        x, value = _quant_linear(g, x, value, n_in, n_out, bits=spec.weight_bits, per_channel=False,
                                 zoo_scales=spec.zoo_scales, bias=False)  # fmt: skip
        x, value = _batchnorm(g, x, value, n_out)
        x, value = activation(x, value, spec.act_bits)
        n_in = n_out
    x, value = _quant_linear(g, x, value, n_in, spec.classes, bits=spec.weight_bits, per_channel=False,
                             zoo_scales=spec.zoo_scales, bias=False)  # fmt: skip
    # TensorNorm in eval mode, its (running_var + eps) ** 0.5 folded by torch.onnx's constant folding.
    mean, var = np.float32(value.mean()), np.float32(value.var())
    x = g.node("Sub", [x, g.init(np.array([mean], np.float32), "tn_mean")])
    x = g.node("Div", [x, g.init(np.sqrt(np.array([var + np.float32(1e-4)], np.float32)), "tn_std")])
    x = g.node("Mul", [x, g.init(np.array([g.rng.uniform(0.7, 1.3)], np.float32), "tn_weight")])
    x = g.node("Add", [x, g.init(np.array([g.rng.normal(0.0, 0.2)], np.float32), "tn_bias")])
    return g.model(
        f"tfc_w{spec.weight_bits}a{spec.act_bits}",
        [helper.make_tensor_value_info("0", TensorProto.FLOAT, [1, 1, h, w])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, spec.classes])],
        spec.opset, ir_version=6,
    )  # fmt: skip


def tfc_inputs(spec: TfcSpec, n: int, seed: int = 1) -> np.ndarray:
    """MNIST-like pixels in [0, 1]: many exact zeros, multiples of 1/255 (as ToTensor gives) and exact
    halves and their neighbours, where `2x - 1` lands on 0 and the input quantizer's rounding flips."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, spec.features)).astype(np.float32) / np.float32(255.0)
    x[rng.random(x.shape) < 0.5] = 0.0
    halves = rng.random(x.shape) < 0.05
    x[halves] = np.float32(0.5)
    near = rng.random(x.shape) < 0.03
    x[near] = np.float32(0.5) + rng.choice(np.float32([-2**-24, 2**-24, 0.25, 0.75]), near.sum())
    return x.reshape(n, 1, *spec.image)


# ---- KWS MLP -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KwsSpec:
    """mfcc: (coefficients, frames) of the input, (10, 49) in the zoo (490 features); hidden: the
    three hidden layers (their real width is not in the sources we read; the folding config's PE 64
    and SIMD 10 fit 64); classes: 12 in the zoo."""

    mfcc: tuple[int, int] = (5, 14)
    hidden: tuple[int, ...] = (24, 24, 24)
    classes: int = 12
    bits: int = 3
    input_scale: float = 0.8298503756523132
    seed: int = 0
    domain: str = BREVITAS
    opset: int = 9
    computed_reshape: bool = True

    @property
    def features(self) -> int:
        return self.mfcc[0] * self.mfcc[1]


def kws_mlp(spec: KwsSpec = KwsSpec()) -> onnx.ModelProto:
    """The keyword-spotting MLP (`models/GSCV2/kwsmlp_w3a3/kwsmlp_w3a3.onnx` of
    fastmachinelearning/qonnx_model_zoo), input `global_in` `(1, 1, 10, 49)`. Based on
    Xilinx/finn-examples `build/kws/build.py` (input shape, opset 9, the model's name),
    `build/kws/folding_config/kws_folding_config.json` (four layers),
    `finn_examples/notebooks/4_keyword_spotting.ipynb` (the input quantizer), the zoo's
    `models/GSCV2/README.md` (8-bit input, 3-bit weights and activations), and Brevitas' export as
    for `tfc`:

        Shape -> Gather -> Unsqueeze -> Concat -> Reshape      flatten to (1, 490)
        Quant(8 bits, signed, narrow, scale 0.8298503756523132)   the MFCC quantizer of the notebook
        3 x: Gemm(x, Quant(W, 3 bits, signed, narrow, per-channel float scales [out, 1]),
                  float bias, transB=1) -> BatchNormalization -> Relu
             -> Quant(3 bits, unsigned, non-narrow, float scale)
        Gemm(x, Quant(W, 3 bits, per-tensor float scale), float bias, transB=1)

    Names as after qonnx's cleanup (`global_in`, `global_out`); opset 9 (the build script raises it
    to 11 for TopK). The input Quant's scale is the notebook's; the rest are drawn. Assumptions (the
    sources do not say): the flatten comes before the input quantizer, as TFC's `view` does."""
    g = _Graph(spec.seed, spec.domain, numeric_names=False)
    calib = g.rng.normal(0.0, 30.0, (256, spec.features))
    x = _flatten(g, "global_in", spec.opset, spec.computed_reshape)
    x, value = g.quant(x, calib, np.float32(spec.input_scale), 8, signed=True, narrow=True)
    n_in = spec.features
    for n_out in spec.hidden:
        x, value = _quant_linear(g, x, value, n_in, n_out, bits=spec.bits, per_channel=True, zoo_scales=False, bias=True)
        x, value = _batchnorm(g, x, value, n_out)
        x, value = g.node("Relu", [x]), np.maximum(value, 0.0)
        scale = _float_scale(np.quantile(value, 0.97) / (2**spec.bits - 1))
        x, value = g.quant(x, value, scale, spec.bits, signed=False, narrow=False)
        n_in = n_out
    x, value = _quant_linear(g, x, value, n_in, spec.classes, bits=spec.bits, per_channel=False, zoo_scales=False, bias=True)
    x = _rename_output(g, x, "global_out")
    return g.model(
        "kws_mlp_w3a3",
        [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, [1, 1, *spec.mfcc])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, spec.classes])],
        spec.opset, ir_version=6,
    )  # fmt: skip


def kws_inputs(spec: KwsSpec, n: int, seed: int = 1) -> np.ndarray:
    """MFCC-like features (spread of about 30, as the 8-bit quantizer's +-105 range suggests), with
    exact rounding ties of the input quantizer (odd multiples of half its scale) and clamped values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 30.0, (n, spec.features)).astype(np.float32)
    scale = np.float32(spec.input_scale)
    ties = ((rng.integers(-120, 120, x.shape) * 2 + 1) * (scale / np.float32(2))).astype(np.float32)
    pick = rng.random(x.shape)
    x = np.where(pick < 0.1, ties, x)
    x = np.where((pick >= 0.1) & (pick < 0.12), np.float32(200.0), x)
    return x.astype(np.float32).reshape(n, 1, *spec.mfcc)


# ---- UNSW-NB15 MLP -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnswSpec:
    """features: 600 in the zoo (593 padded with 7 zeros); hidden: 64, 64, 64 in the zoo."""

    features: int = 96
    hidden: tuple[int, ...] = (32, 32, 32)
    weight_bits: int = 2
    act_bits: int = 2
    seed: int = 0
    domain: str = BREVITAS
    opset: int = 11


def unsw_nb15_mlp(spec: UnswSpec = UnswSpec()) -> onnx.ModelProto:
    """The UNSW-NB15 network intrusion MLP (`models/UNSW_NB15/unsw_nb15_mlp_w2a2/unsw_nb15-mlp-w2a2.onnx`
    of fastmachinelearning/qonnx_model_zoo), input `global_in` `(1, 600)` of bipolar values,
    **without a quantizer**. Based on Xilinx/finn `tests/end2end/test_end2end_cybsec_mlp.py` and
    `notebooks/end2end_example/cybersecurity/2-export-to-finn-and-verify.ipynb` (the network, its
    export wrapper `CybSecMLPForExport`, the bipolar `(1, 600)` input, the first ops), the zoo's
    `models/UNSW_NB15/README.md`, and Brevitas' export as for `tfc`:

        Add(1.0) -> Div(2.0)                                   (x + 1) / 2: bipolar to {0, 1}
        3 x: Gemm(x, Quant(W, 2 bits, signed, narrow, per-tensor float scale), float bias,
                  transB=1) -> BatchNormalization -> Relu
             -> Quant(2 bits, unsigned, non-narrow, float scale)  (QuantReLU)
        Gemm(x, Quant(W, 2 bits), float bias, transB=1)  -> (1, 1)
        BipolarQuant(scale 1.0)                                the binary output QuantIdentity

    Names as after qonnx's cleanup (`global_in`, `global_out`). Opset 11 is an assumption (the
    sources do not say). FINN's test sees `Add`, `Div`, `MatMul` first after its `ConvertQONNXtoFINN`,
    which runs `GemmToMatMul`."""
    g = _Graph(spec.seed, spec.domain, numeric_names=False)
    calib = g.rng.choice([-1.0, 1.0], (256, spec.features), p=[0.8, 0.2])
    x = g.node("Add", ["global_in", g.init(np.array([1.0], np.float32), "one")])
    x = g.node("Div", [x, g.init(np.float32(2.0), "two")])
    value = (calib + 1.0) / 2.0
    n_in = spec.features
    for n_out in spec.hidden:
        x, value = _quant_linear(g, x, value, n_in, n_out, bits=spec.weight_bits, per_channel=False, zoo_scales=False, bias=True)
        x, value = _batchnorm(g, x, value, n_out)
        x, value = g.node("Relu", [x]), np.maximum(value, 0.0)
        scale = _float_scale(np.quantile(value, 0.95) / (2**spec.act_bits - 1))
        x, value = g.quant(x, value, scale, spec.act_bits, signed=False, narrow=False)
        n_in = n_out
    x, value = _quant_linear(g, x, value, n_in, 1, bits=spec.weight_bits, per_channel=False, zoo_scales=False, bias=True)
    x, _ = g.bipolar(x, value, 1.0)
    x = _rename_output(g, x, "global_out")
    return g.model(
        "unsw_nb15_mlp_w2a2",
        [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, [1, spec.features])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 1])],
        spec.opset, ir_version=7,
    )  # fmt: skip


def unsw_inputs(spec: UnswSpec, n: int, seed: int = 1) -> np.ndarray:
    """Bipolar inputs as FINN's notebook feeds the exported model (`2 * x - 1` of the binarized
    features, the padding zeros becoming -1); about one feature in five is set, as one-hot fields are."""
    rng = np.random.default_rng(seed)
    x = np.where(rng.random((n, spec.features)) < 0.2, 1.0, -1.0).astype(np.float32)
    x[:, spec.features - 7 :] = -1.0
    return x


def _rename_output(g: _Graph, name: str, new: str) -> str:
    """The graph's output under its cleaned-up name (the last node writes it)."""
    last = g.nodes[-1]
    assert last.output[0] == name
    last.output[0] = new
    return new


MODELS = ("tfc_w1a1", "tfc_w1a2", "tfc_w2a2", "kws_mlp_w3a3", "unsw_nb15_mlp_w2a2")


def build(name: str, n_inputs: int = 200, *, computed_reshape: bool = True) -> tuple[onnx.ModelProto, np.ndarray]:
    """One of `MODELS` at its default (small) size, with `n_inputs` inputs; `computed_reshape=False`
    gives the same weights with a constant Reshape target (the UNSW model has no Reshape)."""
    if name.startswith("tfc_w"):
        spec = TfcSpec(weight_bits=int(name[5]), act_bits=int(name[7]), computed_reshape=computed_reshape)
        return tfc(spec), tfc_inputs(spec, n_inputs)
    if name == "kws_mlp_w3a3":
        kws = KwsSpec(computed_reshape=computed_reshape)
        return kws_mlp(kws), kws_inputs(kws, n_inputs)
    if name == "unsw_nb15_mlp_w2a2":
        return unsw_nb15_mlp(), unsw_inputs(UnswSpec(), n_inputs)
    raise ValueError(f"no model {name!r}; there are {', '.join(MODELS)}")


def write_all(directory: str) -> list[str]:
    """Every model of `MODELS` (and the TFC with the zoo's scales, and the variants with a constant
    Reshape target) as `.onnx` files in `directory`, with their 200 inputs as `<name>_inputs.npy`:
    `python tests/finn_models.py /tmp/finn-models` gives the files to try `hawqc` on."""
    import dataclasses
    from pathlib import Path

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(proto: onnx.ModelProto, stem: str) -> None:
        onnx.save(proto, out / f"{stem}.onnx")
        written.append(str(out / f"{stem}.onnx"))

    for name in MODELS:
        proto, x = build(name)
        save(proto, name)
        np.save(out / f"{name}_inputs.npy", x)
        if name != "unsw_nb15_mlp_w2a2":
            save(build(name, computed_reshape=False)[0], f"{name}_static_reshape")
    for w, a in ((1, 1), (1, 2), (2, 2)):
        spec = TfcSpec(weight_bits=w, act_bits=a, zoo_scales=True)
        save(tfc(spec), f"tfc_w{w}a{a}_zoo_scales")
        save(tfc(dataclasses.replace(spec, computed_reshape=False)), f"tfc_w{w}a{a}_zoo_scales_static_reshape")
    return written


if __name__ == "__main__":
    import sys

    print("\n".join(write_all(sys.argv[1] if len(sys.argv) > 1 else "finn-models")))
