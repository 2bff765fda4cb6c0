"""Hardware mode of the executor: exact fixed-point arithmetic with the inferred types.

The casts and hls4ml's average are checked against the real thing: a small C++ program built with
the ap_fixed / ac_fixed headers hls4ml ships (compiled once, cached by content hash). Whole graphs
are checked against semantic mode, which they must equal bit for bit when every scale is a power of
two, and against their own types ("never narrower"): extreme inputs never produce a value outside
its type.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import hls4ml
import numpy as np
import pytest
from conftest import JET_TAGGER
from hypothesis import HealthCheck, event, given, settings
from integer_cnn_strategies import IntegerGraph, integer_graphs

from hawqc.backends.csim import cache_dir
from hawqc.errors import UnsupportedModelError
from hawqc.frontends.onnx import load_onnx
from hawqc.ir.io import parse_text
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import ROUNDING_MODES, FixedType
from hawqc.sim import Executor, hardware
from hawqc.sim.hardware import cast, divide_truncating
from hawqc.sim.inputs import draw_inputs
from hawqc.sim.quant import int_quant, quant_bounds, rounding_function

TEMPLATES = Path(hls4ml.__file__).parent / "templates"
SATURATIONS = ("WRAP", "SAT", "SAT_ZERO", "SAT_SYM")
# Every value from -6 to 6 in steps of a quarter LSB of ap_fixed<5,2> (LSB 1/8): ties and overflows.
CAST_INPUTS = np.arange(-6 * 32, 6 * 32 + 1) / 32.0
# Windows of hls4ml's average: (sizes, inputs as codes of ap_fixed<8,4>).
AVERAGE_SIZES = (2, 3, 4, 5, 6, 9)


def _average_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.integers(-128, 128, size=n) for n in AVERAGE_SIZES for _ in range(40)]


def _ground_truth_source() -> str:
    lines = [
        '#include "ap_fixed.h"',
        '#include "ac_fixed.h"',
        '#include "nnet_pooling.h"',
        "#include <cstdio>",
        f"static const double inputs[] = {{{', '.join(repr(float(v)) for v in CAST_INPUTS)}}};",
        "template <class T> void cast_all(const char *name) {",
        "    for (double x : inputs) { T y = x; printf(\"%s %.17g\\n\", name, y.to_double()); }",
        "}",
        "int main() {",
    ]
    for rounding, saturation, signed in itertools.product(sorted(ROUNDING_MODES), SATURATIONS, (True, False)):
        ap = f"ap_{'' if signed else 'u'}fixed<5, 2, AP_{rounding}, AP_{saturation}>"
        ac = f"ac_fixed<5, 2, {str(signed).lower()}, AC_{rounding}, AC_{saturation}>"
        label = f"{rounding}/{saturation}/{int(signed)}"
        lines += [f'    cast_all<{ap} >("ap/{label}");', f'    cast_all<{ac} >("ac/{label}");']
    for index, codes in enumerate(_average_cases()):
        n = len(codes)
        values = ", ".join(str(int(c) / 16) for c in codes)
        lines += [
            f"    {{ ap_fixed<8, 4> x{index}[{n}] = {{{values}}};",
            f"      ap_fixed<16, 12> r = nnet::pool_op<ap_fixed<8, 4>, {n}, nnet::Average, ap_fixed<16, 12> >(x{index});",
            f'      printf("avg {index} %.17g\\n", r.to_double()); }}',
        ]
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def ground_truth() -> dict[str, list[float]]:
    """name -> printed values of the C++ program (built once per source and compiler)."""
    source = _ground_truth_source()
    compiler = subprocess.run(["g++", "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256((source + compiler).encode()).hexdigest()[:24]
    binary = cache_dir() / f"ground-truth-fixed-{key}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "truth.cpp"
            src.write_text(source)
            out = Path(tmp) / "truth"
            subprocess.run(
                ["g++", "-std=c++14", "-O0", f"-I{TEMPLATES / 'vivado' / 'ap_types'}",
                 f"-I{TEMPLATES / 'catapult' / 'ac_types' / 'include'}", f"-I{TEMPLATES / 'vivado' / 'nnet_utils'}",
                 str(src), "-o", str(out)],
                check=True, capture_output=True,
            )  # fmt: skip
            os.replace(out, binary)
    printed: dict[str, list[float]] = {}
    for line in subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout.splitlines():
        name, value = line.rsplit(" ", 1)
        printed.setdefault(name, []).append(float(value))
    return printed


@pytest.mark.parametrize("rounding", sorted(ROUNDING_MODES))
def test_cast_is_ap_fixed_and_ac_fixed_assignment(rounding, ground_truth):
    for saturation, signed in itertools.product(SATURATIONS, (True, False)):
        fixed = FixedType(5, 2, signed, rounding, saturation)
        ours = cast(CAST_INPUTS, fixed)
        label = f"{rounding}/{saturation}/{int(signed)}"
        np.testing.assert_array_equal(ours, ground_truth[f"ap/{label}"], err_msg=f"ap_fixed {label}")
        np.testing.assert_array_equal(ours, ground_truth[f"ac/{label}"], err_msg=f"ac_fixed {label}")
        assert not np.any(np.signbit(ours) & (ours == 0)), "fixed point has no negative zero"


def test_average_truncates_toward_zero_like_hls4ml(ground_truth):
    """hls4ml's avg divides the sum in the accumulator type: an integer division of the codes."""
    cases = _average_cases()
    ours = [
        float(divide_truncating(np.array([float(codes.sum()) / 16]), np.array([len(codes)]), -4)[0]) for codes in cases
    ]
    assert ours == [ground_truth[f"avg {i}"][0] for i in range(len(cases))]
    # Truncation, not rounding: some quotients are negative and inexact.
    assert any(q < 0 and q != float(c.sum()) / 16 / len(c) for q, c in zip(ours, cases))


