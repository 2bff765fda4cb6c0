"""Train a HAWQ CNN on scikit-learn's 8x8 digits with hawqc's HAWQ modules and lift it to QONNX.

The network of `make_model.py` (the hand-built QONNX digits CNN), written the way HAWQ writes a
model: every layer a HAWQ module passing `(x, scale)` along, BatchNorm folded into the convolutions,
every requantization HAWQ's integer-only dyadic one:

    input [N, 1, 8, 8] (pixel / 16) -> QuantAct 8-bit, range fixed so its scale is 2^-6
    QuantBnConv2d 3x3 pad 1, 1 -> 8 -> ReLU -> QuantAct (unsigned)
    QuantMaxPool2d 2x2                                           -> [N, 8, 4, 4], the block input
    residual block: QuantBnConv2d 3x3 pad 1, 8 -> 8 -> ReLU, added to the block input
                    -> QuantAct with identity = the block input (HAWQ's residual requantization:
                       one dyadic factor per branch, one rounding)
    flatten -> QuantLinear 128 -> 10 = the logits (32-bit accumulator codes times their scale)

Weights per channel, 8/6/6 bits (conv1 / conv2 / linear), 32-bit biases; activations 8 bits (the
input) and 8 / 6 bits unsigned (after conv1, after the residual add).

Training (seeded, one thread): `make_model.py`'s float network (its `DigitsCNN`, the same layers)
gets its float warm-up; its convolutions, BatchNorms and linear layer seed the HAWQ modules; then
quantization-aware training of the HAWQ model (straight-through rounding, BatchNorm unfolded on
batch statistics as HAWQ trains it, activation ranges tracked by the QuantActs); then
`freeze_model` and eval mode, HAWQ's integer-only inference with BatchNorm folded.
`hawqc.frontends.hawq.lift.lift` turns that model into a QONNX graph (NCHW) holding HAWQ's integer
codes, written with hawqc's writer; hawqc's default pipeline makes it channels-last.

    python examples/digits_cnn/hawq_model.py [-o examples/digits_cnn/digits_cnn_hawq.onnx]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from hawqc.frontends.hawq import QuantAct, QuantBnConv2d, QuantLinear, QuantMaxPool2d, freeze_model
from hawqc.frontends.hawq.lift import OUTPUT_SCALE_KEY, lift
from hawqc.ir.io import write_model

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "digits_cnn_hawq.onnx"


def _load_make_model():
    """The QONNX-by-hand example next to this file: its data split, float network and training."""
    spec = importlib.util.spec_from_file_location("digits_cnn_make_model", HERE / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_model = _load_make_model()
CHANNELS, CLASSES, IMAGE = make_model.CHANNELS, make_model.CLASSES, make_model.IMAGE
CONV1_WEIGHT_BITS, CONV2_WEIGHT_BITS, LINEAR_WEIGHT_BITS, BIAS_BITS = 8, 6, 6, 32
INPUT_BITS, ACT1_BITS, RESIDUAL_BITS = 8, 8, 6
# The input QuantAct's range is fixed, not tracked, so that its scale is the power of two 2^-6: the
# lifted graph quantizes its real-valued input with that scale, which hardware mode (the exact
# arithmetic of the backends' fixed-point types) represents only for a power of two (see
# hawqc/frontends/hawq/lift.py). Inputs are pixel / 16, multiples of 2^-4 in [0, 1]: 8 signed bits
# at 2^-6 cover [-1.98, 1.98], so every image is quantized exactly (codes = 4 * pixel, 0..64).
INPUT_SCALE_EXPONENT = -6
FLOAT_EPOCHS, QAT_EPOCHS, BATCH, LEARNING_RATE = make_model.FLOAT_EPOCHS, 15, make_model.BATCH, 1e-3


def _bn_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d, weight_bits: int) -> QuantBnConv2d:
    layer = QuantBnConv2d(weight_bit=weight_bits, bias_bit=BIAS_BITS, per_channel=True)
    layer.set_param(copy.deepcopy(conv), copy.deepcopy(bn))
    return layer


class HawqDigitsCNN(nn.Module):
    """make_model.py's CNN as HAWQ modules (see the module docstring)."""

    def __init__(self, float_net: make_model.DigitsCNN | None = None):
        super().__init__()
        float_net = float_net if float_net is not None else make_model.DigitsCNN()
        self.quant_input = QuantAct(INPUT_BITS)
        top = (2 ** (INPUT_BITS - 1) - 1) * 2.0**INPUT_SCALE_EXPONENT
        self.quant_input.x_min.fill_(-top)
        self.quant_input.x_max.fill_(top)
        self.quant_input.fix()  # stays fixed through training (freeze_model fixes the others)
        self.conv1 = _bn_conv(float_net.conv1, float_net.bn1, CONV1_WEIGHT_BITS)
        self.act1 = QuantAct(ACT1_BITS, quant_mode="asymmetric")
        self.pool = QuantMaxPool2d(kernel_size=2, stride=2)
        self.conv2 = _bn_conv(float_net.conv2, float_net.bn2, CONV2_WEIGHT_BITS)
        self.act_residual = QuantAct(RESIDUAL_BITS, quant_mode="asymmetric")
        self.fc = QuantLinear(weight_bit=LINEAR_WEIGHT_BITS, bias_bit=BIAS_BITS, per_channel=True)
        self.fc.set_param(copy.deepcopy(float_net.fc))
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # one each: the graph's node names follow them

    def forward(self, x):
        x, scale = self.quant_input(x)
        x, weight_scale = self.conv1(x, scale)
        x, scale = self.act1(self.relu1(x), scale, weight_scale)
        x, scale = self.pool(x, scale)
        identity, identity_scale = x, scale
        x, weight_scale = self.conv2(x, scale)
        x = self.relu2(x) + identity
        x, scale = self.act_residual(x, scale, weight_scale, identity, identity_scale)
        return self.fc(torch.flatten(x, 1), scale)


