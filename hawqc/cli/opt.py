"""`hawqc-opt`: run a pass pipeline over a model and print the IR as ONNX text (what the lit tests
check with FileCheck)."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from hawqc.cli.run import OneLineParser, add_version, as_flags, run_guarded
from hawqc.cli.shared_flags import (
    add_hawq_export_option,
    add_pass_options,
    add_pytorch_options,
    check_pass_flags,
    configure_passes,
    load_pass_plugins,
    pytorch_options,
    report_passes,
)
from hawqc.errors import HawqcError, UserInputError

# `--split-input-file`: chunks of one ONNX text file, separated by a line of this form.
SPLIT_MARKER = re.compile(r"^# -----\s*$", re.M)


def opt_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hawqc-opt",
        description="Run a pass pipeline over a model and print the resulting IR as ONNX text.",
    )
    add_version(parser)
    parser.add_argument("input", nargs="?", help="model file (.onnx, .onnxtxt, .pt / .pth), or - for ONNX text on stdin")
    parser.add_argument("-p", "--pipeline", default="", help="pipeline, e.g. 'cleanup,gemm-to-matmul'")
    parser.add_argument("-o", "--output", type=Path, help="write here (.onnx or .onnxtxt) instead of stdout")
    parser.add_argument("--list-passes", action="store_true", help="list passes and named pipelines")
    parser.add_argument(
        "--split-input-file",
        action="store_true",
        help="treat each '# -----' separated chunk of the text input as its own model",
    )
    add_hawq_export_option(parser)
    add_pytorch_options(parser)
    add_pass_options(parser)
    return parser


def opt_main(argv: Sequence[str] | None = None) -> int:
    return run_guarded(_opt, opt_parser(), argv)


def _opt(args: argparse.Namespace) -> int:
    from hawqc.passes.registry import default_registry

    load_pass_plugins(args.load_pass_plugin)
    if args.list_passes:
        _list_passes(default_registry())
        return 0
    if args.input is None:
        raise UserInputError("no input file given (a path, or - for ONNX text on stdin)")
    check_pass_flags(args)
    if not args.split_input_file:
        if args.output:
            from hawqc.ir.io import check_writable

            check_writable(args.output)  # before the passes run, not after
        model, records = _opt_one(args, args.input)
        report_passes(records, args)
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
            print(f"hawqc-opt: {err.label}: {as_flags(err)}", file=sys.stderr)
            status = max(status, err.exit_code)
            continue
        report_passes(records, args)
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
    from hawqc.frontends.load import load_model
    from hawqc.frontends.onnx import load_onnx_text
    from hawqc.frontends.pytorch_options import PyTorchOptions
    from hawqc.passes.manager import PassManager

    pytorch = pytorch_options(args)
    if (text is not None or source == "-") and pytorch != PyTorchOptions():
        raise UserInputError("--model-factory, --input-shape and --allow-pickle are for .pt / .pth models only")
    manager = PassManager.parse(args.pipeline) if args.pipeline else None
    if manager is not None:
        configure_passes(manager, args)
    verify_ir = not args.no_verify_ir
    if text is not None:
        model = load_onnx_text(text, source=source, verify_ir=verify_ir)
    elif source == "-":
        model = load_onnx_text(_read_stdin(), source="<stdin>", verify_ir=verify_ir)
    else:
        model = load_model(source, pytorch, verify_ir=verify_ir)
    records = []
    if args.hawq_export_semantics == "hawq":
        from hawqc.flow.hawq_export import run_hawq_export_step

        step = run_hawq_export_step(model, source=source, configure=lambda step_manager: configure_passes(step_manager, args))
        print(f"hawqc-opt: {step.reading.summary()}", file=sys.stderr)
        records = step.records
    return model, records + (manager.run(model) if manager else [])


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
