"""The command line: `hawqc` (compile a model; `report`, `build`) and `hawqc-opt` (run a pipeline on IR).

Every error is one line on stderr and an exit code (`hawqc.errors`): 1 a verification found a
difference, 2 the user's mistake, 3 a failing tool or a bug in hawqc (its traceback goes to a file
the line names), 130 interrupted (Ctrl-C or SIGTERM). Both commands take the same pass-manager flags.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hawqc.cli_hardware import add_hardware_options, hardware_settings
from hawqc.errors import EXIT_FAILURE, EXIT_INTERRUPTED, HawqcError, UserInputError

# `--split-input-file`: chunks of one ONNX text file, separated by a line of this form.
SPLIT_MARKER = re.compile(r"^# -----\s*$", re.M)


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; a compiler says one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _guarded(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv) -> int:
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings(), _sigterm_interrupts():
            warnings.showwarning = _one_line_warning(parser.prog)
            return body(args)
    except HawqcError as err:
        print(f"{parser.prog}: {err.label}: {_as_flags(err)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"{parser.prog}: error: out of memory (the machine could not hold what this step needs)", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as err:  # a bug in hawqc: one line, the traceback in a file for the report
        where = _write_crash_report(err, getattr(args, "reproducer_dir", None))
        print(f"{parser.prog}: internal error: {type(err).__name__}: {_first_line(err)} "
              f"(a bug in hawqc; traceback in {where})", file=sys.stderr)  # fmt: skip
        return EXIT_FAILURE


# The Python names of what the flags set (`CompileOptions`, `HlsSettings`, `PyTorchOptions`, the pass
# manager's validation), as a `UserInputError` names them, and the flags that spell them here.
_FLAGS = {
    "verify_samples": "--verify",
    "seed": "--seed",
    "io_type": "--io-type",
    "force=True": "--force",
    "inputs": "--inputs",
    "outputs": "--outputs",
    "tolerance": "--tolerance",
    "default_precision": "--default-precision",
    "hawq_export_semantics": "--hawq-export-semantics",
    "project_name": "--project-name",
    "strategy": "--strategy",
    "reuse_factor": "--reuse-factor",
    "part": "--part",
    "clock_period": "--clock-period",
    "model_factory": "--model-factory",
    "input_shape": "--input-shape",
    "allow_pickle=True": "--allow-pickle",
    "options.pytorch (model factory, input shape, pickle opt-in)": "--model-factory, --input-shape and --allow-pickle",
    "validate": "--validate",
    "hawq_export_semantics='hawq'": "--hawq-export-semantics hawq",
}


def _as_flags(err: HawqcError) -> str:
    """The message, an option named by its flag."""
    if isinstance(err, UserInputError):
        return err.spelled(lambda name: _FLAGS.get(name, name))
    return str(err)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else "(no message)"


def _write_crash_report(err: BaseException, directory: Path | None) -> Path | str:
    """The traceback of an internal error, in the reproducer directory (default: the temp dir)."""
    import os
    import time
    import traceback

    from hawqc.passes.reproducer import default_reproducer_dir

    directory = directory or default_reproducer_dir()
    path = directory / f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(err)))
    except OSError as write_error:
        return f"nowhere: {write_error.strerror or write_error} writing {path}"
    return path


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (kill, a batch system's time limit, a stopped container) is Ctrl-C: the same cleanup
    (the output directory is left as it was, temporaries are removed), one line, exit 130."""

    def interrupt(signum, frame) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler; there SIGTERM keeps its default
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _one_line_warning(prog: str):
    """Python's warning format is two lines (file, source line); a compiler's is one."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"{prog}: warning: {message}", file=sys.stderr)

    return show


class _DeprecatedAlias(argparse.Action):
    """A flag's old spelling: sets the new flag's value and says, in one line, what to write now."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = "--" + self.dest.replace("_", "-")
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {new}", file=sys.stderr)
        setattr(namespace, self.dest, True)


def _add_version(parser: argparse.ArgumentParser) -> None:
    from hawqc import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


# --- the model flags, shared: a PyTorch (.pt / .pth) model -----------------------------------


def _add_pytorch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PyTorch models (.pt / .pth state_dict, lifted by the HAWQ frontend)")
    group.add_argument("--model-factory", metavar="MODULE:FUNCTION",
                       help="builds the model the state_dict loads into: package.module:function or path/to/file.py:function")  # fmt: skip
    group.add_argument("--input-shape", metavar="DIMS", help="shape of the example input, e.g. 1,16 (required for .pt / .pth)")  # fmt: skip
    group.add_argument("--allow-pickle", action="store_true",
                       help="read a pickled whole module (torch.load weights_only=False): this executes code from the file")  # fmt: skip


