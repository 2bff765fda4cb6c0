"""Train the HAWQ paper's jet tagger (QThreeLayer) with hawqc's HAWQ modules and lift it to QONNX.

16 features -> 64 -> 32 -> 32 -> 5 classes: an input `QuantAct`, then four `QuantLinear` layers
(per-channel weights, 32-bit biases) with ReLU and a requantizing `QuantAct` between them, exactly
as HAWQ's jet-tagging model is written. Precision is mixed per layer: weights 8/5/5/5 bits by
default (what the paper's Hessian-aware search picked), the activation feeding each layer
`weight bits + 3` bits (the paper's sweep) capped at 8, the input 8 bits. The data are
`make_model.py`'s synthetic jets (five Gaussian classes in 16 dimensions), so nothing is downloaded.

Training (seeded, one thread): the float network of `make_model.py` first (its `train`), whose
weights seed the QuantLinears; then quantization-aware fine-tuning of the HAWQ model (HAWQ's
straight-through rounding, activation ranges tracked by the QuantActs in training mode); then
`freeze_model` and eval mode, HAWQ's integer-only inference. `hawqc.frontends.hawq.lift.lift`
turns that model into a QONNX graph holding HAWQ's integer codes, written with hawqc's writer.

    python examples/jet_tagger/hawq_model.py [-o examples/jet_tagger/jet_tagger_hawq.onnx] [--weight-bits 8,5,5,5]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from hawqc.frontends.hawq import QuantAct, QuantLinear, freeze_model
from hawqc.frontends.hawq.lift import OUTPUT_SCALE_KEY, lift
from hawqc.ir.io import write_model

HERE = Path(__file__).resolve().parent
DEFAULT_OUTPUT = HERE / "jet_tagger_hawq.onnx"


def _load_make_model():
    """The QONNX-by-hand example next to this file: its data generator and float training."""
    spec = importlib.util.spec_from_file_location("jet_tagger_make_model", HERE / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_model = _load_make_model()
LAYERS = make_model.LAYERS  # (16, 64, 32, 32, 5)
DEFAULT_WEIGHT_BITS = (8, 5, 5, 5)
INPUT_BITS, MAX_ACT_BITS, BIAS_BITS = 8, 8, 32
# The input QuantAct's range is fixed, not tracked, so that its scale is the power of two 2^-4:
# the lifted graph quantizes its real-valued input with `Div(x, s) -> Quant`, and hardware mode
# (the exact arithmetic the backends' fixed-point types compute) can only represent that division
# for a power-of-two s (see hawqc/frontends/hawq/lift.py). Features are standardized, so 8 signed
# bits at 2^-4 cover [-8, 7.94], the same input quantizer as make_model.py's. With `--input-bits B`
# (the paper's sweeps used 16) the range stays [-8, 8) and the scale is 2^(4 - B).
INPUT_SCALE_EXPONENT = -4
INPUT_RANGE_EXPONENT = INPUT_BITS + INPUT_SCALE_EXPONENT  # 2^3 = 8
TRAIN_SAMPLES, TEST_SAMPLES = 4000, 2000
QAT_EPOCHS, BATCH, LEARNING_RATE = 30, 256, 1e-3


def activation_bits(weight_bits: tuple[int, ...]) -> tuple[int, ...]:
    """Bits of the three requantizing QuantActs: `weight bits + 3` of the layer each one feeds,
    capped at 8 (the hidden activations are unsigned, after ReLU)."""
    return tuple(min(bits + 3, MAX_ACT_BITS) for bits in weight_bits[1:])


class QThreeLayer(nn.Module):
    """HAWQ's jet tagger: `QuantAct -> (QuantLinear -> ReLU -> QuantAct) x 3 -> QuantLinear`."""

    def __init__(
        self,
        weight_bits: tuple[int, ...] = DEFAULT_WEIGHT_BITS,
        float_net: nn.Sequential | None = None,
        input_bits: int = INPUT_BITS,
    ):
        super().__init__()
        if len(weight_bits) != len(LAYERS) - 1:
            raise ValueError(f"need {len(LAYERS) - 1} weight bit widths, got {weight_bits}")
        self.quant_input = QuantAct(input_bits)
        top = (2 ** (input_bits - 1) - 1) * 2.0 ** (INPUT_RANGE_EXPONENT - input_bits)
        self.quant_input.x_min.fill_(-top)
        self.quant_input.x_max.fill_(top)
        self.quant_input.fix()  # stays fixed through training (freeze_model fixes the others)
        linears = [m for m in float_net if isinstance(m, nn.Linear)] if float_net is not None else None
        dense = []
        for index, ((n_in, n_out), bits) in enumerate(zip(itertools.pairwise(LAYERS), weight_bits)):
            layer = QuantLinear(weight_bit=bits, bias_bit=BIAS_BITS, per_channel=True)
            layer.set_param(linears[index] if linears else nn.Linear(n_in, n_out))
            dense.append(layer)
        self.dense_1, self.dense_2, self.dense_3, self.dense_4 = dense
        act_1, act_2, act_3 = (QuantAct(bits, quant_mode="asymmetric") for bits in activation_bits(weight_bits))
        self.quant_act_1, self.quant_act_2, self.quant_act_3 = act_1, act_2, act_3
        self.relu = nn.ReLU()

    def forward(self, x):
        x, scale = self.quant_input(x)
        x = self.relu(self.dense_1(x, scale))
        x, scale = self.quant_act_1(x, scale, self.dense_1.fc_scaling_factor)
        x = self.relu(self.dense_2(x, scale))
        x, scale = self.quant_act_2(x, scale, self.dense_2.fc_scaling_factor)
        x = self.relu(self.dense_3(x, scale))
        x, scale = self.quant_act_3(x, scale, self.dense_3.fc_scaling_factor)
        return self.dense_4(x, scale)


