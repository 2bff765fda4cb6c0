"""`integer-requant`: quantizers with any scales -> integer codes and proven dyadic requantizations.

A quantizer whose scale is not a power of two has no fixed-point type. This pass moves such scales
out of the data: every value downstream of one carries integers v, and its real value is
`scale * v + offset` (exact rationals per element, tracked here, not computed). Weights become
their integer codes, rescales by constants (Mul, Div, a BatchNormalization, a float bias) change
only the tracked scale and offset, and at the next quantizer the exact meaning

    code = R(clip(g(r * v + t)))        r = scale / s, t = offset / s, g a pending Relu or nothing

becomes a multiply-add `(v * m + c) / 2^e` whose codes are **proven** equal to the exact meaning's
for every v the interval analysis allows (`hawqc.ir.dyadic_requant`), with the fewest bits of m:

    Mul(v, m/2^e) [-> Add(c/2^e)] [-> Relu] -> Quant(scale 1, or s when s is a power of two)

A sum of two values with different scales that a quantizer reads (a residual, perhaps through a
Relu) gets one multiplier per branch, `Mul(v1, m1/2^e) + Mul(v2, m2/2^e) [-> Add(c/2^e)] [-> Relu]
-> Quant(scale 1)`, proven on every pair (v1, v2) (`dyadic_requant.solve_sum`); a sum read otherwise
is aligned on one scale by exact integer multipliers.

What the pass keeps exact is the exact meaning (`hawqc.sim.exact`), not semantic mode's float32
arithmetic: float32 rounds some products and quotients of the original graph near a rounding
boundary, and the rewritten graph's products of m/2^e differently. Hardware mode of the result
computes the exact meaning; `--verify` reports the float32 difference.

Interfaces (`hawqc.ir.interfaces`): a graph input that reaches a non-power-of-two quantizer
through constant rescales (`Mul`, `Div`, `Add`, `Sub` by constants) becomes a port of that
quantizer's integer codes; the host computes them. A graph output reached with a scale or offset
that is not the identity is delivered as v, with its affine map recorded.

Refused, naming the node: a zero point other than 0, a quantizer reached with a pending Relu on a
negative scale, an op the pass has no rule for on a rescaled value (it could only compute it in
float), two rescaled values added with different scales and read otherwise than by a quantizer, whose
common integer form outgrows the float type, a requantization no dyadic
reproduces (naming the accumulator value and the tie), or integer codes beyond float32's 2^24.
"""

from dataclasses import dataclass
from typing import ClassVar

import onnx_ir as ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.io import copy_model
from hawqc.passes.base import Pass, PassResult, option
from hawqc.passes.integer_requant.rewriter import Rewriter
from hawqc.passes.integer_requant.tracking import COUNTERS, FEWEST_PROVEN_KEY, MULTIPLIER_BITS_KEY, REFUSAL_KEY

__all__ = ["COUNTERS", "FEWEST_PROVEN_KEY", "MULTIPLIER_BITS_KEY", "REFUSAL_KEY", "IntegerRequant"]


@dataclass(frozen=True)
class IntegerRequant(Pass):
    name: ClassVar[str] = "integer-requant"
    summary: ClassVar[str] = (
        "Quantizers with scales that are not powers of two -> integer codes, ports of codes, and proven "
        "fewest-bit dyadic requantizations (the exact meaning, not float32's, is kept)."
    )
    preserves: ClassVar[str] = "exact"
    strict: bool = option(False, "refuse (an error naming the node) a model it cannot take to integers, instead of leaving it")

    def run(self, model: ir.Model) -> PassResult:
        """All or nothing: the model is rewritten on a copy, which replaces it only when every part
        could be taken to integers. A refusal leaves the model as it was and is recorded in its
        metadata (`REFUSAL_KEY`): the compile driver reports it, since precision inference would
        refuse the float scales left behind with a less useful reason."""
        model.metadata_props.pop(REFUSAL_KEY, None)
        trial = copy_model(model)
        rewriter = Rewriter(trial)
        try:
            try:
                rewriter.run()
            except (ValueError, IndexError, TypeError, AttributeError, KeyError) as err:
                raise UnsupportedModelError(f"integer-requant cannot take this model to integers ({type(err).__name__}: {err})") from err
        except UnsupportedModelError as refusal:
            if self.strict:
                raise
            model.metadata_props[REFUSAL_KEY] = str(refusal)
            return PassResult(False, {**{key: 0 for key in COUNTERS}, "models-refused": 1})
        statistics = {key: rewriter.statistics[key] for key in COUNTERS}
        changed = any(rewriter.statistics[key] for key in COUNTERS[:3])
        if changed:
            model.graph = trial.graph
            model.metadata_props.clear()
            model.metadata_props.update(trial.metadata_props)
        return PassResult(changed, {**statistics, "models-refused": 0})