@dataclass(frozen=True)
class Trained:
    model: HawqDigitsCNN  # frozen, eval mode
    graph: ir.Model
    data: make_model.DigitsSplit
    float_accuracy: float  # of the float network after the warm-up, on the test split
    quantized_accuracy: float  # of the HAWQ model in eval mode (integer-only), on the test split
    seconds: float  # training time


def _accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(1).numpy() == labels).mean())


def train(seed: int = 0, float_epochs: int = FLOAT_EPOCHS, qat_epochs: int = QAT_EPOCHS) -> Trained:
    data = make_model.digits_split()
    start = time.perf_counter()
    with make_model._training_threads():  # one thread: the numbers depend on the summation order
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        float_net = make_model.DigitsCNN()
        make_model._fit(float_net, data, generator, float_epochs, quantized=False, lr=3e-3)
        float_accuracy = make_model.accuracy(make_model.predict(float_net, data.x_test, False), data.y_test)
        model = HawqDigitsCNN(float_net)
        x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
        optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        model.train()
        for _ in range(qat_epochs):
            for batch in torch.randperm(len(y), generator=generator).split(BATCH):
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
                optimizer.step()
        freeze_model(model)
        model.eval()
        with torch.no_grad():
            quantized_accuracy = _accuracy(model(torch.from_numpy(data.x_test)), data.y_test)
        graph = lift(model, torch.from_numpy(data.x_test[:1]))
    graph.graph.name = "digits_cnn_hawq"
    return Trained(model, graph, data, float_accuracy, quantized_accuracy, time.perf_counter() - start)


def output_scale(graph: ir.Model) -> np.ndarray:
    """Real logits = graph output codes * this scale (per class)."""
    return np.asarray(json.loads(graph.metadata_props[OUTPUT_SCALE_KEY]), dtype=np.float32)


platform = make_model.platform


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--float-epochs", type=int, default=FLOAT_EPOCHS, help="float warm-up epochs")
    parser.add_argument("--epochs", type=int, default=QAT_EPOCHS, help="quantization-aware epochs")
    args = parser.parse_args()
    trained = train(args.seed, args.float_epochs, args.epochs)
    write_model(trained.graph, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes), trained in {trained.seconds:.1f} s on {platform()}")
    print(f"weight bits {CONV1_WEIGHT_BITS},{CONV2_WEIGHT_BITS},{LINEAR_WEIGHT_BITS} (per channel), activation bits "
          f"{INPUT_BITS} (input), {ACT1_BITS}, {RESIDUAL_BITS} (residual)")  # fmt: skip
    print(f"test split, {len(trained.data.y_test)} images: float accuracy {trained.float_accuracy:.4f} (after the "
          f"warm-up), quantized (HAWQ integer-only) accuracy {trained.quantized_accuracy:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
