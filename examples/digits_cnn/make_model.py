"""Train a small quantized CNN on scikit-learn's 8x8 digits for a few seconds and write it as QONNX.

The network is what issue 4's "done when" asks for, laid out the way Brevitas / QONNX exporters
write it (NCHW, BatchNormalization left unfused, weight and bias Quants in front of Conv / Gemm):

    input [N, 1, 8, 8] -> Quant (8-bit unsigned, scale 2^-7: the pixels 0..16 divided by 16, exactly)
    Conv 3x3 pad 1, 1 -> 8 (per-tensor weight scale) -> BatchNormalization -> Relu -> Quant
    MaxPool 2x2                                                         -> [N, 8, 4, 4]
    residual block: Conv 3x3 pad 1, 8 -> 8 (per-channel weight scales [8,1,1,1]) -> BatchNormalization
                    -> Relu -> Quant, Add with the block's input, Quant
    Flatten -> Gemm(transB=1) 128 -> 10 -> Quant (8-bit signed) = the logits

Weights are 6-bit signed narrow-range, biases 16-bit at the accumulator's scale (input scale times
weight scale), activations 8-bit unsigned; every scale is a power of two, so every Conv / Gemm sum is
exact in float32 and only BatchNormalization rounds. As real exports do, the MaxPool has no `pads`
and the first Conv no `strides` / `dilations` (ONNX defaults apply).

Training (seeded, deterministic on one machine): a float warm-up, activation scales calibrated on the
training split, then quantization-aware training with straight-through fake quantization that
computes exactly what QONNX's Quant computes (x / scale + zeropt, clamp, round half to even,
(q - zeropt) * scale), BatchNorm in train mode. In eval mode the PyTorch network evaluates
BatchNorm as ONNX runtimes do (`y = x * a + b` with `a`, `b` rounded to float32), so its logits are
the QONNX file's logits bit for bit.

    python examples/digits_cnn/make_model.py [-o examples/digits_cnn/digits_cnn.onnx]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

CHANNELS, CLASSES, IMAGE = 8, 10, 8
INPUT_BITS, WEIGHT_BITS, BIAS_BITS, ACT_BITS, LOGIT_BITS = 8, 6, 16, 8, 8
# Pixels are integers 0..16; divided by 16 they are multiples of 2^-4 in [0, 1], which an unsigned
# 8-bit quantizer with scale 2^-7 (range [0, 1.99]) represents exactly.
PIXEL_DIVISOR = 16.0
INPUT_SCALE = 2.0**-7
BN_EPSILON = 1e-5
TEST_FRACTION = 0.25
SPLIT_SEED = 0  # the train/test split is fixed, whatever --seed trains with
FLOAT_EPOCHS, QAT_EPOCHS, BATCH = 15, 15, 64
QONNX = "qonnx.custom_op.general"


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray  # [N, 1, 8, 8] float32, pixel / 16
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split() -> DigitsSplit:
    """scikit-learn's bundled 8x8 digits (1797 images), a fixed 75 / 25 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / PIXEL_DIVISOR).astype(np.float32).reshape(-1, 1, IMAGE, IMAGE)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = round(len(labels) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    return DigitsSplit(images[train], labels[train], images[test], labels[test])


# ---------------------------------------------------------------------------------------------------
# Quantization, as QONNX's Quant computes it
# ---------------------------------------------------------------------------------------------------


