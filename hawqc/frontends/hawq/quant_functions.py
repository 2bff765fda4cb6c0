"""HAWQ's quantization arithmetic, on CPU, with the integer parts computed exactly.

Written from upstream HAWQ's arithmetic (github.com/Zhen-Dong/HAWQ, `utils/quantization_utils/`
`quant_utils.py` and `quant_modules.py`); the public names are HAWQ's, so that training scripts that
import them keep working. Conventions (and where float32 vs float64 matters):

- Quantizing a float tensor (`x` to `round(x / s)`, activations on entry, weights, biases) is
  done in the tensor's own dtype (float32 for a float32 model): the same arithmetic as a QONNX
  `Quant` node (`x / scale`, then round half to even), so a lifted graph reproduces it bit for bit.
- Everything after that is integer arithmetic: accumulators, the dyadic requantization
  `round(z_int * m / 2^e)`, the residual sum of two dyadic terms. It runs in float64 (accumulators)
  and int64 (requantization), and falls back to Python integers whenever int64 could overflow,
  so the result is exactly what the formula says, never a float approximation of it.
- The requantization ratio is computed the way HAWQ does it: `double(float(double(s_a) *
  double(s_w))) / double(float(s_new))`. (The float32 rounding of the product is the same number
  the weighted modules use as their output scale `s_w * s_a`.)
- An integer is recovered from a float32 activation `z = float32(acc * s)` by
  `round(float64(z) / float64(s))`: exact while |acc| < 2^23, far above any accumulator HAWQ's
  bit widths produce.

Binary and ternary weights (hawqc's extension; upstream HAWQ has no 1-bit rule):
- 2 bits is HAWQ's own formula: `s = max|w| / (2^1 - 1) = max|w|`, codes `clamp(round(w / s), -2, 1)`.
  Since `|w / s| <= 1`, the codes are in {-1, 0, 1}: ternary weights (the clamp's -2 is reachable
  only with a `weight_percentile` below 100, which clips the range).
- 1 bit: HAWQ's formula divides by `2^0 - 1 = 0`. hawqc uses binary sign weights instead (XNOR-Net,
  Rastegari et al. 2016): codes `w >= 0 ? +1 : -1` (0 and -0.0 give +1, as QONNX's BipolarQuant and
  1-bit signed Quant do) and `s = mean|w|` per output channel (or per tensor), the scale that
  minimizes `||w - s * sign(w)||^2`; trained straight-through (gradient `1 / s`, like every other
  width here). `symmetric_linear_quantization_params` refuses 1 bit rather than return inf.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch.autograd import Function

DYADIC_MANTISSA_BITS = 31
"""`batch_frexp` keeps 31 bits of mantissa: `m = round_half_up(mantissa * 2^31)`."""

AVERAGE_POOL_EPSILON = 0.01
"""Integer average pooling truncates `average + 0.01` (the epsilon absorbs 1.9999999-style
representation errors; it must stay below `1 - (n-1)/n` for an n-element window)."""

SCALE_FLOOR = 1e-8
"""HAWQ clamps a quantization range to at least 1e-8 before dividing it into steps."""


# --- quantization ranges and scales ---------------------------------------------------------


def symmetric_linear_quantization_params(
    num_bits: int, saturation_min: torch.Tensor, saturation_max: torch.Tensor, per_channel: bool = False
) -> torch.Tensor:
    """`s = max(|min|, |max|) / (2^(b-1) - 1)`, one per channel or one (shape [1]) per tensor."""
    if num_bits < 2:
        raise ValueError(
            f"symmetric quantization needs at least 2 bits (got {num_bits}): 1-bit weights are binary "
            "(binary_weight_quantization_params)"
        )
    with torch.no_grad():
        steps = 2 ** (num_bits - 1) - 1
        magnitude = torch.maximum(torch.as_tensor(saturation_min).abs(), torch.as_tensor(saturation_max).abs())
        if not per_channel:
            magnitude = magnitude.max().reshape(1)
        return torch.clamp(magnitude, min=SCALE_FLOOR) / steps


def binary_weight_quantization_params(weight: torch.Tensor, per_channel: bool = False) -> torch.Tensor:
    """The scale of 1-bit (sign) weights: `mean|w|` per output channel (axis 0), or one (shape
    [1]) per tensor, at least `SCALE_FLOOR` (an all-zero channel still gets a positive scale)."""
    with torch.no_grad():
        rows = torch.as_tensor(weight).detach().reshape(weight.shape[0], -1).abs()
        magnitude = rows.mean(dim=1) if per_channel else rows.mean().reshape(1)
        return torch.clamp(magnitude, min=SCALE_FLOOR)


def asymmetric_linear_quantization_params(
    num_bits: int,
    saturation_min: torch.Tensor,
    saturation_max: torch.Tensor,
    integral_zero_point: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HAWQ's "asymmetric" range: `s = (max - min) / (2^b - 1)`, and the zero point it would have.

    HAWQ's hardware path uses unsigned integers without a zero point (the range sits after a
    ReLU, so `min` is 0); the modules here use the scale and ignore the zero point, as HAWQ does.
    """
    with torch.no_grad():
        saturation_min = torch.as_tensor(saturation_min)
        scale = torch.clamp(torch.as_tensor(saturation_max) - saturation_min, min=SCALE_FLOOR) / float(2**num_bits - 1)
        zero_point = -saturation_min / scale
        if integral_zero_point:
            zero_point = zero_point.round()
        return scale, zero_point