@pytest.mark.parametrize("mode", ["ROUND", "HALF_EVEN", "FLOOR", "DOWN", "HALF_UP", "HALF_DOWN"])
@pytest.mark.parametrize(("bits", "signed", "narrow"), [(4, True, False), (5, True, True), (3, False, False)])
def test_cast_into_a_quant_type_is_the_quant(mode, bits, signed, narrow):
    """A Quant's FixedType performs the Quant: the cast equals QONNX's float32 Quant."""
    scale = np.float32(0.25)
    fixed = FixedType.from_quant(bits, float(scale), signed, narrow, mode)
    x = (np.arange(-400, 401) / 64).astype(np.float32)
    bounds = quant_bounds(np.float32(bits), int(signed), int(narrow))
    qonnx = int_quant(x, scale, np.float32(0), bounds, rounding_function(mode))
    np.testing.assert_array_equal(cast(x.astype(np.float64), fixed), qonnx.astype(np.float64) + 0.0)


# ---------------------------------------------------------------------------------------------------
# Whole graphs
# ---------------------------------------------------------------------------------------------------

QUANT = "qonnx.custom_op.general.Quant"
HEADER = '<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1, "qonnx.custom_op.channels_last" : 1]>'


def quant(signed: int = 1, mode: str = "ROUND", narrow: int = 0) -> str:
    return f'{QUANT} <signed: int = {signed}, narrow: int = {narrow}, rounding_mode: string = "{mode}">'


def _floats(array: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in np.asarray(array, dtype=np.float32).reshape(-1))


def test_jet_tagger_hardware_equals_semantic_on_2000_inputs():
    model = load_onnx(JET_TAGGER)
    inputs = draw_inputs(model, 2000, seed=3)
    semantic = Executor(model).run(inputs)
    hardware = Executor(model, mode="hardware").run(inputs)
    for name, value in semantic.items():
        assert hardware[name].dtype == np.float64
        np.testing.assert_array_equal(hardware[name], value.astype(np.float64))