def int_bounds(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def power_of_two_scale(max_abs: np.ndarray | float, levels: int) -> np.ndarray:
    """The smallest powers of two s with max_abs / s <= levels (so the largest value still fits)."""
    max_abs = np.maximum(np.asarray(max_abs, dtype=np.float64), 1e-12)
    return (2.0 ** np.ceil(np.log2(max_abs / levels))).astype(np.float32)


class _FakeQuant(torch.autograd.Function):
    """QONNX Quant forward (zeropt 0, ROUND = half to even); gradient passed where not clamped."""

    @staticmethod
    def forward(ctx, x, scale, min_int, max_int):
        q = x / scale + 0.0  # QONNX adds the zero point: it turns -0.0 into +0.0, so do we
        ctx.save_for_backward((q >= min_int) & (q <= max_int))
        return (torch.round(torch.clamp(q, min_int, max_int)) - 0.0) * scale

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None


def fake_quant(x: torch.Tensor, scale, bits: int, signed: bool, narrow: bool = False) -> torch.Tensor:
    scale = torch.as_tensor(np.asarray(scale, dtype=np.float32))
    return _FakeQuant.apply(x, scale, *int_bounds(bits, signed, narrow))


def weight_scale(weight: torch.Tensor, per_channel: bool) -> np.ndarray:
    """Power-of-two scale(s) for a 6-bit narrow weight: per tensor, or per output channel [C,1,1,1]."""
    w = np.abs(weight.detach().numpy())
    levels = 2 ** (WEIGHT_BITS - 1) - 1
    if per_channel:
        return power_of_two_scale(w.reshape(len(w), -1).max(axis=1), levels).reshape(-1, 1, 1, 1)
    return power_of_two_scale(w.max(), levels)


def batchnorm_as_mul_add(bn: torch.nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """BatchNormalization's per-channel a, b as ONNX runtimes round them (see the contract):
    a = fl(fl(1 / sqrt(var + eps)) * gamma), b = fl(beta - fl(mean * a)); then y = fl(fl(x * a) + b)."""
    f32 = np.float32
    var, mean = bn.running_var.numpy().astype(f32), bn.running_mean.numpy().astype(f32)
    gamma, beta = bn.weight.detach().numpy().astype(f32), bn.bias.detach().numpy().astype(f32)
    a = (f32(1) / np.sqrt(var + f32(bn.eps))) * gamma
    return a, beta - mean * a


# ---------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------


class DigitsCNN(torch.nn.Module):
    """The float network and, with `quantized=True`, its fake-quantized twin (the QONNX file's meaning).

    Activation scales (`act_scales`) are fixed by `calibrate` before quantization-aware training;
    weight scales follow the weights (recomputed every step, powers of two, not trained).
    """

    POINTS = ("act1", "act2", "add", "logits")

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, CHANNELS, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(CHANNELS, eps=BN_EPSILON)
        self.conv2 = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.bn2 = torch.nn.BatchNorm2d(CHANNELS, eps=BN_EPSILON)
        self.fc = torch.nn.Linear(CHANNELS * (IMAGE // 2) ** 2, CLASSES)
        self.act_scales: dict[str, np.ndarray] = {}

    def forward(self, x: torch.Tensor, quantized: bool = False, observe: dict | None = None) -> torch.Tensor:
        def act(name: str, value: torch.Tensor, bits: int = ACT_BITS, signed: bool = False) -> torch.Tensor:
            if observe is not None:
                observe[name] = max(observe.get(name, 0.0), float(value.abs().max()))
            return fake_quant(value, self.act_scales[name], bits, signed) if quantized else value

        if quantized:
            x = fake_quant(x, INPUT_SCALE, INPUT_BITS, signed=False)
        x = self._conv(self.conv1, x, INPUT_SCALE, quantized, per_channel=False)
        x = act("act1", torch.relu(self._bn(self.bn1, x, quantized)))
        block_in = torch.nn.functional.max_pool2d(x, 2)
        y = self._conv(self.conv2, block_in, self.act_scales.get("act1"), quantized, per_channel=True)
        y = act("act2", torch.relu(self._bn(self.bn2, y, quantized)))
        x = act("add", block_in + y).flatten(1)
        if quantized:
            w_scale = weight_scale(self.fc.weight, per_channel=False)
            w = fake_quant(self.fc.weight, w_scale, WEIGHT_BITS, signed=True, narrow=True)
            b = fake_quant(self.fc.bias, self.act_scales["add"] * w_scale, BIAS_BITS, signed=True)
            logits = torch.nn.functional.linear(x, w, b)
        else:
            logits = self.fc(x)
        return act("logits", logits, LOGIT_BITS, signed=True)

    @staticmethod
    def _conv(conv, x, in_scale, quantized: bool, per_channel: bool) -> torch.Tensor:
        if not quantized:
            return conv(x)
        w_scale = weight_scale(conv.weight, per_channel)
        w = fake_quant(conv.weight, w_scale, WEIGHT_BITS, signed=True, narrow=True)
        b = fake_quant(conv.bias, (in_scale * w_scale).reshape(-1), BIAS_BITS, signed=True)
        return torch.nn.functional.conv2d(x, w, b, padding=1)

    @staticmethod
    def _bn(bn: torch.nn.BatchNorm2d, x: torch.Tensor, quantized: bool) -> torch.Tensor:
        if bn.training or not quantized:
            return bn(x)
        a, b = batchnorm_as_mul_add(bn)
        return x * torch.from_numpy(a).reshape(-1, 1, 1) + torch.from_numpy(b).reshape(-1, 1, 1)

    def calibrate(self, x: np.ndarray) -> None:
        """Activation scales from the float network's largest activations on `x` (eval mode)."""
        observed: dict[str, float] = {}
        self.eval()
        with torch.no_grad():
            self(torch.from_numpy(x), observe=observed)
        for name in self.POINTS:
            levels = 2 ** (LOGIT_BITS - 1) - 1 if name == "logits" else 2**ACT_BITS - 1
            self.act_scales[name] = power_of_two_scale(observed[name], levels)


@contextlib.contextmanager
def _training_threads():
    """One intra-op thread while training: the results depend on the thread count (summation order),
    and on a shared 2-core machine one thread trains as fast as two and is not slowed down by a busy
    second core (two OpenMP threads then spin-wait on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(net: DigitsCNN, data: DigitsSplit, generator, epochs: int, quantized: bool, lr: float) -> None:
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()  # BatchNorm on batch statistics, also while fake-quantizing
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(BATCH):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch], quantized), y[batch]).backward()
            optimizer.step()
    net.eval()


def predict(net: DigitsCNN, x: np.ndarray, quantized: bool) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x), quantized).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean())


# ---------------------------------------------------------------------------------------------------
# The QONNX file
# ---------------------------------------------------------------------------------------------------


def build_qonnx(net: DigitsCNN) -> onnx.ModelProto:
    nodes, inits = [], []

    def const(name: str, array) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], name: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [f"{name}_out"], name=name, **attrs))
        return f"{name}_out"

    def quant(name, x, scale, bits, signed, narrow=0) -> str:
        args = [x, const(f"{name}_scale", scale), const(f"{name}_zeropt", 0.0), const(f"{name}_bits", bits)]
        return node("Quant", args, name, domain=QONNX, signed=int(signed), narrow=int(narrow),
                    rounding_mode="ROUND")  # fmt: skip

    def weights(name, layer, in_scale, per_channel) -> tuple[str, str]:
        w_scale = weight_scale(layer.weight, per_channel)
        w = quant(f"{name}_weight_quant", const(f"{name}_weight", layer.weight.detach().numpy()),
                  w_scale, WEIGHT_BITS, signed=1, narrow=1)  # fmt: skip
        # The accumulator's scale (per output channel when the weights' is): the bias adds in exactly.
        b = quant(f"{name}_bias_quant", const(f"{name}_bias", layer.bias.detach().numpy()),
                  (in_scale * w_scale).reshape(-1) if per_channel else in_scale * w_scale, BIAS_BITS,
                  signed=1)  # fmt: skip
        return w, b

    def batchnorm(name, x, bn: torch.nn.BatchNorm2d) -> str:
        params = [const(f"{name}_{p}", getattr(bn, attr).detach().numpy())
                  for p, attr in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"),
                                  ("var", "running_var"))]  # fmt: skip
        # momentum as torch.onnx writes it (1 - PyTorch's momentum); inference ignores it.
        return node("BatchNormalization", [x, *params], name, epsilon=BN_EPSILON, momentum=0.9)

    scales = net.act_scales
    x = quant("input_quant", "global_in", INPUT_SCALE, INPUT_BITS, signed=0)
    # First Conv as many exports write it: no strides, dilations or group (ONNX defaults: 1, 1, 1).
    w, b = weights("conv1", net.conv1, INPUT_SCALE, per_channel=False)
    x = node("Conv", [x, w, b], "conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = node("Relu", [batchnorm("bn1", x, net.bn1)], "relu1")
    x = quant("act1_quant", x, scales["act1"], ACT_BITS, signed=0)
    block_in = node("MaxPool", [x], "pool1", kernel_shape=[2, 2], strides=[2, 2])  # no pads
    # The residual block's Conv with every attribute spelled out, as torch.onnx.export writes it.
    w, b = weights("conv2", net.conv2, scales["act1"], per_channel=True)
    x = node("Conv", [block_in, w, b], "conv2", dilations=[1, 1], group=1, kernel_shape=[3, 3],
             pads=[1, 1, 1, 1], strides=[1, 1])  # fmt: skip
    x = node("Relu", [batchnorm("bn2", x, net.bn2)], "relu2")
    x = quant("act2_quant", x, scales["act2"], ACT_BITS, signed=0)
    x = quant("add_quant", node("Add", [block_in, x], "residual_add"), scales["add"], ACT_BITS, signed=0)
    x = node("Flatten", [x], "flatten", axis=1)
    w, b = weights("fc", net.fc, scales["add"], per_channel=False)
    x = node("Gemm", [x, w, b], "fc", alpha=1.0, beta=1.0, transB=1)
    quant("logits_quant", x, scales["logits"], LOGIT_BITS, signed=1)
    nodes[-1].output[0] = "global_out"

    graph = helper.make_graph(
        nodes,
        "digits_cnn",
        [helper.make_tensor_value_info("global_in", TensorProto.FLOAT, [1, 1, IMAGE, IMAGE])],
        [helper.make_tensor_value_info("global_out", TensorProto.FLOAT, [1, CLASSES])],
        inits,
    )
    model = helper.make_model(
        graph,
        producer_name="hawqc-examples",
        opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)],
    )
    model.ir_version = 8  # readable by onnxruntime 1.31 (qonnx's executor)
    onnx.checker.check_model(model)
    return model


@dataclass(frozen=True)
class TrainedDigitsCNN:
    model: onnx.ModelProto
    net: DigitsCNN  # after quantization-aware training, in eval mode
    data: DigitsSplit
    float_accuracy: float  # of the float network after the warm-up, on the test split
    seconds: float  # training time


def train_and_build(
    seed: int = 0, float_epochs: int = FLOAT_EPOCHS, qat_epochs: int = QAT_EPOCHS
) -> TrainedDigitsCNN:
    """Float warm-up, calibration of the activation scales, quantization-aware training, export."""
    data = digits_split()
    start = time.perf_counter()
    with _training_threads():
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        net = DigitsCNN()
        _fit(net, data, generator, float_epochs, quantized=False, lr=3e-3)
        float_accuracy = accuracy(predict(net, data.x_test, quantized=False), data.y_test)
        net.calibrate(data.x_train)
        _fit(net, data, generator, qat_epochs, quantized=True, lr=1e-3)
    seconds = time.perf_counter() - start
    return TrainedDigitsCNN(build_qonnx(net), net, data, float_accuracy, seconds)


def make_model(
    seed: int = 0, float_epochs: int = FLOAT_EPOCHS, qat_epochs: int = QAT_EPOCHS
) -> onnx.ModelProto:
    """The QONNX model `main` writes with the same arguments (the same bytes), without a file."""
    return train_and_build(seed, float_epochs, qat_epochs).model


def platform() -> str:
    """What the trained bytes depend on besides the seed, printed with them: PyTorch's version and
    the CPU kernels it picks (AVX512 and AVX2 kernels, and different CPU vendors' kernels, sum in
    different orders, so they train slightly different nets)."""
    return f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("digits_cnn.onnx"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-epochs", type=int, default=FLOAT_EPOCHS, help="float warm-up epochs")
    parser.add_argument("--epochs", type=int, default=QAT_EPOCHS, help="quantization-aware epochs")
    args = parser.parse_args()
    trained = train_and_build(args.seed, args.float_epochs, args.epochs)
    onnx.save(trained.model, args.output)
    size = args.output.stat().st_size
    print(f"wrote {args.output} ({size} bytes), trained in {trained.seconds:.1f} s on {platform()}")

    import hawqc
    from hawqc.sim.executor import Executor

    data, n = trained.data, len(trained.data.y_test)
    torch_logits = predict(trained.net, data.x_test, quantized=True)
    file_logits = Executor(hawqc.load(args.output)).run(data.x_test)["global_out"]
    same_bits = np.all(file_logits.view(np.uint32) == torch_logits.view(np.uint32), axis=1).sum()
    same_class = (file_logits.argmax(axis=1) == torch_logits.argmax(axis=1)).sum()
    print(f"test split, {n} images: float accuracy {trained.float_accuracy:.4f} (after the warm-up), "
          f"quantized accuracy {accuracy(file_logits, data.y_test):.4f} (the file in hawqc's executor)")  # fmt: skip
    print(f"PyTorch's fake-quantized eval vs the file: {same_class}/{n} same class, "
          f"{same_bits}/{n} identical logits bit for bit")  # fmt: skip


if __name__ == "__main__":
    main()