def _add_hawq_export_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hawq-export-semantics", choices=("file", "hawq"), default="file",
                        help="a HAWQ export (hawq2qonnx): 'file' computes its float32 rescales as written (default); "
                             "'hawq' reads them as HAWQ's integer requantization m / 2^e (hawqc.frontends.hawq_export)")  # fmt: skip


def _pytorch_options(args: argparse.Namespace):
    from hawqc.frontends.load import PyTorchOptions, parse_input_shape

    shape = None if args.input_shape is None else parse_input_shape(args.input_shape)
    return PyTorchOptions(args.model_factory, shape, args.allow_pickle)


# --- the pass-manager flags, shared ------------------------------------------------------------


def _pass_names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def _add_pass_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pass manager")
    group.add_argument("--time-passes", action="store_true", help="print a table of pass times (stderr)")
    group.add_argument("--pass-statistics", action="store_true", help="print each pass's counters (stderr)")
    group.add_argument("--no-verify-ir", action="store_true", help="do not verify the IR around passes")
    # The old spelling read as the opposite of `--verify N` (the C simulation); kept, with a warning.
    group.add_argument("--no-verify", action=_DeprecatedAlias, nargs=0, dest="no_verify_ir", help=argparse.SUPPRESS)
    group.add_argument("--print-ir-before", type=_pass_names, default=frozenset(), metavar="PASSES",
                       help="print the IR before these passes (comma-separated names; stderr)")  # fmt: skip
    group.add_argument("--print-ir-after", type=_pass_names, default=frozenset(), metavar="PASSES",
                       help="print the IR after these passes (comma-separated names; stderr)")  # fmt: skip
    group.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    group.add_argument("--print-ir-after-change", action="store_true",
                       help="print the IR after a pass only if it changed it (alone: after any such pass)")  # fmt: skip
    group.add_argument("--validate", type=int, default=0, metavar="N",
                       help="translation validation: run N inputs before and after every pass, fail on any bit difference")  # fmt: skip
    group.add_argument("--reproducer-dir", type=Path, default=None, metavar="DIR",
                       help="where a failing pass leaves its reproducer (default: $HAWQC_REPRODUCER_DIR or the temp dir)")  # fmt: skip
    group.add_argument("--load-pass-plugin", action="append", type=Path, default=[], metavar="FILE",
                       help="import a Python file that registers passes (repeatable)")  # fmt: skip


def _check_pass_flags(args: argparse.Namespace) -> None:
    """The pass-manager flags, checked before any model is read (plugins loaded: they add names)."""
    from hawqc.passes.registry import default_registry

    if args.validate < 0:
        raise UserInputError(f"--validate must be a non-negative count, got {args.validate}")
    registry = default_registry()
    for flag, names in (("--print-ir-before", args.print_ir_before), ("--print-ir-after", args.print_ir_after)):
        for name in sorted(names):
            if registry.is_pipeline(name):
                raise UserInputError(f"{flag}: '{name}' is a pipeline; name the passes in it")
            try:
                registry.lookup(name)
            except UserInputError as err:
                raise UserInputError(f"{flag}: {err}") from None
    if args.reproducer_dir is not None and args.reproducer_dir.exists() and not args.reproducer_dir.is_dir():
        raise UserInputError(f"--reproducer-dir {args.reproducer_dir}: exists and is not a directory")


def _configure(manager, args: argparse.Namespace) -> None:
    """Attach what the flags ask for to a parsed PassManager."""
    from hawqc.passes.instrumentation import IRPrinter
    from hawqc.passes.reproducer import default_reproducer_dir

    manager.verify_each = not args.no_verify_ir
    manager.reproducer_dir = args.reproducer_dir or default_reproducer_dir()
    for plugin in args.load_pass_plugin:
        manager.reproducer_flags += ["--load-pass-plugin", str(plugin.resolve())]
    if args.print_ir_before or args.print_ir_after or args.print_ir_after_all or args.print_ir_after_change:
        manager.instrumentations.append(
            IRPrinter(args.print_ir_before, args.print_ir_after, args.print_ir_after_all, args.print_ir_after_change)
        )
    if args.validate:
        from hawqc.passes.validation import TranslationValidator

        manager.instrumentations.append(TranslationValidator(args.validate))


