"""Train a small Brevitas CNN on scikit-learn's 8x8 digits for a few seconds and export it with Brevitas.

The network, in Brevitas's layers with its default float-scaled quantizers (no scale is a power of
two: Brevitas learns them):

    QuantIdentity          Int8ActPerTensorFloat (Brevitas's default): the input, pixel / 16 standardized
    QuantConv2d 3x3 pad 1, 1 -> 8, Int8WeightPerChannelFloat (one float scale per output channel),
                           no bias -> BatchNorm2d -> QuantReLU (Uint8ActPerTensorFloat)
    MaxPool2d 2x2                                                          -> [N, 8, 4, 4]
    QuantConv2d 3x3 pad 1, 8 -> 8, per-channel weights, no bias -> BatchNorm2d -> QuantReLU
    MaxPool2d 2x2                                                          -> [N, 8, 2, 2]
    flatten -> QuantLinear 32 -> 10 (Int8WeightPerTensorFloat, a float bias) = the logits

Training (seeded, one intra-op thread, CPU, a fixed number of epochs): a float twin of the same
layers (nn.Conv2d, nn.BatchNorm2d, nn.Linear) is trained first; its weights and BatchNorm statistics seed
the Brevitas network, which then trains quantization-aware (Brevitas's activation quantizers set
their scales from the statistics of their first training steps, then learn them). The Brevitas
network in eval mode is exported by `brevitas.export.export_qonnx` (the QONNX `Quant` op on the
input, the weights and the activations; BatchNormalization left unfused) and cleaned up by qonnx's
`cleanup_model`, as tests/data/brevitas/make_models.py exports (the exporter's per-node debugging
notes, stack traces with this machine's paths, are dropped).

    python examples/brevitas_digits/make_model.py [-o examples/brevitas_digits/digits_cnn_brevitas.onnx] [--seed 0] [--float-epochs 10] [--epochs 10] [--qonnx]
"""

from __future__ import annotations

import argparse
import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear, QuantReLU
from brevitas.quant import Int8WeightPerChannelFloat
from torch import nn

CHANNELS, CLASSES, IMAGE = 8, 10, 8
PIXEL_DIVISOR = 16.0  # pixels are integers 0..16: pixel / 16 is in [0, 1], then standardized
TEST_FRACTION = 0.25
SPLIT_SEED = 0  # the split of examples/digits_cnn: 1348 training, 449 test images
FLOAT_EPOCHS, QAT_EPOCHS, BATCH = 10, 10, 64
# The seed of the committed file (every seed's model compiles: README, "Retrained models").
SEED = 0
DEFAULT_OUTPUT = Path(__file__).with_name("digits_cnn_brevitas.onnx")


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigitsSplit:
    x_train: np.ndarray  # [N, 1, 8, 8] float32, pixel / 16 standardized (see digits_split)
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits_split() -> DigitsSplit:
    """scikit-learn's bundled 8x8 digits (1797 images), the fixed 75 / 25 split of examples/digits_cnn,
    standardized as images usually are before a network: (pixel / 16 - mean) / std, one mean and one
    standard deviation over the training split's pixels. (On pixel / 16 alone, in [0, 1], Brevitas's
    input quantizer calibrates its scale to exactly 1 / 128, a power of two, and the example would
    show no integer interface.)"""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / PIXEL_DIVISOR).reshape(-1, 1, IMAGE, IMAGE)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = round(len(labels) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    mean, std = images[train].mean(), images[train].std()
    images = ((images - mean) / std).astype(np.float32)
    return DigitsSplit(images[train], labels[train], images[test], labels[test])


# ---------------------------------------------------------------------------------------------------
# The networks: the Brevitas one and its float twin (the same parameter names)
# ---------------------------------------------------------------------------------------------------


class BrevitasDigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity()  # Int8ActPerTensorFloat
        self.conv1 = QuantConv2d(1, CHANNELS, 3, padding=1, bias=False, weight_quant=Int8WeightPerChannelFloat)
        self.bn1 = nn.BatchNorm2d(CHANNELS)
        self.relu1 = QuantReLU()  # Uint8ActPerTensorFloat
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = QuantConv2d(CHANNELS, CHANNELS, 3, padding=1, bias=False, weight_quant=Int8WeightPerChannelFloat)
        self.bn2 = nn.BatchNorm2d(CHANNELS)
        self.relu2 = QuantReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.fc = QuantLinear(CHANNELS * 2 * 2, CLASSES, bias=True)  # Int8WeightPerTensorFloat, float bias

    def forward(self, x):
        x = self.pool1(self.relu1(self.bn1(self.conv1(self.inp(x)))))
        x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
        return self.fc(torch.flatten(x, 1))


class FloatDigitsCNN(nn.Module):
    """The same layers without quantizers, for the float warm-up (its state_dict seeds the Brevitas one)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, CHANNELS, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(CHANNELS)
        self.conv2 = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(CHANNELS)
        self.fc = nn.Linear(CHANNELS * 2 * 2, CLASSES)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.fc(torch.flatten(x, 1))


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _training_threads():
    """One intra-op thread while training: the results depend on the thread count (summation order)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(net: nn.Module, data: DigitsSplit, generator, epochs: int, lr: float) -> None:
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(y), generator=generator).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    net.eval()


