"""The user's own verification data: `--inputs X.npy` (and `--outputs Y.npy`, the expected outputs).

Arrays are read in the layout of the model file the user compiled (an NCHW model takes NCHW
samples, one per row: shape (n, *input shape without the batch)); hawqc moves them into the
project's layout where a pass changed it (channels-last). Everything is checked before anything is
written: a missing file, a file that is not a .npy array, a non-numeric or complex dtype, NaN or
infinite values, a shape that is not (n, *sample shape), or a row count that differs between the two
files is one line naming the file, exit code 2.

The project's test bench (`tb_data/tb_input_features.dat`, `tb_data/tb_output_predictions.dat`) is
written from the same data, in hls4ml's format (one sample per line, flat in the project's C order,
values separated and followed by a space: what hls4ml's writer makes of an .npy file and what the
generated `<project>_test.cpp` reads). The predictions are the expected outputs where given, else
the C simulation's. `--verify N` (drawn inputs) fills the test bench too, with its first samples
and their C simulation outputs, capped (`bench_samples`): at most `TB_MAX_SAMPLES` samples and
`TB_MAX_VALUES` input values (a testbench file of ~20 MB at most; a co-simulation of more samples
than that takes hours), at least one sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from hawqc.errors import OptionError, UserInputError
from hawqc.ir.layout import layout_permutations

TB_DIR = "tb_data"
TB_INPUTS = "tb_input_features.dat"
TB_OUTPUTS = "tb_output_predictions.dat"
# The test bench of `--verify N`: its first samples, at most this many, and at most this many input
# values in all (at least one sample).
TB_MAX_SAMPLES = 1000
TB_MAX_VALUES = 1 << 20


@dataclass(frozen=True)
class UserData:
    """Inputs (and expected outputs), already in the project's layout."""

    inputs: np.ndarray
    outputs: np.ndarray | None
    input_file: Path
    output_file: Path | None


def check_files(inputs: Path | None, outputs: Path | None) -> None:
    """What can be said before the model is loaded: files exist and are named .npy."""
    if outputs is not None and inputs is None:
        raise OptionError(f"{outputs}: {{}} needs {{}} (the inputs those outputs belong to)", ("outputs", "inputs"))
    for path in (inputs, outputs):
        if path is None:
            continue
        if not path.is_file():
            raise UserInputError(f"{path}: no such file")
        if path.suffix != ".npy":
            raise UserInputError(f"{path}: not a .npy file (save the array with numpy.save)")


