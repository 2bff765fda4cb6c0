"""A user's mistake on the command line is one line on stderr and exit code 2, found before any
work and leaving nothing written: options out of range, hostile model files, unwritable outputs,
and a hand-edited `hawqc_report.json`."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import JET_TAGGER, one_error_line, run_cli
from onnx import TensorProto, helper, numpy_helper

from hawqc.cli import main, opt_main
from hawqc.ir.domains import QONNX_DOMAIN


def _quant_with_scale(shape) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.full(shape, 0.5, np.float32), "s"),
             numpy_helper.from_array(np.float32(0), "z"), numpy_helper.from_array(np.float32(4), "b")]  # fmt: skip
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["t"], domain=QONNX_DOMAIN, name="in_quant", signed=1, narrow=0, rounding_mode="ROUND"),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])


# --- options, checked before the model is even lowered -------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seed", "-1", "--verify", "5"], "--seed must be a non-negative integer, got -1"),
        (["--reuse-factor", str(2**31)], "--reuse-factor 2147483648 is above 2147483647"),
        (["--clock-period", "1e-300"], "--clock-period 1e-300 ns is outside"),
        (["--clock-period", "1e300"], "--clock-period 1e+300 ns is outside"),
        (["--project-name", "int"], "--project-name 'int' is a C++ keyword"),
        (["--project-name", "main"], "--project-name 'main' is a name the generated C++ uses itself"),
        (["--project-name", "w2"], "--project-name 'w2' is a name the generated C++ uses itself"),
        (["--project-name", "input_t"], "--project-name 'input_t' is a name the generated C++ uses itself"),
        (["--project-name", "a" * 300], "--project-name is 300 characters long; at most 128"),
        (["--project-name", "global_in"], "--project-name 'global_in' is also the name of the model's input"),
        (["--print-ir-after", "no-such-pass"], "--print-ir-after: unknown pass 'no-such-pass'"),
        (["--print-ir-before", "default"], "--print-ir-before: 'default' is a pipeline"),
        (["--validate", str(10**12)], f"--validate {10**12}: the inputs alone need"),
    ],
)
def test_options_out_of_range_are_refused_first(tmp_path, capsys, args, message):
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", *args)
    assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "proj").exists()


def test_a_reproducer_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(capsys, opt_main, JET_TAGGER, "-p", "dce", "--reproducer-dir", tmp_path / "file")
    assert code == 2 and "--reproducer-dir" in one_error_line(err, "hawqc-opt")


def test_opt_checks_the_pass_flags_without_a_pipeline_too(capsys):
    code, _, err = run_cli(capsys, opt_main, JET_TAGGER, "--validate", "-2")
    assert code == 2 and "--validate must be a non-negative count" in one_error_line(err, "hawqc-opt")


def test_a_config_file_that_is_not_utf8_is_named(tmp_path, capsys):
    config = tmp_path / "settings.yml"
    config.write_bytes(b"strategy: \xff\xfe\n")
    code, _, err = run_cli(capsys, main, JET_TAGGER, "-o", tmp_path / "proj", "--config", config)
    assert code == 2 and f"{config}: not UTF-8 text" in one_error_line(err)


# --- model files ------------------------------------------------------------------------------------


def test_a_scale_that_does_not_broadcast_is_refused_at_load_not_in_a_pass(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(_quant_with_scale((7,)), path)
    code, _, err = run_cli(capsys, main, path, "-o", tmp_path / "proj")
    line = one_error_line(err)
    assert code == 2 and f"{path}: node 'in_quant'" in line and "scale 's' of shape [7] does not broadcast" in line
    assert not (tmp_path / "proj").exists()


def test_an_input_quantizer_wider_than_hls4ml_takes_is_refused(tmp_path, capsys):
    model = _quant_with_scale(())
    model.graph.initializer[2].CopyFrom(numpy_helper.from_array(np.float32(128), "b"))
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    code, _, err = run_cli(capsys, main, path, "-o", tmp_path / "proj")
    assert code == 2 and "node 'in_quant'" in one_error_line(err) and "128 bits wide; hls4ml takes at most 100" in err
    assert not (tmp_path / "proj").exists()


def test_an_undefined_input_is_one_line_without_onnx_irs_warning(tmp_path):
    """onnx_ir logs a warning of its own for an undefined name (pytest would capture the log, so
    this runs the installed command)."""
    model = _quant_with_scale(())
    model.graph.node[1].input[0] = "nope"
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    result = subprocess.run([str(Path(sys.executable).parent / "hawqc-opt"), str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "node 'relu' (Relu): input 0 'nope' is never defined" in one_error_line(result.stderr, "hawqc-opt")


def test_non_utf8_onnx_text_on_stdin_is_named(capsys, monkeypatch):
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe garbage"), encoding="utf-8", errors="surrogateescape")
    monkeypatch.setattr(sys, "stdin", stdin)
    code, _, err = run_cli(capsys, opt_main, "-")
    assert code == 2 and "<stdin>: not UTF-8 text (byte 0)" in one_error_line(err, "hawqc-opt")


# --- hawqc-opt -o ------------------------------------------------------------------------------------


def test_opt_output_in_a_missing_directory_or_onto_a_directory(tmp_path, capsys):
    code, _, err = run_cli(capsys, opt_main, JET_TAGGER, "-p", "default", "-o", tmp_path / "missing" / "out.onnx")
    assert code == 2 and f"{tmp_path / 'missing' / 'out.onnx'}: no such directory" in one_error_line(err, "hawqc-opt")
    (tmp_path / "out.onnx").mkdir()
    code, _, err = run_cli(capsys, opt_main, JET_TAGGER, "-o", tmp_path / "out.onnx")
    assert code == 2 and f"{tmp_path / 'out.onnx'}: is a directory" in one_error_line(err, "hawqc-opt")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_opt_output_on_a_read_only_filesystem(tmp_path, capsys, monkeypatch, code):
    def failing_replace(src, dst, *args, **kwargs):  # what the rename into place meets there
        raise OSError(code, os.strerror(code), str(dst))

    monkeypatch.setattr(os, "replace", failing_replace)
    out = tmp_path / "out.onnxtxt"
    status, _, err = run_cli(capsys, opt_main, JET_TAGGER, "-o", out)
    assert status == 2 and f"{out}: cannot write ({os.strerror(code)})" in one_error_line(err, "hawqc-opt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_opt_output_into_a_really_read_only_directory(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, opt_main, JET_TAGGER, "-o", locked / "out.onnx")
    finally:
        locked.chmod(0o755)
    assert code == 2 and f"{locked / 'out.onnx'}: cannot write" in one_error_line(err, "hawqc-opt")
    assert list(locked.iterdir()) == []


# --- hawqc report on an edited hawqc_report.json ------------------------------------------------


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    from hawqc.flow.driver import CompileOptions, compile_model

    outdir = tmp_path_factory.mktemp("report") / "proj"
    compile_model(JET_TAGGER, outdir, CompileOptions())
    return outdir


def _edit_table(edit):
    def apply(report):
        edit(report["layer_table"])
        return json.dumps(report)

    return apply


@pytest.mark.parametrize(
    "edit, message",
    [
        (_edit_table(lambda t: t["layers"][0].pop("name")), "layer_table.layers[0]: missing key 'name'"),
        (_edit_table(lambda t: t["layers"][1].update(op=7)), "layer_table.layers[1].op: expected string, got 7"),
        (_edit_table(lambda t: t["layers"][0].update(bops="many")), 'layer_table.layers[0].bops: expected number or null, got "many"'),
        (_edit_table(lambda t: t["layers"][0].update(input_shape="16")), "layer_table.layers[0].input_shape: expected list of integers"),
        (_edit_table(lambda t: t.update(layers={"a": 1})), "layer_table.layers: expected a list of layers"),
        (_edit_table(lambda t: t["layers"].__setitem__(0, [1, 2])), "layer_table.layers[0]: expected an object"),
        (_edit_table(lambda t: t.pop("totals")), "layer_table: missing key 'totals'"),
        (_edit_table(lambda t: t["totals"].pop("bops")), "layer_table.totals: missing key 'bops'"),
        (_edit_table(lambda t: t.pop("latency_note")), "layer_table: missing key 'latency_note'"),
        (lambda report: json.dumps({**report, "model": 5}), "model: expected string, got 5"),
        (lambda report: "[1, 2]", "expected a JSON object, got a list"),
        (lambda report: b'{"model": "\xff"}', "not UTF-8 text"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("plot", [False, True])
def test_an_edited_report_is_one_line_naming_the_file_and_the_entry(compiled, tmp_path, capsys, edit, message, plot):
    project = tmp_path / "proj"
    shutil.copytree(compiled, project)
    report_file = project / "hawqc_report.json"
    edited = edit(json.loads(report_file.read_text()))
    report_file.write_bytes(edited if isinstance(edited, bytes) else edited.encode())
    extra = ["--plot", tmp_path / "p.png"] if plot else []
    code, out, err = run_cli(capsys, main, "report", project, *extra)
    line = one_error_line(err, "hawqc report")
    assert code == 2 and f"{report_file}: {message}" in line, line
    assert out == "" and not (tmp_path / "p.png").exists()


def test_an_unedited_report_still_shows(compiled, capsys):
    code, out, _ = run_cli(capsys, main, "report", compiled)
    assert code == 0 and "fc1_matmul" in out


def test_a_pass_plugin_named_twice_is_loaded_once(tmp_path, capsys):
    plugin = tmp_path / "nop.py"
    plugin.write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\nimport hawqc\n\n"
        "@hawqc.register_pass\n@dataclass(frozen=True)\nclass Nop(hawqc.Pass):\n"
        "    name: ClassVar[str] = 'nop-twice'\n"
        "    def run(self, model):\n        return False\n"
    )
    try:
        code, out, err = run_cli(capsys, opt_main, JET_TAGGER, "--load-pass-plugin", plugin,
                                 "--load-pass-plugin", tmp_path / "." / "nop.py", "-p", "nop-twice")  # fmt: skip
    finally:
        from hawqc.passes.registry import default_registry

        default_registry().passes.pop("nop-twice", None)
    assert code == 0 and err == "" and "Quant" in out


def test_a_convolution_with_group_zero_is_named(tmp_path, capsys):
    inits = [numpy_helper.from_array(np.float32(0.5), "s"), numpy_helper.from_array(np.float32(0), "z"),
             numpy_helper.from_array(np.float32(4), "b"), numpy_helper.from_array(np.full((3, 2, 3, 3), 0.5, np.float32), "w")]  # fmt: skip
    quant = {"domain": QONNX_DOMAIN, "signed": 1, "narrow": 0, "rounding_mode": "ROUND"}
    nodes = [helper.make_node("Quant", ["x", "s", "z", "b"], ["xq"], name="qx", **quant),
             helper.make_node("Quant", ["w", "s", "z", "b"], ["wq"], name="qw", **quant),
             helper.make_node("Conv", ["xq", "wq"], ["y"], name="conv", group=0)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)  # fmt: skip
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)]), path)
    code, _, err = run_cli(capsys, main, path, "-o", tmp_path / "proj")
    assert code == 2 and "node 'conv'" in one_error_line(err) and "group 0 must be at least 1" in err
    assert not (tmp_path / "proj").exists()
