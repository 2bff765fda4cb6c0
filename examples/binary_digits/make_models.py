"""Train an MLP on scikit-learn's 8x8 digits in four precisions (float, 8-bit, ternary, binary),
write each as QONNX, and compare them the way Loncar et al. (MLST 2021) compare binary and ternary
networks with their higher-precision versions: test accuracy against cost (BOPs, multiplications,
how many of them need a multiplier, weight memory, estimated latency).

The same 64 -> 64 -> 64 -> 10 network in every version (the digits split of examples/digits_cnn):

    float    MatMul+bias -> Relu, twice -> MatMul+bias (logits); no quantizer anywhere
    int8     Quant 8-bit unsigned input (scale 2^-7, exact on every image); 8-bit signed narrow
             weights (power-of-two scale per tensor), 16-bit biases at the accumulator's scale;
             Relu -> Quant 8-bit unsigned (power-of-two scales calibrated on the float network)
    ternary  8-bit input; first layer 8-bit weights -> BatchNorm -> ternary Quant (2-bit signed
             narrow, levels -1, 0, 1); hidden layer ternary weights (2-bit narrow Quant, scale 1)
             -> BatchNorm -> ternary Quant; last layer 8-bit weights + 16-bit bias (the logits)
    binary   the same with BipolarQuant (+-1) hidden weights and activations: 8-bit first and
             last layers, as the paper keeps them

The quantized graphs are written directly (onnx.helper), as examples/digits_cnn/make_model.py writes
its CNN, not through hawqc's HAWQ modules: a binary network in the paper's sense has binary
ACTIVATIONS (BatchNorm followed by a sign), which HAWQ's QuantAct has no form for (its
requantization gives multi-bit codes, and 1-bit symmetric quantization is undefined), so only a
QONNX graph with `BipolarQuant` / ternary `Quant` activations reaches the XNOR-popcount and
threshold kernels. (HAWQ's 1-bit and 2-bit weights are tested in tests/test_hawq_binary.py.)

Training (seeded, one intra-op thread, seconds per version): the float network first; the 8-bit
version starts from its weights, with activation scales calibrated on it, then quantization-aware
epochs; the ternary and binary versions train quantization-aware from scratch (straight-through
estimators: QONNX's Quant exactly in the forward pass, the gradient passed where not clamped;
BipolarQuant's sign with the gradient passed for |x| <= 1), BatchNorm in training mode.
Accuracies are those of the written files in hawqc's executor (semantic mode, QONNX's meaning) and
in hardware mode (the fixed-point arithmetic the hls4ml projects compute; the float version in
the default precision `fixed<16,6>`).

    python examples/binary_digits/make_models.py [--outdir examples/binary_digits] [--no-readme]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
VERSIONS = ("float", "int8", "ternary", "binary")
FEATURES, HIDDEN, CLASSES = 64, 64, 10
INPUT_BITS, WEIGHT_BITS, BIAS_BITS, ACT_BITS = 8, 8, 16, 8
INPUT_SCALE = 2.0**-7  # pixels / 16 are multiples of 2^-4 in [0, 1]: exact in 8 unsigned bits
BN_EPSILON = 1e-5
FLOAT_EPOCHS, INT8_EPOCHS, LOW_BIT_EPOCHS, BATCH = 40, 10, 60, 64
DEFAULT_PRECISION = "fixed<16,6>"  # the float version's type in hardware (README "Float models")
QONNX = "qonnx.custom_op.general"
TABLE_BEGIN, TABLE_END = "<!-- table: written by make_models.py -->", "<!-- /table -->"


def _load_digits_cnn():
    """examples/digits_cnn/make_model.py: its data split, QONNX fake quantization and power-of-two scales."""
    name = "binary_digits_digits_cnn"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "digits_cnn" / "make_model.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


digits_cnn = _load_digits_cnn()


@dataclass(frozen=True)
class Data:
    x_train: np.ndarray  # [N, 64] float32, pixel / 16
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_data() -> Data:
    """examples/digits_cnn's fixed 75 / 25 split, images flattened row by row."""
    split = digits_cnn.digits_split()
    return Data(split.x_train.reshape(-1, FEATURES), split.y_train, split.x_test.reshape(-1, FEATURES), split.y_test)


