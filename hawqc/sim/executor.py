"""The reference executor: run a QONNX graph on a batch of inputs with numpy.

`Executor(model)` plans the graph once: it orders the nodes topologically, reads every constant
(initializers, `Constant` nodes) into numpy, folds nodes whose inputs are all constant (weight
quantizers) into constants, and builds one kernel per remaining node (see `hawqc.sim.ops`).
`run` then only moves arrays between kernels, so its cost is the arithmetic itself.

Two modes (hawqc's exactness contract, the README's "Exactness"): "semantic" is what the QONNX graph means,
bit-identical to qonnx's `execute_onnx` (float32); "hardware" is the fixed-point arithmetic the
backend generates, with the types of `hawqc.ir.precision.infer_types`, exact, in float64 (see
`hawqc.sim.hardware`). Constants are folded the same way in both modes (QONNX semantics), so
quantized weights are identical; hardware mode starts at the data.

Values live in a flat list of slots rather than a dict keyed by name; a slot is released after its
last reader so that large batches do not keep every intermediate tensor alive.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from hawqc.errors import UserInputError
from hawqc.ir.diagnostics import describe
from hawqc.ir.precision import PrecisionResult
from hawqc.sim import ops

MODES = ("semantic", "hardware")
# A batch runs in chunks whose largest intermediate value stays under this size (see `Executor.run`).
CHUNK_BYTES = 64 << 20


@dataclass(frozen=True)
class _Step:
    """One node of the plan: its kernel, where its inputs and outputs live, what to free after it."""

    node: ir.Node
    kernel: ops.Kernel
    inputs: tuple[int | None, ...]
    outputs: tuple[int, ...]
    release: tuple[int, ...]


@dataclass(frozen=True)
class _DataInput:
    name: str
    slot: int
    dtype: np.dtype
    # Declared dims; None for a dim that is symbolic or unknown. None as a whole: shape unknown.
    dims: tuple[int | None, ...] | None


def _topological_order(graph: ir.Graph) -> list[ir.Node]:
    """Nodes in an order where producers come first; ties keep the file's order (deterministic)."""
    nodes = list(graph)
    index = {node: i for i, node in enumerate(nodes)}
    waiting_on: list[int] = [0] * len(nodes)
    readers: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        producers = {
            index[producer]
            for value in node.inputs
            if value is not None and (producer := value.producer()) is not None and producer in index
        }
        waiting_on[i] = len(producers)
        for p in producers:
            readers[p].append(i)
    ready = [i for i, count in enumerate(waiting_on) if count == 0]
    heapq.heapify(ready)
    order: list[ir.Node] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for r in readers[i]:
            waiting_on[r] -= 1
            if waiting_on[r] == 0:
                heapq.heappush(ready, r)
    if len(order) != len(nodes):
        stuck = next(node for i, node in enumerate(nodes) if waiting_on[i] > 0)
        raise UserInputError(f"the graph has a cycle through {describe(stuck)}")
    return order


def _declared_dims(value: ir.Value) -> tuple[int | None, ...] | None:
    if value.shape is None:
        return None
    return tuple(d if isinstance(d, int) else None for d in value.shape.dims)


def _numpy_dtype(value: ir.Value) -> np.dtype:
    if value.dtype is None:
        return np.dtype(np.float32)
    return value.dtype.numpy()


