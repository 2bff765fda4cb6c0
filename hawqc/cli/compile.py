"""`hawqc`: compile a model; `hawqc report`, `hawqc build` (`hawqc-opt` is `hawqc.cli.opt`).

Every error is one line on stderr and an exit code (`hawqc.errors`, `hawqc.cli.run`): 1 a
verification found a difference, 2 the user's mistake, 3 a failing tool or a bug in hawqc (its
traceback goes to a file the line names), 130 interrupted (Ctrl-C or SIGTERM). Both commands take
the same pass-manager flags (`hawqc.cli.shared_flags`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hawqc.cli.hardware_flags import add_hardware_options, hardware_settings
from hawqc.cli.run import OneLineParser, add_version, run_guarded
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
    from hawqc.flow.driver import DEFAULT_PIPELINE

    parser = OneLineParser(
        prog="hawqc",
        usage="hawqc MODEL -o OUTDIR [options]  |  hawqc report OUTDIR ...  |  hawqc build OUTDIR ...",
        description="Compile a quantized model (QONNX / ONNX / HAWQ PyTorch) to an hls4ml project, and check "
        "its C simulation bit for bit.",
        epilog=_COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
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
    add_hawq_export_option(parser)
    parser.add_argument("--inputs", type=Path, metavar="X.npy",
                        help="verify on these inputs (one sample per row, the model file's layout); also written to tb_data/")  # fmt: skip
    parser.add_argument("--outputs", type=Path, metavar="Y.npy",
                        help="expected outputs of --inputs: exit 1 if the C simulation differs; also written to tb_data/")  # fmt: skip
    parser.add_argument("--default-precision", metavar="TYPE",
                        help="compute a model's float parts (unquantized input, float weights and activations) in this "
                        "type, e.g. fixed<16,6> (RND_CONV,SAT: a Quant's rounding) or fixed<16,6,TRN,WRAP> (hls4ml's)")  # fmt: skip
    parser.add_argument("--input-precision", metavar="TYPE",
                        help="take a graph input that has no Quant as this fixed-point type, e.g. fixed<8,3> (RND_CONV,SAT: "
                        "a Quant of scale 2^-5 rounding half to even and clamping, as the C bridge converts it); "
                        "with --default-precision, inputs take this one")  # fmt: skip
    parser.add_argument("--tolerance", type=float, metavar="LSB",
                        help="verify accepts hardware mode differing from semantic mode by at most this many output LSBs")  # fmt: skip
    add_hardware_options(parser)
    add_pytorch_options(parser)
    add_pass_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    command = ("hawqc", *(sys.argv[1:] if argv is None else argv))
    if command[1:2] == ("report",):
        return run_guarded(_show_report, report_parser(), list(command[2:]))
    if command[1:2] == ("build",):  # a model file called "build" is ./build
        return run_guarded(_build, build_parser(), list(command[2:]))
    return run_guarded(lambda args: _compile(args, command), compile_parser(), argv)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hawqc build",
        description="Run the vendor HLS tool (C synthesis) on a project hawqc wrote; add its results to hawqc_report.json.",
    )
    add_version(parser)
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
    from hawqc.flow.driver import CompileOptions, compile_model

    load_pass_plugins(args.load_pass_plugin)
    check_pass_flags(args)
    options = CompileOptions(
        backend=args.backend,
        pipeline=args.pipeline,
        verify_samples=args.verify,
        force=args.force,
        seed=args.seed,
        io_type=args.io_type,
        project_name=args.project_name,
        settings=hardware_settings(args),
        pytorch=pytorch_options(args),
        configure_passes=lambda manager: configure_passes(manager, args),
        hawq_export_semantics=args.hawq_export_semantics,
        inputs=args.inputs,
        outputs=args.outputs,
        command=command,
        default_precision=args.default_precision,
        input_precision=args.input_precision,
        tolerance=args.tolerance,
    )
    result = compile_model(args.model, args.output, options)
    report_passes(result.records, args)
    if result.hawq_export is not None:
        print(f"hawqc: {result.hawq_export.summary()}")
    print(f"hawqc: wrote {result.report.backend} project to {result.outdir}")
    if result.input_precision is not None:
        print(f"hawqc: {result.input_precision.summary()}")
    if result.float_parts is not None:
        print(f"hawqc: {result.float_parts.summary()}")
    if result.report.layer_table is not None:
        from hawqc.report.view import render_table

        render_table(result.report.layer_table)
    for name, change in result.report.layouts.items():
        print(f"hawqc: layout of '{name}' is {change.split('->')[-1]} (was {change.split('->')[0]}) in the project")
    for port in (result.report.interfaces or {}).get("inputs", {}).values():
        print(f"hawqc: {port['host']}")
    for port in (result.report.interfaces or {}).get("outputs", {}).values():
        print(f"hawqc: {port['host']}")
    if result.report.requantizations:
        widths = sorted({r["multiplier_bits"] for r in result.report.requantizations})
        print(
            f"hawqc: {len(result.report.requantizations)} requantization(s) with float scales made exact dyadic "
            f"multiplies of {', '.join(map(str, widths))} significant bits"
        )
        unproven = [r["node"] for r in result.report.requantizations if not r.get("fewest_bits_proven", True)]
        if unproven:
            print(f"hawqc: exact, but not proven the fewest bits (accumulator range too wide to rule out fewer): {', '.join(unproven)}")
    if result.verify is None:
        return 0
    for line in result.verify.summary().splitlines():
        print(f"hawqc: {line}")
    return 0 if result.verify.passed else 1


# --- hawqc report ------------------------------------------------------------------------------


def report_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="hawqc report", description="Print a compiled project's layer table (from its hawqc_report.json)."
    )
    add_version(parser)
    parser.add_argument("outdir", type=Path, help="a project directory hawqc wrote")
    parser.add_argument("--plot", type=Path, metavar="FILE.png", help="also write per-layer bit widths and BOPs as a PNG")
    parser.add_argument("--wide", action="store_true",
                        help="every column (input shapes, multiplications, reuse factors) and the types' rounding and saturation modes")  # fmt: skip
    return parser


def _show_report(args: argparse.Namespace) -> int:
    from hawqc.report.view import load_report, plot, render_table

    report = load_report(args.outdir)
    if args.plot is not None:
        plot(report["layer_table"], args.plot, title=f"{Path(report.get('model', '')).name} ({report.get('backend', '')})")
    render_table(report["layer_table"], wide=args.wide)
    if args.plot is not None:
        print(f"hawqc: wrote {args.plot}")
    return 0
