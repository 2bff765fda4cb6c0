"""Quantized MLPs for the backend tests, the inputs they are checked on, and their QONNX reference.

The other backend tests import the builders from here; the tests in this file check the builders
and the reference themselves (against qonnx's own executor, the oracle).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

QONNX = "qonnx.custom_op.general"


@dataclass
class Act:
    """An activation quantizer: bits, scale exponent, signed, narrow, rounding mode."""

    bits: int = 8
    exp: int = -3
    signed: bool = False
    narrow: bool = False
    rounding: str = "ROUND"


@dataclass
class MlpSpec:
    sizes: tuple[int, ...] = (16, 64, 32, 32, 5)
    seed: int = 0
    in_bits: int = 8
    in_exp: int = -4
    w_bits: int = 6
    # per layer: one scale exponent (per tensor) or one per output column (per channel)
    w_exps: list[int | list[int]] = field(default_factory=lambda: [-5, [-4, -5, -6, -7], -5, -5])
    b_bits: int = 16
    bias: list[bool] = field(default_factory=lambda: [True, True, True, True])
    relu: list[bool] = field(default_factory=lambda: [True, True, True, False])
    # activation quantizer after each layer (None: none); the last one is the output quantizer
    acts: list[Act | None] = field(
        default_factory=lambda: [Act(8, -3), Act(8, -2), Act(8, -2), None]
    )
    in_rounding: str = "ROUND"
    # Exact float weights / biases per layer instead of random ones (None: random).
    weights: list[np.ndarray] | None = None
    biases: list[np.ndarray] | None = None


# Every rounding mode hawqc maps (ROUND is in the default MLP), signed narrow (SAT_SYM) quantizers,
# no Relu so that negative ties and negative saturation happen.
ROUNDING_SPEC = MlpSpec(
    sizes=(16, 24, 16, 12, 8),
    seed=3,
    w_exps=[-5, -5, [-4, -6], -5],
    relu=[False, False, False, False],
    acts=[
        Act(8, -3, signed=True, narrow=True, rounding="HALF_UP"),
        Act(7, -2, signed=True, narrow=False, rounding="DOWN"),
        Act(8, -3, signed=True, narrow=False, rounding="HALF_DOWN"),
        Act(6, -1, signed=True, narrow=True, rounding="FLOOR"),
    ],
    in_rounding="HALF_UP",
)


def _quant(name: str, x: str, scale: str, zp: str, bw: str, signed: bool, narrow: bool, rounding: str) -> onnx.NodeProto:
    return helper.make_node(
        "Quant", [x, scale, zp, bw], [name + "_out"], name=name, domain=QONNX,
        signed=int(signed), narrow=int(narrow), rounding_mode=rounding,
    )


def build_mlp(spec: MlpSpec | None = None) -> onnx.ModelProto:
    """x[1, n0] -> Quant -> (MatMul(Quant(W)) [+ Add(Quant(b))] [-> Relu] [-> Quant])* -> y."""
    spec = spec or MlpSpec()
    rng = np.random.default_rng(spec.seed)
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    zero = const("zero", np.float32(0))
    in_scale = const("s_in", np.float32(2.0**spec.in_exp))
    nodes.append(_quant("q_in", "x", in_scale, zero, const("bw_in", np.float32(spec.in_bits)), True, False, spec.in_rounding))
    act, act_exp = "q_in_out", spec.in_exp
    w_max = 2 ** (spec.w_bits - 1) - 1
    for i, (n_in, n_out) in enumerate(zip(spec.sizes[:-1], spec.sizes[1:], strict=True)):
        exps = spec.w_exps[i]
        if isinstance(exps, list):
            col_exps = np.array([exps[j % len(exps)] for j in range(n_out)])
            scale = (2.0 ** col_exps).reshape(1, n_out).astype(np.float32)
        else:
            col_exps = np.full(n_out, exps)
            scale = np.float32(2.0**exps)
        # Float weights, some beyond the range to exercise the clamp, some on exact ties.
        w_int = rng.integers(-w_max - 3, w_max + 4, size=(n_in, n_out)).astype(np.float64)
        w = (w_int + rng.choice([0.0, 0.5, 0.3], size=w_int.shape)) * 2.0**col_exps
        if spec.weights is not None:
            w = spec.weights[i]
        w_name = const(f"W{i}", w)
        nodes.append(_quant(f"qw{i}", w_name, const(f"s_w{i}", scale), zero, const(f"bw_w{i}", np.float32(spec.w_bits)), True, True, "ROUND"))
        y = f"mm{i}_out"
        nodes.append(helper.make_node("MatMul", [act, f"qw{i}_out"], [y], name=f"mm{i}"))
        acc_exp = act_exp + int(col_exps.min())
        if spec.bias[i]:
            b_exp = acc_exp
            b = rng.integers(-(2 ** 10), 2 ** 10, size=n_out) * 2.0**b_exp
            if spec.biases is not None:
                b = spec.biases[i]
            nodes.append(_quant(f"qb{i}", const(f"b{i}", b), const(f"s_b{i}", np.float32(2.0**b_exp)), zero, const(f"bw_b{i}", np.float32(spec.b_bits)), True, False, "ROUND"))
            nodes.append(helper.make_node("Add", [y, f"qb{i}_out"], [f"add{i}_out"], name=f"add{i}"))
            y = f"add{i}_out"
        if spec.relu[i]:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}_out"], name=f"relu{i}"))
            y = f"relu{i}_out"
        a = spec.acts[i]
        if a is not None:
            nodes.append(_quant(f"qa{i}", y, const(f"s_a{i}", np.float32(2.0**a.exp)), zero, const(f"bw_a{i}", np.float32(a.bits)), a.signed, a.narrow, a.rounding))
            y, act_exp = f"qa{i}_out", a.exp
        act = y
    # The last node writes the graph output directly (no Identity: the canonical IR has none).
    last = nodes[-1]
    for other in nodes:
        other.input[:] = ["y" if name == act else name for name in other.input]
    last.output[0] = "y"
    graph = helper.make_graph(
        nodes, "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, spec.sizes[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, spec.sizes[-1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(QONNX, 1)])
    model.ir_version = 8
    return model


def to_ir(proto: onnx.ModelProto) -> ir.Model:
    """The canonical IR the lowering sees: onnx_ir, with the shapes of every value inferred."""
    from hawqc.ir.shape_inference import infer_shapes

    model = ir.from_proto(proto)
    infer_shapes(model)
    return model


# ---- the semantic reference (QONNX meaning, float32) ------------------------------------------

_ROUND = {
    "ROUND": np.round,
    "FLOOR": np.floor,
    "DOWN": np.fix,
    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)),
    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - np.float32(0.5)),
}


def _np_quant(x, scale, bits, signed, narrow, rounding):
    lo = -(2 ** (bits - 1)) + int(narrow) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1 - int(narrow)
    q = np.clip(x / scale, np.float32(lo), np.float32(hi))
    return (_ROUND[rounding](q) * scale).astype(np.float32)


def numpy_reference(proto: onnx.ModelProto, x: np.ndarray, *, keep_all: bool = False):
    """QONNX semantics of the graphs `build_mlp` makes, in float32, vectorized over the batch:
    the output `y`, or with `keep_all` every value by name."""
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    env = {"x": x.astype(np.float32)}
    for node in proto.graph.node:
        args = [env[n] if n in env else inits[n] for n in node.input]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Quant":
            mode = attrs["rounding_mode"].decode() if isinstance(attrs["rounding_mode"], bytes) else attrs["rounding_mode"]
            out = _np_quant(args[0], args[1], int(args[3]), attrs["signed"], attrs["narrow"], mode)
        elif node.op_type == "MatMul":
            out = np.matmul(args[0], args[1]).astype(np.float32)
        elif node.op_type == "Add":
            out = (args[0] + args[1]).astype(np.float32)
        elif node.op_type == "Relu":
            out = np.maximum(args[0], np.float32(0))
        else:
            raise NotImplementedError(node.op_type)
        env[node.output[0]] = out
    return env if keep_all else env["y"]


def reference(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """QONNX semantics by hawqc's reference executor (which the test below ties to qonnx)."""
    from hawqc.sim import execute

    return np.asarray(execute(to_ir(proto), {"x": x.astype(np.float32)})["y"])