# ---------------------------------------------------------------------------------------------------
# Quantizers with straight-through gradients
# ---------------------------------------------------------------------------------------------------


class _Bipolar(torch.autograd.Function):
    """QONNX's BipolarQuant with scale 1: `x >= 0 ? +1 : -1`; the gradient passes for |x| <= 1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x.abs() <= 1)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside


def bipolar(x: torch.Tensor) -> torch.Tensor:
    return _Bipolar.apply(x)


def ternary(x: torch.Tensor) -> torch.Tensor:
    """QONNX's 2-bit signed narrow Quant with scale 1: round(clamp(x, -1, 1)), ties to even."""
    return digits_cnn.fake_quant(x, 1.0, 2, signed=True, narrow=True)


def weight_scale(weight: torch.Tensor) -> np.ndarray:
    """One power-of-two scale for 8-bit signed narrow weights (the largest still fits)."""
    return digits_cnn.power_of_two_scale(float(weight.detach().abs().max()), 2 ** (WEIGHT_BITS - 1) - 1)


def quantized_weight(weight: torch.Tensor) -> torch.Tensor:
    return digits_cnn.fake_quant(weight, weight_scale(weight), WEIGHT_BITS, signed=True, narrow=True)


# ---------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------


class DigitsMLP(torch.nn.Module):
    """One of the four versions; the QONNX file computes what `forward` computes in eval mode (up to
    float32 rounding of BatchNorm, which the file's own accuracy, not this network's, reports)."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version
        low_bit = version in ("ternary", "binary")
        self.fc1 = torch.nn.Linear(FEATURES, HIDDEN, bias=not low_bit)
        self.fc2 = torch.nn.Linear(HIDDEN, HIDDEN, bias=not low_bit)
        self.fc3 = torch.nn.Linear(HIDDEN, CLASSES)
        self.bn1 = torch.nn.BatchNorm1d(HIDDEN, eps=BN_EPSILON) if low_bit else None
        self.bn2 = torch.nn.BatchNorm1d(HIDDEN, eps=BN_EPSILON) if low_bit else None
        if low_bit:
            # Latent weights around the quantizer's thresholds (0 for the sign, +-0.5 for ternary).
            torch.nn.init.uniform_(self.fc2.weight, -1.0, 1.0)
        self.act_scales: dict[str, np.ndarray] = {}

    def hidden_weight(self) -> torch.Tensor:
        """fc2's weights as the file holds them."""
        if self.version == "binary":
            return bipolar(self.fc2.weight)
        if self.version == "ternary":
            return ternary(self.fc2.weight)
        if self.version == "int8":
            return quantized_weight(self.fc2.weight)
        return self.fc2.weight

    def forward(self, x: torch.Tensor, observe: dict | None = None) -> torch.Tensor:
        v = self.version
        if v == "float":
            h = torch.relu(self.fc1(x))
            if observe is not None:
                observe["act1"] = float(h.abs().max())
            h = torch.relu(self.fc2(h))
            if observe is not None:
                observe["act2"] = float(h.abs().max())
            return self.fc3(h)
        x = digits_cnn.fake_quant(x, INPUT_SCALE, INPUT_BITS, signed=False)
        if v == "int8":
            h = self._dense(self.fc1, x, INPUT_SCALE, quantized_weight(self.fc1.weight))
            h = self._act("act1", torch.relu(h))
            h = self._dense(self.fc2, h, self.act_scales["act1"], self.hidden_weight())
            h = self._act("act2", torch.relu(h))
            return self._dense(self.fc3, h, self.act_scales["act2"], quantized_weight(self.fc3.weight))
        activation = bipolar if v == "binary" else ternary
        h = activation(self.bn1(x @ quantized_weight(self.fc1.weight).T))
        h = activation(self.bn2(h @ self.hidden_weight().T))
        return self._dense(self.fc3, h, 1.0, quantized_weight(self.fc3.weight))

    def _act(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return digits_cnn.fake_quant(x, self.act_scales[name], ACT_BITS, signed=False)

    @staticmethod
    def _dense(layer: torch.nn.Linear, x: torch.Tensor, in_scale, weight: torch.Tensor) -> torch.Tensor:
        bias_scale = np.float32(in_scale) * weight_scale(layer.weight)
        return x @ weight.T + digits_cnn.fake_quant(layer.bias, bias_scale, BIAS_BITS, signed=True)


def _fit(net: DigitsMLP, data: Data, generator: torch.Generator, epochs: int, lr: float) -> None:
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(BATCH):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    net.eval()


def train(seed: int = 0) -> dict[str, DigitsMLP]:
    """The four networks, trained (see the module docstring), in eval mode."""
    data = digits_data()
    nets = {}
    with digits_cnn._training_threads():
        for index, version in enumerate(VERSIONS):
            torch.manual_seed(seed + index)
            generator = torch.Generator().manual_seed(seed + index)
            net = DigitsMLP(version)
            if version == "float":
                _fit(net, data, generator, FLOAT_EPOCHS, lr=3e-3)
            elif version == "int8":
                net.load_state_dict(nets["float"].state_dict())
                observed: dict[str, float] = {}
                with torch.no_grad():
                    nets["float"](torch.from_numpy(data.x_train), observe=observed)
                for name, top in observed.items():
                    net.act_scales[name] = digits_cnn.power_of_two_scale(top, 2**ACT_BITS - 1)
                _fit(net, data, generator, INT8_EPOCHS, lr=1e-3)
            else:
                _fit(net, data, generator, LOW_BIT_EPOCHS, lr=3e-3)
            nets[version] = net
    return nets


# ---------------------------------------------------------------------------------------------------
# The QONNX files
# ---------------------------------------------------------------------------------------------------


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, array) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, domain: str = "", **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [f"{name}_out"], name=name, domain=domain, **attrs))
        return f"{name}_out"

    def quant(self, name: str, x: str, scale, bits: int, signed: bool, narrow: bool = False) -> str:
        args = [x, self.const(f"{name}_scale", scale), self.const(f"{name}_zeropt", 0.0), self.const(f"{name}_bits", bits)]
        return self.node("Quant", args, name, domain=QONNX, signed=int(signed), narrow=int(narrow), rounding_mode="ROUND")

    def bipolar(self, name: str, x: str) -> str:
        return self.node("BipolarQuant", [x, self.const(f"{name}_scale", 1.0)], name, domain=QONNX)

    def weight(self, name: str, layer: torch.nn.Linear, kind: str) -> str:
        """The layer's weights as MatMul reads them ([in, out]) under their quantizer."""
        w = self.const(f"{name}_weight", layer.weight.detach().numpy().T)
        if kind == "float":
            return w
        if kind == "binary":
            return self.bipolar(f"{name}_weight_quant", w)
        if kind == "ternary":
            return self.quant(f"{name}_weight_quant", w, 1.0, 2, signed=True, narrow=True)
        return self.quant(f"{name}_weight_quant", w, weight_scale(layer.weight), WEIGHT_BITS, signed=True, narrow=True)

    def dense(self, name: str, x: str, layer: torch.nn.Linear, kind: str, in_scale=None) -> str:
        y = self.node("MatMul", [x, self.weight(name, layer, kind)], f"{name}_matmul")
        if layer.bias is None:
            return y
        bias = self.const(f"{name}_bias", layer.bias.detach().numpy())
        if kind != "float":  # at the accumulator's scale: the bias adds in exactly
            bias = self.quant(f"{name}_bias_quant", bias, np.float32(in_scale) * weight_scale(layer.weight), BIAS_BITS, True)
        return self.node("Add", [y, bias], f"{name}_bias_add")

    def batchnorm(self, name: str, x: str, bn: torch.nn.BatchNorm1d) -> str:
        params = [self.const(f"{name}_{p}", getattr(bn, attr).detach().numpy())
                  for p, attr in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"), ("var", "running_var"))]  # fmt: skip
        return self.node("BatchNormalization", [x, *params], name, epsilon=BN_EPSILON, momentum=0.9)


def build_qonnx(net: DigitsMLP) -> onnx.ModelProto:
    g, v = _Graph(), net.version
    if v == "float":
        x = g.node("Relu", [g.dense("fc1", "global_in", net.fc1, "float")], "relu1")
        x = g.node("Relu", [g.dense("fc2", x, net.fc2, "float")], "relu2")
        g.dense("fc3", x, net.fc3, "float")  # the last node: its output is renamed global_out
    else:
        x = g.quant("input_quant", "global_in", INPUT_SCALE, INPUT_BITS, signed=False)
        if v == "int8":
            x = g.node("Relu", [g.dense("fc1", x, net.fc1, "int8", INPUT_SCALE)], "relu1")
            x = g.quant("act1_quant", x, net.act_scales["act1"], ACT_BITS, signed=False)
            x = g.node("Relu", [g.dense("fc2", x, net.fc2, "int8", net.act_scales["act1"])], "relu2")
            x = g.quant("act2_quant", x, net.act_scales["act2"], ACT_BITS, signed=False)
            g.dense("fc3", x, net.fc3, "int8", net.act_scales["act2"])
        else:

            def activation(name: str, y: str) -> str:
                return g.bipolar(name, y) if v == "binary" else g.quant(name, y, 1.0, 2, signed=True, narrow=True)

            x = activation("act1_quant", g.batchnorm("bn1", g.dense("fc1", x, net.fc1, "int8"), net.bn1))
            x = activation("act2_quant", g.batchnorm("bn2", g.dense("fc2", x, net.fc2, v), net.bn2))
            g.dense("fc3", x, net.fc3, "int8", 1.0)
    g.nodes[-1].output[0] = "global_out"
    graph = helper.make_graph(
        g.nodes,
        f"binary_digits_{v}",
        [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, [1, FEATURES])],
        [helper.make_tensor_value_info("global_out", TensorProto.FLOAT, [1, CLASSES])],
        g.inits,
    )
    model = helper.make_model(graph, producer_name="hawqc-examples",
                              opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])  # fmt: skip
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def model_path(outdir: Path, version: str) -> Path:
    return outdir / f"digits_mlp_{version}.onnx"


