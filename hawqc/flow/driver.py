"""The compile driver: model file -> passes -> backend project -> C simulation -> verification.

`compile_model` is what `hawqc MODEL -o OUTDIR` and `hawqc.compile(...)` run. It keeps the
all-or-nothing rule for the output directory (`hawqc.flow.output_dir`): the project and its report are
written into a temporary sibling of OUTDIR and moved into place at the very end, so OUTDIR holds
either what it held before or the complete new project, whatever happens in between (an error,
Ctrl-C, SIGTERM, SIGKILL).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from hawqc.backends.base import get_backend
from hawqc.backends.hls_settings import HlsSettings
from hawqc.backends.project import LoweredProject
from hawqc.backends.project_name import check_name_free, check_project_name
from hawqc.errors import OptionError, UnsupportedModelError, UserInputError
from hawqc.flow.exact_meaning import ExactMeaning
from hawqc.flow.float_parts_option import FloatPartsOutcome, check_float_options, run_default_precision_step
from hawqc.flow.hawq_export import check_semantics, run_hawq_export_step
from hawqc.flow.input_precision_option import InputPrecisionOutcome, check_input_precision, run_input_precision_step
from hawqc.flow.mismatch_trace import trace_mismatch
from hawqc.flow.output_dir import OutputDirectory
from hawqc.flow.progress import spinner
from hawqc.flow.user_data import UserData, check_files, compare_expected, load_user_data, write_test_bench
from hawqc.flow.verify import VerifyResult
from hawqc.flow.verify_slices import run_in_slices
from hawqc.frontends.load import load_model
from hawqc.frontends.pytorch_options import PyTorchOptions
from hawqc.ir.interfaces import has_interfaces
from hawqc.ir.io import copy_model
from hawqc.ir.layout import describe_layouts
from hawqc.passes.base import PassRecord
from hawqc.passes.integer_requant import REFUSAL_KEY
from hawqc.passes.manager import PassManager
from hawqc.passes.read_as_hawq import HawqExportReading
from hawqc.report.bops import bops_summary
from hawqc.report.compile_report import CompileReport
from hawqc.report.interfaces import interfaces_summary, requantizations
from hawqc.report.layer_table import build_table

# The named pipeline every backend needs in front of it: a clean graph whose dense layers are
# MatMul + Add (see hawqc.passes.registry).
DEFAULT_PIPELINE = "default"


@dataclass
class CompileOptions:
    """How `hawqc.compile` compiles a model: what `hawqc MODEL -o OUTDIR [flags]` sets from its flags.

    Attributes:
        backend: "vitis", "vivado" or "catapult" (or a plugin's backend name).
        pipeline: the pass pipeline run before the backend, as text (`hawqc-opt --list-passes`).
        verify_samples: inputs drawn for verification (C simulation vs hardware mode, and hardware
            vs semantic mode); 0 skips the C simulation.
        force: replace a non-empty output directory.
        seed: seed of the drawn verification inputs.
        io_type: "io_parallel" or "io_stream".
        project_name: the project's top function and file names (a C identifier).
        settings: strategy, reuse factors, part, clock (`hawqc.HlsSettings`); None: hls4ml's defaults.
        pytorch: for a .pt / .pth model, the factory that builds it, the example input's shape and
            the pickle opt-in (`hawqc.PyTorchOptions`).
        configure_passes: called with each `PassManager` before it runs (instrumentation,
            translation validation, reproducers): the pipeline's, and those of the steps the options
            ask for (`read-as-hawq`, `default-precision`: `hawqc.flow.option_steps`).
        hawq_export_semantics: "file" computes a HAWQ export's float32 rescales as written; "hawq"
            reads them as HAWQ's integer requantizations.
        inputs: a .npy file of inputs to verify on instead of drawn ones (one sample per row, in the
            model file's layout); written to the project's test bench.
        outputs: a .npy file of expected outputs for `inputs`: the C simulation must equal them.
        command: the command line that asked for this compile (program first), repeated by a
            mismatch's reproducer; None: one is made up from these options.
        default_precision: the fixed-point type of a model's float parts, e.g. "fixed<16,6>".
        input_precision: the fixed-point type an unquantized graph input is taken as, e.g.
            "fixed<8,3>" (a Quant on it; with default_precision too, inputs take this one).
        tolerance: the largest hardware-vs-semantic difference, in output LSBs, verification accepts.

    `inputs` and `outputs` may be given as `str` or `pathlib.Path`.
    """

    backend: str = "vitis"
    pipeline: str = DEFAULT_PIPELINE
    verify_samples: int = 0
    force: bool = False
    seed: int = 0
    io_type: str = "io_parallel"
    project_name: str = "myproject"
    settings: HlsSettings | None = None
    pytorch: PyTorchOptions | None = None
    configure_passes: Callable[[PassManager], None] | None = None
    hawq_export_semantics: str = "file"
    inputs: Path | None = None
    outputs: Path | None = None
    command: tuple[str, ...] | None = None
    default_precision: str | None = None
    input_precision: str | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        for name in ("inputs", "outputs"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                setattr(self, name, Path(value))


@dataclass
class CompileResult:
    """What `hawqc.compile` did.

    Attributes:
        outdir: the project directory.
        model: the graph after the passes, as lowered.
        records: one `PassRecord` per pass run (name, seconds, changed, statistics).
        report: what `OUTDIR/hawqc_report.json` holds.
        verify: the verification's outcome (`passed`, `bit_exact`, `summary()`), None without one.
        project: the written project (what `hawqc.backends.csim.compile_csim` builds from).
        hawq_export: with hawq_export_semantics="hawq", what was reread and how the file's float32
            arithmetic differs.
        float_parts: with a default precision, where it was applied (or that the model has none).
        input_precision: with an input precision, which inputs it quantized (or that none needed it).
    """

    outdir: Path
    model: ir.Model
    records: list[PassRecord]
    report: CompileReport
    verify: VerifyResult | None
    project: LoweredProject | None = None
    hawq_export: HawqExportReading | None = None
    float_parts: FloatPartsOutcome | None = None
    input_precision: InputPrecisionOutcome | None = None


def compile_model(model_path: str | Path, outdir: str | Path, options: CompileOptions | None = None) -> CompileResult:
    """Compile the model in `model_path` (.onnx, .onnxtxt, or .pt / .pth with `options.pytorch`) into
    an hls4ml project in `outdir`, and verify it as `options` asks (`hawqc MODEL -o OUTDIR`).

    `outdir` ends up holding the complete project and `hawqc_report.json`, or stays as it was.
    Raises `UserInputError` naming the argument or file that is wrong, `HawqcError` otherwise; a
    verification that found a difference is not an exception: see `result.verify.passed`."""
    options = CompileOptions() if options is None else options
    model_path, outdir = Path(model_path), Path(outdir)
    # Everything that can be checked without writing is checked before anything is written.
    backend = get_backend(options.backend)
    if options.verify_samples < 0:
        raise OptionError(f"{{}} must be a non-negative count, got {options.verify_samples}", "verify_samples")
    if isinstance(options.seed, bool) or not isinstance(options.seed, int) or options.seed < 0:
        # numpy's generators take any non-negative integer and nothing else (hawqc.sim.inputs).
        raise OptionError(f"{{}} must be a non-negative integer, got {options.seed!r}", "seed")
    if options.io_type not in ("io_parallel", "io_stream"):
        raise OptionError(f"{{}} must be io_parallel or io_stream, got {options.io_type!r}", "io_type")
    check_semantics(options.hawq_export_semantics)
    output = OutputDirectory(outdir, force=options.force, reads=(model_path, options.inputs, options.outputs))
    output.check()
    check_files(options.inputs, options.outputs)
    default_precision = check_float_options(options.default_precision, options.tolerance)
    input_precision = check_input_precision(options.input_precision)
    if options.inputs is not None and options.verify_samples:
        raise OptionError("{} verifies every sample of its file; leave out {}", ("inputs", "verify_samples"))
    check_project_name(options.project_name)
    manager = PassManager.parse(options.pipeline)
    if options.configure_passes is not None:
        options.configure_passes(manager)

    # From here on one compile at a time writes OUTDIR, and nothing shows there before the end.
    with output.writing() as staging:
        model = load_model(model_path, options.pytorch)
        check_name_free(options.project_name, model)
        hawq_export, records, input_outcome = None, [], None
        if input_precision is not None:  # first: the HAWQ reading and the pipeline see the input's range
            input_outcome, records = run_input_precision_step(model, input_precision, options.configure_passes)
        if options.hawq_export_semantics == "hawq":
            step = run_hawq_export_step(
                model, source=str(model_path), samples=options.verify_samples or 1000, seed=options.seed,
                configure=options.configure_passes,
            )  # fmt: skip
            hawq_export = step.reading
            records += step.records
        # The model as the user means it, for verifying a design with integer interfaces against its
        # exact meaning (integer-requant rewrites scales that are not powers of two).
        original = copy_model(model) if options.verify_samples or options.inputs is not None else None
        records += manager.run(model)
        refusal = model.metadata_props.get(REFUSAL_KEY)
        if refusal is not None:
            # Scales that are not powers of two were left in the graph: say why, not "not a power of two".
            raise UnsupportedModelError(f"pass 'integer-requant': {refusal}")
        float_parts = None
        if default_precision is not None:
            float_parts, step_records = run_default_precision_step(model, default_precision, options.configure_passes)
            records += step_records
        user = None if options.inputs is None else load_user_data(model, options.inputs, options.outputs)

        lowering_start = time.perf_counter()
        project = backend.lower(
            model, staging, project_name=options.project_name, io_type=options.io_type, **_settings_argument(backend, options)
        )
        output.rewrite_paths()
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
        report.interfaces = interfaces_summary(model)
        report.requantizations = requantizations(model) or None
        report.hardware = project.hardware or None
        if float_parts is not None and float_parts.parts is not None:
            report.float_parts = float_parts.parts.as_dict()
        result = None
        if options.verify_samples or user is not None:
            command = options.command or _compile_command(model_path, options)
            result = verify_project(
                model, project, options.verify_samples, options.seed, report, user=user, command=command,
                tolerance=options.tolerance, shown_outdir=output.final, original=original,
            )  # fmt: skip
        report.write(staging / "hawqc_report.json")
        output.commit()
    project = dataclasses.replace(project, outdir=output.final)
    return CompileResult(
        outdir, model, records, report, result, project,
        hawq_export=hawq_export, float_parts=float_parts, input_precision=input_outcome,
    )  # fmt: skip


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
    shown_outdir: Path | None = None,
    slice_samples: int | None = None,
    original: ir.Model | None = None,
) -> VerifyResult:
    """Run `samples` inputs (or the user's) through the C simulation and hardware mode, which must
    agree bit for bit, and compare hardware mode with semantic mode (the QONNX meaning), a slice of
    samples at a time in bounded memory (hawqc.flow.verify_slices); on a difference, trace the first
    differing sample layer by layer (hawqc.flow.mismatch_trace); with the user's expected outputs,
    compare the C simulation with them; write the test bench (the user's data, or the first drawn
    samples); record everything in the report. `shown_outdir`: where the project will be when the
    user reads the report (see `trace_mismatch`). `original`: the model before the passes; a design with
    integer interfaces is verified against its exact meaning (hawqc.flow.exact_meaning)."""
    from hawqc.backends.csim import compile_csim
    from hawqc.ir.precision import precision_of
    from hawqc.sim import Executor

    # Planned first: a model hardware mode cannot run is refused before g++ runs.
    hardware, semantic = Executor(model, mode="hardware"), Executor(model)
    with spinner("compiling the C simulation (g++)"):
        csim = compile_csim(project)
    meaning = ExactMeaning(original, model) if original is not None and has_interfaces(model) else None
    run = run_in_slices(
        model, hardware, semantic, csim, samples, seed,
        user_inputs=None if user is None else user.inputs, slice_samples=slice_samples, meaning=meaning,
    )  # fmt: skip
    precision = precision_of(model)
    output_type = precision.types.get(hardware.output_names[0])
    declared = sorted({*precision.float_inexact, *getattr(precision, "inexact", {})})
    modes = run.hardware_vs_semantic.modes(
        None if output_type is None else 2.0**output_type.lsb_exponent,
        tuple(declared),
        tolerance,
        None if precision.float_parts is None else str(precision.float_parts.fixed),
    )
    result = run.csim_vs_hardware.result(against="hardware", modes=None if meaning is not None else modes)
    if meaning is not None:
        result = dataclasses.replace(result, exact=meaning.comparison)
    if not result.bit_exact and project.trace_points:  # a plugin backend's project may not be traceable
        with spinner("tracing the first differing sample layer by layer"):
            trace = trace_mismatch(
                model, project, run.first_mismatch_input, result.first_mismatch, command, shown_outdir=shown_outdir
            )
        result = dataclasses.replace(result, trace=trace)
    bench_inputs, simulated = run.bench()
    if user is not None and user.outputs is not None:
        result = dataclasses.replace(result, expected=compare_expected(user.outputs, simulated, user.output_file))
    write_test_bench(project.outdir, bench_inputs, simulated if user is None or user.outputs is None else user.outputs)
    report.verify = result.as_dict()
    report.csim = csim.stats()
    return result
