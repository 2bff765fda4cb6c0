"""The accumulators cannot overflow: worst-case inputs reach the inferred bounds exactly, and the C
simulation still equals the reference there (a type one bit narrower would wrap)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from test_backend_models import MlpSpec, assert_bit_exact, build_mlp, reference, to_ir

from hawqc.backends.base import get_backend
from hawqc.backends.csim import compile_csim
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import FixedType

N_IN = 16
SIGNS = np.where(np.arange(N_IN) % 2 == 0, 1.0, -1.0)
# Column 0 all +max, column 1 all -max, columns 2/3 alternating: each column's extreme needs a
# different worst-case input. 6-bit narrow codes +-31 at LSB 2**-5.
WEIGHTS = np.stack([np.ones(N_IN), -np.ones(N_IN), SIGNS, -SIGNS], axis=1) * 31 / 32
# 16-bit biases at the accumulator LSB 2**-9, pushing each column further out.
BIASES = np.array([32767, -32768, 32767, -32768]) / 512
SPEC = MlpSpec(
    sizes=(N_IN, 4), w_exps=[-5], weights=[WEIGHTS], biases=[BIASES], bias=[True], relu=[False], acts=[None]
)

LO, HI = -128 / 16, 127 / 16  # the 8-bit input quantizer at LSB 2**-4
WORST_INPUTS = np.array(
    [
        np.full(N_IN, HI),
        np.full(N_IN, LO),
        np.where(SIGNS > 0, HI, LO),
        np.where(SIGNS > 0, LO, HI),
        np.full(N_IN, 1000.0),  # saturates to HI first
        np.full(N_IN, -1000.0),
    ],
    dtype=np.float32,
)


@pytest.mark.parametrize("backend", ["vivado", "catapult"])
def test_worst_case_inputs_reach_the_bounds_and_do_not_overflow(backend: str, tmp_path) -> None:
    proto = build_mlp(SPEC)
    model = to_ir(proto)
    result = infer_types(model)
    lo, hi = result.intervals["y"]
    # The alternating columns are the extremes: a negative weight meets the input's -128, a positive
    # one its +127: 8 * 31 * (127 + 128) + 32767 codes at 2**-9 on top, the mirror - 1 below.
    assert (lo, hi) == (Fraction(-96008, 512), Fraction(96007, 512))
    acc = result.accumulators["y"]
    assert acc == FixedType(18, 9, True)
    assert not FixedType(17, 8, True).holds(lo, hi)

    expected = reference(proto, WORST_INPUTS)
    assert Fraction(float(expected.max())) == hi and Fraction(float(expected.min())) == lo
    project = get_backend(backend).lower(model, tmp_path / "prj")
    simulated = compile_csim(project).predict(WORST_INPUTS)
    assert_bit_exact(expected, simulated)


def test_one_bit_narrower_accumulator_would_overflow(tmp_path) -> None:
    """The check above is sensitive: the same project with a 17-bit accumulator wraps."""
    import dataclasses
    import shutil

    proto = build_mlp(SPEC)
    project = get_backend("vivado").lower(to_ir(proto), tmp_path / "prj")
    narrow_dir = tmp_path / "narrow"
    shutil.copytree(project.outdir, narrow_dir)
    defines = narrow_dir / "firmware" / "defines.h"
    text = defines.read_text()
    assert "typedef ap_fixed<18,9> mm0_accum_t;" in text
    defines.write_text(text.replace("typedef ap_fixed<18,9> mm0_accum_t;", "typedef ap_fixed<17,8> mm0_accum_t;"))
    narrow = compile_csim(dataclasses.replace(project, outdir=narrow_dir))
    expected = reference(proto, WORST_INPUTS).astype(np.float64)
    simulated = narrow.predict(WORST_INPUTS)
    assert not np.array_equal(expected, simulated)
