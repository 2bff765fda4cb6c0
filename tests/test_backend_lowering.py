"""The shared hls4ml lowering: the written projects carry hawqc's types, nothing else; what it refuses."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from test_backend_models import ROUNDING_SPEC, Act, MlpSpec, build_mlp, to_ir

from hawqc.backends.base import get_backend
from hawqc.backends.catapult import catapult_spelling
from hawqc.backends.hls4ml_lowering import read_typedefs
from hawqc.errors import UnsupportedModelError, UserInputError
from hawqc.ir.precision import infer_types
from hawqc.ir.qtypes import FixedType

BACKENDS = ("vivado", "vitis", "catapult")


def _spell(backend: str, fixed: FixedType) -> str:
    return catapult_spelling(fixed) if backend == "catapult" else fixed.ap_cpp()


def _written_layer_types(outdir: Path) -> dict[str, dict[str, str]]:
    """Read back, from the written C++ alone, the types each layer computes with:
    `nnet::kernel<in_t, out_t, configN>(...); // layer` in myproject.cpp gives the result type and
    the config struct, whose `typedef X weight_t;` lines in parameters.h give the rest; every name is
    resolved through the typedefs of defines.h."""
    typedefs = read_typedefs(outdir / "firmware" / "defines.h")
    cpp = (outdir / "firmware" / "myproject.cpp").read_text()
    params = (outdir / "firmware" / "parameters.h").read_text()
    layers: dict[str, dict[str, str]] = {}
    for in_t, out_t, config, name in re.findall(r"nnet::\w+<(\w+), (\w+), (\w+)>\(.*?\); // (\w+)", cpp):
        layers.setdefault("__input__", {"result": typedefs[in_t]})
        entry = {"result": typedefs[out_t]}
        struct = re.search(rf"struct {config} :.*?\n}};", params, re.DOTALL)
        assert struct, config
        for type_name, role in re.findall(r"typedef (\w+) (weight|bias|accum)_t;", struct.group(0)):
            entry[role] = typedefs[type_name]
        layers[name] = entry
    return layers


@pytest.mark.parametrize("backend", BACKENDS)
def test_written_types_are_the_inferred_types(backend: str, tmp_path: Path) -> None:
    """Every type the generated C++ computes with is the one precision inference chose."""
    model = to_ir(build_mlp())
    result = infer_types(model)
    get_backend(backend).lower(model, tmp_path)
    written = _written_layer_types(tmp_path)
    expected = {"__input__": {"result": result.types["q_in_out"]}}
    for i in range(4):
        out = f"add{i}_out" if i < 3 else "y"
        expected[f"mm{i}"] = {
            "weight": result.types[f"qw{i}_out"],
            "bias": result.types[f"qb{i}_out"],
            "accum": result.accumulators[out],
            "result": result.types[out],
        }
        if i < 3:
            expected[f"relu{i}"] = {"result": result.types[f"qa{i}_out"]}
    assert written == {layer: {role: _spell(backend, t) for role, t in roles.items()} for layer, roles in expected.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_hls4ml_default_type_reaches_the_project(backend: str, tmp_path: Path) -> None:
    """Besides hawqc's types, defines.h holds only the lookup-table type of relu/linear and the
    sparse-index type of dense layers, which these kernels never read."""
    project = get_backend(backend).lower(to_ir(build_mlp(ROUNDING_SPEC)), tmp_path)
    typedefs = read_typedefs(tmp_path / "firmware" / "defines.h")
    hawqc_texts = {text for layer in project.layers for text in layer.types.values()}
    for name, text in typedefs.items():
        unwrapped = re.sub(r"^nnet::array<(.*),[^,]+>$", r"\1", text)
        assert unwrapped in hawqc_texts or name.endswith(("_table_t", "_index")), (name, text)
    assert "fixed<1,1" not in (tmp_path / "firmware" / "defines.h").read_text()


def test_layer_reports(tmp_path: Path) -> None:
    project = get_backend("vivado").lower(to_ir(build_mlp(ROUNDING_SPEC)), tmp_path)
    names = [(layer.name, layer.op) for layer in project.layers]
    # A Quant that is not behind a Relu becomes a linear activation (a cast to the Quant's type).
    assert names == [
        ("x", "Input"),
        ("mm0", "Dense"), ("qa0", "Activation(linear)"),
        ("mm1", "Dense"), ("qa1", "Activation(linear)"),
        ("mm2", "Dense"), ("qa2", "Activation(linear)"),
        ("mm3", "Dense"), ("qa3", "Activation(linear)"),
    ]
    last = project.layers[-1]
    assert last.precision == "fixed<6,5,TRN,SAT_SYM>"
    assert last.types == {"result": "ap_fixed<6,5,AP_TRN,AP_SAT_SYM,0>"}
    assert project.layers[1].types["weight"] == "ap_fixed<6,1,AP_RND_CONV,AP_SAT_SYM,0>"


def test_dense_without_bias_gets_a_zero_bias_of_the_narrowest_type(tmp_path: Path) -> None:
    spec = MlpSpec(sizes=(16, 8, 4), w_exps=[-5, -5], bias=[False, False], relu=[True, False], acts=[Act(8, -3), None])
    project = get_backend("vivado").lower(to_ir(build_mlp(spec)), tmp_path)
    dense = project.layers[1]
    assert dense.op == "Dense"
    # Accumulator LSB 2**-9: a 1-bit unsigned type at that LSB holds the zeros.
    assert dense.types["bias"] == "ap_ufixed<1,-8>"


def test_names_are_made_valid_and_unique(tmp_path: Path) -> None:
    proto = build_mlp(MlpSpec(sizes=(16, 4), w_exps=[-5], bias=[True], relu=[False], acts=[None]))
    renames = {"x": "input", "mm0": "layer/0.MatMul", "add0": "int"}
    for value in proto.graph.input:
        value.name = renames.get(value.name, value.name)
    for node in proto.graph.node:
        node.name = renames.get(node.name, node.name)
        node.input[:] = [renames.get(i, i) for i in node.input]
    project = get_backend("vivado").lower(to_ir(proto), tmp_path)
    assert [layer.name for layer in project.layers] == ["input_", "layer_0_MatMul"]
    assert project.input_name == "input"


def _with_node(proto, node) -> ir.Model:
    """Append `node` reading the graph output and make its output the graph output."""
    old = proto.graph.output[0].name
    for n in proto.graph.node:
        n.output[:] = ["pre" if o == old else o for o in n.output]
        n.input[:] = ["pre" if i == old else i for i in n.input]
    proto.graph.node.append(node)
    return to_ir(proto)


def test_unsupported_node_is_named(tmp_path: Path) -> None:
    model = _with_node(build_mlp(), helper.make_node("Sigmoid", ["pre"], ["y"], name="squash"))
    with pytest.raises(UnsupportedModelError, match=r"'squash' \(Sigmoid\)"):
        get_backend("vitis").lower(model, tmp_path)


def test_add_of_two_activations_is_a_merge(tmp_path: Path) -> None:
    proto = build_mlp(MlpSpec(sizes=(16, 16), w_exps=[-5], bias=[False], relu=[True], acts=[Act(8, -4, signed=True)]))
    # A residual connection: y = Quant(x) + Quant(Relu(MatMul)).
    model = _with_node(proto, helper.make_node("Add", ["pre", "q_in_out"], ["y"], name="residual"))
    project = get_backend("vivado").lower(model, tmp_path)
    assert [(layer.name, layer.op) for layer in project.layers][-1] == ("residual", "Merge(add)")
    assert project.layers[-1].precision == str(infer_types(model).types["y"])


def test_precision_errors_surface_through_lowering(tmp_path: Path) -> None:
    proto = build_mlp()
    for init in proto.graph.initializer:
        if init.name == "s_w1":
            init.CopyFrom(helper.make_tensor("s_w1", 1, [], [0.3]))
    with pytest.raises(UnsupportedModelError, match=r"'qw1' \(qonnx\.custom_op\.general\.Quant\).*power of two"):
        get_backend("catapult").lower(to_ir(proto), tmp_path)


def test_catapult_refuses_one_bit_quantizers(tmp_path: Path) -> None:
    spec = MlpSpec(sizes=(16, 8, 4), w_exps=[-5, -5], acts=[Act(1, 0), None], relu=[True, False])
    with pytest.raises(UnsupportedModelError, match="1-bit"):
        get_backend("catapult").lower(to_ir(build_mlp(spec)), tmp_path)
    # ap_fixed keeps 1-bit types as they are.
    get_backend("vivado").lower(to_ir(build_mlp(spec)), tmp_path / "vivado")


def test_bad_options(tmp_path: Path) -> None:
    model = to_ir(build_mlp())
    with pytest.raises(UnsupportedModelError, match="io_type"):
        get_backend("vivado").lower(model, tmp_path, io_type="io_serial")
    with pytest.raises(Exception, match="C identifier"):
        get_backend("vivado").lower(model, tmp_path, project_name="my-project")


def test_weights_are_written_exactly(tmp_path: Path) -> None:
    """hls4ml prints weights with as many decimals as the type has fractional bits: exact for
    dyadic values. Read them back from the header and compare with the quantized constants."""
    model = to_ir(build_mlp())
    result = infer_types(model)
    get_backend("vivado").lower(model, tmp_path)
    header = (tmp_path / "firmware" / "weights" / "w4.h").read_text()
    values = np.array([float(v) for v in re.search(r"\{(.*)\}", header).group(1).split(",")])
    np.testing.assert_array_equal(values, result.constants["qw1_out"].reshape(-1))


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError, match="catapult, vitis, vivado"):
        get_backend("quartus")
