"""Writes the Brevitas test models of tests/data/brevitas/ with Brevitas's own exporter.

    python tests/data/brevitas/make_models.py [--out DIR] [--only NAME ...] [--samples N]

Each model is a small Brevitas network (MLPs on 16-64 features, CNNs on 1x8x8 or 3x8x8 inputs),
built from a seeded init and calibrated on seeded random data, so its scales are the float values
Brevitas computes (never powers of two, except where a quantizer fixes one), then exported with
`brevitas.export.export_qonnx`. No training: calibration is what sets the activation scales, and
the weights' own statistics set the weight scales, as in a trained model.

As a sanity check of the export, each written file is run by qonnx's `execute_onnx` and compared
with the Brevitas PyTorch model on random inputs; the largest difference is printed (float32
rounding only: the export computes the same quantizers).

Needs brevitas (pinned in the `test` extra), onnxoptimizer (Brevitas's exporter imports it), qonnx.
Deterministic on one machine: seeded init, seeded data, deterministic torch kernels. The committed
files are what the tests read; this script is run by hand when a model is added, and by one slow
test that checks it still runs (tests/test_brevitas_models.py).
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from brevitas.export import export_qonnx
from brevitas.graph.calibrate import calibration_mode
from brevitas.nn import (
    QuantCat,
    QuantConv2d,
    QuantEltwiseAdd,
    QuantHardTanh,
    QuantIdentity,
    QuantLinear,
    QuantReLU,
    TruncAvgPool2d,
)
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerChannelFloat,
    Int32Bias,
    SignedBinaryActPerTensorConst,
    SignedBinaryWeightPerTensorConst,
    SignedTernaryActPerTensorConst,
    SignedTernaryWeightPerTensorConst,
    TruncTo8bit,
)
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0
# The largest |qonnx(file) - Brevitas| accepted: float32 rounding (products and sums in another
# order), well below any output step of these models (1e-7 seen); a code that flips shows as more.
EXPORT_TOLERANCE = 1e-5


# --------------------------------------------------------------------------------------------------
# The networks
# --------------------------------------------------------------------------------------------------


class MlpDefaults(nn.Module):
    """Brevitas's defaults everywhere: Int8ActPerTensorFloat input (QuantIdentity),
    Int8WeightPerTensorFloat weights, a float bias, QuantReLU (Uint8ActPerTensorFloat), a last layer
    without bias and an Int8ActPerTensorFloat output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity()
        self.fc1 = QuantLinear(32, 16, bias=True)
        self.relu = QuantReLU()
        self.fc2 = QuantLinear(16, 10, bias=False)
        self.out = QuantIdentity()

    def forward(self, x):
        return self.out(self.fc2(self.relu(self.fc1(self.inp(x)))))


class MlpW4A4PerChannel(nn.Module):
    """4-bit activations, 4-bit per-channel weights (Int8WeightPerChannelFloat at bit_width 4),
    Int32Bias (the bias quantized at input scale x weight scale, which needs QuantTensors in), a
    3-bit second layer, an 8-bit output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=4, return_quant_tensor=True)
        self.fc1 = QuantLinear(64, 32, weight_quant=Int8WeightPerChannelFloat, weight_bit_width=4, bias=True, bias_quant=Int32Bias)
        self.relu = QuantReLU(bit_width=4, return_quant_tensor=True)
        self.fc2 = QuantLinear(32, 10, weight_quant=Int8WeightPerChannelFloat, weight_bit_width=3, bias=True, bias_quant=Int32Bias)
        self.out = QuantIdentity(act_quant=Int8ActPerTensorFloat)

    def forward(self, x):
        return self.out(self.fc2(self.relu(self.fc1(self.inp(x)))))


class MlpW2A2HardTanh(nn.Module):
    """2-bit weights and activations: QuantHardTanh (its min/max-initialised scale) between layers,
    no biases, a per-tensor 2-bit input."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=2)
        self.fc1 = QuantLinear(16, 24, weight_bit_width=2, bias=False)
        self.act = QuantHardTanh(bit_width=2, min_val=-0.8, max_val=0.8)
        self.fc2 = QuantLinear(24, 8, weight_bit_width=2, bias=False)
        self.out = QuantHardTanh(bit_width=4, min_val=-3.0, max_val=3.0)

    def forward(self, x):
        return self.out(self.fc2(self.act(self.fc1(self.inp(x)))))