# ---------------------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    version: str
    accuracy: float  # the file in semantic mode (QONNX's meaning), test split
    hardware_accuracy: float  # hardware mode: what the hls4ml project computes
    bops: float  # hawqc.report.bops on the compiled graph
    multiplications: int  # every weight x input product (the layer table's total)
    multiplier_products: int  # products computed by a multiplier (hls4ml's `mult`): DSP or LUT multipliers
    weight_bits: int  # weight memory: sum of weights x their bits
    latency_cycles: int | None  # the layer table's estimate
    kernels: str  # the dense kernels hls4ml generates, in order


def measure(path: Path, version: str, data: Data, workdir: Path) -> Row:
    """Compile the file (vitis, no C simulation: the tests compile and verify on all three
    backends) and read the comparison off hawqc's report and executor."""
    from hawqc.flow.driver import CompileOptions, compile_model
    from hawqc.sim.executor import Executor

    float_precision = DEFAULT_PRECISION if version == "float" else None
    result = compile_model(path, workdir / version, CompileOptions(backend="vitis", default_precision=float_precision))
    table = result.report.layer_table
    dense = [row for row in table["layers"] if row["op"].startswith("Dense")]
    model = result.model
    semantic = Executor(model).run(data.x_test)["global_out"]
    hardware = Executor(model, mode="hardware").run(data.x_test)["global_out"]
    weight_bits = sum(layer["n"] * layer["m"] * layer["weight_bits"] for layer in result.report.bops["layers"])
    return Row(
        version=version,
        accuracy=accuracy(semantic, data.y_test),
        hardware_accuracy=accuracy(hardware, data.y_test),
        bops=float(table["totals"]["bops"]),
        multiplications=int(table["totals"]["multiplications"]),
        multiplier_products=sum(row["multiplications"] for row in dense if row["op"] == "Dense"),
        weight_bits=int(weight_bits),
        latency_cycles=table["totals"]["latency_cycles_estimate"],
        kernels=", ".join(_kernel(row["op"]) for row in dense),
    )


