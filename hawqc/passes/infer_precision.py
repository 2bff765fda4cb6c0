"""`infer-precision`: write the exact fixed-point type of every value into the IR.

Runs `hawqc.ir.precision.infer_types` and annotates each value that has a type (every activation
from the graph's input Quant on, every constant operand) with
`value.metadata_props["hawqc.type"] = str(FixedType)`, e.g. `fixed<15,9,TRN,WRAP>`, and the output
of each dot product, convolution, average pool or BatchNormalization with its accumulator under
`hawqc.accum_type`. Values without a type (the float graph input, quantizer parameters) carry
neither; an annotation a value no longer should have (left by an earlier run on a graph that has
changed since) is removed. The meaning of the graph is untouched.

It refuses, with the analysis' error naming the node, a graph that has no fixed-point types: an
op without a precision rule, a non-power-of-two activation scale, a float graph input used without a
Quant. It runs last in the pipeline the driver uses (after `channels-last`), where the hls4ml
lowering reads the same types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

from hawqc.ir.precision import precision_of
from hawqc.passes.base import Pass, PassResult

TYPE_KEY = "hawqc.type"
ACCUMULATOR_KEY = "hawqc.accum_type"


def _values(graph: ir.Graph):
    seen: set[int] = set()
    for value in (*graph.inputs, *graph.initializers.values(), *(v for node in graph for v in node.outputs)):
        if value is not None and id(value) not in seen:
            seen.add(id(value))
            yield value


def _set(value: ir.Value, key: str, text: str | None) -> bool:
    """Make `value`'s annotation `key` read `text` (None: absent); True if that changed it."""
    if value.metadata_props.get(key) == text:
        return False
    if text is None:
        del value.metadata_props[key]
    else:
        value.metadata_props[key] = text
    return True


@dataclass(frozen=True)
class InferPrecision(Pass):
    name: ClassVar[str] = "infer-precision"
    summary: ClassVar[str] = (
        "Annotate every value with its exact fixed-point type (hawqc.type) and accumulator (hawqc.accum_type)."
    )

    def run(self, model: ir.Model) -> PassResult:
        result = precision_of(model)
        typed = changed = 0
        for value in _values(model.graph):
            fixed = result.types.get(value.name)
            accumulator = result.accumulators.get(value.name)
            typed += fixed is not None
            changed += _set(value, TYPE_KEY, None if fixed is None else str(fixed))
            changed += _set(value, ACCUMULATOR_KEY, None if accumulator is None else str(accumulator))
        return PassResult(
            changed > 0,
            {"values-typed": typed, "annotations-changed": changed, "values-float32-inexact": len(result.inexact)},
        )