class MlpBinary(nn.Module):
    """A binary net with 8-bit ends: binary weights (SignedBinaryWeightPerTensorConst, constant
    scale 0.1), BatchNorm1d, binary activations (SignedBinaryActPerTensorConst at +-0.75), 8-bit
    input and output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=8)
        self.fc1 = QuantLinear(32, 24, weight_quant=SignedBinaryWeightPerTensorConst, bias=False)
        self.bn1 = nn.BatchNorm1d(24)
        self.act1 = QuantIdentity(act_quant=SignedBinaryActPerTensorConst, min_val=-0.75, max_val=0.75)
        self.fc2 = QuantLinear(24, 10, weight_quant=SignedBinaryWeightPerTensorConst, bias=False)
        self.out = QuantIdentity(bit_width=8)

    def forward(self, x):
        return self.out(self.fc2(self.act1(self.bn1(self.fc1(self.inp(x))))))


class MlpTernary(nn.Module):
    """Ternary weights (SignedTernaryWeightPerTensorConst, constant scale 0.1) and ternary
    activations (SignedTernaryActPerTensorConst at +-0.6), a float bias, an 8-bit output."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(bit_width=8)
        self.fc1 = QuantLinear(32, 16, weight_quant=SignedTernaryWeightPerTensorConst, bias=True)
        self.act1 = QuantIdentity(act_quant=SignedTernaryActPerTensorConst, min_val=-0.6, max_val=0.6)
        self.fc2 = QuantLinear(16, 10, weight_quant=SignedTernaryWeightPerTensorConst, bias=False)
        self.out = QuantIdentity(bit_width=8)

    def forward(self, x):
        return self.out(self.fc2(self.act1(self.fc1(self.inp(x)))))


class CnnConvBn(nn.Module):
    """1x8x8: QuantConv2d (per-channel Int8 weights, no bias) + BatchNorm2d + QuantReLU, twice, then a
    QuantLinear with a float bias."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity()
        self.conv1 = QuantConv2d(1, 4, 3, bias=False, weight_quant=Int8WeightPerChannelFloat)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu1 = QuantReLU()
        self.conv2 = QuantConv2d(4, 6, 3, stride=2, bias=False, weight_quant=Int8WeightPerChannelFloat)
        self.bn2 = nn.BatchNorm2d(6)
        self.relu2 = QuantReLU()
        self.fc = QuantLinear(6 * 2 * 2, 10, bias=True)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(self.inp(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class CnnTruncAvgPool(nn.Module):
    """1x8x8: TruncAvgPool2d (the Trunc op) twice: Brevitas's default RoundTo8bit, then TruncTo8bit;
    QuantConv2d with a float bias and with Int32Bias; QuantTensors flow into each pool."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity(return_quant_tensor=True)
        self.conv1 = QuantConv2d(1, 4, 3, padding=1, bias=True)
        self.relu1 = QuantReLU(return_quant_tensor=True)
        self.pool1 = TruncAvgPool2d(2)
        self.conv2 = QuantConv2d(4, 4, 3, padding=1, bias=True, bias_quant=Int32Bias)
        self.relu2 = QuantReLU(bit_width=4, return_quant_tensor=True)
        self.pool2 = TruncAvgPool2d(2, trunc_quant=TruncTo8bit)
        self.fc = QuantLinear(4 * 2 * 2, 10, bias=False)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(self.inp(x))))
        x = self.pool2(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class CnnResidual(nn.Module):
    """3x8x8: a residual block, QuantEltwiseAdd (one Int8ActPerTensorFloat input quantizer for both
    operands, an Int8 output quantizer) of a QuantReLU output and a conv branch."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity()
        self.conv1 = QuantConv2d(3, 4, 3, padding=1, bias=True)
        self.relu1 = QuantReLU()
        self.conv2 = QuantConv2d(4, 4, 3, padding=1, bias=True)
        self.relu2 = QuantReLU()
        self.add = QuantEltwiseAdd()
        self.fc = QuantLinear(4 * 8 * 8, 10, bias=True)

    def forward(self, x):
        x = self.relu1(self.conv1(self.inp(x)))
        x = self.add(x, self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class PatchedQuantCat(QuantCat):
    """QuantCat whose PyTorch forward runs: Brevitas 0.13.4's calls `QuantTensor.cat`, which only
    IntQuantTensor has (AttributeError on every call outside export). The same steps through
    `torch.cat`, which IntQuantTensor's handler implements (it asserts equal scales, as
    `QuantTensor.cat` did); the export path is QuantCat's own, untouched."""

    def forward(self, tensor_list, dim: int = 1):
        if self.export_mode:
            return super().forward(tensor_list, dim)
        quant_tensor_list = [self.input_quant(self.unpack_input(t)) for t in tensor_list]
        return self.pack_output(self.output_quant(torch.cat(quant_tensor_list, dim=dim)))


