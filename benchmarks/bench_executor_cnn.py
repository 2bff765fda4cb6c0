"""Throughput of hawqc's semantic executor against qonnx's execute_onnx on a small quantized CNN.

    .venv/bin/python benchmarks/bench_executor_cnn.py [--batch 2000] [--qonnx-samples 100] [--repeats 7]

The model is built here (`make_model`, seed 0): input [1, 1, 8, 8] -> Quant (8 bits, scale 2^-4)
-> Conv 3x3, 8 channels, pads 1, weight Quant (6 bits, per-channel power-of-two scales), bias Quant
-> Relu -> Quant (8 bits unsigned) -> MaxPool 2x2 -> Conv 3x3, 16 channels (no pads, no strides
attributes: ONNX defaults) -> Relu -> Quant -> GlobalAveragePool -> Flatten -> Gemm (transB,
quantized weight and bias) -> Quant (10 bits). Every scale is a power of two, so every float32 sum
is exact and the outputs must be bit-identical to qonnx's.

qonnx is timed as in bench_executor.py: one sample per call at the declared batch of 1 (how it is
normally run; `--qonnx-samples` samples, extrapolated per sample to the batch), and the whole batch
in one call with dim 0 re-declared. Outputs are checked bit for bit against both.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx_ir as ir
from onnx import TensorProto, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hawqc.sim import Executor  # noqa: E402
from hawqc.sim.qonnx_oracle import QonnxOracle  # noqa: E402

try:  # installed with scikit-learn (test extra); only used to show the effect of BLAS threads
    from threadpoolctl import threadpool_limits
except ImportError:
    threadpool_limits = None

QONNX = "qonnx.custom_op.general"


def make_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {}

    def quant(name: str, x: str, scale: np.ndarray | float, bits: int, signed: int, narrow: int = 0) -> str:
        inits[f"{name}_scale"] = np.asarray(scale, np.float32)
        inits[f"{name}_zeropt"] = np.float32(0)
        inits[f"{name}_bits"] = np.float32(bits)
        nodes.append(oh.make_node(
            "Quant", [x, f"{name}_scale", f"{name}_zeropt", f"{name}_bits"], [name], name=name, domain=QONNX,
            signed=signed, narrow=narrow, rounding_mode="ROUND",
        ))  # fmt: skip
        return name

    def weight(name: str, shape: tuple[int, ...], per_channel_shape: tuple[int, ...], bits: int) -> str:
        inits[f"{name}_float"] = (rng.standard_normal(shape) * 0.4).astype(np.float32)
        scale = (2.0 ** -rng.integers(3, 6, size=per_channel_shape)).astype(np.float32)
        return quant(name, f"{name}_float", scale, bits, signed=1, narrow=1)

    def bias(name: str, n: int, scale: float) -> str:
        inits[f"{name}_float"] = (rng.standard_normal(n) * 0.2).astype(np.float32)
        return quant(name, f"{name}_float", scale, 16, signed=1)

    x = quant("in_q", "x", 2.0**-4, 8, signed=1)
    w1, b1 = weight("w1", (8, 1, 3, 3), (8, 1, 1, 1), 6), bias("b1", 8, 2.0**-9)
    nodes.append(oh.make_node("Conv", [x, w1, b1], ["conv1"], name="conv1", kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    nodes.append(oh.make_node("Relu", ["conv1"], ["relu1"], name="relu1"))
    a1 = quant("act1", "relu1", 2.0**-4, 8, signed=0)
    nodes.append(oh.make_node("MaxPool", [a1], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    w2, b2 = weight("w2", (16, 8, 3, 3), (16, 1, 1, 1), 6), bias("b2", 16, 2.0**-9)
    nodes.append(oh.make_node("Conv", ["pool1", w2, b2], ["conv2"], name="conv2"))  # attributes at ONNX defaults
    nodes.append(oh.make_node("Relu", ["conv2"], ["relu2"], name="relu2"))
    a2 = quant("act2", "relu2", 2.0**-4, 8, signed=0)
    nodes.append(oh.make_node("GlobalAveragePool", [a2], ["gap"], name="gap"))
    nodes.append(oh.make_node("Flatten", ["gap"], ["flat"], name="flatten"))
    w3, b3 = weight("w3", (10, 16), (10, 1), 6), bias("b3", 10, 2.0**-9)
    nodes.append(oh.make_node("Gemm", ["flat", w3, b3], ["logits"], name="dense", transB=1))
    quant("y", "logits", 2.0**-5, 10, signed=1)
    graph = oh.make_graph(
        nodes,
        "small_cnn",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(np.asarray(a), n) for n, a in inits.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 13), oh.make_opsetid(QONNX, 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def time_hawqc(executor: Executor, x: np.ndarray, repeats: int) -> tuple[float, float, np.ndarray]:
    """Best and median wall time of `repeats` runs after one warm-up, and the outputs."""
    out = executor.run(x)["y"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = executor.run(x)["y"]
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times)), out


def identical(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--qonnx-samples", type=int, default=100, help="samples qonnx runs one by one")
    parser.add_argument("--repeats", type=int, default=7, help="timed hawqc runs (the best is reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    proto = make_model(args.seed)
    import onnxruntime

    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__}, onnxruntime {onnxruntime.__version__}")  # fmt: skip
    print(f"model: {len(proto.graph.node)} nodes "
          f"({', '.join(sorted({n.op_type for n in proto.graph.node}))}), input [N, 1, 8, 8]")  # fmt: skip
    x = (np.random.default_rng(args.seed + 1).standard_normal((args.batch, 1, 8, 8)) * 2).astype(np.float32)

    start = time.perf_counter()
    executor = Executor(ir.from_proto(proto))
    plan_s = time.perf_counter() - start
    hawqc_s, hawqc_median_s, ours = time_hawqc(executor, x, args.repeats)
    hawqc_rate = args.batch / hawqc_s
    print(f"hawqc  semantic executor: batch {args.batch} in {hawqc_s * 1e3:.2f} ms (best of {args.repeats}, "
          f"median {hawqc_median_s * 1e3:.2f} ms) = {hawqc_rate:,.0f} samples/s; plan {plan_s * 1e3:.1f} ms")  # fmt: skip
    one_thread = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            one_thread = time_hawqc(executor, x, args.repeats)[:2]
        print(f"hawqc  same, BLAS limited to 1 thread: {one_thread[0] * 1e3:.2f} ms (median "
              f"{one_thread[1] * 1e3:.2f} ms) = {args.batch / one_thread[0]:,.0f} samples/s")  # fmt: skip

    oracle = QonnxOracle(proto)
    k = min(args.qonnx_samples, args.batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        oracle.prepare(1)  # shape inference, outside the timings
        oracle.prepare(args.batch)
        start = time.perf_counter()
        theirs = oracle.run(x[:k])["y"]
        per_sample_s = (time.perf_counter() - start) / k
        start = time.perf_counter()
        theirs_batch = oracle.run(x, per_sample=False)["y"]
        batch_s = time.perf_counter() - start
    qonnx_rate = 1 / per_sample_s
    qonnx_batch_rate = args.batch / batch_s
    print(f"qonnx  execute_onnx per sample: {k} samples at {per_sample_s * 1e3:.2f} ms/sample = "
          f"{qonnx_rate:,.1f} samples/s (extrapolated to the batch of {args.batch}: "
          f"{args.batch * per_sample_s:.1f} s)")  # fmt: skip
    print(f"qonnx  execute_onnx whole batch (input declared [{args.batch}, 1, 8, 8]): "
          f"{batch_s * 1e3:.0f} ms = {qonnx_batch_rate:,.0f} samples/s")  # fmt: skip
    print(f"ratio  hawqc / qonnx per sample: {hawqc_rate / qonnx_rate:,.0f}x; "
          f"hawqc / qonnx whole batch: {hawqc_rate / qonnx_batch_rate:,.1f}x")  # fmt: skip
    if one_thread is not None:
        rate = args.batch / one_thread[0]
        print(f"ratio  with 1 BLAS thread: {rate / qonnx_rate:,.0f}x per sample, "
              f"{rate / qonnx_batch_rate:,.1f}x whole batch")  # fmt: skip
    same_subset = identical(ours[:k], theirs)
    same_batch = identical(ours, theirs_batch)
    distinct = len(np.unique(ours, axis=0))
    print(f"bit-identical: first {k} samples vs qonnx per sample: {same_subset}; "
          f"all {args.batch} vs qonnx whole batch: {same_batch} ({distinct} distinct output rows)")  # fmt: skip
    return 0 if same_subset and same_batch else 1


if __name__ == "__main__":
    sys.exit(main())