def _read(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except OSError as err:
        if err.errno is None:  # numpy's own "not an .npy file"
            raise UserInputError(f"{path}: not a readable .npy array ({err})") from None
        raise UserInputError(f"{path}: cannot read ({err.strerror})") from None
    except (ValueError, EOFError) as err:
        raise UserInputError(f"{path}: not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):
        raise UserInputError(f"{path}: not a .npy array (an .npz archive?)")
    if array.dtype.kind not in "biuf":
        raise UserInputError(f"{path}: dtype {array.dtype} is not a real number type (expected float or int)")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise UserInputError(f"{path}: contains NaN or infinite values")
    return array


def _sample_shape(value: ir.Value, perm: tuple[int, ...] | None) -> tuple[int, ...]:
    """The value's per-sample shape in the model file's layout (the batch dimension dropped)."""
    dims = [d if isinstance(d, int) else 1 for d in (value.shape or ())]
    if perm and len(perm) == len(dims):
        original = [0] * len(dims)
        for position, axis in enumerate(perm):
            original[axis] = dims[position]  # current = original.transpose(perm)
        dims = original
    return tuple(dims[1:])


def _to_project_layout(array: np.ndarray, perm: tuple[int, ...] | None) -> np.ndarray:
    if perm and len(perm) == array.ndim:
        return np.ascontiguousarray(array.transpose(perm))
    return array


def _checked(path: Path, value: ir.Value, perm, what: str) -> np.ndarray:
    array = _read(path)
    sample = _sample_shape(value, perm)
    if array.ndim != len(sample) + 1 or tuple(array.shape[1:]) != sample or array.shape[0] == 0:
        expected = ", ".join(["n", *map(str, sample)])
        raise UserInputError(
            f"{path}: shape {list(array.shape)} does not fit {what} '{value.name}': expected ({expected}), n >= 1"
        )
    return _to_project_layout(array, perm)


def load_user_data(model: ir.Model, inputs: Path, outputs: Path | None) -> UserData:
    """Read and check the arrays against the compiled graph's input and output."""
    perms = layout_permutations(model)
    graph_in, graph_out = model.graph.inputs[0], model.graph.outputs[0]
    x = _checked(inputs, graph_in, perms.get(graph_in.name), "the model's input")
    y = None
    if outputs is not None:
        y = _checked(outputs, graph_out, perms.get(graph_out.name), "the model's output")
        if len(y) != len(x):
            raise UserInputError(f"{outputs}: {len(y)} samples, but {inputs} has {len(x)}")
    # The model's input is float32 (what the executors and the verify inputs use); the C simulation
    # reads the same values as doubles.
    return UserData(x.astype(np.float32), None if y is None else y.astype(np.float64), inputs, outputs)


def _dat(array: np.ndarray) -> str:
    rows = np.asarray(array, dtype=np.float64).reshape(len(array), -1)
    # repr of a float64 is its shortest exact spelling; hls4ml's writer uses str() (the same since numpy 1.14).
    return "".join("".join(f"{float(v)!r} " for v in row) + "\n" for row in rows)


def bench_samples(values_per_sample: int, samples: int) -> int:
    """How many of `samples` drawn samples go into the test bench (see the module's docstring)."""
    return max(1, min(samples, TB_MAX_SAMPLES, TB_MAX_VALUES // max(1, values_per_sample)))


def write_test_bench(outdir: Path, inputs: np.ndarray, predictions: np.ndarray) -> None:
    """The test bench files hls4ml's `<project>_test.cpp` reads, both in the project's layout."""
    directory = outdir / TB_DIR
    directory.mkdir(exist_ok=True)
    (directory / TB_INPUTS).write_text(_dat(inputs))
    (directory / TB_OUTPUTS).write_text(_dat(predictions))


@dataclass(frozen=True)
class ExpectedComparison:
    """The C simulation against the user's expected outputs (exact, as float64)."""

    samples: int
    mismatched_samples: int
    max_abs_diff: float
    first_mismatch: int | None
    file: str

    @property
    def equal(self) -> bool:
        return self.mismatched_samples == 0

    def as_dict(self) -> dict:
        return {
            "file": self.file,
            "samples": self.samples,
            "mismatched_samples": self.mismatched_samples,
            "max_abs_diff": self.max_abs_diff,
            "first_mismatch": self.first_mismatch,
        }

    def summary(self) -> str:
        if self.equal:
            return f"expected outputs ({self.file}): {self.samples}/{self.samples} samples equal the C simulation"
        return (
            f"expected outputs ({self.file}): {self.mismatched_samples}/{self.samples} samples differ from the "
            f"C simulation (first: sample {self.first_mismatch}, max abs diff {self.max_abs_diff:g})"
        )


def compare_expected(expected: np.ndarray, simulated: np.ndarray, file: Path) -> ExpectedComparison:
    expected = np.asarray(expected, dtype=np.float64).reshape(len(expected), -1)
    simulated = np.asarray(simulated, dtype=np.float64).reshape(len(simulated), -1)
    differs = np.any(expected != simulated, axis=1)
    bad = np.flatnonzero(differs)
    return ExpectedComparison(
        samples=len(expected),
        mismatched_samples=int(differs.sum()),
        max_abs_diff=float(np.abs(expected - simulated).max()) if expected.size else 0.0,
        first_mismatch=int(bad[0]) if bad.size else None,
        file=str(file),
    )
