"""The accuracy of the compiled design on the digits' test split, in hawqc's hardware mode.

    python examples/brevitas_digits/compiled_accuracy.py [MODEL.onnx] [--save-inputs x_test.npy]

Runs what the host and the design do: hawqc's default pipeline lowers the file (the pass
`integer-requant` makes its float scales integer codes and dyadic requantizations), the host turns
each standardized test image into the input port's codes (`code = clip(round_half_even(x / scale))`,
hawqc.ir.interfaces), hardware mode (what the generated C++ computes bit for bit: `--verify` checks
that) computes the output integers, and the report's affine map takes them back to logits in real
units. Printed with the accuracy of the file's exact meaning (hawqc.sim.exact) and of its float32
semantics (qonnx's arithmetic) on the same images.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _make_model():
    spec = importlib.util.spec_from_file_location("brevitas_digits_make_model", HERE / "make_model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class CompiledAccuracy:
    images: int
    hardware: float  # the compiled design (hardware mode on the host's codes), logits in real units
    exact: float  # the file's exact meaning
    float32: float  # the file's float32 semantics (hawqc's semantic executor, as qonnx)
    hardware_equals_exact: bool  # the design's real logits equal the exact meaning's on every image


def compiled_accuracy(model_path: Path, x: np.ndarray, labels: np.ndarray) -> CompiledAccuracy:
    import hawqc
    from hawqc.flow.driver import CompileOptions, compile_model
    from hawqc.flow.exact_meaning import ExactMeaning
    from hawqc.sim import Executor

    with tempfile.TemporaryDirectory() as outdir:
        lowered = compile_model(model_path, Path(outdir) / "proj", CompileOptions(backend="vitis")).model
    original = hawqc.load(model_path)
    meaning = ExactMeaning(original, lowered)
    hardware = Executor(lowered, mode="hardware")
    design_out = hardware.run(meaning.design_inputs(x))[hardware.output_names[0]]
    real = meaning.real_outputs(np.asarray(design_out))
    exact = meaning.exact.run({meaning.input_name: x})[meaning.output_name].fractions()
    float32 = meaning.semantic.run({meaning.input_name: x})[meaning.output_name]

    def accuracy(logits) -> float:
        return float((np.asarray(logits, dtype=np.float64).argmax(axis=1) == labels).mean())

    same = bool(np.all(np.asarray(real == exact.reshape(real.shape), dtype=bool)))
    return CompiledAccuracy(len(labels), accuracy(real), accuracy(exact), accuracy(float32), same)


def main() -> None:
    make_model = _make_model()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=make_model.DEFAULT_OUTPUT)
    parser.add_argument("--save-inputs", type=Path, metavar="X.npy",
                        help="also write the standardized test images (NCHW, float32) for `hawqc --inputs`")  # fmt: skip
    args = parser.parse_args()
    data = make_model.digits_split()
    if args.save_inputs:
        np.save(args.save_inputs, data.x_test)
    result = compiled_accuracy(args.model, data.x_test, data.y_test)
    print(f"test split, {result.images} images: compiled design (hardware mode) {result.hardware:.4f}, "
          f"exact meaning {result.exact:.4f}, float32 semantics {result.float32:.4f}; "
          f"design == exact meaning on every logit: {result.hardware_equals_exact}")  # fmt: skip


if __name__ == "__main__":
    main()
