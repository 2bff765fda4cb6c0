"""The compile driver: model file -> passes -> backend project -> C simulation -> verification.

`compile_model` is what `hawqc MODEL -o OUTDIR` and `hawqc.compile(...)` run. It owns the
all-or-nothing rule for the output directory: either OUTDIR ends up holding a complete project and
its report, or it is left exactly as it was (an existing directory replaced with `--force` is
restored if the compile fails).
"""

from __future__ import annotations

import dataclasses
import inspect
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from hawqc.backends.base import get_backend
from hawqc.backends.hls_settings import HlsSettings
from hawqc.backends.project import LoweredProject
from hawqc.backends.project_name import check_name_free, check_project_name
from hawqc.bops import bops_summary
from hawqc.errors import UserInputError
from hawqc.float_parts_option import FloatPartsOutcome, apply_default_precision, check_float_options
from hawqc.frontends.hawq_export import HawqExportReading, check_semantics, read_as_hawq
from hawqc.frontends.load import PyTorchOptions, load_model
from hawqc.ir.layout import describe_layouts
from hawqc.layer_table import build_table
from hawqc.mismatch_trace import trace_mismatch
from hawqc.passes.manager import PassManager, PassRecord
from hawqc.progress import in_steps, spinner
from hawqc.report import CompileReport
from hawqc.sim.inputs import draw_inputs
from hawqc.user_data import UserData, check_files, compare_expected, load_user_data, write_test_bench
from hawqc.verify import VerifyResult, compare, compare_modes

# The named pipeline every backend needs in front of it: a clean graph whose dense layers are
# MatMul + Add (see hawqc.passes.registry).
DEFAULT_PIPELINE = "default"


@dataclass
class CompileOptions:
    backend: str = "vitis"
    pipeline: str = DEFAULT_PIPELINE
    verify_samples: int = 0
    force: bool = False
    seed: int = 0
    io_type: str = "io_parallel"
    project_name: str = "myproject"
    # Strategy, reuse factors, part, clock (hawqc.backends.hls_settings); None: hls4ml's defaults.
    settings: HlsSettings | None = None
    # A .pt / .pth model: the factory that builds it, the example input's shape, the pickle opt-in.
    pytorch: PyTorchOptions | None = None
    # Called with the parsed PassManager before it runs: instrumentation, validation, reproducers.
    configure_passes: Callable[[PassManager], None] | None = None
    # "hawq": read a HAWQ export's requantizations as HAWQ's integer ones (hawqc.frontends.hawq_export).
    hawq_export_semantics: str = "file"
    # The user's verification data (hawqc.user_data): `--inputs X.npy` [`--outputs Y.npy`].
    inputs: Path | None = None
    outputs: Path | None = None
    # The command line that asked for this compile (argv, program first): a mismatch's reproducer repeats it.
    command: tuple[str, ...] | None = None
    # Float parts (hawqc.ir.default_precision): the type they are computed in, e.g. "fixed<16,6>", and
    # the largest hardware-vs-semantic difference (output LSBs) verify accepts.
    default_precision: str | None = None
    tolerance: float | None = None


@dataclass
class CompileResult:
    outdir: Path
    model: ir.Model
    records: list[PassRecord]
    report: CompileReport
    verify: VerifyResult | None
    # The written project: what `hawqc.backends.csim.compile_csim` builds the C simulation from.
    project: LoweredProject | None = None
    # With hawq_export_semantics="hawq": what was reread, and how the file's float32 arithmetic differs.
    hawq_export: HawqExportReading | None = None
    # With a default precision: where it was applied (or that the model has no float parts).
    float_parts: FloatPartsOutcome | None = None


def compile_model(model_path: str | Path, outdir: str | Path, options: CompileOptions) -> CompileResult:
    model_path, outdir = Path(model_path), Path(outdir)
    # Everything that can be checked without writing is checked before anything is written.
    backend = get_backend(options.backend)
    if options.verify_samples < 0:
        raise UserInputError(f"--verify must be a non-negative count, got {options.verify_samples}")
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or options.seed < 0:
        # numpy's generators take any non-negative integer and nothing else (hawqc.sim.inputs).
        raise UserInputError(f"--seed must be a non-negative integer, got {options.seed!r}")
    if options.io_type not in ("io_parallel", "io_stream"):
        raise UserInputError(f"--io-type must be io_parallel or io_stream, got {options.io_type!r}")
    check_semantics(options.hawq_export_semantics)
    if outdir.exists() and not outdir.is_dir():
        raise UserInputError(f"{outdir}: exists and is not a directory")
    if outdir.exists() and any(outdir.iterdir()) and not options.force:
        raise UserInputError(f"{outdir}: directory is not empty (use --force to replace it)")
    check_files(options.inputs, options.outputs)
    default_precision = check_float_options(options.default_precision, options.tolerance)
    if options.inputs is not None and options.verify_samples:
        raise UserInputError("--inputs verifies every sample of its file; leave out --verify N")
    check_project_name(options.project_name)
    manager = PassManager.parse(options.pipeline)
    if options.configure_passes is not None:
        options.configure_passes(manager)

    model = load_model(model_path, options.pytorch)
    check_name_free(options.project_name, model)
    hawq_export = None
    if options.hawq_export_semantics == "hawq":
        hawq_export = read_as_hawq(model, source=str(model_path), samples=options.verify_samples or 1000, seed=options.seed)
    records = manager.run(model)
    float_parts = None if default_precision is None else apply_default_precision(model, default_precision)
    user = None if options.inputs is None else load_user_data(model, options.inputs, options.outputs)

    with _ReplacedOnFailure(outdir):
        lowering_start = time.perf_counter()
        project = backend.lower(
            model, outdir, project_name=options.project_name, io_type=options.io_type, **_settings_argument(backend, options)
        )
        report = CompileReport.new(
            model=str(model_path),
            backend=backend.name,
            pipeline=options.pipeline,
            passes=records,
            layers=project.layers,
            lowering_seconds=time.perf_counter() - lowering_start,
            layouts=describe_layouts(model),
        )
        report.bops = bops_summary(model)
        report.hawq_export = None if hawq_export is None else hawq_export.as_dict()
        report.layer_table = build_table(model, project)
        report.hardware = project.hardware or None
        if float_parts is not None and float_parts.parts is not None:
            report.float_parts = float_parts.parts.as_dict()
        result = None
        if options.verify_samples or user is not None:
            command = options.command or _compile_command(model_path, options)
            result = verify_project(
                model, project, options.verify_samples, options.seed, report, user=user, command=command,
                tolerance=options.tolerance,
            )  # fmt: skip
        report.write(outdir / "hawqc_report.json")
    return CompileResult(outdir, model, records, report, result, project, hawq_export=hawq_export, float_parts=float_parts)


