"""`--strategy`, `--reuse-factor`, `--part`, `--clock-period`, `--project-name`, `--config FILE`:
written where hls4ml's own tools read them, refused (exit 2, one line) where hls4ml would not build
what was asked. No C simulation here (tests/test_backend_strategies.py compiles and checks them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO

from hawqc.cli import main

JET_TAGGER = REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx"
BACKENDS = ("vivado", "vitis", "catapult")
PART = "xcku115-flvb2104-2-i"


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


@pytest.mark.parametrize("backend", BACKENDS)
def test_settings_reach_the_project_and_hls4ml_reads_them_back(backend: str, tmp_path: Path, capsys) -> None:
    from hls4ml.utils.link import FilesystemModelGraph

    config = tmp_path / "settings.yml"
    config.write_text("layers:\n  dense_1_matmul_1: {reuse_factor: 32}\n  dense_4_matmul: {strategy: latency, reuse_factor: 5}\n")
    out = tmp_path / "prj"
    code, _, err = _run(capsys, JET_TAGGER, "-o", out, "--backend", backend, "--strategy", "resource", "--reuse-factor", "4",
                        "--part", PART, "--clock-period", "4", "--project-name", "jet", "--config", config)  # fmt: skip
    assert code == 0, err

    # hls4ml's own reader of a written project (hls4ml.utils.link) parses our hls4ml_config.yml.
    hls = FilesystemModelGraph(out).config
    assert hls.get_project_name() == "jet" and hls.get_config_value("ClockPeriod") == 4
    assert hls.get_config_value("Part") == PART and hls.get_config_value("IOType") == "io_parallel"
    assert hls.model_rf == 4 and hls.model_strategy == "resource"
    assert hls.layer_name_rf["dense_1_matmul_1"] == 32 and hls.layer_name_strategy["dense_1_matmul_1"] == "resource"
    assert hls.layer_name_rf["dense_4_matmul"] == 5 and hls.layer_name_strategy["dense_4_matmul"] == "latency"
    assert hls.layer_name_rf["dense_2_matmul"] == 4 and hls.layer_name_strategy["dense_2_matmul"] == "resource"

    # The scripts hls4ml's build() runs carry the part, clock and top function.
    assert (out / "firmware" / "jet.cpp").is_file() and (out / "jet_bridge.cpp").is_file()
    if backend == "catapult":
        script = (out / "build_prj.tcl").read_text()
        assert f"setup_xilinx_part {{{PART}}}" in script and "set hls_clock_period 4\n" in script
        assert "set design_top jet\n" in script and "project new -name jet_prj" in script
    else:
        project_tcl = (out / "project.tcl").read_text()
        assert f'set part "{PART}"' in project_tcl and "set clock_period 4\n" in project_tcl
        assert 'set project_name "jet"' in project_tcl
    # The kernels: Resource where asked, with the asked reuse factors.
    parameters = (out / "firmware" / "parameters.h").read_text()
    assert parameters.count("strategy = nnet::resource;") == 3 and parameters.count("strategy = nnet::latency;") == 1
    assert "reuse_factor = 32;" in parameters and "reuse_factor = 5;" in parameters


def test_project_keys_are_hls4mls(tmp_path: Path, capsys) -> None:
    """Every key hls4ml's create_config and writer put in hls4ml_config.yml is in ours."""
    import yaml
    from hls4ml.utils.config import create_config

    for backend in BACKENDS:
        out = tmp_path / backend
        assert _run(capsys, JET_TAGGER, "-o", out, "--backend", backend)[0] == 0
        ours = yaml.safe_load((out / "hls4ml_config.yml").read_text())
        theirs = create_config(output_dir=str(out), backend=backend.capitalize())
        assert set(theirs) | {"HLSConfig", "InputShapes", "OutputShapes", "Stamp"} <= set(ours), backend
        assert ours["Backend"] == backend.capitalize()
        # Without --part / --clock-period the backend's own defaults stay.
        assert ours["Part"] == theirs["Part"] and ours["ClockPeriod"] == theirs["ClockPeriod"]


def test_an_invalid_resource_reuse_factor_is_refused_with_hls4mls_choices(tmp_path: Path, capsys) -> None:
    out = tmp_path / "prj"
    code, _, err = _run(capsys, JET_TAGGER, "-o", out, "--strategy", "resource", "--reuse-factor", "5")
    assert code == 2 and "\n" not in err
    assert "layer 'dense_1_matmul_1' (Dense): reuse factor 5" in err and "(it would use 4)" in err
    assert "valid reuse factors for its 16x64 product: 1, 2, 4, 8, 16, 32" in err
    assert not out.exists()


def test_a_latency_reuse_factor_is_kept(tmp_path: Path, capsys) -> None:
    """hls4ml's Latency kernels take any reuse factor (it only sets the multiplier limit)."""
    out = tmp_path / "prj"
    assert _run(capsys, JET_TAGGER, "-o", out, "--reuse-factor", "5")[0] == 0
    assert "reuse_factor = 5;" in (out / "firmware" / "parameters.h").read_text()


