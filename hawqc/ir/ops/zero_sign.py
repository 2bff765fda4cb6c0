"""The sign of zero: can a graph output tell whether a value held -0.0 or +0.0?

A rewrite may turn a -0.0 into +0.0 (a quantizer removed as redundant: `-0.0 / s + 0.0` is +0.0; a
ternary quantizer replaced by a MultiThreshold, which cannot output -0.0). The semantic result is
compared bit for bit, so such a rewrite is sound only where no graph output can see that sign.
`fold-quant` and `fuse-bn` ask this one question, here, of each reader of the value:

- it **erases** the sign when both zeros give it the same outputs, bit for bit: a QONNX quantizer
  (`Quant`, `IntQuant`, `BipolarQuant`) or `MultiThreshold` at input 0 (`-0.0 >= t` exactly when
  `+0.0 >= t`; `x / s + z` is a zero of either sign or z, a bipolar compare treats both zeros alike,
  and the final `(q - z) * s` turns a zero of either sign into +0.0, whatever z and s are); an `Add`
  of a constant without -0.0 (`+-0.0 + c` is c, or +0.0 for c = +0.0); an inference-mode
  BatchNormalization whose scale is finite and whose offset has no -0.0 (`+-0.0 * a + b`).
- it **carries** the sign when both zeros give outputs that differ at most in the sign of zeros
  (`Trait.CARRIES_ZERO_SIGN` at input 0, `Trait.CARRIES_ZERO_SIGN_AT_EVERY_INPUT` at any input):
  IEEE arithmetic rounds one real value one way, only an exact zero result takes a sign from its
  operands, and `0 * inf`, `0 / 0` give the same NaN for both zeros. Sums and products (Add, Sub,
  Mul, MatMul, Gemm, Conv), quotients by anything (Div at input 0), pools, copies and rearrangements
  (shape ops, MaxPool, Resize, Pad, Concat), Relu, LeakyRelu, Clip, and the ops whose result is the
  same for both zeros but not worth a rule of their own (Sigmoid, Softmax, BatchNormalization).
- any other reader, or a graph output, may show it (Div at input 1: `1 / -0.0` is -inf).

The sign cannot be seen when every path from the value ends in an eraser, through carriers only.

Both passes had a list of their own, and they differed: fuse-bn carried through fewer ops (not Div,
Sigmoid, Softmax, Clip, BatchNormalization) and erased at more (MultiThreshold, Add of a constant,
BatchNormalization); fold-quant asked for a finite non-zero scale and a zero point without -0.0
before a quantizer erased. Each claim of the union is checked by `tests/test_zero_sign.py` with the
semantic executor (and qonnx's `execute_onnx`), on graphs where -0.0 and +0.0 reach each op: the
union is right, each list was merely incomplete, and this one analysis replaces both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from hawqc.ir.ops.batchnorm import batch_norm
from hawqc.ir.ops.keys import OpKey, op_key, qonnx_op
from hawqc.ir.ops.quantizer import CODE_QUANTIZERS
from hawqc.ir.ops.traits import Trait, has_trait

# Readers whose output at input 0 is a function of `x >= t` or of `x / s + z` only.
ERASING_AT_INPUT_0: frozenset[OpKey] = CODE_QUANTIZERS | {qonnx_op("MultiThreshold")}


def _has_negative_zero(array: np.ndarray) -> bool:
    return bool(np.any((array == 0) & np.signbit(array)))


def _constant(value: ir.Value | None) -> np.ndarray | None:
    """A constant's data (not an initializer that is a graph input: it could be fed -0.0)."""
    if value is None or value.const_value is None or value.is_graph_input():
        return None
    return value.const_value.numpy()


def erases(node: ir.Node, index: int) -> bool:
    """Whether input `index` of `node` reaching it as +0.0 or as -0.0 gives the same outputs."""
    key = op_key(node)
    if key in ERASING_AT_INPUT_0:
        return index == 0
    if key == ("", "Add") and len(node.inputs) == 2 and index in (0, 1):
        other = _constant(node.inputs[1 - index])
        return other is not None and not _has_negative_zero(other)
    if index == 0 and (view := batch_norm(node)) is not None and view.inference_mode:
        parameters = view.parameters()
        if parameters is None or any(p.dtype != np.float32 for p in parameters):
            return False
        a, b = view.coefficients(parameters)
        return bool(np.all(np.isfinite(a))) and not _has_negative_zero(b)
    return False


def carries(node: ir.Node, index: int) -> bool:
    """Whether input `index` of `node` differing only in the sign of zeros leaves its outputs
    differing at most in the sign of zeros."""
    if index == 0:
        return has_trait(node, Trait.CARRIES_ZERO_SIGN)
    return has_trait(node, Trait.CARRIES_ZERO_SIGN_AT_EVERY_INPUT)


@dataclass
class ZeroSignAnalysis:
    """`unobservable(value)` for the values of one graph, cached; `forget()` after a rewrite."""

    _unobservable: dict[ir.Value, bool] = field(default_factory=dict)

    def forget(self) -> None:
        self._unobservable.clear()

    def unobservable(self, value: ir.Value) -> bool:
        """Whether turning -0.0 into +0.0 (or back) anywhere in `value` can change no graph output.

        Iterative post-order over the readers: a graph is a DAG, so the outputs of every carrier
        are decided before the value it reads.
        """
        stack = [(value, False)]
        while stack:
            current, expanded = stack.pop()
            if current in self._unobservable:
                continue
            if expanded:
                self._unobservable[current] = self._readers_hide(current)
                continue
            stack.append((current, True))
            for node, index in current.uses():
                if not erases(node, index) and carries(node, index):
                    stack.extend((out, False) for out in node.outputs if out not in self._unobservable)
        return self._unobservable[value]

    def _readers_hide(self, value: ir.Value) -> bool:
        if value.is_graph_output():
            return False
        for node, index in value.uses():
            if erases(node, index):
                continue
            if not carries(node, index):
                return False
            if not all(self._unobservable.get(out, False) for out in node.outputs):
                return False
        return True


def zero_sign_unobservable(value: ir.Value) -> bool:
    """Whether turning -0.0 into +0.0 (or back) anywhere in `value` can change no graph output."""
    return ZeroSignAnalysis().unobservable(value)