def _settings_argument(backend, options: CompileOptions) -> dict:
    """Backends from plugins may predate the settings; they get them only when any was given."""
    if options.settings is None or options.settings == HlsSettings():
        return {}
    if "settings" not in inspect.signature(backend.lower).parameters:
        raise UserInputError(f"backend {backend.name!r} takes no strategy, reuse factor, part or clock settings")
    return {"settings": options.settings}


def _compile_command(model_path: Path, options: CompileOptions) -> tuple[str, ...]:
    """The `hawqc` command line of a compile started from Python (for a mismatch's reproducer)."""
    return ("hawqc", str(model_path), "--backend", options.backend, "--io-type", options.io_type, "-p", options.pipeline)


def verify_project(
    model: ir.Model,
    project,
    samples: int,
    seed: int,
    report: CompileReport,
    *,
    user: UserData | None = None,
    command: tuple[str, ...] | None = None,
    tolerance: float | None = None,
) -> VerifyResult:
    """Run `samples` inputs (or the user's) through the C simulation and hardware mode, which must
    agree bit for bit, and compare hardware mode with semantic mode (the QONNX meaning); on a
    difference, trace the first differing sample layer by layer (hawqc.mismatch_trace); with the
    user's expected outputs, compare the C simulation with them; write the test bench from the
    user's data; record everything in the report."""
    from hawqc.backends.csim import compile_csim
    from hawqc.ir.precision import infer_types
    from hawqc.sim import Executor

    hardware = Executor(model, mode="hardware")
    name, output = hardware.input_names[0], hardware.output_names[0]
    inputs = draw_inputs(model, samples, seed) if user is None else {name: user.inputs}
    expected = in_steps(lambda x: hardware.run({name: x})[output], inputs[name], "hardware mode")
    semantic = in_steps(lambda x: Executor(model).run({name: x})[output], inputs[name], "semantic mode")
    precision = infer_types(model)
    output_type = precision.types.get(output)
    declared = sorted({*precision.float_inexact, *getattr(precision, "inexact", {})})
    modes = compare_modes(
        semantic,
        expected,
        None if output_type is None else 2.0**output_type.lsb_exponent,
        tuple(declared),
        tolerance,
        None if precision.float_parts is None else str(precision.float_parts.fixed),
    )
    with spinner("compiling the C simulation (g++)"):
        csim = compile_csim(project)
    simulated = in_steps(csim.predict, inputs[name], "C simulation")
    result = compare(expected, simulated, against="hardware", modes=modes)
    if not result.bit_exact and project.trace_points:  # a plugin backend's project may not be traceable
        with spinner("tracing the first differing sample layer by layer"):
            trace = trace_mismatch(model, project, inputs[name], result.first_mismatch, command)
        result = dataclasses.replace(result, trace=trace)
    if user is not None:
        if user.outputs is not None:
            result = dataclasses.replace(result, expected=compare_expected(user.outputs, simulated, user.output_file))
        write_test_bench(project.outdir, user.inputs, simulated if user.outputs is None else user.outputs)
    report.verify = result.as_dict()
    report.csim = csim.stats()
    return result


class _ReplacedOnFailure:
    """Write into `outdir`; on failure put back what was there (nothing, or the old directory)."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self.backup: Path | None = None
        self.existed_empty = False

    def __enter__(self) -> None:
        if self.outdir.exists() and any(self.outdir.iterdir()):
            self.backup = self.outdir.with_name(f".{self.outdir.name}.hawqc-old")
            if self.backup.exists():
                shutil.rmtree(self.backup)
            self.outdir.rename(self.backup)
        self.existed_empty = self.outdir.exists()
        self.outdir.mkdir(parents=True, exist_ok=True)

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            if self.backup is not None:
                shutil.rmtree(self.backup)
            return False
        shutil.rmtree(self.outdir, ignore_errors=True)
        if self.backup is not None:
            self.backup.rename(self.outdir)
        elif self.existed_empty:
            self.outdir.mkdir()
        return False