BAD_FILES = {
    "unknown-key": ("s.yml", "reuse: 4\n", "s.yml: unknown key 'reuse'; known: layers, reuse_factor, strategy"),
    "unknown-layer-key": ("s.yml", "layers:\n  dense_2_matmul: {rf: 2}\n", "s.yml: layers.dense_2_matmul: unknown key 'rf'"),
    "unknown-layer": ("s.json", '{"layers": {"dense_9": {"reuse_factor": 2}}}', "s.json: layers.dense_9: no such layer; layers: x, dense_1_matmul_1"),
    "bad-reuse": ("s.yml", "reuse_factor: 0\n", "s.yml: reuse_factor: reuse factor must be a positive integer, got 0"),
    "bad-strategy": ("s.yml", "layers:\n  dense_2_matmul: {strategy: fast}\n", "s.yml: layers.dense_2_matmul.strategy: strategy must be one of latency, resource"),
    "no-strategy-there": ("s.yml", "layers:\n  relu_relu: {strategy: resource}\n", "s.yml: layers.relu_relu.strategy: layer 'relu_relu' (Activation) has no strategy in hls4ml"),
    "bad-json": ("s.json", "{layers: 1}", "s.json: not valid JSON"),
    "bad-yaml": ("s.yml", "layers: [\n", "s.yml: not valid YAML"),
    "not-a-mapping": ("s.yml", "- 1\n", "s.yml: expected a mapping"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_settings_file_is_one_line_naming_file_and_key(case: str, tmp_path: Path, capsys) -> None:
    name, text, expected = BAD_FILES[case]
    config = tmp_path / name
    config.write_text(text)
    out = tmp_path / "prj"
    code, _, err = _run(capsys, JET_TAGGER, "-o", out, "--config", config)
    assert code == 2 and "\n" not in err and expected in err, err
    assert not out.exists()


BAD_FLAGS = {
    "strategy": (["--strategy", "fast"], "--strategy must be one of latency, resource, got 'fast'"),
    "reuse": (["--reuse-factor", "0"], "--reuse-factor must be a positive integer, got 0"),
    "part": (["--part", "xc vu"], "--part 'xc vu': a part name is letters"),
    "clock": (["--clock-period", "-1"], "--clock-period must be a positive number of nanoseconds, got -1.0"),
    "project": (["--project-name", "1st"], "--project-name '1st' is not a C identifier"),
    "no-file": (["--config", "missing.yml"], "missing.yml: no such settings file"),
}


@pytest.mark.parametrize("case", list(BAD_FLAGS))
def test_a_bad_flag_is_one_line(case: str, tmp_path: Path, capsys) -> None:
    flags, expected = BAD_FLAGS[case]
    out = tmp_path / "prj"
    code, _, err = _run(capsys, JET_TAGGER, "-o", out, *flags)
    assert code == 2 and "\n" not in err and expected in err, err
    assert not out.exists()


def test_settings_are_in_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "prj"
    assert _run(capsys, JET_TAGGER, "-o", out, "--strategy", "resource", "--reuse-factor", "4", "--part", PART)[0] == 0
    hardware = json.loads((out / "hawqc_report.json").read_text())["hardware"]
    assert hardware["strategy"] == "resource" and hardware["reuse_factor"] == 4 and hardware["part"] == PART
    assert hardware["layers"]["dense_1_matmul_1"] == {"reuse_factor": 4, "strategy": "resource"}


def test_the_readmes_settings_file_is_accepted(tmp_path: Path, capsys) -> None:
    import re

    (block,) = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.DOTALL)
    config = tmp_path / "settings.yml"
    config.write_text(block)
    out = tmp_path / "prj"
    code, _, err = _run(capsys, JET_TAGGER, "-o", out, "--config", config)
    assert code == 0, err
    layers = json.loads((out / "hawqc_report.json").read_text())["hardware"]["layers"]
    assert layers["dense_1_matmul_1"] == {"reuse_factor": 32, "strategy": "resource"}
    assert layers["dense_4_matmul"] == {"reuse_factor": 4, "strategy": "latency"}


DIGITS_CNN = REPO / "examples" / "digits_cnn" / "digits_cnn.onnx"


@pytest.mark.parametrize(
    "backend, io_type, refused",
    [("vivado", "io_parallel", True), ("vitis", "io_parallel", True), ("vivado", "io_stream", False), ("catapult", "io_parallel", False)],
)
def test_a_resource_convolution_reuse_factor_above_its_inputs(backend, io_type, refused, tmp_path: Path, capsys) -> None:
    """hls4ml lists 18 as valid for conv1's 9x8 product, but Vivado/Vitis's io_parallel
    conv_2d_resource_cl asserts reuse_factor <= 9 at run time: the C simulation would abort."""
    config = tmp_path / "s.yml"
    config.write_text("strategy: resource\nreuse_factor: 1\nlayers:\n  conv1: {reuse_factor: 18}\n")
    out = tmp_path / "prj"
    code, _, err = _run(capsys, DIGITS_CNN, "-o", out, "--backend", backend, "--io-type", io_type, "--config", config)
    if refused:
        assert code == 2 and "\n" not in err, err
        assert f"layer 'conv1' (Conv2D): hls4ml's {backend.capitalize()} io_parallel Resource convolution works only for reuse factors up to 9" in err  # fmt: skip
        assert not out.exists()
    else:
        assert code == 0, err


def test_resource_depthwise_convolutions_are_refused(tmp_path: Path) -> None:
    from cnn_models import depthwise_residual

    from hawqc.backends.base import get_backend
    from hawqc.backends.hls_settings import HlsSettings
    from hawqc.errors import UserInputError

    for backend, io_type in (("vivado", "io_stream"), ("catapult", "io_stream")):
        with pytest.raises(UserInputError, match=r"\(DepthwiseConv2D\): hawqc supports only the latency strategy"):
            get_backend(backend).lower(depthwise_residual(), tmp_path / backend, io_type=io_type, settings=HlsSettings(strategy="resource"))  # fmt: skip
