"""Throughput of hawqc's semantic executor against qonnx's execute_onnx, in one run, same inputs.

    .venv/bin/python benchmarks/bench_executor.py [--model PATH] [--batch 10000] [--qonnx-samples 300]

The model defaults to the bundled jet tagger (examples/jet_tagger/jet_tagger.onnx, made by
examples/jet_tagger/make_model.py).

qonnx is timed two ways:
- per sample, at the batch of 1 the model declares (how qonnx is normally run): ~10 ms per sample,
  so only `--qonnx-samples` samples are run and the per-sample time is extrapolated to the batch;
- on the whole batch at once, with dim 0 of the input and output rewritten to the batch size (qonnx
  at its best: one onnxruntime session per node for all samples).
Outputs are checked bit for bit against both.
"""

from __future__ import annotations

import argparse
import platform
import resource
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hawqc.sim import Executor  # noqa: E402
from hawqc.sim.qonnx_oracle import QonnxOracle  # noqa: E402

try:  # installed with scikit-learn (test extra); only used to show the effect of BLAS threads
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

DEFAULT_MODEL = ROOT / "examples" / "jet_tagger" / "jet_tagger.onnx"


def time_hawqc(
    executor: Executor, inputs: dict[str, np.ndarray], repeats: int
) -> tuple[float, float, dict[str, np.ndarray]]:
    """Best and median wall time of `repeats` runs after one warm-up, and the outputs."""
    outputs = executor.run(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = executor.run(inputs)
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times)), outputs


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="QONNX model (default: bundled jet tagger)")
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--qonnx-samples", type=int, default=300, help="samples qonnx runs one by one")
    parser.add_argument("--repeats", type=int, default=7, help="timed hawqc runs (the best is reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    path = args.model or DEFAULT_MODEL
    proto = onnx.load(path)
    proto.ir_version = min(proto.ir_version, 10)
    model = ir.from_proto(proto)
    print(f"model: {path}")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}")  # fmt: skip

    rng = np.random.default_rng(args.seed)
    executor_input = Executor(model).input_names[0]
    features = int(proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value)
    x = (rng.standard_normal((args.batch, features)) * 2).astype(np.float32)

    # hawqc: plan once, then run the whole batch, with numpy's default BLAS threads and with one.
    start = time.perf_counter()
    executor = Executor(model)
    plan_s = time.perf_counter() - start
    hawqc_s, hawqc_median_s, ours = time_hawqc(executor, {executor_input: x}, args.repeats)
    one_thread = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            one_thread = time_hawqc(executor, {executor_input: x}, args.repeats)[:2]
    tracemalloc.start()
    executor.run({executor_input: x})
    _, hawqc_peak_bytes = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after_hawqc = peak_rss_mib()
    out_name = executor.output_names[0]
    hawqc_rate = args.batch / hawqc_s
    print(f"hawqc  semantic executor: batch {args.batch} in {hawqc_s * 1e3:.2f} ms (best of {args.repeats}, "
          f"median {hawqc_median_s * 1e3:.2f} ms) = {hawqc_rate:,.0f} samples/s; plan {plan_s * 1e3:.1f} ms; "
          f"working memory of one run {hawqc_peak_bytes / 2**20:.1f} MiB (tracemalloc); "
          f"peak RSS so far {rss_after_hawqc:.0f} MiB")  # fmt: skip
    if one_thread is not None:
        print(f"hawqc  same, BLAS limited to 1 thread: {one_thread[0] * 1e3:.2f} ms (median "
              f"{one_thread[1] * 1e3:.2f} ms) = {args.batch / one_thread[0]:,.0f} samples/s")  # fmt: skip

    oracle = QonnxOracle(proto)
    k = min(args.qonnx_samples, args.batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle.prepare(1)  # shape inference, outside the timings
        oracle.prepare(args.batch)
        start = time.perf_counter()
        theirs = oracle.run({oracle.input_names[0]: x[:k]})[out_name]
        per_sample_s = (time.perf_counter() - start) / k
        start = time.perf_counter()
        theirs_batch = oracle.run({oracle.input_names[0]: x}, per_sample=False)[out_name]
        batch_s = time.perf_counter() - start
    qonnx_rate = 1 / per_sample_s
    qonnx_batch_rate = args.batch / batch_s
    print(f"qonnx  execute_onnx per sample: {k} samples at {per_sample_s * 1e3:.2f} ms/sample = "
          f"{qonnx_rate:,.1f} samples/s (extrapolated to the batch of {args.batch}: "
          f"{args.batch * per_sample_s:.0f} s)")  # fmt: skip
    print(f"qonnx  execute_onnx whole batch (input declared [{args.batch}, {features}]): "
          f"{batch_s * 1e3:.0f} ms = {qonnx_batch_rate:,.0f} samples/s")  # fmt: skip
    print(f"ratio  hawqc / qonnx per sample: {hawqc_rate / qonnx_rate:,.0f}x; "
          f"hawqc / qonnx whole batch: {hawqc_rate / qonnx_batch_rate:,.1f}x")  # fmt: skip
    if one_thread is not None:
        rate = args.batch / one_thread[0]
        print(f"ratio  with 1 BLAS thread: {rate / qonnx_rate:,.0f}x per sample, "
              f"{rate / qonnx_batch_rate:,.1f}x whole batch")  # fmt: skip
    same_subset = identical(ours[out_name][:k], theirs)
    same_batch = identical(ours[out_name], theirs_batch)
    print(f"bit-identical: first {k} samples vs qonnx per sample: {same_subset}; "
          f"all {args.batch} vs qonnx whole batch: {same_batch}")  # fmt: skip
    print(f"peak RSS of the process at the end: {peak_rss_mib():.0f} MiB")
    return 0 if same_subset and same_batch else 1


if __name__ == "__main__":
    sys.exit(main())