class Executor:
    """Runs one model on batches of inputs; see the module docstring for what planning does.

    `mode="semantic"`: the QONNX meaning, float32. `mode="hardware"`: exact fixed-point arithmetic
    with the inferred types (`self.precision`), float64 results (longdouble for an output wider than
    53 bits, see `hawqc.sim.hardware`); UnsupportedModelError, naming the
    node, for an op without a precision or hardware rule.
    """

    def __init__(self, model: ir.Model, mode: str = "semantic") -> None:
        if mode not in MODES:
            raise UserInputError(f"unknown executor mode '{mode}' (known: {', '.join(MODES)})")
        self.mode = mode
        self.precision: PrecisionResult | None = None
        self._work_dtype = np.dtype(np.float64)  # hardware mode's exact arithmetic type
        hardware = None
        if mode == "hardware":
            from hawqc.ir.precision import precision_of
            from hawqc.sim import hardware

            self.precision = precision_of(model)
        graph = model.graph
        slots: dict[ir.Value, int] = {}

        def slot_of(value: ir.Value) -> int:
            if value not in slots:
                slots[value] = len(slots)
            return slots[value]

        constants: dict[int, np.ndarray] = {}
        for value in graph.initializers.values():
            if value.const_value is None:
                raise UserInputError(f"initializer '{value.name}' has no data")
            constants[slot_of(value)] = value.const_value.numpy()

        # A graph input that also has an initializer is a constant with a default (old exports put
        # quant parameters there); we take the initializer and do not ask the caller for it.
        self._data_inputs: list[_DataInput] = []
        for value in graph.inputs:
            slot = slot_of(value)
            if slot not in constants:
                self._data_inputs.append(
                    _DataInput(value.name or "", slot, _numpy_dtype(value), _declared_dims(value))
                )
        declared_batch = None
        if self._data_inputs and self._data_inputs[0].dims:
            declared_batch = self._data_inputs[0].dims[0]

        steps: list[tuple[ir.Node, ops.Kernel, tuple[int | None, ...], tuple[int, ...]]] = []
        for node in _topological_order(graph):
            inputs = tuple(None if v is None else slot_of(v) for v in node.inputs)
            outputs = tuple(slot_of(v) for v in node.outputs)
            known = tuple(None if s is None else constants.get(s) for s in inputs)
            runtime = any(s is not None and s not in constants for s in inputs)
            spec = ops.NodeSpec(node, known, declared_batch if runtime else None)
            if runtime and hardware is not None:
                kernel = hardware.builder_for(node)(spec, self.precision)
            else:
                kernel = ops.builder_for(node)(spec)
            if runtime:
                steps.append((node, kernel, inputs, outputs))
            else:
                for s, array in zip(outputs, _call(node, kernel, known)):
                    constants[s] = array

        for value in graph.outputs:
            slot = slot_of(value)
            produced = any(slot in outs for *_, outs in steps) or slot in constants
            if not produced and not any(d.slot == slot for d in self._data_inputs):
                raise UserInputError(f"graph output '{value.name}' is never computed")

        if hardware is not None:
            assert self.precision is not None
            self._work_dtype = hardware.work_dtype(self.precision, {v.name for v, s in slots.items() if s not in constants})
        self.input_names: tuple[str, ...] = tuple(d.name for d in self._data_inputs)
        self.output_names: tuple[str, ...] = tuple(v.name or "" for v in graph.outputs)
        self._output_slots = tuple(slots[v] for v in graph.outputs)
        self._slot_count = len(slots)
        self._slot_names = {s: v.name for v, s in slots.items() if v.name}
        self._sample_bytes = _largest_sample_bytes(
            [v for v, s in slots.items() if s not in constants], self._work_dtype.itemsize if mode == "hardware" else None
        )
        self._constants = constants
        self._steps = self._with_releases(steps)

    def _with_releases(
        self, steps: Sequence[tuple[ir.Node, ops.Kernel, tuple[int | None, ...], tuple[int, ...]]]
    ) -> tuple[_Step, ...]:
        """Attach to each step the runtime slots whose last reader it is (never outputs, constants)."""
        keep = set(self._output_slots) | set(self._constants)
        last_reader: dict[int, int] = {}
        for i, (_, _, inputs, outputs) in enumerate(steps):
            for s in (*inputs, *outputs):
                if s is not None and s not in keep:
                    last_reader[s] = i
        release: list[list[int]] = [[] for _ in steps]
        for s, i in last_reader.items():
            release[i].append(s)
        return tuple(
            _Step(node, kernel, inputs, outputs, tuple(release[i]))
            for i, (node, kernel, inputs, outputs) in enumerate(steps)
        )

    def run(
        self, inputs: Mapping[str, np.ndarray] | np.ndarray, *, keep_intermediates: bool = False
    ) -> dict[str, np.ndarray]:
        """Run the graph on a batch: every data input has the batch (any size) in dim 0.

        Returns the graph outputs by name; with `keep_intermediates`, every value computed at run
        time (the inputs as converted, every node output) by name, for debugging and for tests that
        check each value against its type. Inputs are converted to the declared element type (in
        hardware mode then to float64 (or longdouble), exactly).

        A large batch of large samples runs in chunks, so that no intermediate tensor (e.g. a
        thousand 256x256 feature maps, and a convolution's patches of them) outgrows memory: chunks
        hold as many samples as keep the largest value (by the declared shapes) within
        `CHUNK_BYTES`. Every op treats samples independently (the batch rule in `hawqc.sim.ops`);
        a batch that fits, as every MLP's does, runs whole.
        """
        checked = self._check_inputs(inputs)
        batch = len(checked[0][1]) if checked and checked[0][1].ndim > 0 else 0
        chunk = max(1, CHUNK_BYTES // self._sample_bytes) if self._sample_bytes else batch
        if batch <= chunk or any(array.ndim == 0 or len(array) != batch for _, array in checked):
            return self._run_chunk(checked, keep_intermediates)
        parts = [
            self._run_chunk([(d, a[start : start + chunk]) for d, a in checked], keep_intermediates)
            for start in range(0, batch, chunk)
        ]
        constant = {name for name, s in zip(self.output_names, self._output_slots) if s in self._constants}
        return {
            name: parts[0][name] if name in constant else np.concatenate([part[name] for part in parts])
            for name in parts[0]
        }

    def _run_chunk(
        self, checked: Sequence[tuple[_DataInput, np.ndarray]], keep_intermediates: bool
    ) -> dict[str, np.ndarray]:
        env: list[np.ndarray | None] = [None] * self._slot_count
        for s, array in self._constants.items():
            env[s] = array
        for data, array in checked:
            if self.mode == "hardware" and np.issubdtype(array.dtype, np.floating):
                array = array.astype(self._work_dtype)
                from hawqc.sim.hardware import cast_float_input

                array = cast_float_input(self.precision, data.name, array)
            env[data.slot] = array
        # Division by a zero scale, overflow to inf, NaN inputs: IEEE results, as onnxruntime gives
        # them, without numpy's warnings.
        with np.errstate(all="ignore"):
            for step in self._steps:
                results = _call(step.node, step.kernel, [None if s is None else env[s] for s in step.inputs])
                for s, array in zip(step.outputs, results):
                    env[s] = array
                if not keep_intermediates:
                    for s in step.release:
                        env[s] = None
        if keep_intermediates:
            values = {
                name: array
                for s, name in self._slot_names.items()
                if s not in self._constants and (array := env[s]) is not None
            }
            return values
        return {name: self._output_array(name, env[s]) for name, s in zip(self.output_names, self._output_slots)}

    def _output_array(self, name: str, array: np.ndarray) -> np.ndarray:
        """Hardware mode's wide path returns float64 wherever that is exact (every output it can)."""
        if array.dtype != np.longdouble or self.precision is None:
            return array
        from hawqc.sim.hardware import FLOAT64_EXACT_BITS

        fixed = self.precision.types.get(name)
        return array.astype(np.float64) if fixed is not None and fixed.width <= FLOAT64_EXACT_BITS else array

    def _check_inputs(
        self, inputs: Mapping[str, np.ndarray] | np.ndarray
    ) -> list[tuple[_DataInput, np.ndarray]]:
        if not isinstance(inputs, Mapping):
            if len(self._data_inputs) != 1:
                raise UserInputError(
                    f"the graph has {len(self._data_inputs)} inputs ({', '.join(self.input_names)}): "
                    "pass a dict of arrays by name"
                )
            inputs = {self._data_inputs[0].name: inputs}
        unknown = sorted(set(inputs) - set(self.input_names))
        if unknown:
            raise UserInputError(
                f"unknown input(s) {', '.join(unknown)}; the graph's inputs are {', '.join(self.input_names)}"
            )
        checked = []
        for data in self._data_inputs:
            if data.name not in inputs:
                raise UserInputError(f"missing input '{data.name}'")
            array = np.asarray(inputs[data.name], dtype=data.dtype)
            if data.dims is not None:
                expected = ["N" if i == 0 else "?" if d is None else d for i, d in enumerate(data.dims)]
                if array.ndim != len(data.dims) or any(
                    d is not None and i > 0 and d != got
                    for i, (d, got) in enumerate(zip(data.dims, array.shape))
                ):
                    raise UserInputError(
                        f"input '{data.name}' has shape {list(array.shape)}, expected {expected} "
                        "(N: any batch size)"
                    )
            checked.append((data, array))
        return checked


def _largest_sample_bytes(values: Sequence[ir.Value], itemsize: int | None) -> int:
    """The size of one sample of the largest value whose shape is declared (0 if none is)."""
    largest = 0
    for value in values:
        dims = _declared_dims(value)
        if not dims or any(d is None for d in dims[1:]):
            continue
        size = itemsize or _numpy_dtype(value).itemsize
        largest = max(largest, int(np.prod(dims[1:], dtype=np.int64)) * size)
    return largest


def _call(node: ir.Node, kernel: ops.Kernel, args: Sequence[np.ndarray | None]) -> tuple[np.ndarray, ...]:
    """Run one kernel; a numpy shape error becomes a one-line error naming the node."""
    try:
        return kernel(args)
    except ValueError as error:
        shapes = ", ".join("-" if a is None else str(list(a.shape)) for a in args)
        raise UserInputError(f"{describe(node)} failed on inputs of shapes {shapes}: {error}") from None


def execute(model: ir.Model, inputs: Mapping[str, np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
    """Plan and run in one call: `Executor(model).run(inputs)`. Plan once when running many batches."""
    return Executor(model).run(inputs)
