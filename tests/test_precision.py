"""Precision inference: exact intervals and the narrowest types that hold them."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_backend_models import Act, MlpSpec, build_mlp, numpy_reference, to_ir

from hawqc.errors import UnsupportedModelError
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import FixedType

QONNX = "qonnx.custom_op.general"


def _graph(nodes, inits: dict[str, np.ndarray], n_in: int, out: str, n_out: int) -> ir.Model:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n_out])],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])
    proto.ir_version = 8
    return to_ir(proto)


def _quant(x: str, out: str, scale: str, bw: str, signed: int = 1, narrow: int = 0, mode: str = "ROUND", name=None):
    return helper.make_node(
        "Quant", [x, scale, "zp", bw], [out], name=name or out, domain=QONNX,
        signed=signed, narrow=narrow, rounding_mode=mode,
    )


def _tiny_layer(weights: np.ndarray, bias: np.ndarray | None, relu: bool = False) -> ir.Model:
    """x -> Quant(3-bit signed, LSB 1/2) -> MatMul(Quant(W, 4-bit narrow, LSB 1/4)) [+ b] [-> Relu]."""
    n_in, n_out = weights.shape
    inits = {"zp": 0.0, "s_x": 0.5, "bw_x": 3, "W": weights, "s_w": 0.25, "bw_w": 4}
    nodes = [
        _quant("x", "xq", "s_x", "bw_x"),
        _quant("W", "Wq", "s_w", "bw_w", narrow=1),
        helper.make_node("MatMul", ["xq", "Wq"], ["acc"], name="mm"),
    ]
    out = "acc"
    if bias is not None:
        inits |= {"b": bias, "s_b": 0.125, "bw_b": 8}
        nodes += [_quant("b", "bq", "s_b", "bw_b"), helper.make_node("Add", ["acc", "bq"], ["biased"], name="add")]
        out = "biased"
    if relu:
        nodes.append(helper.make_node("Relu", [out], ["r"], name="relu"))
        out = "r"
    return _graph(nodes, inits, n_in, out, n_out)


def _all_grid_inputs(n_in: int) -> np.ndarray:
    codes = np.array(list(itertools.product(range(-4, 4), repeat=n_in)), dtype=np.float32)
    return codes * np.float32(0.5)


def test_dot_product_interval_is_exact_and_attained() -> None:
    """Brute force over every input code: the interval per column is the true min and max."""
    w = np.array([[1.75, -0.5], [-1.0, 0.0], [0.25, 1.5]])
    b = np.array([0.375, -2.0])
    model = _tiny_layer(w, b)
    result = infer_types(model)
    x = _all_grid_inputs(3)
    exact = (x @ w.astype(np.float32) + b.astype(np.float32)).astype(np.float64)
    lo, hi = result.intervals["biased"]
    assert (lo, hi) == (Fraction(float(exact.min())), Fraction(float(exact.max())))
    for column in range(2):
        # Per column too: [-5.125, 5.375] and [-5.75, 1.25].
        assert result.accumulators["biased"].holds(Fraction(float(exact[:, column].min())), Fraction(float(exact[:, column].max())))
    assert (lo, hi) == (Fraction(-23, 4), Fraction(43, 8))
    t = result.types["biased"]
    # LSB = LSB(x) * LSB(W) = 1/8, which is also the bias LSB; codes [-46, 43] need 7 signed bits.
    assert t == FixedType.covering(lo, hi, -3) == FixedType(7, 4, True)
    # One bit less would not hold the attained extremes.
    assert not FixedType(6, 3, True).holds(lo, hi)


def test_relu_clamps_the_low_end_and_drops_the_sign_bit() -> None:
    model = _tiny_layer(np.array([[1.75], [-1.0]]), None, relu=True)
    result = infer_types(model)
    lo, hi = result.intervals["acc"]
    assert lo < 0 < hi
    assert result.intervals["r"] == (Fraction(0), hi)
    assert not result.types["r"].signed
    assert result.types["r"].width == result.types["acc"].width - 1


def test_weight_and_bias_types_come_from_their_quants() -> None:
    result = infer_types(_tiny_layer(np.array([[1.75], [-1.0]]), np.array([0.375])))
    assert result.types["Wq"] == FixedType.from_quant(4, 0.25, True, True)
    assert result.types["bq"] == FixedType.from_quant(8, 0.125, True, False)
    assert result.types["xq"] == FixedType.from_quant(3, 0.5, True, False)
    # Quantized constants are evaluated with QONNX semantics: 1.75 / 0.25 = 7 is clamped to 7.
    np.testing.assert_array_equal(result.constants["Wq"], [[1.75], [-1.0]])


def test_weights_beyond_range_are_clamped_before_the_interval() -> None:
    result = infer_types(_tiny_layer(np.array([[9.0], [-9.0]]), None))
    np.testing.assert_array_equal(result.constants["Wq"], [[1.75], [-1.75]])
    # x in [-2, 1.5]: 1.75*x in [-3.5, 2.625], -1.75*x in [-2.625, 3.5].
    assert result.intervals["acc"] == (Fraction(-49, 8), Fraction(49, 8))


def test_mlp_types_hold_every_reference_value() -> None:
    """On 1000 inputs, every intermediate value of the reference lies in its inferred interval, and
    every interval is attained within a small margin by some input (types are not grossly wide)."""
    spec = MlpSpec()
    proto = build_mlp(spec)
    result = infer_types(to_ir(proto))
    from test_backend_models import draw_inputs

    x = draw_inputs(1000, 16, 8, -4)
    env = numpy_reference(proto, x, keep_all=True)
    for name, (lo, hi) in result.intervals.items():
        if name in result.constants:
            continue
        values = env[name].astype(np.float64)
        assert Fraction(float(values.min())) >= lo and Fraction(float(values.max())) <= hi, name
        t = result.types[name]
        assert t.holds(lo, hi)
        assert not FixedType(t.width - 1, t.integer - 1, t.signed).holds(lo, hi) or t.width == 1


def test_per_channel_weight_scales_give_the_union_type() -> None:
    spec = MlpSpec(w_exps=[-5, [-4, -5, -6, -7], -5, -5])
    result = infer_types(to_ir(build_mlp(spec)))
    # 6-bit narrow codes at LSB 2**-4 .. 2**-7: the finest LSB, the largest magnitude 31/16.
    assert result.types["qw1_out"] == FixedType(9, 2, True, "RND_CONV", "SAT_SYM")
    # The accumulator LSB is LSB(activation) * finest weight LSB.
    assert result.types["mm1_out"].lsb_exponent == -3 - 7


def test_partial_sums_are_covered_when_products_exclude_zero() -> None:
    """With inputs kept away from zero the final interval is narrower than some partial sums;
    the accumulator must hold those too."""
    n_in = 4
    inits = {"zp": 0.0, "s_x": 1.0, "bw_x": 3, "off": np.full(n_in, 8.0), "W": np.array([[3.0], [3.0], [-3.0], [-3.0]]), "s_w": 1.0, "bw_w": 3}
    nodes = [
        _quant("x", "xq", "s_x", "bw_x", signed=0),  # [0, 7]
        helper.make_node("Add", ["xq", "off"], ["shifted"], name="shift"),  # [8, 15]: excludes 0
        _quant("W", "Wq", "s_w", "bw_w"),
        helper.make_node("MatMul", ["shifted", "Wq"], ["acc"], name="mm"),
    ]
    result = infer_types(_graph(nodes, inits, n_in, "acc", 1))
    lo, hi = result.intervals["acc"]
    assert (lo, hi) == (Fraction(3 * 16 - 3 * 30), Fraction(3 * 30 - 3 * 16))  # [-42, 42]
    acc = result.accumulators["acc"]
    # After the two positive products a partial sum reaches 90 (and -90 in the other order).
    assert acc.holds(Fraction(-90), Fraction(90))
    assert not result.types["acc"].holds(Fraction(-90), Fraction(90))


def test_accumulator_of_a_biased_dot_product_includes_the_bias() -> None:
    w = np.array([[1.75, -0.5], [-1.0, 0.0], [0.25, 1.5]])
    result = infer_types(_tiny_layer(w, np.array([15.875, -16.0])))
    acc = result.accumulators["biased"]
    lo, hi = result.intervals["biased"]
    assert acc.holds(lo, hi)
    assert acc.holds(Fraction(-16), Fraction(15875, 1000))


def test_wide_accumulators_are_flagged_as_inexact_in_float32() -> None:
    spec = MlpSpec(sizes=(16, 4), in_bits=16, w_bits=16, b_bits=24, w_exps=[-12], bias=[True], relu=[False], acts=[None])
    result = infer_types(to_ir(build_mlp(spec)))
    assert "y" in result.float_inexact
    assert not infer_types(to_ir(build_mlp())).float_inexact


def _single_quant_model(**overrides) -> ir.Model:
    attrs = {"signed": 1, "narrow": 0, "mode": "ROUND"} | {k: v for k, v in overrides.items() if k in ("signed", "narrow", "mode")}
    inits = {"zp": overrides.get("zp", 0.0), "s": overrides.get("scale", 0.25), "bw": overrides.get("bits", 8)}
    node = _quant("x", "y", "s", "bw", attrs["signed"], attrs["narrow"], attrs["mode"], name="the_quant")
    return _graph([node], inits, 4, "y", 4)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"scale": 0.3}, "not a power of two"),
        ({"zp": 1.0}, "zero point"),
        ({"mode": "CEIL"}, "CEIL"),
        ({"mode": "UP"}, "UP"),
        ({"signed": 0, "narrow": 1}, "unsigned narrow"),
        ({"bits": 1, "zp": 1.0}, "1-bit signed Quant with a non-zero zero point"),
        ({"bits": 1, "scale": -0.3}, "is not positive"),
    ],
)
def test_unsupported_quant_names_the_node(overrides, reason) -> None:
    with pytest.raises(UnsupportedModelError, match=rf"'the_quant' \(qonnx\.custom_op\.general\.Quant\).*{reason}"):
        infer_types(_single_quant_model(**overrides))


def test_unsupported_op_names_the_node() -> None:
    nodes = [_quant("x", "xq", "s", "bw"), helper.make_node("Sigmoid", ["xq"], ["y"], name="squash")]
    model = _graph(nodes, {"zp": 0.0, "s": 0.25, "bw": 8}, 4, "y", 4)
    with pytest.raises(UnsupportedModelError, match=r"'squash' \(Sigmoid\)"):
        infer_types(model)


def test_unquantized_graph_input_is_refused() -> None:
    nodes = [_quant("W", "Wq", "s", "bw"), helper.make_node("MatMul", ["x", "Wq"], ["y"], name="mm")]
    model = _graph(nodes, {"zp": 0.0, "s": 0.25, "bw": 8, "W": np.ones((4, 2))}, 4, "y", 2)
    with pytest.raises(UnsupportedModelError, match=r"'mm' \(MatMul\).*without a Quant"):
        infer_types(model)


def test_activation_quant_interval_is_the_quantized_input_interval() -> None:
    """Quantization is monotonic: Quant(Relu(acc)) ranges over [Q(lo), Q(hi)], not the whole type."""
    result = infer_types(_tiny_layer(np.array([[0.25], [0.25]]), None, relu=True))
    # x in [-2, 1.5], w = 0.25: acc in [-1, 0.75], relu in [0, 0.75].
    assert result.intervals["r"] == (Fraction(0), Fraction(3, 4))
    model = _tiny_layer(np.array([[0.25], [0.25]]), None, relu=True)
    inits = {"s_a": 0.5, "bw_a": 4}
    for name, value in inits.items():
        tensor = ir.tensor(np.asarray(value, dtype=np.float32), name=name)
        model.graph.register_initializer(ir.Value(name=name, const_value=tensor))
    r = next(v for n in model.graph for v in n.outputs if v.name == "r")
    quant = ir.Node(QONNX, "Quant", [r, model.graph.initializers["s_a"], model.graph.initializers["zp"],
                    model.graph.initializers["bw_a"]], [ir.AttrInt64("signed", 0), ir.AttrInt64("narrow", 0),
                    ir.AttrString("rounding_mode", "ROUND")], name="qa")
    model.graph.append(quant)
    quant.outputs[0].name = "a"
    result = infer_types(model)
    # Q(0.75) at LSB 1/2 is 1.0 (0.75/0.5 = 1.5 rounds to even 2), although the type reaches 7.5.
    assert result.intervals["a"] == (Fraction(0), Fraction(1))
    assert result.types["a"] == FixedType.from_quant(4, 0.5, False, False)


def test_rounding_of_bounds_matches_qonnx_ties() -> None:
    spec = MlpSpec(
        sizes=(16, 8, 4),
        acts=[Act(4, -1, True, False, "HALF_UP"), Act(4, -1, True, False, "HALF_DOWN")],
        relu=[False, False],
        bias=[True, True],
    )
    proto = build_mlp(spec)
    result = infer_types(to_ir(proto))
    from test_backend_models import draw_inputs

    env = numpy_reference(proto, draw_inputs(2000, 16, 8, -4), keep_all=True)
    for name, source, lsb in (("qa0_out", "add0_out", 0.5), ("y", "add1_out", 0.5)):
        ties = np.mod(env[source].astype(np.float64) / lsb, 1.0) == 0.5
        assert ties.any(), f"no ties reach {name}"
        lo, hi = result.intervals[name]
        assert Fraction(float(env[name].min())) >= lo and Fraction(float(env[name].max())) <= hi


def _double_requantization(out_bits: int) -> ir.Model:
    """16-bit codes, cast to double, times a 31-bit dyadic factor (a 47-bit product), then a Quant
    of `out_bits` (or, with 0, a Cast back to float32 instead)."""
    factor = np.float64(1323283541 * 2.0**-40)
    nodes = [
        helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain=QONNX, signed=1, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Cast", ["xq"], ["wide"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["wide", "k"], ["product"]),
    ]
    if out_bits:
        nodes.append(helper.make_node("Quant", ["product", "s1", "z", "ob"], ["y"], domain=QONNX, signed=1, narrow=0,
                                      rounding_mode="ROUND"))  # fmt: skip
    else:
        nodes.append(helper.make_node("Cast", ["product"], ["y"], to=TensorProto.FLOAT))
    inits = {"s": np.float32(1), "s1": np.float32(1), "z": np.float32(0), "b": np.float32(16), "ob": np.float32(out_bits or 8),
             "k": factor}  # fmt: skip
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX, 1)]))
    from hawqc.ir.shape_inference import infer_shapes

    infer_shapes(model)
    return model


def test_double_values_are_exact_up_to_53_bits_and_a_cast_to_float32_is_checked() -> None:
    requantized = infer_types(_double_requantization(out_bits=8))
    assert requantized.types["product"].width == 47
    assert not requantized.float_inexact and not requantized.inexact  # double holds 47 bits
    cast_back = infer_types(_double_requantization(out_bits=0))
    assert cast_back.types["y"] == cast_back.types["product"]
    assert cast_back.float_inexact == {"y"}
    assert "float32 rounds beyond 24" in cast_back.inexact["y"]


def test_a_wide_quant_of_a_constant_is_not_inexact() -> None:
    """qonnx's float32 clamp bounds of a 32-bit bias Quant only matter for data near 2**31; a
    constant is folded by the executor in both modes, so its values are what hardware uses."""
    nodes = [
        helper.make_node("Quant", ["bias", "s", "z", "b"], ["bias_q"], domain=QONNX, signed=1, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], domain=QONNX, signed=1, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Add", ["xq", "bias_q"], ["y"]),
    ]
    inits = {"bias": np.array([1000.0, -7.0], dtype=np.float32), "s": np.float32(1), "z": np.float32(0), "b": np.float32(32)}
    result = infer_types(_graph(nodes, inits, 2, "y", 2))
    assert "bias_q" not in result.inexact
    assert "xq" in result.inexact  # on data, the rounded bounds can matter