def _kernel(op: str) -> str:
    return op[op.index("(") + 1 : -1] if "(" in op else "mult"


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


def measure_all(outdir: Path) -> list[Row]:
    data = digits_data()
    with tempfile.TemporaryDirectory() as work:
        return [measure(model_path(outdir, v), v, data, Path(work)) for v in VERSIONS]


def format_table(rows: list[Row]) -> str:
    head = ("| version | test accuracy (file) | (hardware) | BOPs | multiplications | with a multiplier "
            "| weight memory (bits) | est. latency (cycles) | dense kernels |")  # fmt: skip
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        latency = "" if r.latency_cycles is None else str(r.latency_cycles)
        lines.append(
            f"| {r.version} | {r.accuracy:.4f} | {r.hardware_accuracy:.4f} | {r.bops:,.0f} | {r.multiplications:,} "
            f"| {r.multiplier_products:,} | {r.weight_bits:,} | {latency} | {r.kernels} |"
        )
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    """Accuracy against cost, one panel per measure (the paper's figures put accuracy beside
    resources per model); linear scales from 0, so that bar heights compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.version for r in rows]
    colors = ["#7f7f7f", "#1f77b4", "#ff7f0e", "#2ca02c"][: len(rows)]
    panels = [
        ("test accuracy (hardware)", [r.hardware_accuracy for r in rows], False),
        ("BOPs", [r.bops for r in rows], True),
        ("products needing a multiplier", [r.multiplier_products for r in rows], True),
        ("weight memory (bits)", [r.weight_bits for r in rows], True),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(14, 3.6))
    for ax, (title, values, cost) in zip(axes, panels):
        bars = ax.bar(names, values, color=colors)
        ax.set_title(title)
        if cost:
            ax.set_ylim(0, max(values) * 1.12)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 3))
        else:
            ax.set_ylim(min(values) - 0.05, 1.0)
        for bar, value in zip(bars, values):
            label = f"{value:,.0f}" if cost else f"{value:.3f}"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom", fontsize=8)
    fig.suptitle("64-64-64-10 MLP on the 8x8 digits: float, 8-bit, ternary, binary (8-bit first and last layers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


COMMAND = "python examples/binary_digits/make_models.py"


def readme_block(table: str) -> str:
    return f"{TABLE_BEGIN}\n`{COMMAND}` printed (and wrote here):\n\n{table}\n{TABLE_END}"


def write_readme_table(readme: Path, table: str) -> None:
    text = readme.read_text()
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    readme.write_text(text[:start] + readme_block(table) + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outdir", type=Path, default=HERE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-readme", action="store_true", help="print the table only")
    args = parser.parse_args()
    start = time.perf_counter()
    nets = train(args.seed)
    for version, net in nets.items():
        onnx.save(build_qonnx(net), model_path(args.outdir, version))
    print(f"trained and wrote {len(nets)} models in {time.perf_counter() - start:.1f} s "
          f"({digits_cnn.platform()})")  # fmt: skip
    rows = measure_all(args.outdir)
    table = format_table(rows)
    print(table)
    plot(rows, args.outdir / "comparison.png")
    if not args.no_readme and (args.outdir / "README.md").exists():
        write_readme_table(args.outdir / "README.md", table)


if __name__ == "__main__":
    main()