def draw_inputs(n: int, features: int, bits: int, exp: int, seed: int = 1) -> np.ndarray:
    """`n` inputs of shape (n, features) for a signed `bits`-bit input quantizer with LSB 2**exp:
    on the grid, off it, on half-LSB ties, at and beyond the extremes, and all-min / all-max /
    alternating rows."""
    rng = np.random.default_rng(seed)
    lsb = 2.0**exp
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    kinds = [
        rng.integers(lo, hi + 1, size=(n, features)) * lsb,  # on the grid
        rng.uniform(lo * lsb, hi * lsb, size=(n, features)),  # anywhere in range
        (rng.integers(lo, hi, size=(n, features)) + 0.5) * lsb,  # exact ties
        rng.choice([lo * lsb, hi * lsb, (hi + 0.5) * lsb, (lo - 0.5) * lsb, 4 * hi * lsb, 4 * lo * lsb], size=(n, features)),
    ]
    pick = rng.integers(0, len(kinds), size=(n, features))
    x = np.choose(pick, kinds)
    fixed_rows = [
        np.full(features, lo * lsb),
        np.full(features, hi * lsb),
        np.where(np.arange(features) % 2 == 0, lo * lsb, hi * lsb),
        np.where(np.arange(features) % 2 == 0, hi * lsb, lo * lsb),
        np.full(features, (hi + 0.5) * lsb),
        np.full(features, 0.5 * lsb),
        np.full(features, -0.5 * lsb),
        np.zeros(features),
    ]
    x[: len(fixed_rows)] = np.stack(fixed_rows)
    return x.astype(np.float32)


