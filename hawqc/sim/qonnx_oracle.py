"""qonnx's `execute_onnx` wrapped for comparison with semantic mode (tests and benchmarks only).

qonnx is the semantic oracle, never a runtime dependency of hawqc: it is imported inside the
functions here, and needs the `test` extra installed.

qonnx runs a graph at the shape it declares, node by node, with a fresh onnxruntime session per
standard node. To run it on N samples we either run it once per sample with dim 0 of the inputs
and outputs declared 1 (what qonnx users do), or once on the whole batch with dim 0 declared N.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx
import onnx_ir as ir

# onnxruntime 1.31, qonnx's executor, reads IR versions up to 10 safely.
MAX_IR_VERSION = 10


def _with_batch(proto: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of `proto` whose data inputs and outputs declare `batch` in dim 0, shapes to re-infer."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    out.ir_version = min(out.ir_version, MAX_IR_VERSION)
    initialized = {t.name for t in out.graph.initializer}
    for vi in [*out.graph.input, *out.graph.output]:
        if vi.name in initialized:
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) > 0:
            dims[0].Clear()
            dims[0].dim_value = batch
    del out.graph.value_info[:]
    return out


class QonnxOracle:
    """qonnx's `execute_onnx` on one model, at batch 1 per sample or at the whole batch at once."""

    def __init__(self, model: ir.Model | onnx.ModelProto) -> None:
        self._proto = model if isinstance(model, onnx.ModelProto) else ir.to_proto(model)
        initialized = {t.name for t in self._proto.graph.initializer}
        self.input_names = [vi.name for vi in self._proto.graph.input if vi.name not in initialized]
        self.output_names = [vi.name for vi in self._proto.graph.output]
        self._wrappers: dict[int, object] = {}

    def prepare(self, batch: int) -> object:
        """The ModelWrapper at `batch`, shapes inferred (cached): call it to keep it out of timings."""
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        if batch not in self._wrappers:
            self._wrappers[batch] = ModelWrapper(_with_batch(self._proto, batch)).transform(InferShapes())
        return self._wrappers[batch]

    def run(
        self, inputs: Mapping[str, np.ndarray] | np.ndarray, per_sample: bool = True
    ) -> dict[str, np.ndarray]:
        """Outputs of qonnx on a batch (dim 0 of every input), stacked along dim 0."""
        from qonnx.core.onnx_exec import execute_onnx

        if not isinstance(inputs, Mapping):
            inputs = {self.input_names[0]: inputs}
        n = len(next(iter(inputs.values())))
        if not per_sample:
            return execute_onnx(self.prepare(n), dict(inputs))
        wrapper = self.prepare(1)
        runs = [execute_onnx(wrapper, {k: v[i : i + 1] for k, v in inputs.items()}) for i in range(n)]
        return {name: np.concatenate([r[name] for r in runs]) for name in self.output_names}