def _report(records, args: argparse.Namespace) -> None:
    from hawqc.passes.instrumentation import print_statistics, print_timing

    if args.time_passes:
        print_timing(records)
    if args.pass_statistics:
        print_statistics(records)


def load_pass_plugins(paths: Sequence[Path]) -> None:
    """Import each file once (a file named twice would register its passes twice); it registers
    its passes (with `hawqc.register_pass`) as it is imported."""
    loaded: set[Path] = set()
    for path in map(Path, paths):
        if path.resolve() in loaded:
            continue
        loaded.add(path.resolve())
        if path.is_dir():
            raise UserInputError(f"{path}: is a directory, expected a pass plugin file (.py)")
        if not path.is_file():
            raise UserInputError(f"{path}: no such pass plugin file")
        spec = importlib.util.spec_from_file_location(f"hawqc_plugin_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
        try:
            spec.loader.exec_module(module)
        except HawqcError:
            raise
        except Exception as err:
            raise UserInputError(f"{path}: cannot load pass plugin ({type(err).__name__}: {err})") from None


# --- hawqc -------------------------------------------------------------------------------------


_COMMANDS = """commands:
  hawqc MODEL -o OUTDIR [options]      compile MODEL into the project OUTDIR (the options above)
  hawqc report OUTDIR [--wide] [--plot FILE.png]
                                       print a compiled project's layer table again
  hawqc build OUTDIR [--cosim]         run the vendor HLS tool (C synthesis) on a compiled project
  hawqc-opt MODEL -p PIPELINE          run passes over a model and print its IR (hawqc-opt --help)
  each of them: --help

exit codes:
  0    success
  1    verification found a difference (--verify, --outputs, --validate)
  2    a mistake in the model, a file or an option (one line names it); nothing was written
  3    a tool failed (g++, a vendor tool, out of memory) or an internal error of hawqc
  130  interrupted (Ctrl-C, SIGTERM); nothing was written
"""


def compile_parser() -> argparse.ArgumentParser:
    from hawqc.driver import DEFAULT_PIPELINE

    parser = _OneLineParser(
        prog="hawqc",
        usage="hawqc MODEL -o OUTDIR [options]  |  hawqc report OUTDIR ...  |  hawqc build OUTDIR ...",
        description="Compile a quantized model (QONNX / ONNX / HAWQ PyTorch) to an hls4ml project, and check "
        "its C simulation bit for bit.",
        epilog=_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_version(parser)
    parser.add_argument("model", type=Path, help="the model: .onnx, .onnxtxt, or .pt / .pth (see --model-factory)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="project directory to write")
    parser.add_argument("--backend", default="vitis", help="vitis, vivado or catapult (default: vitis)")
    parser.add_argument(
        "--verify",
        type=int,
        default=0,
        metavar="N",
        help="run N inputs through the C simulation and the reference executor; exit 1 on any difference",
    )
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("-p", "--pipeline", default=DEFAULT_PIPELINE, help="pass pipeline to run first")
    parser.add_argument("--io-type", default="io_parallel", help="io_parallel (default) or io_stream")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verification inputs")
    _add_hawq_export_option(parser)
    parser.add_argument("--inputs", type=Path, metavar="X.npy",
                        help="verify on these inputs (one sample per row, the model file's layout); also written to tb_data/")  # fmt: skip
    parser.add_argument("--outputs", type=Path, metavar="Y.npy",
                        help="expected outputs of --inputs: exit 1 if the C simulation differs; also written to tb_data/")  # fmt: skip
    parser.add_argument("--default-precision", metavar="TYPE",
                        help="compute a model's float parts (unquantized input, float weights and activations) in this "
                        "type, e.g. fixed<16,6> (RND_CONV,SAT: a Quant's rounding) or fixed<16,6,TRN,WRAP> (hls4ml's)")  # fmt: skip
    parser.add_argument("--tolerance", type=float, metavar="LSB",
                        help="verify accepts hardware mode differing from semantic mode by at most this many output LSBs")  # fmt: skip
    add_hardware_options(parser)
    _add_pytorch_options(parser)
    _add_pass_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    command = ("hawqc", *(sys.argv[1:] if argv is None else argv))
    if command[1:2] == ("report",):
        return _guarded(_show_report, report_parser(), list(command[2:]))
    if command[1:2] == ("build",):  # a model file called "build" is ./build
        return _guarded(_build, build_parser(), list(command[2:]))
    return _guarded(lambda args: _compile(args, command), compile_parser(), argv)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="hawqc build",
        description="Run the vendor HLS tool (C synthesis) on a project hawqc wrote; add its results to hawqc_report.json.",
    )
    _add_version(parser)
    parser.add_argument("outdir", type=Path, help="the project directory (hawqc MODEL -o OUTDIR)")
    parser.add_argument("--cosim", action="store_true", help="also run C/RTL co-simulation")
    return parser


def _build(args: argparse.Namespace) -> int:
    from hawqc.backends.vendor_build import LOG_NAME, build_project

    synthesis = build_project(args.outdir, cosim=args.cosim)
    latency, interval = synthesis["latency_cycles"], synthesis["interval_cycles"]
    print(f"hawqc: {synthesis['tool']} finished in {synthesis['seconds']:.1f} s (log: {args.outdir / LOG_NAME})")
    print(f"hawqc: latency {latency['best']}..{latency['worst']} cycles, interval {interval['min']}..{interval['max']} cycles")
    if "resources" in synthesis:
        print("hawqc: resources " + ", ".join(f"{name} {count}" for name, count in synthesis["resources"].items()))
    if "cosim" in synthesis:
        print(f"hawqc: co-simulation {synthesis['cosim']['status']}")
    return 0


def _compile(args: argparse.Namespace, command: tuple[str, ...] = ("hawqc",)) -> int:
    from hawqc.driver import CompileOptions, compile_model

    load_pass_plugins(args.load_pass_plugin)
    _check_pass_flags(args)
    options = CompileOptions(
        backend=args.backend,
        pipeline=args.pipeline,
        verify_samples=args.verify,
        force=args.force,
        seed=args.seed,
        io_type=args.io_type,
        project_name=args.project_name,
        settings=hardware_settings(args),
        pytorch=_pytorch_options(args),
        configure_passes=lambda manager: _configure(manager, args),
        hawq_export_semantics=args.hawq_export_semantics,
        inputs=args.inputs,
        outputs=args.outputs,
        command=command,
        default_precision=args.default_precision,
        tolerance=args.tolerance,
    )
    result = compile_model(args.model, args.output, options)
    _report(result.records, args)
    if result.hawq_export is not None:
        print(f"hawqc: {result.hawq_export.summary()}")
    print(f"hawqc: wrote {result.report.backend} project to {result.outdir}")
    if result.float_parts is not None:
        print(f"hawqc: {result.float_parts.summary()}")
    if result.report.layer_table is not None:
        from hawqc.report_view import render_table

        render_table(result.report.layer_table)
    for name, change in result.report.layouts.items():
        print(f"hawqc: layout of '{name}' is {change.split('->')[-1]} (was {change.split('->')[0]}) in the project")
    if result.verify is None:
        return 0
    for line in result.verify.summary().splitlines():
        print(f"hawqc: {line}")
    return 0 if result.verify.passed else 1


# --- hawqc report ------------------------------------------------------------------------------


def report_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="hawqc report", description="Print a compiled project's layer table (from its hawqc_report.json)."
    )
    _add_version(parser)
    parser.add_argument("outdir", type=Path, help="a project directory hawqc wrote")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="also write per-layer bit widths and BOPs as a PNG")
    parser.add_argument("--wide", action="store_true",
                        help="every column (input shapes, multiplications, reuse factors) and the types' rounding and saturation modes")  # fmt: skip
    return parser