# ---- lowering, compiling and comparing ---------------------------------------------------------


def assert_bit_exact(reference_out: np.ndarray, simulated: np.ndarray) -> None:
    """Equal value for value (float32 reference widened to float64; +0.0 == -0.0)."""
    expected = np.asarray(reference_out, dtype=np.float64).reshape(simulated.shape)
    mismatched = np.argwhere(expected != simulated)
    if len(mismatched):
        first = tuple(mismatched[0])
        raise AssertionError(
            f"{len(mismatched)} of {expected.size} values differ; first at {first}: "
            f"reference {expected[first]!r}, C simulation {simulated[first]!r}"
        )


def lower_compile_compare(backend: str, outdir, spec: MlpSpec | None = None, *, io_type: str = "io_parallel", n: int = 1000):
    """Lower `spec`'s MLP with `backend`, compile its C simulation (cached), run `n` drawn inputs and
    assert it equals the QONNX reference bit for bit. Returns (project, csim)."""
    from hawqc.backends.base import get_backend
    from hawqc.backends.csim import compile_csim

    spec = spec or MlpSpec()
    proto = build_mlp(spec)
    project = get_backend(backend).lower(to_ir(proto), outdir, io_type=io_type)
    csim = compile_csim(project)
    x = draw_inputs(n, spec.sizes[0], spec.in_bits, spec.in_exp)
    assert_bit_exact(reference(proto, x), csim.predict(x))
    return project, csim


# ---- tests of the helpers themselves ------------------------------------------------------------


def test_numpy_reference_equals_qonnx_oracle() -> None:
    """The numpy reference is qonnx's execute_onnx, bit for bit, on a few samples."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    proto = build_mlp()
    wrapper = ModelWrapper(proto).transform(InferShapes())
    x = draw_inputs(12, 16, 8, -4)
    ours = numpy_reference(proto, x)
    for i in range(len(x)):
        oracle = execute_onnx(wrapper, {"x": x[i : i + 1]})["y"]
        assert np.array_equal(oracle, ours[i : i + 1]), i


def test_numpy_reference_equals_hawqc_sim() -> None:
    for spec in (MlpSpec(), ROUNDING_SPEC):
        proto = build_mlp(spec)
        x = draw_inputs(1000, spec.sizes[0], spec.in_bits, spec.in_exp)
        assert np.array_equal(reference(proto, x), numpy_reference(proto, x))


def test_reference_is_not_trivial() -> None:
    """The network neither saturates nor zeroes everything (else bit-exactness proves little)."""
    proto = build_mlp()
    y = numpy_reference(proto, draw_inputs(1000, 16, 8, -4))
    assert len(np.unique(y)) > 500
    assert np.all(np.std(y.reshape(1000, -1), axis=0) > 0)