def _wide_dot_product(input_bits: int):
    """`input_bits`-bit input codes (LSB 2^-30) times two 24-bit weights (exact in float32). The input
    is double, so that hardware mode sees codes with more significant bits than float32 holds."""
    return parse_text(f"""{HEADER}
g (double[1,2] x) => (float[1,1] y)
   <float s = {{0.0000000009313225746154785}}, float z = {{0}}, float b = {{{input_bits}}}, float[2,1] w = {{16777215, -16777215}}>
{{
   xq = {quant()} (x, s, z, b)
   y = MatMul (xq, w)
}}""")


@pytest.mark.skipif(hardware.LONGDOUBLE_EXACT_BITS < 55, reason="numpy's longdouble is float64 on this platform")
def test_hardware_mode_computes_types_wider_than_float64_exactly_in_longdouble():
    # 30-bit input codes: the dot product needs 55 bits. These codes make it odd and above 2**53,
    # where float64 would round it.
    a, b = 2**29 - 1, -(2**29 - 2)
    executor = Executor(_wide_dot_product(30), mode="hardware")
    assert executor.precision.types["y"].width == 55
    y = executor.run(np.ldexp(np.array([[a, b]], dtype=np.float64), -30))["y"]
    assert y.dtype == np.longdouble  # wider than float64 holds: the output stays longdouble
    exact = a * 16777215 + b * -16777215
    assert exact > 2**53 and exact % 2 == 1
    assert int(np.ldexp(y[0, 0], 30)) == exact


def test_hardware_mode_refuses_types_wider_than_it_computes_exactly():
    bits = hardware.LONGDOUBLE_EXACT_BITS - 24  # the dot product then needs 2 bits more than exact
    with pytest.raises(UnsupportedModelError, match=r"value 'y' has type fixed<.*exactly only up to"):
        Executor(_wide_dot_product(bits), mode="hardware")


def test_op_without_a_rule_is_refused_by_name():
    text = f"""{HEADER}
g (float[1,2] x) => (float[1,2] y)
   <float s = {{0.25}}, float z = {{0}}, float b = {{8}}>
{{
   xq = {quant()} (x, s, z, b)
   y = Sigmoid (xq)
}}"""
    with pytest.raises(UnsupportedModelError, match=r"unnamed node \(Sigmoid\)"):
        Executor(parse_text(text), mode="hardware")


def test_keep_intermediates_returns_every_value_in_float64():
    model = load_onnx(JET_TAGGER)
    executor = Executor(model, mode="hardware")
    inputs = draw_inputs(model, 5, seed=0)
    values = executor.run(inputs, keep_intermediates=True)
    produced = {v.name for node in model.graph for v in node.outputs if v.name not in executor.precision.constants}
    assert produced <= set(values)
    assert all(v.dtype == np.float64 for v in values.values())
    assert set(executor.run(inputs)) == set(executor.output_names)


def _fixed_range(fixed: FixedType) -> tuple[Fraction, Fraction]:
    return fixed.min_value, fixed.max_value


def assert_inside_types(model, values: dict[str, np.ndarray]) -> None:
    """Every value lies in its interval and its type, and on the type's grid."""
    precision = infer_types(model)
    for name, array in values.items():
        if name not in precision.types:
            continue
        fixed = precision.types[name]
        lo, hi = precision.intervals[name]
        low, high = Fraction(float(array.min())), Fraction(float(array.max()))
        assert lo <= low and high <= hi, f"{name}: [{low}, {high}] outside its interval [{lo}, {hi}]"
        type_lo, type_hi = _fixed_range(fixed)
        assert type_lo <= low and high <= type_hi, f"{name}: outside {fixed}"
        codes = np.ldexp(array, -fixed.lsb_exponent)
        assert np.array_equal(codes, np.round(codes)), f"{name}: not on the grid of {fixed}"


