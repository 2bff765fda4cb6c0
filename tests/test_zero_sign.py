"""The zero-sign analysis (`hawqc.ir.ops.zero_sign`), checked op by op with the semantic executor
and qonnx's `execute_onnx`: for every op the analysis lets a zero's sign pass (carriers) or stop
(erasers), a graph where -0.0 and +0.0 reach that op, run on both, outputs compared.

fold-quant and fuse-bn each had a list, and they disagreed (fold-quant carried through Div, Sigmoid,
Softmax, Clip and BatchNormalization, fuse-bn did not; fuse-bn erased at MultiThreshold, an Add of a
constant and a BatchNormalization, fold-quant did not). These tests check the union: every claim of
either list holds, so the one analysis keeps them all.
"""

from __future__ import annotations

import numpy as np
import pytest

from hawqc.frontends.onnx import load_onnx_text
from hawqc.ir.ops.traits import Trait, keys_with
from hawqc.ir.ops.zero_sign import carries, erases, zero_sign_unobservable
from hawqc.sim import Executor

CL = "qonnx.custom_op.channels_last"
Q = "qonnx.custom_op.general"
HEADER = f'<ir_version: 8, opset_import: ["" : 17, "{Q}" : 1, "{CL}" : 1]>\n'
# Values that meet a zero in every way that matters: infinities (0 * inf), NaNs, zeros, tiny ones.
SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.5, -3.0, 1e-45, -1e-45, 0.75], np.float32)

# One graph per carrier: `x` reaches the op at the input the trait names (`w` at input 1, 2 for the
# ops that carry at every input), and `y` is the op's output. Inputs other than `x` are graph inputs
# too, so that they take every special value.
IMAGE = "float[1,2,4,4] x"
CARRIER_GRAPHS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("", "Identity"): (IMAGE, "", "y = Identity (x)"),
    ("", "Reshape"): (IMAGE, "int64[2] shape = {2, 16}", "y = Reshape (x, shape)"),
    ("", "Flatten"): (IMAGE, "", "y = Flatten (x)"),
    ("", "Squeeze"): (IMAGE, "int64[1] axes = {0}", "y = Squeeze (x, axes)"),
    ("", "Unsqueeze"): (IMAGE, "int64[1] axes = {0}", "y = Unsqueeze (x, axes)"),
    ("", "Transpose"): (IMAGE, "", "y = Transpose <perm: ints = [0, 2, 3, 1]> (x)"),
    ("", "Relu"): (IMAGE, "", "y = Relu (x)"),
    ("", "LeakyRelu"): (IMAGE, "", "y = LeakyRelu <alpha: float = 0.1> (x)"),
    ("", "Sigmoid"): (IMAGE, "", "y = Sigmoid (x)"),
    ("", "Softmax"): (IMAGE, "", "y = Softmax (x)"),
    ("", "Clip"): (IMAGE, "float lo = {0}, float hi = {6}", "y = Clip (x, lo, hi)"),
    ("", "MaxPool"): (IMAGE, "", "y = MaxPool <kernel_shape: ints = [2, 2]> (x)"),
    ("", "GlobalMaxPool"): (IMAGE, "", "y = GlobalMaxPool (x)"),
    ("", "AveragePool"): (IMAGE, "", "y = AveragePool <kernel_shape: ints = [3, 3], pads: ints = [1, 1, 1, 1]> (x)"),
    ("", "GlobalAveragePool"): (IMAGE, "", "y = GlobalAveragePool (x)"),
    ("", "Resize"): (IMAGE, "float[4] scales = {1, 1, 2, 2}", "y = Resize (x, , scales)"),
    ("", "Pad"): (IMAGE, "int64[8] pads = {0, 0, 1, 1, 0, 0, 1, 1}", "y = Pad (x, pads)"),
    ("", "BatchNormalization"): (
        IMAGE,
        # Channel 1's offset is -0.0 (-0.0 - 0 * a): the sign of a zero passes.
        "float[2] g = {-1.5, 2}, float[2] b = {0, -0.0}, float[2] m = {0, 0}, float[2] v = {1, 4}",
        "y = BatchNormalization (x, g, b, m, v)",
    ),
    ("", "Div"): ("float[1,12] x, float[1,12] w", "", "y = Div (x, w)"),
    ("", "Add"): ("float[1,12] x, float[1,12] w", "", "y = Add (x, w)"),
    ("", "Sub"): ("float[1,12] x, float[1,12] w", "", "y = Sub (x, w)"),
    ("", "Mul"): ("float[1,12] x, float[1,12] w", "", "y = Mul (x, w)"),
    ("", "Concat"): ("float[1,12] x, float[1,12] w", "", "y = Concat <axis: int = 1> (x, w)"),
    ("", "MatMul"): ("float[3,12] x, float[12,4] w", "", "y = MatMul (x, w)"),
    ("", "Gemm"): ("float[3,12] x, float[12,4] w, float[4] c", "", "y = Gemm <alpha: float = 0.5> (x, w, c)"),
    ("", "Conv"): (f"{IMAGE}, float[3,2,3,3] w, float[3] c", "", "y = Conv <pads: ints = [1, 1, 1, 1]> (x, w, c)"),
    (CL, "MaxPool"): ("float[1,4,4,2] x", "", f"y = {CL}.MaxPool <kernel_shape: ints = [2, 2]> (x)"),
    (CL, "GlobalMaxPool"): ("float[1,4,4,2] x", "", f"y = {CL}.GlobalMaxPool (x)"),
    (CL, "AveragePool"): ("float[1,4,4,2] x", "", f"y = {CL}.AveragePool <kernel_shape: ints = [2, 2]> (x)"),
    (CL, "GlobalAveragePool"): ("float[1,4,4,2] x", "", f"y = {CL}.GlobalAveragePool (x)"),
    (CL, "BatchNormalization"): (
        "float[1,4,4,2] x",
        "float[2] g = {-1.5, 2}, float[2] b = {0, -0.0}, float[2] m = {0, 0}, float[2] v = {1, 4}",
        f"y = {CL}.BatchNormalization (x, g, b, m, v)",
    ),
    (CL, "Conv"): ("float[1,4,4,2] x, float[3,3,3,2] w, float[3] c", "", f"y = {CL}.Conv <pads: ints = [1, 1, 1, 1]> (x, w, c)"),
}