def _show_report(args: argparse.Namespace) -> int:
    from hawqc.report_view import load_report, plot, render_table

    report = load_report(args.outdir)
    if args.plot is not None:
        plot(report["layer_table"], args.plot, title=f"{Path(report.get('model', '')).name} ({report.get('backend', '')})")
    render_table(report["layer_table"], wide=args.wide)
    if args.plot is not None:
        print(f"hawqc: wrote {args.plot}")
    return 0


# --- hawqc-opt ---------------------------------------------------------------------------------


def opt_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="hawqc-opt",
        description="Run a pass pipeline over a model and print the resulting IR as ONNX text.",
    )
    _add_version(parser)
    parser.add_argument("input", nargs="?", help="model file (.onnx, .onnxtxt, .pt / .pth), or - for ONNX text on stdin")
    parser.add_argument("-p", "--pipeline", default="", help="pipeline, e.g. 'cleanup,gemm-to-matmul'")
    parser.add_argument("-o", "--output", type=Path, help="write here (.onnx or .onnxtxt) instead of stdout")
    parser.add_argument("--list-passes", action="store_true", help="list passes and named pipelines")
    parser.add_argument(
        "--split-input-file",
        action="store_true",
        help="treat each '# -----' separated chunk of the text input as its own model",
    )
    _add_hawq_export_option(parser)
    _add_pytorch_options(parser)
    _add_pass_options(parser)
    return parser