def predict(net: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(logits).argmax(axis=1) == labels).mean())


@dataclass(frozen=True)
class TrainedDigitsCNN:
    net: BrevitasDigitsCNN  # after quantization-aware training, in eval mode
    data: DigitsSplit
    float_accuracy: float  # of the float twin after the warm-up, on the test split
    brevitas_accuracy: float  # of the Brevitas network (PyTorch, eval mode), on the test split
    seconds: float  # training time


def train(seed: int = SEED, float_epochs: int = FLOAT_EPOCHS, qat_epochs: int = QAT_EPOCHS) -> TrainedDigitsCNN:
    data = digits_split()
    start = time.perf_counter()
    with _training_threads(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Brevitas's deprecation and tracing warnings
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        float_net = FloatDigitsCNN()
        _fit(float_net, data, generator, float_epochs, lr=3e-3)
        float_accuracy = accuracy(predict(float_net, data.x_test), data.y_test)
        net = BrevitasDigitsCNN()
        missing, unexpected = net.load_state_dict(float_net.state_dict(), strict=False)
        assert not unexpected and all("quant" in name for name in missing), (missing, unexpected)
        _fit(net, data, generator, qat_epochs, lr=1e-3)
        brevitas_accuracy = accuracy(predict(net, data.x_test), data.y_test)
    seconds = time.perf_counter() - start
    return TrainedDigitsCNN(net, data, float_accuracy, brevitas_accuracy, seconds)


# ---------------------------------------------------------------------------------------------------
# The export
# ---------------------------------------------------------------------------------------------------


def export(net: BrevitasDigitsCNN, path: Path) -> onnx.ModelProto:
    """`export_qonnx` (torch.export), qonnx's cleanup, and the initializers folded into the one file."""
    from brevitas.export import export_qonnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net.eval(), input_t=torch.zeros(1, 1, IMAGE, IMAGE), export_path=str(path))
        cleanup_model(ModelWrapper(str(path))).save(str(path))
    # The torch.export exporter writes the initializers to `<name>.onnx.data` beside the file: one
    # self-contained file instead (onnx.load reads the external data in and marks it internal).
    model = onnx.load(path)
    # The exporter's debugging notes on every node (stack traces with the writing machine's paths,
    # module names that depend on how this script was started): not part of the model.
    for node in model.graph.node:
        del node.metadata_props[:]
    onnx.save(model, path)
    Path(f"{path}.data").unlink(missing_ok=True)
    return model


def file_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The exported file's logits by hawqc's semantic executor (float32, as qonnx computes them)."""
    import hawqc
    from hawqc.sim.executor import Executor

    model = hawqc.load(path)
    name_in, name_out = model.graph.inputs[0].name, model.graph.outputs[0].name
    # torch.export writes the batch (1) into the flatten's Reshape target: one image at a time.
    executor = Executor(model)
    return np.concatenate([executor.run({name_in: x[i : i + 1]})[name_out] for i in range(len(x))])


def qonnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    """The exported file's logits by qonnx's `execute_onnx` (onnxruntime underneath), one image at a time."""
    import hawqc
    from hawqc.sim.qonnx_oracle import QonnxOracle

    model = hawqc.load(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return QonnxOracle(model).run(x, per_sample=True)[model.graph.outputs[0].name]


def platform() -> str:
    """What the trained numbers depend on besides the seed (see the README)."""
    return f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--float-epochs", type=int, default=FLOAT_EPOCHS, help="float warm-up epochs")
    parser.add_argument("--epochs", type=int, default=QAT_EPOCHS, help="quantization-aware epochs")
    parser.add_argument("--qonnx", action="store_true", help="also run the file by qonnx's execute_onnx (slower)")
    args = parser.parse_args()
    trained = train(args.seed, args.float_epochs, args.epochs)
    export(trained.net, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes), trained in {trained.seconds:.1f} s on {platform()}")
    data = trained.data
    exported = file_logits(args.output, data.x_test)
    agree = int((exported.argmax(axis=1) == predict(trained.net, data.x_test).argmax(axis=1)).sum())
    print(f"test split, {len(data.y_test)} images: float accuracy {trained.float_accuracy:.4f} (the float twin), "
          f"Brevitas accuracy {trained.brevitas_accuracy:.4f} (PyTorch, eval mode), "
          f"exported accuracy {accuracy(exported, data.y_test):.4f} (the file in hawqc's semantic executor; "
          f"same class as Brevitas on {agree}/{len(data.y_test)})")  # fmt: skip
    if args.qonnx:
        by_qonnx = qonnx_logits(args.output, data.x_test)
        same = int((by_qonnx.argmax(axis=1) == exported.argmax(axis=1)).sum())
        print(f"qonnx's execute_onnx: accuracy {accuracy(by_qonnx, data.y_test):.4f}, same class as hawqc's executor on "
              f"{same}/{len(data.y_test)}, largest logit difference {float(np.abs(by_qonnx - exported).max()):.3g}")  # fmt: skip


if __name__ == "__main__":
    main()