@dataclass(frozen=True)
class Dataset:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def dataset(seed: int) -> Dataset:
    """make_model.py's synthetic jets (one draw, so training and test share the class centers)."""
    features, labels = make_model.synthetic_jets(TRAIN_SAMPLES + TEST_SAMPLES, seed)
    return Dataset(features[:TRAIN_SAMPLES], labels[:TRAIN_SAMPLES], features[TRAIN_SAMPLES:], labels[TRAIN_SAMPLES:])


@dataclass(frozen=True)
class Trained:
    model: QThreeLayer  # frozen, eval mode
    graph: ir.Model
    float_accuracy: float
    quantized_accuracy: float
    seconds: float


def _accuracy(logits: torch.Tensor, labels: np.ndarray) -> float:
    return float((logits.argmax(1).numpy() == labels).mean())


def train(
    weight_bits: tuple[int, ...] = DEFAULT_WEIGHT_BITS, seed: int = 0, epochs: int = QAT_EPOCHS, input_bits: int = INPUT_BITS
) -> Trained:
    start = time.perf_counter()
    data = dataset(seed)
    float_net = make_model.train(data.train_x, data.train_y, seed)  # seeds torch, one thread
    with torch.no_grad():
        float_accuracy = _accuracy(float_net(torch.from_numpy(data.test_x)), data.test_y)
    model = QThreeLayer(tuple(weight_bits), float_net, input_bits)
    x, y = torch.from_numpy(data.train_x), torch.from_numpy(data.train_y)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(BATCH):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    freeze_model(model)
    model.eval()
    with torch.no_grad():
        quantized_accuracy = _accuracy(model(torch.from_numpy(data.test_x)), data.test_y)
    graph = lift(model, torch.from_numpy(data.test_x[:1]))
    graph.graph.name = "jet_tagger_hawq"
    return Trained(model, graph, float_accuracy, quantized_accuracy, time.perf_counter() - start)


def output_scale(graph: ir.Model) -> np.ndarray:
    """Real logits = graph output codes * this scale (per class)."""
    return np.asarray(json.loads(graph.metadata_props[OUTPUT_SCALE_KEY]), dtype=np.float32)


def platform() -> str:
    """What the trained numbers depend on besides the seed, printed with them: PyTorch's version and
    the CPU kernels it picks (AVX512 and AVX2 kernels, and different CPU vendors' kernels, sum in
    different orders, so they train slightly different nets)."""
    return f"torch {torch.__version__}, ATen CPU capability {torch.backends.cpu.get_cpu_capability()}"


def _bits(text: str) -> tuple[int, ...]:
    bits = tuple(int(part) for part in text.split(","))
    if len(bits) != len(LAYERS) - 1 or not all(2 <= b <= 8 for b in bits):
        raise argparse.ArgumentTypeError(f"expected {len(LAYERS) - 1} comma-separated widths in 2..8, got {text!r}")
    return bits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--weight-bits", type=_bits, default=DEFAULT_WEIGHT_BITS, help="per layer, e.g. 8,5,5,5")
    parser.add_argument("--input-bits", type=int, default=INPUT_BITS, choices=range(2, 17), metavar="{2..16}",
                        help="bits of the input QuantAct (the paper's sweeps used 16)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=QAT_EPOCHS, help="quantization-aware epochs")
    args = parser.parse_args()
    trained = train(args.weight_bits, args.seed, args.epochs, args.input_bits)
    write_model(trained.graph, args.output)
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes), trained in {trained.seconds:.1f} s on {platform()}")
    print(f"weight bits {','.join(map(str, args.weight_bits))}, activation bits "
          f"{args.input_bits} (input), {','.join(map(str, activation_bits(args.weight_bits)))}")  # fmt: skip
    print(f"test split, {TEST_SAMPLES} jets: float accuracy {trained.float_accuracy:.4f}, "
          f"quantized (HAWQ integer-only) accuracy {trained.quantized_accuracy:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