# Erasers: -0.0 and +0.0 at input 0 (or, for Add, at either input) give the same bits.
ERASER_GRAPHS: dict[str, tuple[str, str, str]] = {
    "BipolarQuant": ("float[1,12] x", "float s = {0.5}", f"y = {Q}.BipolarQuant (x, s)"),
    "MultiThreshold": (
        "float[1,2,2,3] x",
        "float[2,3] t = {-0.0, 0, 1, -1, 0, 0.5}",
        f'y = {Q}.MultiThreshold <out_scale: float = 2, out_bias: float = -1, data_layout: string = "NCHW"> (x, t)',
    ),
    "Add of a constant without -0.0": ("float[1,12] x", "float[12] c = {0, 0, 1, -1, 0, 2, 0, 0, 3, 0, -2, 0}", "y = Add (c, x)"),
    "BatchNormalization with an offset without -0.0": (
        "float[1,2,2,3] x",
        "float[2] g = {1.5, -2}, float[2] b = {0, 0.25}, float[2] m = {0, 0}, float[2] v = {1, 4}",
        "y = BatchNormalization (x, g, b, m, v)",
    ),
}
for _mode in ("ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"):
    for _signed, _narrow, _bits in ((1, 0, 4), (0, 0, 4), (1, 1, 2), (1, 0, 1)):
        for _z in ("-0.0", "0", "1"):
            ERASER_GRAPHS[f"Quant {_mode} signed={_signed} narrow={_narrow} bits={_bits} z={_z}"] = (
                "float[1,12] x",
                f"float s = {{0.5}}, float z = {{{_z}}}, float b = {{{_bits}}}",
                f'y = {Q}.Quant <signed: int = {_signed}, narrow: int = {_narrow}, rounding_mode: string = "{_mode}"> (x, s, z, b)',
            )


def _model(signature: str, constants: str, body: str):
    """One op `y = ...` on graph inputs `signature` (y's type and shape are inferred)."""
    initializers = f"\n   <{constants}>" if constants else ""
    return load_onnx_text(f"{HEADER}g ({signature}) => (y){initializers}\n{{\n   {body}\n}}")


def _inputs(model, seed: int) -> dict[str, np.ndarray]:
    """Special values everywhere, and mostly zeros on odd seeds, so that sums and pools of zeros
    (whose sign is the question) occur too."""
    rng = np.random.default_rng(seed)
    found = {}
    for value in model.graph.inputs:
        shape = tuple(value.shape.dims)
        values = rng.choice(SPECIALS, size=shape).astype(np.float32)
        if seed % 2:
            zeros = rng.random(shape) < 0.9
            values[zeros] = rng.choice(np.array([0.0, -0.0], np.float32), size=int(zeros.sum()))
        found[value.name] = values
    return found


def _flip_zeros(array: np.ndarray, negative: bool) -> np.ndarray:
    out = array.copy()
    zeros = out == 0
    out[zeros] = np.float32(-0.0) if negative else np.float32(0.0)
    return out


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def _both_signs(model, name: str, seed: int) -> tuple[dict, dict]:
    inputs = _inputs(model, seed)
    negative, positive = dict(inputs), dict(inputs)
    negative[name] = _flip_zeros(inputs[name], True)
    positive[name] = _flip_zeros(inputs[name], False)
    return negative, positive