def get_percentile_min_max(
    values: torch.Tensor, lower_percentile: float, upper_percentile: float, output_tensor: bool = False
):
    """The values at two percentiles of a flat tensor (a lower percentile of 0 gives a lower bound of 0)."""
    count = values.shape[0]
    upper_index = max(1, min(count, round(count * upper_percentile * 0.01)))
    upper = torch.kthvalue(values, k=upper_index).values
    if lower_percentile == 0:
        lower = upper * 0
    else:
        lower_index = max(1, min(count, round(count * (1 - lower_percentile * 0.01))))
        lower = -torch.kthvalue(-values, k=lower_index).values
    if output_tensor:
        return lower, upper
    return lower.item(), upper.item()


# --- quantization with straight-through gradients --------------------------------------------


def _along_leading_axis(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """A scale laid out for a tensor whose axis 0 is the channel axis (weights; a bias is 1-D)."""
    scale = torch.as_tensor(scale)
    if ndim >= 2:
        return scale.reshape(-1, *([1] * (ndim - 1)))
    return scale.reshape(-1)


def _along_channel_axis(scale: torch.Tensor, ndim: int) -> torch.Tensor:
    """A scale laid out for an activation [N, C, ...]: one value per channel C, or one in all."""
    scale = torch.as_tensor(scale)
    if ndim >= 2:
        return scale.reshape(1, -1, *([1] * (ndim - 2)))
    return scale.reshape(-1)


def integer_range(num_bits: int | None, unsigned: bool) -> tuple[int, int] | None:
    """Clamp bounds: signed `[-2^(b-1), 2^(b-1) - 1]` (not narrow), unsigned `[0, 2^b - 1]`.

    None for `num_bits=None`: HAWQ quantizes a bias even without a bias width; the integer is then
    left unbounded (at the accumulator's scale)."""
    if num_bits is None:
        return None
    if unsigned:
        return 0, 2**num_bits - 1
    return -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1


def quantize_to_integers(x: torch.Tensor, num_bits: int | None, scale: torch.Tensor, unsigned: bool) -> torch.Tensor:
    """`clamp(round(x / s))` in x's dtype, the scale along axis 0 (per channel) or broadcast."""
    integers = torch.round(x / _along_leading_axis(scale, x.dim()).to(x.dtype))
    bounds = integer_range(num_bits, unsigned)
    if bounds is not None:
        integers = torch.clamp(integers, *bounds)
    return integers


class _QuantFunction(Function):
    """Rounds to integers in forward; backward passes the gradient straight through (d(x/s)/dx = 1/s)."""

    unsigned = False

    @classmethod
    def forward(cls, ctx, x, k, specified_scale=None):
        if specified_scale is None:
            raise ValueError(f"{cls.__name__} needs a pre-computed scaling factor")
        scale = torch.as_tensor(specified_scale).detach()
        ctx.save_for_backward(scale)
        return quantize_to_integers(x, k, scale, cls.unsigned)

    @staticmethod
    def backward(ctx, grad_output):
        (scale,) = ctx.saved_tensors
        return grad_output / _along_leading_axis(scale, grad_output.dim()).to(grad_output.dtype), None, None


class SymmetricQuantFunction(_QuantFunction):
    """`clamp(round(x / s), -2^(k-1), 2^(k-1) - 1)`: signed, zero point 0, full (not narrow) range."""

    unsigned = False


class BinaryQuantFunction(Function):
    """1-bit weight codes `w >= 0 ? +1 : -1` (in w's dtype); backward passes the gradient straight
    through as if the codes were `w / s` (the other widths' rule). forward(x, specified_scale)."""

    @staticmethod
    def forward(ctx, x, specified_scale):
        scale = torch.as_tensor(specified_scale).detach()
        ctx.save_for_backward(scale)
        return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, grad_output):
        (scale,) = ctx.saved_tensors
        return grad_output / _along_leading_axis(scale, grad_output.dim()).to(grad_output.dtype), None


