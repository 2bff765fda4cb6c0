"""The analysis driver: visits the nodes in order, dispatches each to its rule (`rules.RULES`), and
keeps what every rule reads and writes: the bounds of each value, the partial sums of dot
products, the values computed from float parts, and the `PrecisionResult` being built.

Where float32 (QONNX semantics) and exact arithmetic can part: float32 holds an integer exactly up to
2**24, so a value whose integer code exceeds that may be rounded by the reference but not by the
hardware; a value the graph declares DOUBLE holds 2**53. Codes are counted per feature on the
feature's own grid (`Bounds.grid`). Such values are in `float_inexact` (`may_round`).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir import analysis_cache, default_precision
from hawqc.ir.diagnostics import describe
from hawqc.ir.precision.attributes import constant
from hawqc.ir.precision.bounds import Bounds, exact_codes, feature_bounds, feature_grids
from hawqc.ir.precision.constants import constant_operand
from hawqc.ir.precision.float_parts import float_input, float_inputs, float_outputs
from hawqc.ir.precision.result import PrecisionResult
from hawqc.ir.precision.rules import rule_for
from hawqc.ir.qtypes import FixedType

# float32 holds every integer up to 2**24 exactly; QONNX semantics run in float32, so a value whose
# integer code (in units of its LSB) exceeds this may be rounded by the reference but not by hardware.
# A value declared DOUBLE holds integers up to 2**53.
FLOAT32_EXACT_INT = 1 << 24
FLOAT64_EXACT_INT = 1 << 53


def _exact_int_limit(value: ir.Value) -> tuple[int, str]:
    """The largest integer code the value's float type holds exactly, and the type's name (a value
    of unknown type is float32, what QONNX computes in)."""
    if value.dtype == ir.DataType.DOUBLE:
        return FLOAT64_EXACT_INT, "double"
    return FLOAT32_EXACT_INT, "float32"


class Analysis:
    """One run of precision inference over one model (`infer_types`)."""

    def __init__(self, model: ir.Model) -> None:
        self.model = model
        self.graph = model.graph
        self.result = PrecisionResult()
        self.bounds: dict[str, Bounds] = {}
        # Per-column partial-sum hull of dot products, kept so that a following bias Add extends it.
        self.partial: dict[str, Bounds] = {}
        self._shapes_inferred = False
        # The type of float parts (hawqc.ir.default_precision), and the values computed from them.
        default = default_precision.read(model)
        self.float_parts = None if default is None else default_precision.FloatParts(default)
        self.floating: set[str] = set()

    # ---- bookkeeping --------------------------------------------------------------------------
    def record(self, value: ir.Value, bounds: Bounds, fixed: FixedType | None = None) -> None:
        name = value.name
        self.bounds[name] = bounds
        self.result.types[name] = fixed if fixed is not None else bounds.fixed_type()
        self.result.intervals[name] = bounds.fractions()

    def record_constant(self, value: ir.Value, data: np.ndarray, fixed: FixedType) -> None:
        codes = exact_codes(data, fixed.lsb_exponent)
        lo, hi = feature_bounds(codes)
        self.result.constants[value.name] = data.astype(np.float64)
        grid = feature_grids(data, fixed.lsb_exponent)
        self.record(value, Bounds(lo, hi, fixed.lsb_exponent, grid), fixed)

    def may_round(self, value: ir.Value, bounds: Bounds, what: str) -> None:
        """Record `value` as float-inexact if some code of it (on its feature's grid) needs more bits
        than its float type holds (24 for float32, 53 for double)."""
        code = bounds.max_grid_code()
        limit, float_type = _exact_int_limit(value)
        if code > limit:
            self.result.float_inexact.add(value.name)
            self.result.inexact.setdefault(
                value.name,
                f"{what} needs {code.bit_length()} significant bits; {float_type} rounds beyond {limit.bit_length() - 1}",
            )

    def note_accumulator(self, value: ir.Value, hull: Bounds) -> None:
        self.result.accumulators[value.name] = hull.fixed_type()
        self.may_round(value, hull, "a partial sum")

    # ---- operands ------------------------------------------------------------------------------
    def operand(self, node: ir.Node, value: ir.Value | None, limit: int | None = 32) -> Bounds:
        """The bounds of an input. A constant is recorded on first use; `limit` caps the width an
        unquantized constant may need (weights and biases: 32 bits; a float32 scale factor that is
        used as the exact number it is: no cap)."""
        if value is None:
            raise UnsupportedModelError(f"{describe(node)}: missing input")
        if value.name in self.bounds:
            return self.bounds[value.name]
        data = constant(value)
        if data is not None:
            return constant_operand(self, node, value, data, limit)
        if value.is_graph_input():
            if self.float_parts is not None:
                return float_input(self, value)
            # The two options that give such an input a type, by their Python names (the command
            # line spells them as its flags).
            raise UnsupportedModelError(
                f"{describe(node)}: graph input {value.name!r} is used without a Quant (its range is unbounded); "
                "give it a fixed-point type with {} (e.g. fixed<8,3>; the pass input-precision), "
                "or compute the model's float parts in one type with {}",
                option=("input_precision", "default_precision"),
            )
        raise UnsupportedModelError(f"{describe(node)}: input {value.name!r} has no precision (unsupported producer)")

    def is_constant(self, value: ir.Value | None) -> bool:
        return value is not None and (value.name in self.result.constants or constant(value) is not None)

    def constant_data(self, node: ir.Node, value: ir.Value, limit: int | None = 32) -> np.ndarray:
        self.operand(node, value, limit)
        return self.result.constants[value.name]

    # ---- shapes --------------------------------------------------------------------------------
    def shape(self, value: ir.Value | None) -> tuple[int | None, ...] | None:
        """The value's dims (None where symbolic); shapes are inferred once if some are missing."""
        if value is None:
            return None
        if value.shape is None and not self._shapes_inferred:
            self._shapes_inferred = True
            from hawqc.ir.shape_inference import infer_shapes

            try:
                infer_shapes(self.model)
            except UserInputError:
                pass  # the rules that needed the shape take their safe fallback
        if value.shape is None:
            return None
        return tuple(d if isinstance(d, int) else None for d in value.shape.dims)

    def spatial(self, value: ir.Value | None) -> tuple[int, ...] | None:
        """The spatial dims of a channels-last [N, spatial..., C] value, if all known."""
        dims = self.shape(value)
        if dims is None or len(dims) < 3 or any(d is None for d in dims[1:-1]):
            return None
        return tuple(int(d) for d in dims[1:-1])  # type: ignore[arg-type]

    # ---- driver --------------------------------------------------------------------------------
    def run(self) -> PrecisionResult:
        if self.float_parts is not None:
            float_inputs(self)
        for node in self.graph:
            rule_for(node)(self, node)
            if self.float_parts is not None:
                float_outputs(self, node)
        if self.float_parts is not None and self.float_parts.applied:
            self.result.float_parts = self.float_parts
        return self.result


def infer_types(model: ir.Model) -> PrecisionResult:
    """Exact types of every value of `model` (nodes in topological order; see `hawqc.ir.precision`).

    Raises UnsupportedModelError, naming the node, for ops without a rule, non-power-of-two scales,
    non-zero zero points, rounding modes without a fixed-point equivalent, and unquantized inputs.
    Shapes are inferred (annotated on the model) if a rule needs one that is missing. This runs the
    analysis every time; `precision_of` runs it once per IR state.
    """
    return Analysis(model).run()


def precision_of(model: ir.Model) -> PrecisionResult:
    """`infer_types(model)`, computed once per IR state (`hawqc.ir.analysis_cache`): the entry point
    of every reader of a compiled model's types. The result is shared: read it, never change it."""
    return analysis_cache.cached(model, "precision", infer_types)
