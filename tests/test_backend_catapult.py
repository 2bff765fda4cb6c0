"""The catapult backend: the quantized MLP's C simulation equals the QONNX reference bit for bit."""

from __future__ import annotations

from test_backend_models import ROUNDING_SPEC, lower_compile_compare

from hawqc.backends.csim import compile_csim


def test_mlp_is_bit_exact(tmp_path) -> None:
    """16-64-32-32-5: 8-bit input, 6-bit narrow weights (one layer per channel), 16-bit biases,
    8-bit unsigned activations; 1000 inputs on and off the grid, ties, extremes."""
    project, csim = lower_compile_compare("catapult", tmp_path / "prj")
    assert project.backend == "catapult"
    assert [layer.op for layer in project.layers] == ["Input"] + ["Dense", "Activation(relu)"] * 3 + ["Dense"]
    assert project.input_shape == (16,) and project.output_shape == (5,)
    # The library is cached by content: compiling again reuses it.
    again = compile_csim(project)
    assert again.compile_stats.cached and again.library == csim.library


def test_every_rounding_mode_is_bit_exact(tmp_path) -> None:
    """The same quantizers through ac_fixed (AC_RND_INF, AC_TRN_ZERO, AC_RND_ZERO, AC_TRN, AC_SAT_SYM)."""
    lower_compile_compare("catapult", tmp_path / "prj", ROUNDING_SPEC)


def test_no_tarball_is_left_next_to_the_project(tmp_path) -> None:
    from test_backend_models import build_mlp, to_ir

    from hawqc.backends.base import get_backend

    get_backend("catapult").lower(to_ir(build_mlp()), tmp_path / "prj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prj"]