class AsymmetricQuantFunction(_QuantFunction):
    """HAWQ's "asymmetric" quantization: unsigned `clamp(round(x / s), 0, 2^k - 1)`, zero point 0."""

    unsigned = True


class ste_round(Function):
    """Round half to even, with a straight-through gradient."""

    @staticmethod
    def forward(ctx, x):
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


class transfer_float_averaging_to_int_averaging(Function):
    """Integer average pooling: `trunc(average + 0.01)`, with a straight-through gradient."""

    @staticmethod
    def forward(ctx, x, eps=AVERAGE_POOL_EPSILON):
        return torch.trunc(x + eps)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


# --- dyadic numbers ------------------------------------------------------------------------------


def batch_frexp(inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """HAWQ's dyadic decomposition `r ~= m / 2^e`, element by element: `mantissa, exp = frexp(r)`,
    `m = round_half_up(mantissa * 2^31)`, `e = 31 - exp`. Returns int64 tensors (m, e).

    `mantissa * 2^31` is exact in float64 (a power-of-two scaling) and so is adding 0.5 to it (it
    is below 2^31), so the floor below is the exact half-up rounding. Like HAWQ, `m` may round up
    to 2^31 (mantissa just below 1) and is not renormalized.
    """
    mantissa, exponent = torch.frexp(torch.as_tensor(inputs).detach().to(torch.float64))
    shifted = mantissa * 2.0**DYADIC_MANTISSA_BITS
    m = torch.sign(shifted) * torch.floor(shifted.abs() + 0.5)
    return m.to(torch.int64), DYADIC_MANTISSA_BITS - exponent.to(torch.int64)


def requantization_ratio(
    act_scale: torch.Tensor, weight_scale: torch.Tensor, new_scale: torch.Tensor
) -> torch.Tensor:
    """`(s_a * s_w) / s_new` as HAWQ computes it: the product in double, rounded to float, back to
    double; the new scale rounded to float; the division in double."""
    product = (act_scale.detach().to(torch.float64) * weight_scale.detach().to(torch.float64)).to(torch.float32)
    return product.to(torch.float64) / new_scale.detach().to(torch.float32).to(torch.float64)


_INT64_SAFE_OPERAND = 2**29  # |z_int| below this and m <= 2^31: |z_int * m| < 2^60
_INT64_SAFE_EXPONENT = 60  # sums of two fractions below 2^60 stay inside int64


def round_dyadic_sum(terms: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Exactly `round_half_even(sum_i z_i * m_i / 2^e_i)` for integer tensors (z_i, m_i, e_i)
    (broadcast together); returns int64.

    Fast path in int64 (split each term into floor and remainder, add the remainders at the
    common exponent); Python integers when an operand is out of the fast path's safe range.
    """
    broadcast = torch.broadcast_tensors(*(t.to(torch.int64) for term in terms for t in term))
    triples = [broadcast[i : i + 3] for i in range(0, len(broadcast), 3)]
    if len(triples) > 2 or not _fits_int64_path(triples):
        return _round_dyadic_sum_exact(triples)
    common = torch.stack([e for _, _, e in triples]).amax(dim=0)
    whole = torch.zeros_like(common)
    fraction = torch.zeros_like(common)
    for z, m, e in triples:
        numerator = z * m
        floor = torch.bitwise_right_shift(numerator, e)
        remainder = numerator - torch.bitwise_left_shift(floor, e)
        whole = whole + floor
        fraction = fraction + torch.bitwise_left_shift(remainder, common - e)
    carry = torch.bitwise_right_shift(fraction, common)
    whole = whole + carry
    fraction = fraction - torch.bitwise_left_shift(carry, common)
    half = torch.bitwise_right_shift(torch.ones_like(common) << common, 1)
    round_up = (common > 0) & ((fraction > half) | ((fraction == half) & (whole % 2 != 0)))
    return whole + round_up.to(torch.int64)


def _fits_int64_path(triples) -> bool:
    for z, m, e in triples:
        if z.numel() == 0:
            return True
        if z.abs().max() >= _INT64_SAFE_OPERAND or m.abs().max() > 2**DYADIC_MANTISSA_BITS:
            return False
        if e.min() < 0 or e.max() > _INT64_SAFE_EXPONENT:
            return False
    return True


def _round_dyadic_sum_exact(triples) -> torch.Tensor:
    shape = triples[0][0].shape
    columns = [[t.reshape(-1).tolist() for t in triple] for triple in triples]
    results = []
    for index in range(math.prod(shape)):
        total = Fraction(0)
        for z, m, e in columns:
            total += Fraction(z[index] * m[index]) * Fraction(2) ** (-e[index])
        results.append(round(total))  # Fraction rounds half to even
    return torch.tensor(results, dtype=torch.int64).reshape(shape)


# --- fixed-point requantization ----------------------------------------------------------------


def branch_integers(value: torch.Tensor, act_scale: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """The accumulator integers behind `value = acc * float32(s_a * s_w)` (per channel), as int64."""
    step = (act_scale.detach().to(torch.float32).reshape(1, -1) * weight_scale.detach().to(torch.float32).reshape(1, -1))
    step = _along_channel_axis(step, value.dim()).to(torch.float64)
    return torch.round(value.detach().to(torch.float64) / step).to(torch.int64)


def fixedpoint_requantize(
    z: torch.Tensor,
    bitwidth: int,
    quant_mode: str,
    z_scaling_factor: torch.Tensor,
    pre_act_scaling_factor: torch.Tensor,
    pre_weight_scaling_factor: torch.Tensor,
    identity: torch.Tensor | None = None,
    identity_scaling_factor: torch.Tensor | None = None,
    identity_weight_scaling_factor: torch.Tensor | None = None,
) -> torch.Tensor:
    """HAWQ's integer-only requantization to the new scale `z_scaling_factor`, as integers in z's dtype.

    Without identity: `clamp(round(z_int * m / 2^e))` with `z_int = round(z / (s_a * s_w))` and
    `m, e = batch_frexp((s_a * s_w) / s_new)`. With an identity (residual) branch, `z` is the sum
    of the two branches: the identity branch `identity = id_int * s_id * s_idw` and the main branch
    `z - identity`; each gets its own dyadic factor, and the two dyadic terms are added exactly
    before the one rounding and the clamp.
    """
    terms = []
    main = z if identity is None else z.detach().to(torch.float64) - identity.detach().to(torch.float64)
    main_int = branch_integers(main, pre_act_scaling_factor, pre_weight_scaling_factor)
    ratio = requantization_ratio(
        pre_act_scaling_factor.reshape(1, -1), pre_weight_scaling_factor.reshape(1, -1), z_scaling_factor.reshape(1, -1)
    )
    m, e = batch_frexp(_along_channel_axis(ratio, z.dim()))
    terms.append((main_int, m, e))
    if identity is not None:
        identity_int = branch_integers(identity, identity_scaling_factor, identity_weight_scaling_factor)
        identity_ratio = requantization_ratio(
            identity_scaling_factor.reshape(1, -1),
            identity_weight_scaling_factor.reshape(1, -1),
            z_scaling_factor.reshape(1, -1),
        )
        m_id, e_id = batch_frexp(_along_channel_axis(identity_ratio, z.dim()))
        terms.append((identity_int, m_id, e_id))
    integers = round_dyadic_sum(terms)
    low, high = integer_range(bitwidth, unsigned=quant_mode != "symmetric")
    return torch.clamp(integers, low, high).to(z.dtype)


class fixedpoint_fn(Function):
    """`fixedpoint_requantize` with HAWQ's argument order (`case` 0: no identity, 1: identity) and a
    straight-through gradient (the integer output is about z / s_new)."""

    @staticmethod
    def forward(
        ctx,
        z,
        bitwidth,
        quant_mode,
        z_scaling_factor,
        case,
        pre_act_scaling_factor=None,
        pre_weight_scaling_factor=None,
        identity=None,
        identity_scaling_factor=None,
        identity_weight_scaling_factor=None,
    ):
        ctx.save_for_backward(z_scaling_factor.detach())
        if case == 0:
            identity = identity_scaling_factor = identity_weight_scaling_factor = None
        return fixedpoint_requantize(
            z,
            bitwidth,
            quant_mode,
            z_scaling_factor,
            pre_act_scaling_factor,
            pre_weight_scaling_factor,
            identity,
            identity_scaling_factor,
            identity_weight_scaling_factor,
        )

    @staticmethod
    def backward(ctx, grad_output):
        (scale,) = ctx.saved_tensors
        grad = grad_output / _along_channel_axis(scale, grad_output.dim()).to(grad_output.dtype)
        return (grad,) + (None,) * 9
