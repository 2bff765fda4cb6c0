"""`fold-quant` on chains of `Relu -> Quant` blocks, before and after it became linear (issue 15, item 3).

    .venv/bin/python benchmarks/fold_quant_chain.py [--blocks 1000,2000,4000,20000] [--before ac138e3]
        [--before-timeout 600]

Each block is `Relu -> Quant(scale 0.125, zero point 0, 8 bits, unsigned, ROUND)` on a [1, 4] float
input; every Quant after the first is redundant (its input is the previous Quant's output through a
Relu), so fold-quant removes N - 1 of them. Every measurement runs in a fresh subprocess, so that its
peak RSS (`resource.getrusage` `ru_maxrss`) is that of one run:
- after: this tree's `hawqc.passes.fold_quant.FoldQuant().run(model)`, and the same pass through
  `PassManager.parse("fold-quant").run(model)` (which also verifies the IR before and after);
- before: `FoldQuant().run(model)` of `git show <--before>:hawqc/passes/fold_quant.py` (the last
  quadratic version by default), imported from a temporary file beside the rest of this tree.
  A size is not started when the previous one, extrapolated quadratically, would pass the timeout.
Both must give the same graph (sha256 of the serialized model) and the same counters; the script
says so per size.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import hashlib, importlib.util, json, resource, sys, time
sys.path.insert(0, {root!r})
import onnx_ir as ir
import hawqc
from hawqc.passes.manager import PassManager
from hawqc.passes import fold_quant

which, path, module_path = sys.argv[1], sys.argv[2], sys.argv[3]
assert fold_quant.__file__.startswith({root!r}), fold_quant.__file__
if which == "before":
    spec = importlib.util.spec_from_file_location("fold_quant_before", module_path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fold_quant_before"] = module
    spec.loader.exec_module(module)
else:
    module = fold_quant
model = hawqc.load(path)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if which == "manager":
    records = PassManager.parse("fold-quant").run(model)
    statistics = dict(records[-1].statistics)
else:
    statistics = dict(module.FoldQuant().run(model).statistics)
seconds = time.perf_counter() - start
rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
digest = hashlib.sha256(ir.to_proto(model).SerializeToString()).hexdigest()[:16]
print(json.dumps(dict(seconds=seconds, rss_load_kib=rss_before, rss_peak_kib=rss_after,
                      statistics={{k: v for k, v in statistics.items() if v}}, digest=digest,
                      nodes_left=len(model.graph))))
"""


def write_chain(blocks: int, path: Path) -> None:
    """The chain of the issue's reproducer: `blocks` Relu -> Quant blocks."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def constant(name, value):
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    nodes, x = [], "x"
    for i in range(blocks):
        nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
        nodes.append(helper.make_node("Quant", [f"r{i}", "s", "z", "b"], [f"q{i}"], domain="qonnx.custom_op.general",
                                      signed=0, narrow=0, rounding_mode="ROUND"))  # fmt: skip
        x = f"q{i}"
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4])],
        [constant("s", 0.125), constant("z", 0), constant("b", 8)],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 13), helper.make_opsetid("qonnx.custom_op.general", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)


def measure(which: str, model_path: Path, module_path: Path, timeout: float) -> dict | None:
    code = CHILD.format(root=str(ROOT))
    try:
        done = subprocess.run([sys.executable, "-c", code, which, str(model_path), str(module_path)],
                              capture_output=True, text=True, timeout=timeout, cwd=ROOT)  # fmt: skip
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        raise RuntimeError(f"{which} on {model_path.name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="1000,2000,4000,20000")
    parser.add_argument("--before", default="ac138e3", help="git revision of the quadratic version")
    parser.add_argument("--before-timeout", type=float, default=600.0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.blocks.split(",")]
    work = Path(tempfile.mkdtemp(prefix="fold_quant_chain_"))
    before_module = work / "fold_quant_before.py"
    source = subprocess.run(["git", "show", f"{args.before}:hawqc/passes/fold_quant.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    before_module.write_text(source)

    print("| blocks (nodes) | before: time | before: peak RSS (after load) | after: time | after: peak RSS (after load) "
          "| after, through PassManager | speed-up | same graph and counters |")
    print("|---|---|---|---|---|---|---|---|")
    previous_before = None
    for blocks in sizes:
        model_path = work / f"chain{blocks}.onnx"
        write_chain(blocks, model_path)
        after = measure("after", model_path, before_module, timeout=3600)
        manager = measure("manager", model_path, before_module, timeout=3600)
        before = None
        skipped = previous_before is not None and previous_before[1] * (blocks / previous_before[0]) ** 2 > args.before_timeout
        if not skipped:
            before = measure("before", model_path, before_module, timeout=args.before_timeout)
        if before is None:
            previous_before = None
            if skipped:
                before_text = "not started (quadratic extrapolation > timeout)"
            else:
                before_text = f"> {args.before_timeout:.0f} s (killed)"
            cells = [before_text, "-", "-", "-"]
        else:
            previous_before = (blocks, before["seconds"])
            same = before["digest"] == after["digest"] and before["statistics"] == after["statistics"]
            cells = [f"{before['seconds']:.2f} s", f"{mib(before['rss_peak_kib'])} ({mib(before['rss_load_kib'])})",
                     f"{before['seconds'] / after['seconds']:.0f}x", "yes" if same else "**no**"]  # fmt: skip
        print(f"| {blocks:,} ({2 * blocks:,}) | {cells[0]} | {cells[1]} | {after['seconds']:.2f} s | "
              f"{mib(after['rss_peak_kib'])} ({mib(after['rss_load_kib'])}) | {manager['seconds']:.2f} s | {cells[2]} | {cells[3]} |",
              flush=True)  # fmt: skip
        print(f"<!-- {blocks}: after {after['statistics']}, {after['nodes_left']} nodes left -->", flush=True)


if __name__ == "__main__":
    main()
