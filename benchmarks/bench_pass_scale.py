"""How hawqc's loading and `default` pass pipeline scale with graph size, beside qonnx's cleanup.

    .venv/bin/python benchmarks/bench_pass_scale.py [--sizes 100,1000,10000] [--seed 0] [--repeats 3]
        [--qonnx-timeout 600] [--qonnx-no-skip] [--no-qonnx] [--keep DIR]

Synthetic QONNX graphs of exactly `--sizes` nodes (IR version 8, opset 13, static [1, 16]
activations, deterministic by seed) made of what the cleanup passes exist for: dense layers with
weight and activation `Quant`s (constant scale / zero point / bit width initializers), a few `Gemm`s,
branches that rejoin in an `Add`, short and long `Identity` chains, dead subgraphs and unused
initializers, and constant subexpressions (`Mul`/`Add`/`Sub` of initializers feeding a node).

Every measurement runs in a fresh subprocess, so that the peak RSS (`resource.getrusage`) is that of
one size alone:
- hawqc: `hawqc.frontends.onnx.load_onnx(path)` (read + normalize + shape inference + verify), then
  `PassManager.parse("default").run(model)` (verifies the IR before and after every pass); best and
  median of `--repeats` runs, each from the file;
- qonnx: `qonnx.util.cleanup.cleanup_model(ModelWrapper(path))`, once per size, killed after
  `--qonnx-timeout` seconds. qonnx's cleanup folds one node per sweep and re-infers shapes on a deep
  copy each time, so its time grows about cubically: 1,000 nodes take minutes. A size is not started
  when a smaller one already needed (or would need, extrapolated linearly: a lower bound, the graphs
  of one seed share their beginning) more than the cap; `--qonnx-no-skip` starts it anyway, to see
  it killed. With the defaults the run takes 5-7 minutes, about 15 with `--qonnx-no-skip`.

The two tools do not do the same work: hawqc's `default` also removes Identity nodes and dead nodes
and rewrites Gemm; qonnx's cleanup folds constants (Quant nodes excluded), removes unused
initializers and renames. The graphs are meant as input for both; qonnx accepts them unchanged.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
QONNX_DOMAIN = "qonnx.custom_op.general"
WIDTH = 16  # activations are [1, WIDTH]
IR_VERSION = 8
OPSET = 13

# Targets from the issue: 1,000 -> 10,000 nodes at most 15x slower, 10,000 nodes in at most 10 s.
MAX_GROWTH = 15.0
MAX_SECONDS_10K = 10.0


# --------------------------------------------------------------------------------------------------
# The synthetic graphs


class GraphBuilder:
    """Appends blocks to a chain of [1, WIDTH] float activations; names are `n<i>` / `t<i>` / `c<i>`."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, array: np.ndarray) -> str:
        name = self.fresh("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def scalar(self, value: float) -> str:
        return self.const(np.array(value, dtype=np.float32))

    def node(self, op_type: str, inputs: list[str], domain: str = "", **attrs) -> str:
        out = self.fresh("t")
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self.fresh("n"), domain=domain, **attrs)
        )
        return out

    def quant(self, x: str, *, bits: int, signed: int, narrow: int = 0, scale: np.ndarray | None = None) -> str:
        """A QONNX Quant with its own scale / zero point / bit width initializers.

        `scale` defaults to a random power of two between 1/32 and 1/4 (an activation quantizer).
        """
        if scale is None:
            scale = np.array(2.0 ** -int(self.rng.integers(2, 6)), dtype=np.float32)
        mode = str(self.rng.choice(["ROUND", "ROUND", "FLOOR", "HALF_UP"]))
        return self.node(
            "Quant",
            [x, self.const(scale), self.scalar(0.0), self.scalar(float(bits))],
            domain=QONNX_DOMAIN,
            signed=signed,
            narrow=narrow,
            rounding_mode=mode,
        )

    def weight(self, shape: tuple[int, ...]) -> str:
        return self.const(self.random(shape))

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        return self.rng.standard_normal(shape).astype(np.float32) * 0.25

    def quantized_weight(self, bits: int, per_channel: bool = False) -> str:
        """Quant of a [WIDTH, WIDTH] weight, with power-of-two scales that cover its values: per
        tensor, or per row of an [out, in] weight (per channel, as Brevitas exports for Gemm)."""
        w = self.random((WIDTH, WIDTH))
        peak = np.abs(w).max(axis=1, keepdims=True) if per_channel else np.abs(w).max()
        scale = (2.0 ** np.ceil(np.log2(peak / (2 ** (bits - 1) - 1)))).astype(np.float32)
        return self.quant(self.const(w), bits=bits, signed=1, narrow=1, scale=scale)

    def folded_constant(self, shape: tuple[int, ...]) -> str:
        """A constant computed at run time from initializers: `(a * b) + c` (or `- c`)."""
        product = self.node("Mul", [self.weight(shape), self.weight(shape)])
        op = "Add" if self.rng.random() < 0.5 else "Sub"
        return self.node(op, [product, self.weight(shape)])

    # Blocks: each takes the current activation and returns the next one.

    def dense(self, x: str) -> str:
        xq = self.quant(x, bits=8, signed=1)
        wq = self.quantized_weight(bits=int(self.rng.integers(3, 9)))
        y = self.node("MatMul", [xq, wq])
        bias = self.folded_constant((WIDTH,)) if self.rng.random() < 0.3 else self.weight((WIDTH,))
        return self.node("Relu", [self.node("Add", [y, bias])])

    def gemm(self, x: str) -> str:
        # Brevitas' Linear: Quant(W [out, in]) -> Gemm(transB=1), per-channel weight scale.
        xq = self.quant(x, bits=8, signed=1)
        wq = self.quantized_weight(bits=6, per_channel=True)
        y = self.node("Gemm", [xq, wq, self.weight((WIDTH,))], transB=1)
        return self.node("Relu", [y])

    def branch(self, x: str) -> str:
        # Two paths that rejoin: a scaled, quantized path and a pass-through of Identity nodes.
        a = self.node("Mul", [x, self.scalar(0.5)])
        a = self.quant(self.node("Relu", [a]), bits=8, signed=0)
        b = x
        for _ in range(int(self.rng.integers(1, 4))):
            b = self.node("Identity", [b])
        return self.node("Add", [a, b])

    def identity_chain(self, x: str) -> str:
        for _ in range(int(self.rng.integers(10, 41))):
            x = self.node("Identity", [x])
        return x

    def dead_code(self, x: str) -> str:
        # A subgraph that nothing reads (hanging off the live chain), and unused initializers.
        d = self.node("Mul", [x, self.scalar(2.0)])
        d = self.quant(self.node("Relu", [d]), bits=4, signed=0)
        self.node("Add", [d, self.weight((WIDTH,))])
        self.node("Mul", [self.weight((WIDTH,)), self.weight((WIDTH,))])  # a dead constant expression
        self.weight((WIDTH, WIDTH))
        self.scalar(1.0)
        return x

    def constant_add(self, x: str) -> str:
        # An activation plus a constant subexpression. (Quant parameters stay plain initializers:
        # hawqc's verifier requires them constant on input, and qonnx reads them as initializers.)
        y = self.node("Add", [x, self.folded_constant((WIDTH,))])
        return self.quant(y, bits=8, signed=1)

    BLOCKS = (
        ("dense", 0.30),
        ("branch", 0.20),
        ("constant_add", 0.20),
        ("dead_code", 0.15),
        ("identity_chain", 0.10),
        ("gemm", 0.05),
    )


