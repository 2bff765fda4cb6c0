"""The command line: `hawqc` (compile a model) and `hawqc-opt` (run a pipeline on IR).

A user's mistake ends in one line on stderr and exit code 2; a verification mismatch in exit code
1; only a bug in hawqc shows a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hawqc.errors import HawqcError, UserInputError


class _OneLineParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; a compiler says one line and exits 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _guarded(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv) -> int:
    args = parser.parse_args(argv)
    try:
        return body(args)
    except HawqcError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def _add_pass_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--time-passes", action="store_true", help="print a table of pass times")
    parser.add_argument(
        "--no-verify", action="store_true", help="do not verify the IR after every pass"
    )


def _print_pass_table(records) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="pass timing", title_justify="left")
    table.add_column("pass")
    table.add_column("seconds", justify="right")
    table.add_column("changed")
    table.add_column("statistics")
    total = 0.0
    for record in records:
        total += record.seconds
        stats = ", ".join(f"{k}={v}" for k, v in record.statistics.items() if v)
        table.add_row(record.name, f"{record.seconds:.4f}", "yes" if record.changed else "", stats)
    table.add_row("total", f"{total:.4f}", "", "")
    Console(stderr=True).print(table)


# --- hawqc -------------------------------------------------------------------------------------


def compile_parser() -> argparse.ArgumentParser:
    from hawqc.driver import DEFAULT_PIPELINE

    parser = _OneLineParser(
        prog="hawqc",
        description="Compile a quantized model (QONNX / ONNX) to an hls4ml project, bit-exact.",
    )
    parser.add_argument("model", type=Path, help="the model: .onnx or .onnxtxt")
    parser.add_argument("-o", "--output", type=Path, required=True, help="project directory to write")
    parser.add_argument(
        "--backend", default="vitis", help="vitis, vivado or catapult (default: vitis)"
    )
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
    _add_pass_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return _guarded(_compile, compile_parser(), argv)


def _compile(args: argparse.Namespace) -> int:
    from hawqc.driver import CompileOptions, compile_model

    options = CompileOptions(
        backend=args.backend,
        pipeline=args.pipeline,
        verify_samples=args.verify,
        force=args.force,
        seed=args.seed,
        io_type=args.io_type,
        verify_each=not args.no_verify,
    )
    result = compile_model(args.model, args.output, options)
    if args.time_passes:
        _print_pass_table(result.report.passes_as_records())
    print(f"hawqc: wrote {result.report.backend} project to {result.outdir}")
    if result.verify is None:
        return 0
    print(f"hawqc: {result.verify.summary()}")
    return 0 if result.verify.bit_exact else 1


# --- hawqc-opt ---------------------------------------------------------------------------------


def opt_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="hawqc-opt",
        description="Run a pass pipeline over a model and print the resulting IR as ONNX text.",
    )
    parser.add_argument("input", nargs="?", help="model file (.onnx or .onnxtxt), or - for ONNX text on stdin")
    parser.add_argument("-p", "--pipeline", default="", help="pipeline, e.g. 'cleanup,gemm-to-matmul'")
    parser.add_argument("-o", "--output", type=Path, help="write here (.onnx or .onnxtxt) instead of stdout")
    parser.add_argument("--list-passes", action="store_true", help="list passes and named pipelines")
    _add_pass_options(parser)
    return parser


def opt_main(argv: Sequence[str] | None = None) -> int:
    return _guarded(_opt, opt_parser(), argv)


def _opt(args: argparse.Namespace) -> int:
    from hawqc.frontends.onnx import load_onnx, load_onnx_text
    from hawqc.ir.io import to_text, write_model
    from hawqc.passes.manager import PassManager
    from hawqc.passes.registry import default_registry

    if args.list_passes:
        _list_passes(default_registry())
        return 0
    if args.input is None:
        raise UserInputError("no input file given (a path, or - for ONNX text on stdin)")
    manager = PassManager.parse(args.pipeline, verify_each=not args.no_verify) if args.pipeline else None
    verify_ir = not args.no_verify
    if args.input == "-":
        model = load_onnx_text(sys.stdin.read(), source="<stdin>", verify_ir=verify_ir)
    else:
        model = load_onnx(args.input, verify_ir=verify_ir)
    records = manager.run(model) if manager else []
    if args.time_passes:
        _print_pass_table(records)
    if args.output:
        write_model(model, args.output)
    else:
        sys.stdout.write(to_text(model) + "\n")
    return 0


def _list_passes(registry) -> None:
    for name in registry.names():
        if registry.is_pipeline(name):
            print(f"{name:20} pipeline: {registry.pipelines[name]}")
            continue
        cls = registry.lookup(name)
        print(f"{name:20} {cls.summary}")
        for spec in cls.options():
            print(f"{'':22}{spec.name}={spec.default!r} ({spec.type.__name__}) {spec.help}")