def _run_both(model, name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    negative, positive = _both_signs(model, name, seed)
    executor = Executor(model)
    return executor.run(negative)["y"], executor.run(positive)["y"]


def _data_inputs(key: tuple[str, str], model) -> list[tuple[int, str]]:
    """(input index, graph input name) of each input the trait says carries the sign."""
    node = next(iter(model.graph))
    every = (key in keys_with(Trait.CARRIES_ZERO_SIGN_AT_EVERY_INPUT))
    return [(i, v.name) for i, v in enumerate(node.inputs) if v is not None and v.is_graph_input() and (every or i == 0)]


def test_every_carrier_of_the_traits_table_has_a_graph_here() -> None:
    assert set(CARRIER_GRAPHS) == set(keys_with(Trait.CARRIES_ZERO_SIGN))
    assert keys_with(Trait.CARRIES_ZERO_SIGN_AT_EVERY_INPUT) <= keys_with(Trait.CARRIES_ZERO_SIGN)


@pytest.mark.parametrize("key", sorted(CARRIER_GRAPHS), ids=lambda k: f"{k[0] or 'onnx'}.{k[1]}")
def test_carriers_change_at_most_the_sign_of_zeros(key: tuple[str, str]) -> None:
    model = _model(*CARRIER_GRAPHS[key])
    node = next(iter(model.graph))
    checked = _data_inputs(key, model)
    assert checked
    for index, name in checked:
        assert carries(node, index) and not erases(node, index)
        for seed in range(8):
            negative, positive = _run_both(model, name, seed)
            differs = _bits(negative) != _bits(positive)
            # Where they differ, both are zeros (NaNs come out the same: the default NaN, or the
            # NaN of another operand, whichever zero it met).
            assert np.all((negative[differs] == 0) & (positive[differs] == 0)), (key, index, seed)


@pytest.mark.parametrize("name", sorted(ERASER_GRAPHS))
def test_erasers_give_the_same_bits_for_both_zeros(name: str) -> None:
    model = _model(*ERASER_GRAPHS[name])
    node = next(iter(model.graph))
    index = next(i for i, v in enumerate(node.inputs) if v is not None and v.name == "x")
    assert erases(node, index)
    for seed in range(8):
        negative, positive = _run_both(model, "x", seed)
        assert np.array_equal(_bits(negative), _bits(positive)), (name, seed)


def test_the_executor_agrees_with_qonnx_on_the_signs_of_zeros() -> None:
    # The claims above are about qonnx's semantics; the executor is bit-identical to it, here too.
    from hawqc.sim.qonnx_oracle import QonnxOracle

    # (qonnx runs one sample at a time: every input's first axis is the batch.)
    checked = [CARRIER_GRAPHS[("", op)] for op in ("Div", "Mul", "Add", "Clip", "BatchNormalization", "Resize", "AveragePool")]
    checked += [ERASER_GRAPHS[name] for name in ERASER_GRAPHS if name.startswith(("Quant ROUND", "Quant UP", "MultiThreshold", "Bipolar"))]
    for graph in checked:
        model = _model(*graph)
        for inputs in _both_signs(model, "x", 0):
            expected = QonnxOracle(model).run(inputs)["y"]
            assert np.array_equal(_bits(Executor(model).run(inputs)["y"]), _bits(expected)), graph[2]


@pytest.mark.parametrize(
    ("body", "constants", "index"),
    [
        ("y = Div (w, x)", "", 1),  # 1 / -0.0 is -inf
        ("y = Add (x, c)", "float[12] c = {" + ", ".join(["-0.0"] * 12) + "}", 0),  # -0.0 + -0.0 is -0.0
        ("y = Softmax (x)", "", 0),  # no eraser: a carrier (exp(+-0) is 1), and y is a graph output
    ],
)
def test_readers_that_may_show_the_sign_are_neither(body: str, constants: str, index: int) -> None:
    signature = "float[1,12] x, float[1,12] w" if "w" in body else "float[1,12] x"
    model = _model(signature, constants, body)
    node = next(iter(model.graph))
    assert not erases(node, index)
    assert carries(node, index) == (index == 0)
    assert not zero_sign_unobservable(node.inputs[index])
    if node.op_type != "Softmax":
        negative, positive = _run_both(model, "x", 1)
        assert not np.array_equal(_bits(negative), _bits(positive))


def test_unobservable_follows_carriers_to_erasers_and_stops_at_outputs() -> None:
    text = f"""{HEADER}g (float[1,4] x) => (float[1,4] y, float[1,4] o)
   <float s = {{0.5}}, float z = {{0}}, float b = {{8}}, float[4,4] w = {{1,0,0,0, 0,1,0,0, 0,0,1,0, 0,0,0,1}}>
{{
   r = Relu (x)
   m = MatMul (r, w)
   d = Div (m, s)
   y = {Q}.Quant (d, s, z, b)
   o = Sigmoid (x)
}}"""
    model = load_onnx_text(text)
    values = {node.outputs[0].name: node.outputs[0] for node in model.graph}
    # r -> MatMul -> Div -> Quant: hidden. x also reaches o through Sigmoid, a graph output.
    assert zero_sign_unobservable(values["r"]) and zero_sign_unobservable(values["d"])
    assert not zero_sign_unobservable(model.graph.inputs[0])
    assert not zero_sign_unobservable(values["y"])