def opt_main(argv: Sequence[str] | None = None) -> int:
    return _guarded(_opt, opt_parser(), argv)


def _opt(args: argparse.Namespace) -> int:
    from hawqc.passes.registry import default_registry

    load_pass_plugins(args.load_pass_plugin)
    if args.list_passes:
        _list_passes(default_registry())
        return 0
    if args.input is None:
        raise UserInputError("no input file given (a path, or - for ONNX text on stdin)")
    _check_pass_flags(args)
    if not args.split_input_file:
        if args.output:
            from hawqc.ir.io import check_writable

            check_writable(args.output)  # before the passes run, not after
        model, records = _opt_one(args, args.input)
        _report(records, args)
        _emit(model, args)
        return 0
    if args.output:
        raise UserInputError("--split-input-file writes to stdout; it cannot be combined with -o")
    # Each chunk is compiled on its own; a failing chunk is reported and the others still run.
    text = _read_stdin() if args.input == "-" else _read_text(Path(args.input))
    status, printed = 0, []
    line = 1
    for index, chunk in enumerate(SPLIT_MARKER.split(text)):
        source = f"{args.input}:{line} (chunk {index + 1})"
        line += chunk.count("\n") + 1
        try:
            model, records = _opt_one(args, source, text=chunk)
        except HawqcError as err:
            print(f"hawqc-opt: {err.label}: {_as_flags(err)}", file=sys.stderr)
            status = max(status, err.exit_code)
            continue
        _report(records, args)
        printed.append(_text(model))
    sys.stdout.write("\n# -----\n".join(printed) + "\n")
    return status


def _read_text(path: Path) -> str:
    from hawqc.ir.io import read_text_file

    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    return read_text_file(path)


def _read_stdin() -> str:
    """ONNX text is UTF-8 whatever the locale says (Python's stdin may escape undecodable bytes
    into surrogates, which onnx's parser then refuses with a message about its own arguments)."""
    buffer = getattr(sys.stdin, "buffer", None)
    try:
        return sys.stdin.read() if buffer is None else buffer.read().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserInputError(f"<stdin>: not UTF-8 text (byte {err.start})") from None


def _opt_one(args: argparse.Namespace, source: str, text: str | None = None):
    from hawqc.frontends.load import PyTorchOptions, load_model
    from hawqc.frontends.onnx import load_onnx_text
    from hawqc.passes.manager import PassManager

    pytorch = _pytorch_options(args)
    if (text is not None or source == "-") and pytorch != PyTorchOptions():
        raise UserInputError("--model-factory, --input-shape and --allow-pickle are for .pt / .pth models only")
    manager = PassManager.parse(args.pipeline) if args.pipeline else None
    if manager is not None:
        _configure(manager, args)
    verify_ir = not args.no_verify_ir
    if text is not None:
        model = load_onnx_text(text, source=source, verify_ir=verify_ir)
    elif source == "-":
        model = load_onnx_text(_read_stdin(), source="<stdin>", verify_ir=verify_ir)
    else:
        model = load_model(source, pytorch, verify_ir=verify_ir)
    if args.hawq_export_semantics == "hawq":
        from hawqc.frontends.hawq_export import read_as_hawq

        print(f"hawqc-opt: {read_as_hawq(model, source=source).summary()}", file=sys.stderr)
    return model, (manager.run(model) if manager else [])


def _text(model) -> str:
    from hawqc.ir.io import to_text

    return to_text(model)


def _emit(model, args: argparse.Namespace) -> None:
    from hawqc.ir.io import write_model

    if args.output:
        write_model(model, args.output)
    else:
        sys.stdout.write(_text(model) + "\n")


def _list_passes(registry) -> None:
    for name in registry.names():
        if registry.is_pipeline(name):
            print(f"{name:20} pipeline: {registry.pipelines[name]}")
            continue
        cls = registry.lookup(name)
        print(f"{name:20} {cls.summary}")
        for spec in cls.options():
            print(f"{'':22}{spec.name}={spec.default!r} ({spec.type.__name__}) {spec.help}")
