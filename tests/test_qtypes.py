"""FixedType: what a type holds, how it is built from a Quant or an interval, how it is spelled."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hawqc.errors import UnsupportedModelError
from hawqc.ir.qtypes import QONNX_TO_HLS_ROUNDING, FixedType, power_of_two_exponent


def test_power_of_two_exponent() -> None:
    assert power_of_two_exponent(1.0) == 0
    assert power_of_two_exponent(0.125) == -3
    assert power_of_two_exponent(2.0**-40) == -40
    assert power_of_two_exponent(1024) == 10
    for value in (0.0, -0.5, 0.3, 3.0, float("inf"), float("nan")):
        assert power_of_two_exponent(value) is None


@pytest.mark.parametrize(
    ("bits", "exp", "signed", "narrow", "expected", "lo", "hi"),
    [
        (8, -4, True, False, FixedType(8, 4, True, "RND_CONV", "SAT"), Fraction(-8), Fraction(127, 16)),
        (6, -5, True, True, FixedType(6, 1, True, "RND_CONV", "SAT_SYM"), Fraction(-31, 32), Fraction(31, 32)),
        (8, -3, False, False, FixedType(8, 5, False, "RND_CONV", "SAT"), Fraction(0), Fraction(255, 8)),
        (4, 2, True, False, FixedType(4, 6, True, "RND_CONV", "SAT"), Fraction(-32), Fraction(28)),
        (1, 0, False, False, FixedType(1, 1, False, "RND_CONV", "SAT"), Fraction(0), Fraction(1)),
    ],
)
def test_from_quant_holds_exactly_the_quant_range(bits, exp, signed, narrow, expected, lo, hi) -> None:
    fixed = FixedType.from_quant(bits, 2.0**exp, signed, narrow, "ROUND")
    assert fixed == expected
    assert (fixed.min_value, fixed.max_value) == (lo, hi)
    assert fixed.lsb_exponent == exp


def test_rounding_modes_follow_qonnx_definitions() -> None:
    # qonnx: HALF_UP = sign(x)*floor(|x|+0.5) (ties away from zero) = AP_RND_INF;
    # HALF_DOWN = sign(x)*ceil(|x|-0.5) (ties toward zero) = AP_RND_ZERO; DOWN = np.fix = AP_TRN_ZERO.
    assert QONNX_TO_HLS_ROUNDING == {
        "ROUND": "RND_CONV",
        "HALF_EVEN": "RND_CONV",
        "FLOOR": "TRN",
        "DOWN": "TRN_ZERO",
        "HALF_UP": "RND_INF",
        "HALF_DOWN": "RND_ZERO",
    }
    assert FixedType.from_quant(8, 0.5, True, False, "half_up").rounding == "RND_INF"


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"rounding_mode": "CEIL"}, "CEIL has no ap_fixed"),
        ({"rounding_mode": "UP"}, "UP has no ap_fixed"),
        ({"rounding_mode": "STOCHASTIC"}, "unknown rounding mode"),
        ({"scale": 0.3}, "not a power of two"),
        ({"scale": -0.5}, "not a power of two"),
        ({"signed": False, "narrow": True}, "unsigned narrow"),
        ({"bitwidth": 1}, "1-bit signed"),
        ({"bitwidth": 2.5}, "not a positive integer"),
    ],
)
def test_from_quant_refuses_what_it_cannot_express(kwargs, reason) -> None:
    args = {"bitwidth": 8, "scale": 0.25, "signed": True, "narrow": False, "rounding_mode": "ROUND"} | kwargs
    with pytest.raises(UnsupportedModelError, match="node 'q7' \\(Quant\\)"):
        FixedType.from_quant(**args, where="node 'q7' (Quant)")
    with pytest.raises(UnsupportedModelError, match=reason.split()[0]):
        FixedType.from_quant(**args)


@pytest.mark.parametrize(
    ("lo", "hi", "exp", "expected"),
    [
        (0, 0, -3, FixedType(1, -2, False)),
        (0, 1, 0, FixedType(1, 1, False)),
        (-1, 0, 0, FixedType(1, 1, True)),
        (-128, 127, 0, FixedType(8, 8, True)),
        (-129, 127, 0, FixedType(9, 9, True)),
        (-128, 128, 0, FixedType(9, 9, True)),
        (0, 255, 0, FixedType(8, 8, False)),
        (0, 256, 0, FixedType(9, 9, False)),
        (Fraction(-5463, 64), Fraction(43761, 512), -9, FixedType(17, 8, True)),
        (Fraction(1, 4), Fraction(3, 4), -2, FixedType(2, 0, False)),
    ],
)
def test_covering_is_the_narrowest_type(lo, hi, exp, expected) -> None:
    fixed = FixedType.covering(lo, hi, exp)
    assert fixed == expected
    assert fixed.holds(Fraction(lo), Fraction(hi))


@given(
    st.integers(-(2**40), 2**40),
    st.integers(0, 2**40),
    st.integers(-30, 30),
)
def test_covering_holds_and_one_bit_less_does_not(lo: int, span: int, exp: int) -> None:
    step = Fraction(2) ** exp
    lo_v, hi_v = lo * step, (lo + span) * step
    fixed = FixedType.covering(lo_v, hi_v, exp)
    assert fixed.holds(lo_v, hi_v)
    assert fixed.lsb_exponent == exp
    assert fixed.signed == (lo < 0)
    if fixed.width > 1:
        narrower = FixedType(fixed.width - 1, fixed.integer - 1, fixed.signed)
        assert not narrower.holds(lo_v, hi_v)


def test_covering_rejects_values_off_the_grid() -> None:
    with pytest.raises(ValueError, match="grid"):
        FixedType.covering(Fraction(1, 8), Fraction(1), -2)


def test_union_of_per_channel_types() -> None:
    a = FixedType.from_quant(6, 2.0**-4, True, True)
    b = FixedType.from_quant(6, 2.0**-7, True, True)
    u = a.union(b)
    assert u.lsb_exponent == -7
    assert u.holds(a.min_value, a.max_value) and u.holds(b.min_value, b.max_value)
    assert u == FixedType(9, 2, True, "RND_CONV", "SAT_SYM")


def test_spellings() -> None:
    q = FixedType(8, 4, True, "RND_CONV", "SAT")
    plain = FixedType(17, 8, True)
    unsigned = FixedType(8, 5, False, "RND_INF", "SAT_SYM")
    assert str(q) == "fixed<8,4,RND_CONV,SAT>"
    assert str(unsigned) == "ufixed<8,5,RND_INF,SAT_SYM>"
    assert q.ap_cpp() == "ap_fixed<8,4,AP_RND_CONV,AP_SAT,0>"
    assert plain.ap_cpp() == "ap_fixed<17,8>"
    assert unsigned.ap_cpp() == "ap_ufixed<8,5,AP_RND_INF,AP_SAT_SYM,0>"
    assert q.ac_cpp() == "ac_fixed<8,4,true,AC_RND_CONV,AC_SAT>"
    assert plain.ac_cpp() == "ac_fixed<17,8,true>"
    assert unsigned.ac_cpp() == "ac_fixed<8,5,false,AC_RND_INF,AC_SAT_SYM>"


@pytest.mark.parametrize("rounding", sorted(set(QONNX_TO_HLS_ROUNDING.values())))
@pytest.mark.parametrize("saturation", ["WRAP", "SAT", "SAT_SYM"])
def test_hls4ml_translates_every_mode_for_every_backend(rounding: str, saturation: str) -> None:
    """hls4ml parses hawqc's precision string to the same type, and writes it as hawqc spells it."""
    from hls4ml.backends import get_backend
    from hls4ml.backends.fpga.fpga_types import ACTypeConverter, APTypeConverter

    fixed = FixedType(12, 3, True, rounding, saturation)
    expected = {
        "Vivado": (APTypeConverter(), fixed.ap_cpp()),
        "Vitis": (APTypeConverter(), fixed.ap_cpp()),
        "Catapult": (ACTypeConverter(), fixed.ac_cpp()),
    }
    for name, (converter, spelling) in expected.items():
        parsed = get_backend(name).convert_precision_string(fixed.hls4ml_string())
        assert parsed == fixed.to_hls4ml()
        assert converter.convert(parsed).definition_cpp().replace(" ", "") == spelling


def test_invalid_modes_are_rejected() -> None:
    with pytest.raises(ValueError, match="rounding"):
        FixedType(8, 4, True, rounding="CEIL")
    with pytest.raises(ValueError, match="saturation"):
        FixedType(8, 4, True, saturation="CLAMP")
    with pytest.raises(ValueError, match="width"):
        FixedType(0, 0, True)
