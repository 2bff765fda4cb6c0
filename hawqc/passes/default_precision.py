"""`default-precision{type=fixed<16,6>}`: compute the graph's float parts in one fixed-point type.

A graph with float parts (an unquantized input, float weights, float activations) has no
fixed-point types of its own; this pass gives them one (`hawqc.ir.default_precision` says where it
applies and how it casts) by recording it on the model (`default_precision.METADATA_KEY`), which
every later analysis (precision inference, hardware mode, the lowering) reads. It records it only
if precision inference applies it somewhere: a graph without float parts is left as it is (a
default precision recorded before, with no float part to apply to, is dropped).

A graph precision inference cannot type (an op without a precision rule) cannot be shown to have
no float parts: the type is recorded, and whatever types the graph later (the lowering, or
`infer-precision`) applies it, or refuses the graph naming the node, as it would have refused it here.

It changes what hardware mode computes on purpose (the float parts are rounded and cast), so it
declares `changes_meaning`. `hawqc --default-precision T` runs it after the pipeline
(`hawqc.flow.float_parts_option`); `hawqc-opt -p 'default-precision{type=T}'` replays it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir import default_precision
from hawqc.ir.default_precision import FloatParts
from hawqc.ir.qtypes import FixedType
from hawqc.passes.base import Pass, PassResult, option

# How a wrong `type` is named: the pass and its option (the command line's `--default-precision`
# is checked, and named, before the pass is built).
TYPE_OPTION = "pass 'default-precision' option 'type'"


@dataclass(frozen=True)
class DefaultPrecision(Pass):
    name: ClassVar[str] = "default-precision"
    summary: ClassVar[str] = "Compute the graph's float parts in one fixed-point type (changes the outputs)."
    changes_meaning: ClassVar[bool] = True

    type: str = option("fixed<16,6>", "the fixed-point type, e.g. fixed<16,6> or fixed<16,6,TRN,WRAP>")

    def __post_init__(self) -> None:
        self.fixed()  # a wrong spelling is refused when the pipeline is parsed, before any model is read

    def fixed(self) -> FixedType:
        return default_precision.parse_default_precision(self.type, option=TYPE_OPTION)

    def run(self, model: ir.Model) -> PassResult:
        before = model.metadata_props.get(default_precision.METADATA_KEY)
        try:
            parts = apply_default_precision(model, self.fixed())
        except UnsupportedModelError:
            default_precision.attach(model, self.fixed())
            parts = None
        changed = model.metadata_props.get(default_precision.METADATA_KEY) != before
        if parts is None:
            return PassResult(changed, {"inputs-cast": 0, "activations-cast": 0, "weights-rounded": 0})
        facts = parts.as_dict()
        return PassResult(
            changed,
            {"inputs-cast": len(parts.inputs), "activations-cast": len(parts.casts), "weights-rounded": facts["weights_changed"]},
        )


def apply_default_precision(model: ir.Model, fixed: FixedType) -> FloatParts | None:
    """Record `fixed` on the model if precision inference applies it somewhere; where it does (None:
    the model has no float parts, and carries no default precision)."""
    from hawqc.ir.precision import precision_of

    default_precision.attach(model, fixed)
    try:
        parts = precision_of(model).float_parts
    finally:
        default_precision.detach(model)
    if parts is not None:
        default_precision.attach(model, fixed)
    return parts
