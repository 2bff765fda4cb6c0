"""CNNs end to end: they compile with `hawqc ... --verify N` and the C simulation equals hardware
mode for every sample.

- the digits CNN example (Conv + BatchNorm + ReLU + Quant + MaxPool, a residual Add, a dense head;
  NCHW as exported, without `pads` / `strides` attributes on some nodes): all three backends, 1000
  samples, and hardware mode equal to semantic mode on all of them. Its BatchNorms become a
  requantization with float32 constants that hardware applies exactly; float32 may round those
  products, so precision inference declares them inexact and the report says so, but on these
  inputs no rounding crosses a Quant boundary;
- `branched_model_ch_last.onnx` (Brevitas, already channels-last, 256x256x3: depthwise and 1x1
  convolutions, LeakyRelu, MaxPool, Resize, Concat): io_stream, a few samples (each is a 256x256
  image), and the report says how hardware mode compares with semantic mode.
"""

from __future__ import annotations

import json

import pytest
from conftest import REPO, data_model

from hawqc.cli import main

DIGITS_CNN = REPO / "examples" / "digits_cnn" / "digits_cnn.onnx"


def _compile(tmp_path, capsys, model, *args: str) -> tuple[str, dict]:
    outdir = tmp_path / "prj"
    code = main([str(model), "-o", str(outdir), *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out, json.loads((outdir / "hawqc_report.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, io_type",
    [("vitis", "io_parallel"), ("vivado", "io_parallel"), ("catapult", "io_parallel"), ("vitis", "io_stream")],
)
def test_digits_cnn_is_bit_exact(tmp_path, capsys, backend, io_type):
    out, report = _compile(
        tmp_path, capsys, DIGITS_CNN, "--backend", backend, "--io-type", io_type, "--verify", "1000"
    )
    assert "verify: 1000/1000 samples bit-exact (C simulation vs hardware mode)" in out
    assert "verify: hardware mode equals semantic mode on 1000/1000 samples" in out
    assert "layout of 'global_in' is NHWC (was NCHW) in the project" in out
    assert report["layouts"] == {"global_in": "NCHW->NHWC"}
    verify = report["verify"]
    assert verify["bit_exact"] and verify["reference"] == "hardware"
    modes = verify["hardware_vs_semantic"]
    assert modes["equal"] and modes["mismatch_rate"] == 0.0
    assert {"bn1_mul_out", "bn2_mul_out"} <= set(modes["declared_inexact"])
    # Every pass of the pipeline ran, and the BatchNorms were fused into requantizations.
    ran = {p["name"] for p in report["passes"]}
    assert {"fold-quant", "fuse-bn", "channels-last", "gemm-to-matmul"} <= ran
    fuse = next(p for p in report["passes"] if p["name"] == "fuse-bn")
    assert fuse["changed"]
    ops = [layer["op"] for layer in report["layers"]]
    assert any("Conv2D" in op for op in ops) and any("Pool" in op for op in ops)
    assert any("Merge" in op or "add" in op.lower() for op in ops), ops


@pytest.mark.slow
def test_branched_brevitas_model_is_bit_exact_in_io_stream(tmp_path, capsys):
    out, report = _compile(
        tmp_path,
        capsys,
        data_model("branched_model_ch_last.onnx"),
        "--backend",
        "vitis",
        "--io-type",
        "io_stream",
        "--verify",
        "3",
    )
    assert "verify: 3/3 samples bit-exact (C simulation vs hardware mode)" in out
    modes = report["verify"]["hardware_vs_semantic"]
    # The report states the comparison whatever it is; here every scale is a power of two and every
    # float32 computation is exact, so the two modes agree.
    assert modes["samples"] == 3 and modes["equal"] and modes["declared_inexact"] == []
    assert report["layouts"] == {}  # already channels-last: nothing was transposed
    ops = {layer["op"] for layer in report["layers"]}
    assert any("Resize" in op for op in ops) and any("Concat" in op for op in ops), ops