# ---------------------------------------------------------------------------------------------------
# Random integer-only graphs
# ---------------------------------------------------------------------------------------------------


def _random_inputs(graph: IntegerGraph, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(graph.input_low, graph.input_high, size=(count, *graph.input_shape)).astype(np.float32)


@settings(max_examples=int(os.environ.get("HAWQC_HARDWARE_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(integer_graphs())
def test_types_are_never_narrower_than_the_values_extreme_inputs_produce(graph: IntegerGraph):
    """All-min, all-max, alternating and per-output worst-case inputs (plus random ones) never
    produce a value outside its interval or its type; the first layer's extremes are attained."""
    model = graph.load()
    executor = Executor(model, mode="hardware")
    extremes = graph.extreme_inputs()
    values = executor.run(np.concatenate([extremes, _random_inputs(graph, 64, 0)]), keep_intermediates=True)
    assert_inside_types(model, values)
    event_features(graph)
    # The worst cases drive each output of the first layer to its bound, so its interval is tight
    # (where no window reads padding, whose zeros make the rule's hull wider than any one window).
    if not any(graph.first_attributes.get("pads", [0])):
        first = executor.run(extremes, keep_intermediates=True)[graph.first_output]
        lo, hi = executor.precision.intervals[graph.first_output]
        assert (Fraction(float(first.min())), Fraction(float(first.max()))) == (lo, hi)


def event_features(graph: IntegerGraph) -> None:
    for feature in sorted(graph.features):
        event(feature)


@settings(max_examples=int(os.environ.get("HAWQC_HARDWARE_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(integer_graphs())
def test_hardware_equals_semantic_on_integer_only_graphs(graph: IntegerGraph):
    """Power-of-two scales, dyadic constants, quantized biases: float32 computes every value exactly,
    so the fixed-point arithmetic gives the QONNX result bit for bit, every value of the graph; and
    precision inference declares nothing inexact."""
    model = graph.load()
    hardware = Executor(model, mode="hardware")
    assert not hardware.precision.inexact and not hardware.precision.float_inexact
    x = np.concatenate([graph.extreme_inputs(), _random_inputs(graph, 64, 1)])
    expected = Executor(model).run(x, keep_intermediates=True)
    got = hardware.run(x, keep_intermediates=True)
    event_features(graph)
    for name, value in expected.items():
        # == on float64, so the sign of a zero is not compared: fixed point has only +0.
        np.testing.assert_array_equal(got[name], value.astype(np.float64), err_msg=name)


def test_float_rescale_differs_only_where_and_as_the_inexact_record_says():
    """acc -> Mul(0.1) -> Quant: 0.1 in float32 has 24 significant bits, so float32 rounds the product
    (semantic mode) where hardware keeps it exact. Precision inference records exactly that value;
    everything before it is equal, at it semantic mode is float32(hardware), and the output Quant
    differs only where that rounding moved the product across a rounding boundary: by one LSB."""
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(16, 4)) / 128
    text = f"""{HEADER}
g (float[1,16] x) => (float[1,4] y)
   <float[16,4] w = {{{_floats(w)}}}, float s = {{0.0625}}, float so = {{0.125}}, float z = {{0}}, float b8 = {{8}},
    float k = {{0.1}}>
{{
   xq = {quant()} (x, s, z, b8)
   acc = MatMul (xq, w)
   m = Mul (acc, k)
   y = {quant()} (m, so, z, b8)
}}"""
    model = parse_text(text)
    hardware = Executor(model, mode="hardware")
    assert set(hardware.precision.inexact) == {"m"} and "float32 rounds" in hardware.precision.inexact["m"]
    x = rng.uniform(-8, 8, size=(4000, 16)).astype(np.float32)
    semantic = Executor(model).run(x, keep_intermediates=True)
    exact = hardware.run(x, keep_intermediates=True)
    for name in ("xq", "acc"):
        np.testing.assert_array_equal(exact[name], semantic[name].astype(np.float64))
    np.testing.assert_array_equal(exact["m"].astype(np.float32), semantic["m"])
    assert np.any(exact["m"] != semantic["m"])
    # The output: the Quant of each side's own product; different on a few samples, by one LSB.
    fixed = hardware.precision.types["y"]
    np.testing.assert_array_equal(cast(semantic["m"].astype(np.float64), fixed), semantic["y"].astype(np.float64))
    differs = exact["y"] != semantic["y"]
    assert 0 < differs.sum() < 50
    assert np.max(np.abs(exact["y"] - semantic["y"])) == 0.125


def test_values_far_outside_every_type_saturate():
    fixed = FixedType(5, 2, True, "RND", "SAT")
    x = np.array([2.0**52 + 1, -(2.0**53), 1e300, -np.inf, np.inf])
    np.testing.assert_array_equal(cast(x, fixed), [1.875, -2, 1.875, -2, 1.875])


def test_data_movement_keeps_exact_float64_values():
    """Resize, Pad, Transpose, Reshape, Squeeze/Unsqueeze, Concat and Identity move hardware mode's
    float64 values without rounding them: here products of 24-bit codes, which float32 would round."""
    k = np.float32(0.1)
    text = f"""{HEADER}
g (float[1,2,2,1] x) => (float[1,32] y)
   <float s = {{0.0625}}, float z = {{0}}, float b8 = {{8}}, float k = {{{float(k)!r}}}, float[4] scales = {{1, 2, 1, 1}},
    int64[8] pads = {{0, 0, 1, 0, 0, 0, 1, 0}}, float fill = {{0.75}}, int64[1] axis = {{0}}, int64[2] shape = {{1, 32}}>
{{
   xq = {quant()} (x, s, z, b8)
   m = Mul (xq, k)
   r = Resize <mode: string = "nearest"> (m, , scales)
   p = Pad (r, pads, fill)
   c = Concat <axis: int = -1> (p, p)
   t = Transpose <perm: ints = [0, 2, 1, 3]> (c)
   q = Unsqueeze (t, axis)
   u = Squeeze (q, axis)
   i = Identity (u)
   y = Reshape (i, shape)
}}"""
    model = parse_text(text)
    x = np.array([1.0, -2.5, 3.0625, -8.0], dtype=np.float32).reshape(1, 2, 2, 1)
    hardware = Executor(model, mode="hardware").run(x, keep_intermediates=True)
    semantic = Executor(model).run(x, keep_intermediates=True)
    exact = x.astype(np.float64) * np.float64(k)
    assert set(hardware["y"].reshape(-1)) == {0.75, *exact.reshape(-1)}
    assert all(value.dtype == np.float64 for value in hardware.values())
    # The same data movement in both modes; only the product's rounding differs.
    np.testing.assert_array_equal(hardware["y"].astype(np.float32), semantic["y"])


def test_large_batches_run_in_chunks_with_the_same_results(monkeypatch):
    import hawqc.sim.executor as executor_module

    model = load_onnx(JET_TAGGER)
    inputs = draw_inputs(model, 300, seed=5)
    for mode in ("semantic", "hardware"):
        whole = Executor(model, mode=mode).run(inputs, keep_intermediates=True)
        monkeypatch.setattr(executor_module, "CHUNK_BYTES", 1000)  # a few samples per chunk
        executor = Executor(model, mode=mode)
        chunk = executor_module.CHUNK_BYTES // executor._sample_bytes
        assert 1 <= chunk < 300
        chunked = executor.run(inputs, keep_intermediates=True)
        monkeypatch.undo()
        assert set(chunked) == set(whole)
        for name, value in whole.items():
            np.testing.assert_array_equal(chunked[name], value, err_msg=f"{mode} {name}")