def make_model(num_nodes: int, seed: int) -> onnx.ModelProto:
    """A valid QONNX model of exactly `num_nodes` nodes, the same for the same arguments."""
    builder = GraphBuilder(seed)
    names = [name for name, _ in GraphBuilder.BLOCKS]
    weights = np.array([weight for _, weight in GraphBuilder.BLOCKS])
    x = "input"
    attempts = 0
    while attempts < 20:  # a block that would overshoot is undone; another one may still fit
        saved = len(builder.nodes), len(builder.initializers)
        block = names[builder.rng.choice(len(names), p=weights / weights.sum())]
        y = getattr(builder, block)(x)
        if len(builder.nodes) < num_nodes:  # room is left for the output Quant
            x = y
            continue
        del builder.nodes[saved[0] :], builder.initializers[saved[1] :]
        attempts += 1
    while len(builder.nodes) < num_nodes - 1:
        x = builder.node("Identity", [x])
    builder.nodes.append(
        helper.make_node(
            "Quant",
            [x, builder.scalar(2.0**-4), builder.scalar(0.0), builder.scalar(8.0)],
            ["output"],
            name=builder.fresh("n"),
            domain=QONNX_DOMAIN,
            signed=1,
            narrow=0,
            rounding_mode="ROUND",
        )
    )
    assert len(builder.nodes) == num_nodes, len(builder.nodes)
    graph = helper.make_graph(
        builder.nodes,
        f"scale_{num_nodes}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, WIDTH])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, WIDTH])],
        builder.initializers,
    )
    model = helper.make_model(
        graph,
        ir_version=IR_VERSION,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(QONNX_DOMAIN, 1)],
        producer_name="hawqc-bench-pass-scale",
    )
    onnx.checker.check_model(model)
    return model


