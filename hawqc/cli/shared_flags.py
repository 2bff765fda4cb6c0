"""The flags `hawqc` and `hawqc-opt` share: a PyTorch model's (`--model-factory`, `--input-shape`,
`--allow-pickle`), `--hawq-export-semantics`, and the pass manager's (instrumentation, translation
validation, reproducers, plugins)."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from hawqc.cli.run import DeprecatedAlias
from hawqc.errors import HawqcError, UserInputError


def add_pytorch_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("PyTorch models (.pt / .pth state_dict, lifted by the HAWQ frontend)")
    group.add_argument("--model-factory", metavar="MODULE:FUNCTION",
                       help="builds the model the state_dict loads into: package.module:function or path/to/file.py:function")  # fmt: skip
    group.add_argument("--input-shape", metavar="DIMS", help="shape of the example input, e.g. 1,16 (required for .pt / .pth)")  # fmt: skip
    group.add_argument("--allow-pickle", action="store_true",
                       help="read a pickled whole module (torch.load weights_only=False): this executes code from the file")  # fmt: skip


def add_hawq_export_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hawq-export-semantics", choices=("file", "hawq"), default="file",
                        help="a HAWQ export (hawq2qonnx): 'file' computes its float32 rescales as written (default); "
                             "'hawq' reads them as HAWQ's integer requantization m / 2^e (the pass read-as-hawq)")  # fmt: skip


def pytorch_options(args: argparse.Namespace):
    from hawqc.frontends.pytorch_options import PyTorchOptions, parse_input_shape

    shape = None if args.input_shape is None else parse_input_shape(args.input_shape)
    return PyTorchOptions(args.model_factory, shape, args.allow_pickle)


def _pass_names(text: str) -> frozenset[str]:
    return frozenset(name.strip() for name in text.split(",") if name.strip())


def add_pass_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pass manager")
    group.add_argument("--time-passes", action="store_true", help="print a table of pass times (stderr)")
    group.add_argument("--pass-statistics", action="store_true", help="print each pass's counters (stderr)")
    group.add_argument("--no-verify-ir", action="store_true", help="do not verify the IR around passes")
    # The old spelling read as the opposite of `--verify N` (the C simulation); kept, with a warning.
    group.add_argument("--no-verify", action=DeprecatedAlias, nargs=0, dest="no_verify_ir", help=argparse.SUPPRESS)
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


def check_pass_flags(args: argparse.Namespace) -> None:
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


def configure_passes(manager, args: argparse.Namespace) -> None:
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


def report_passes(records, args: argparse.Namespace) -> None:
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
