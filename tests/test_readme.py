"""The README's custom pass must work exactly as printed."""

from __future__ import annotations

import re

from conftest import REPO
from hawqc.frontends.onnx import load_onnx_text
from hawqc.passes.registry import default_registry

MODEL = """<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4] x) => (float[1,4] y)
{
   a = Dropout (x)
   b = Relu (a)
   y = Dropout (b)
}"""


def test_readme_custom_pass_runs():
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (snippet,) = [block for block in blocks if "register_pass" in block]
    model = load_onnx_text(MODEL)
    try:
        exec(compile(snippet, "README.md", "exec", dont_inherit=True), {"model": model})
        assert [node.op_type for node in model.graph] == ["Dropout", "Relu"]
    finally:
        default_registry().passes.pop("drop-dropout", None)
