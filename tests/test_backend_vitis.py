"""The vitis backend: the quantized MLP's C simulation equals the QONNX reference bit for bit."""

from __future__ import annotations

from test_backend_models import ROUNDING_SPEC, lower_compile_compare

from hawqc.backends.csim import compile_csim


def test_mlp_is_bit_exact(tmp_path) -> None:
    """16-64-32-32-5: 8-bit input, 6-bit narrow weights (one layer per channel), 16-bit biases,
    8-bit unsigned activations; 1000 inputs on and off the grid, ties, extremes."""
    project, csim = lower_compile_compare("vitis", tmp_path / "prj")
    assert project.backend == "vitis"
    assert [layer.op for layer in project.layers] == ["Input"] + ["Dense", "Activation(relu)"] * 3 + ["Dense"]
    assert project.input_shape == (16,) and project.output_shape == (5,)
    # The library is cached by content: compiling again reuses it.
    again = compile_csim(project)
    assert again.compile_stats.cached and again.library == csim.library


def test_io_stream_is_bit_exact(tmp_path) -> None:
    """io_stream packs values into nnet::array streams; the arithmetic and types stay hawqc's."""
    project, _ = lower_compile_compare("vitis", tmp_path / "prj", ROUNDING_SPEC, io_type="io_stream")
    assert project.io_type == "io_stream"
