"""Issue 14's figures: per model class, how many compile, C simulation == hardware mode, hardware ==
exact meaning, float32's mismatch rate, and the requantization multipliers' widths (HAWQ writes 31-bit
mantissas; hawqc proves the fewest bits).

    .venv/bin/python benchmarks/float_scale_exports.py [--samples 200]

Model classes: the Brevitas exports of tests/data/brevitas (export_qonnx), the FINN / QONNX-zoo
shaped MLPs of tests/finn_models.py, the float-scale MLPs and CNNs of tests/float_scale_models.py, and
HAWQ MLPs lifted with a calibrated input scale, and HAWQ's own exports without an input QuantAct
(`--hawq-export-semantics hawq --input-precision`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def models(workdir: Path):
    import brevitas_models
    import finn_models
    import float_scale_models
    import hawq_chain_models
    import numpy as np
    import onnx
    import torch

    import hawqc
    from hawqc.ir.io import write_model

    for model in brevitas_models.BREVITAS_MODELS:
        yield "Brevitas export_qonnx", model.name, model.path, {}
    for name in finn_models.MODELS:
        proto, _ = finn_models.build(name)
        path = workdir / f"{name}.onnx"
        onnx.save(proto, path)
        options = {"input_precision": "fixed<2,2>"} if name.startswith("unsw") else {}
        yield "FINN / QONNX zoo shapes", name, path, options
    for name, make in {
        "mlp_per_channel": lambda: float_scale_models.mlp(0),
        "mlp_8bit": lambda: float_scale_models.mlp(2, relu=False, act_bits=8, weight_bits=8),
        "cnn_bn": lambda: float_scale_models.cnn(0),
        "cnn_bn_8bit": lambda: float_scale_models.cnn(1, act_bits=8, weight_bits=8),
        "residual_add": lambda: float_scale_models.residual(0, "Add"),
        "residual_sub": lambda: float_scale_models.residual(1, "Sub"),
        "residual_add_relu": lambda: float_scale_models.residual(2, "Add", relu=True),
    }.items():
        path = workdir / f"{name}.onnx"
        write_model(make(), path)
        yield "onnx.helper float-scale models", name, path, {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = hawq_chain_models.ChainMLP()
        model.quant_input.unfix()
        model.quant_input.x_min.fill_(0)
        model.quant_input.x_max.fill_(0)
        model = hawq_chain_models.calibrate(model, seed)
        path = workdir / f"hawq_mlp_{seed}.onnx"
        write_model(hawqc.lift(model, torch.zeros(1, *model.INPUT_SHAPE)), path)
        yield "HAWQ lifted, calibrated input", f"chain_mlp_seed{seed}", path, {}
    # HAWQ's own exports (hawq2qonnx layout) without an input QuantAct, read as HAWQ's arithmetic: the
    # first layer's accumulator rounded at a calibrated scale (a wide input type: beyond enumeration).
    import hawq_export_files

    calibrated = float(np.float32(3.3 / 127))
    for name, make, fixed in (
        ("mlp_fixed10_3", hawq_export_files.export_mlp, "fixed<10,3>"),
        ("mlp_fixed15_5", hawq_export_files.export_mlp, "fixed<15,5>"),
        ("cnn_fixed10_3", hawq_export_files.export_cnn, "fixed<10,3>"),
    ):
        net, shape = make(round_trip_scales=False, input_quant=False, input_scale=calibrated)
        path = workdir / f"hawq_export_{name}.onnx"
        onnx.save(hawq_export_files.to_hawq_export(net, shape), path)
        yield "HAWQ export, no input QuantAct", name, path, {"hawq_export_semantics": "hawq", "input_precision": fixed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    from hawqc.errors import HawqcError
    from hawqc.flow.driver import CompileOptions, compile_model

    rows = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for kind, name, path, options in models(workdir):
            start = time.perf_counter()
            try:
                result = compile_model(path, workdir / f"{name}_proj", CompileOptions(verify_samples=args.samples, **options))
            except HawqcError as err:
                rows[kind].append((name, None, str(err).splitlines()[0]))
                print(f"{kind:32} {name:36} refused: {err}")
                continue
            verify = result.verify
            exact = verify.exact
            bits = sorted({r["multiplier_bits"] for r in result.report.requantizations or []})
            row = {
                "csim": verify.bit_exact,
                "exact": None if exact is None else exact.equal,
                "float32_rate": None if exact is None else exact.float32_mismatches / exact.samples,
                "float32_code_rate": None if exact is None else exact.float32_code_mismatches / exact.samples,
                "bits": bits,
                "seconds": time.perf_counter() - start,
            }
            rows[kind].append((name, row, None))
            print(f"{kind:32} {name:36} csim==hw {row['csim']}  hw==exact {row['exact']}  float32 differs "
                  f"{row['float32_rate']} (codes {row['float32_code_rate']})  multiplier bits {bits}  ({row['seconds']:.1f} s)")
    print()
    print("| model class | compiled | C sim == hardware | hardware == exact | float32 differs (samples) | by half an output step or more | multiplier bits (HAWQ: 31) |")
    print("|---|---|---|---|---|---|---|")
    for kind, entries in rows.items():
        done = [r for _, r, _ in entries if r is not None]
        rates = [r["float32_rate"] for r in done if r["float32_rate"] is not None]
        codes = [r["float32_code_rate"] for r in done if r["float32_code_rate"] is not None]
        bits = sorted({b for r in done for b in r["bits"]})
        print(
            f"| {kind} | {len(done)}/{len(entries)} | {sum(r['csim'] for r in done)}/{len(done)} | "
            f"{sum(bool(r['exact']) for r in done)}/{len(done)} | "
            f"{min(rates):.1%}..{max(rates):.1%} | {min(codes):.1%}..{max(codes):.1%} | "
            f"{bits[0] if bits else '-'}..{bits[-1] if bits else '-'} |"
        )


if __name__ == "__main__":
    main()