class CnnCat(nn.Module):
    """3x8x8: two conv branches (3x3 and 1x1, Uint8 and Int8 activations) joined by QuantCat (one
    input quantizer for both, an output quantizer), then a conv and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = QuantIdentity()
        self.conv_a = QuantConv2d(3, 2, 3, padding=1, bias=True)
        self.relu_a = QuantReLU()
        self.conv_b = QuantConv2d(3, 3, 1, bias=True)
        self.act_b = QuantIdentity()
        self.cat = PatchedQuantCat()
        self.conv = QuantConv2d(5, 4, 3, stride=2, bias=False)
        self.relu = QuantReLU()
        self.fc = QuantLinear(4 * 3 * 3, 10, bias=True)

    def forward(self, x):
        x = self.inp(x)
        x = self.cat([self.relu_a(self.conv_a(x)), self.act_b(self.conv_b(x))], dim=1)
        x = self.relu(self.conv(x))
        return self.fc(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------------------
# What is written
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """One file: the network, its input shape (batch 1), how it is exported."""

    name: str
    network: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    cleanup: bool = False  # qonnx.util.cleanup.cleanup_model after the export
    dynamo: bool = True  # torch.export (PyTorch >= 2.9's default) or the TorchScript exporter


EXPORTS = [
    Export("mlp_int8_defaults", MlpDefaults, (1, 32)),
    Export("mlp_int8_defaults_cleanup", MlpDefaults, (1, 32), cleanup=True),
    Export("mlp_int8_defaults_torchscript", MlpDefaults, (1, 32), dynamo=False),
    Export("mlp_w4a4_per_channel_int32bias", MlpW4A4PerChannel, (1, 64), cleanup=True),
    Export("mlp_w2a2_hardtanh", MlpW2A2HardTanh, (1, 16), cleanup=True),
    Export("mlp_binary_bn", MlpBinary, (1, 32), cleanup=True),
    Export("mlp_ternary", MlpTernary, (1, 32)),
    Export("cnn_conv_bn", CnnConvBn, (1, 1, 8, 8), cleanup=True),
    Export("cnn_trunc_avgpool", CnnTruncAvgPool, (1, 1, 8, 8), cleanup=True),
    Export("cnn_residual_add", CnnResidual, (1, 3, 8, 8), cleanup=True),
    Export("cnn_cat", CnnCat, (1, 3, 8, 8)),
]


def calibration_data(shape: tuple[int, ...], batches: int, seed: int) -> list[torch.Tensor]:
    """Seeded data the shape of the input: images in [0, 1) (8x8 digits scaled), features ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    size = (64, *shape[1:])
    if len(shape) == 4:
        return [torch.rand(size, generator=gen) for _ in range(batches)]
    return [torch.randn(size, generator=gen) for _ in range(batches)]


def build(export: Export) -> nn.Module:
    """The network, seeded, its BatchNorm statistics and activation scales calibrated."""
    torch.manual_seed(SEED)
    model = export.network()
    data = calibration_data(export.input_shape, batches=8, seed=SEED + 1)
    with torch.no_grad():
        # BatchNorm's affine parameters as training leaves them, not PyTorch's init (1 and 0).
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
        # BatchNorm's running statistics: a few forward passes in training mode (momentum 0.1).
        model.train()
        for x in data * 4:
            model(x)
        # Activation scales: Brevitas's calibration (statistics collected, then frozen).
        model.eval()
        with calibration_mode(model):
            for x in data:
                model(x)
    model.eval()
    return model


def export_file(export: Export, model: nn.Module, out: Path) -> Path:
    path = out / f"{export.name}.onnx"
    example = torch.zeros(export.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, input_t=example, export_path=str(path), dynamo=export.dynamo)
        if export.cleanup:
            from qonnx.core.modelwrapper import ModelWrapper
            from qonnx.util.cleanup import cleanup_model

            cleanup_model(ModelWrapper(str(path))).save(str(path))
    # The torch.export exporter writes the initializers to `<name>.onnx.data` beside the file: one
    # self-contained file instead (onnx.load reads the external data in and marks it internal).
    import onnx

    onnx.save(onnx.load(path), path)
    Path(f"{path}.data").unlink(missing_ok=True)
    return path


def export_difference(path: Path, model: nn.Module, export: Export, samples: int) -> float:
    """Largest |qonnx(file) - Brevitas(x)| over `samples` seeded inputs."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    # qonnx runs only a graph whose every tensor has a shape; the TorchScript exporter's has none.
    wrapper = ModelWrapper(onnx.load(path)).transform(InferShapes())
    name_in = wrapper.graph.input[0].name
    name_out = wrapper.graph.output[0].name
    xs = calibration_data(export.input_shape, batches=1, seed=SEED + 2)[0][:samples]
    worst = 0.0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = model(xs).detach().numpy()
        for i in range(len(xs)):
            got = execute_onnx(wrapper, {name_in: xs[i : i + 1].numpy()})[name_out]
            worst = max(worst, float(np.max(np.abs(got - want[i : i + 1]))))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write the .onnx files to")
    parser.add_argument("--only", nargs="*", help="names of the models to write (default: all)")
    parser.add_argument("--samples", type=int, default=32, help="inputs of the sanity check per model")
    args = parser.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for export in EXPORTS:
        if args.only and export.name not in args.only:
            continue
        model = build(export)
        path = export_file(export, model, args.out)
        worst = export_difference(path, model, export, args.samples)
        print(f"{path.name}: {path.stat().st_size} bytes, max |qonnx - brevitas| = {worst:.3g}")
        if worst > EXPORT_TOLERANCE:
            print(f"{path.name}: the export differs from the Brevitas model by more than {EXPORT_TOLERANCE}")
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
