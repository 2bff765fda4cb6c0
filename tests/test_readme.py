"""The README's custom pass is examples/custom_pass.py, and it works from Python and the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

EXAMPLE = REPO / "examples" / "custom_pass.py"
MODEL = """<ir_version: 8, opset_import: ["" : 17, "qonnx.custom_op.general" : 1]>
g (float[1,4] x) => (float[1,4] y)
   <float s = {0.25}, float z = {0}, float b = {8}>
{
   xq = qonnx.custom_op.general.Quant <signed: int = 1, narrow: int = 0, rounding_mode: string = "ROUND"> (x, s, z, b)
   a = Relu (xq)
   r = Relu (a)
   y = Relu (r)
}"""


def test_readme_shows_the_example_as_it_is():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (snippet,) = [block for block in blocks if "register_pass" in block]
    assert snippet.strip() in EXAMPLE.read_text()


def test_example_runs_from_python(tmp_path: Path):
    (tmp_path / "m.onnxtxt").write_text(MODEL)
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "m.onnxtxt"), str(tmp_path / "out.onnxtxt")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "merge-relus: changed=True {'relus-merged': 2}" in result.stdout
    assert (tmp_path / "out.onnxtxt").read_text().count("Relu") == 1


def test_example_runs_from_the_command_line(tmp_path: Path):
    (tmp_path / "m.onnxtxt").write_text(MODEL)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hawqc-opt"), str(tmp_path / "m.onnxtxt"), "--load-pass-plugin",
         str(EXAMPLE), "-p", "merge-relus,cleanup", "--validate", "50", "--pass-statistics"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Relu") == 1 and "relus-merged" in result.stderr