def describe_model(model: onnx.ModelProto) -> str:
    ops = Counter(node.op_type for node in model.graph.node)
    listing = ", ".join(f"{op} {count}" for op, count in ops.most_common())
    return f"{len(model.graph.node)} nodes ({listing}), {len(model.graph.initializer)} initializers"


# --------------------------------------------------------------------------------------------------
# Workers (each runs in its own process)


def peak_rss_mib() -> float:
    # Linux reports KiB. ru_maxrss survives fork + exec (the child starts from its parent's peak),
    # so the driver keeps its own footprint below a worker's: models are built in a worker too.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vm_hwm_mib() -> float | None:
    """The kernel's per-address-space peak (reset by exec): a cross-check of `peak_rss_mib`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def worker_generate(path: Path, size: int, seed: int) -> dict:
    model = make_model(size, seed)
    onnx.save_model(model, path)
    return {"description": describe_model(model)}


def worker_hawqc(path: Path, repeats: int) -> dict:
    import gc

    sys.path.insert(0, str(ROOT))
    from hawqc.frontends.onnx import load_onnx
    from hawqc.passes.manager import PassManager

    rss_imports = peak_rss_mib()
    loads, pipelines, pass_seconds = [], [], Counter()
    for _ in range(repeats):
        start = time.perf_counter()
        model = load_onnx(path)
        loaded = time.perf_counter()
        records = PassManager.parse("default").run(model)
        done = time.perf_counter()
        loads.append(loaded - start)
        pipelines.append(done - loaded)
        for record in records:
            pass_seconds[record.name] += record.seconds / repeats
        nodes_out, initializers_out = len(model.graph), len(model.graph.initializers)
        del model  # one model alive at a time: the peak RSS is that of one run
        gc.collect()
    return {
        "load": loads,
        "pipeline": pipelines,
        "total": [a + b for a, b in zip(loads, pipelines)],
        "passes": dict(pass_seconds),
        "pipeline_passes": ",".join(record.name for record in records),
        "nodes_out": nodes_out,
        "initializers_out": initializers_out,
        "rss_imports_mib": rss_imports,
        "rss_peak_mib": peak_rss_mib(),
        "vm_hwm_mib": vm_hwm_mib(),
    }


def worker_qonnx(path: Path) -> dict:
    import warnings

    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    warnings.simplefilter("ignore")
    rss_imports = peak_rss_mib()
    start = time.perf_counter()
    model = cleanup_model(ModelWrapper(str(path)))
    seconds = time.perf_counter() - start
    return {
        "total": [seconds],
        "nodes_out": len(model.graph.node),
        "initializers_out": len(model.graph.initializer),
        "rss_imports_mib": rss_imports,
        "rss_peak_mib": peak_rss_mib(),
        "vm_hwm_mib": vm_hwm_mib(),
    }


def run_worker(tool: str, path: Path, timeout: float | None = None, *options: str) -> dict | None:
    """Run a worker in a fresh interpreter; None if it was killed on timeout."""
    command = [sys.executable, __file__, "--worker", tool, "--path", str(path), *options]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:  # subprocess.run kills the child (by its pid) before raising
        return None
    if proc.returncode != 0:
        raise SystemExit(f"{tool} worker failed on {path}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# The driver


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def fmt_cap(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def best_median(values: list[float]) -> str:
    return f"{fmt_s(min(values))} / {fmt_s(statistics.median(values))}"


def machine() -> str:
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    versions = ", ".join(
        f"{package} {importlib.metadata.version(package)}"
        for package in ("onnx", "onnx-ir", "onnxruntime", "qonnx", "numpy", "protobuf")
    )
    return (
        f"{platform.machine()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{versions}; load average {os.getloadavg()[0]:.2f}"
    )


def revision() -> str:
    def git(*command: str) -> str:
        result = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=False)
        return result.stdout.strip()

    dirty = git("status", "--porcelain", "--", "hawqc")
    return f"{git('rev-parse', '--short', 'HEAD') or 'unknown'}{' (hawqc/ has uncommitted changes)' if dirty else ''}"


def qonnx_skip_reason(size: int, previous: tuple[int, float | None] | None, timeout: float) -> str | None:
    """Why a size is not worth starting: a smaller one already took (or would take) the whole cap.

    The synthetic graphs of one seed share their beginning, so a bigger one has at least the work
    of a smaller one on every node, times the size ratio: a linear extrapolation is a lower bound.
    """
    if previous is None:
        return None
    smaller, seconds = previous
    if seconds is None:
        return f"not started: {smaller:,} nodes already did not finish in {fmt_cap(timeout)}"
    if seconds * size / smaller > timeout:
        return (
            f"not started: {smaller:,} nodes took {seconds:.1f} s, so {size:,} nodes need more than "
            f"{seconds * size / smaller:,.0f} s (linear extrapolation, a lower bound) > {fmt_cap(timeout)}"
        )
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="node counts, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="hawqc runs per size (best is reported)")
    parser.add_argument("--qonnx-timeout", type=float, default=600.0, help="seconds per size")
    parser.add_argument(
        "--qonnx-no-skip",
        action="store_true",
        help="start qonnx on every size, even when a smaller size shows it cannot finish in time",
    )
    parser.add_argument("--no-qonnx", action="store_true", help="time hawqc only")
    parser.add_argument("--keep", type=Path, default=None, help="write the models into this directory")
    parser.add_argument("--worker", choices=["generate", "hawqc", "qonnx"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker == "generate":
        print(json.dumps(worker_generate(args.path, args.size, args.seed)))
        return 0
    if args.worker == "hawqc":
        print(json.dumps(worker_hawqc(args.path, args.repeats)))
        return 0
    if args.worker == "qonnx":
        print(json.dumps(worker_qonnx(args.path)))
        return 0

    sizes = sorted(int(size) for size in args.sizes.split(","))
    timeout = args.qonnx_timeout
    print(f"machine: {machine()}")
    print(f"hawqc revision: {revision()}")
    print("command: " + " ".join([".venv/bin/python", "benchmarks/bench_pass_scale.py", *sys.argv[1:]]))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        paths = {size: directory / f"scale_{size}_seed{args.seed}.onnx" for size in sizes}
        for size in sizes:
            generated = run_worker("generate", paths[size], None, "--size", str(size), "--seed", str(args.seed))
            print(f"model {size:>6,}: {generated['description']}")

        hawqc: dict[int, dict] = {}
        for size in sizes:
            hawqc[size] = h = run_worker("hawqc", paths[size], None, "--repeats", str(args.repeats))
            print(f"hawqc {size:>6,}: load {best_median(h['load'])}, default pipeline "
                  f"{best_median(h['pipeline'])}, together {best_median(h['total'])} "
                  f"(best / median of {args.repeats}); {size} -> {h['nodes_out']} nodes; "
                  f"peak RSS {h['rss_peak_mib']:.0f} MiB (after imports {h['rss_imports_mib']:.0f})",
                  flush=True)  # fmt: skip
            passes = sorted(h["passes"].items(), key=lambda item: -item[1])
            verify = statistics.mean(h["pipeline"]) - sum(h["passes"].values())
            print("              per pass (mean of the runs, summed over repeats of a pass): "
                  + ", ".join(f"{name} {fmt_s(seconds)}" for name, seconds in passes)
                  + f"; verification and manager overhead {fmt_s(verify)}", flush=True)  # fmt: skip
        print(f"default pipeline, as run: {hawqc[sizes[0]]['pipeline_passes']}")

        qonnx: dict[int, dict | str | None] = {}
        previous: tuple[int, float | None] | None = None
        for size in [] if args.no_qonnx else sizes:
            reason = None if args.qonnx_no_skip else qonnx_skip_reason(size, previous, timeout)
            if reason is not None:
                qonnx[size] = reason
                print(f"qonnx {size:>6,}: {reason}", flush=True)
                continue
            start = time.perf_counter()
            qonnx[size] = q = run_worker("qonnx", paths[size], timeout)
            if q is None:
                previous = (size, None)
                print(f"qonnx {size:>6,}: did not finish in {fmt_cap(timeout)} (killed after "
                      f"{fmt_s(time.perf_counter() - start)})", flush=True)  # fmt: skip
            else:
                previous = (size, q["total"][0])
                print(f"qonnx {size:>6,}: cleanup_model {fmt_s(q['total'][0])}; {size} -> "
                      f"{q['nodes_out']} nodes; peak RSS {q['rss_peak_mib']:.0f} MiB (after imports "
                      f"{q['rss_imports_mib']:.0f})", flush=True)  # fmt: skip

    for tool, results in (("hawqc", hawqc), ("qonnx", qonnx)):
        for size, result in results.items():
            hwm = result.get("vm_hwm_mib") if isinstance(result, dict) else None
            if hwm is not None and abs(hwm - result["rss_peak_mib"]) > 2:
                print(f"note: {tool} {size:,}: getrusage peak {result['rss_peak_mib']:.0f} MiB but "
                      f"VmHWM {hwm:.0f} MiB")  # fmt: skip

    print()
    print("| nodes | hawqc load | hawqc default pipeline | hawqc load + pipeline | hawqc peak RSS "
          "| qonnx cleanup_model | qonnx peak RSS | qonnx / hawqc (load + pipeline; hawqc's first run / best) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        h = hawqc[size]
        hawqc_first, hawqc_best = h["total"][0], min(h["total"])
        q = qonnx.get(size, "not run")
        if isinstance(q, str):
            q_time, q_rss, ratio = "not run" if q == "not run" else "not started (see below)", "-", "-"
        elif q is None:
            q_time, q_rss = f"did not finish in {fmt_cap(timeout)}", "-"
            ratio = f"> {timeout / hawqc_first:,.0f}x / > {timeout / hawqc_best:,.0f}x"
        else:
            q_time, q_rss = fmt_s(q["total"][0]), f"{q['rss_peak_mib']:.0f} MiB"
            ratio = f"{q['total'][0] / hawqc_first:,.1f}x / {q['total'][0] / hawqc_best:,.1f}x"
        print(f"| {size:,} | {best_median(h['load'])} | {best_median(h['pipeline'])} | "
              f"{best_median(h['total'])} | {h['rss_peak_mib']:.0f} MiB | {q_time} | {q_rss} | {ratio} |")  # fmt: skip
    print("(hawqc: best / median of the runs; qonnx: one run, its first in the process, like hawqc's first)")

    ok = True
    if 1000 in hawqc and 10000 in hawqc:
        for label, key in (("default pipeline", "pipeline"), ("load + pipeline", "total")):
            growth = min(hawqc[10000][key]) / min(hawqc[1000][key])
            met = growth <= MAX_GROWTH
            ok &= met
            print(f"target: 1,000 -> 10,000 nodes grows at most {MAX_GROWTH:g}x; {label}: "
                  f"{growth:.1f}x ({'met' if met else 'MISSED'})")  # fmt: skip
        growth = min(hawqc[10000]["load"]) / min(hawqc[1000]["load"])
        print(f"(for information) 1,000 -> 10,000 nodes, load alone: {growth:.1f}x")
    if 10000 in hawqc:
        for label, key in (("default pipeline with verification, load not included", "pipeline"),
                           ("load + default pipeline", "total")):  # fmt: skip
            seconds = min(hawqc[10000][key])
            met = seconds <= MAX_SECONDS_10K
            ok &= met
            print(f"target: 10,000 nodes in at most {MAX_SECONDS_10K:g} s; {label}: {seconds:.2f} s "
                  f"({'met' if met else 'MISSED'})")  # fmt: skip
    print(f"benchmark wall time: {fmt_s(time.perf_counter() - started)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
