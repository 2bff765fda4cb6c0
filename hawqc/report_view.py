"""Showing a compiled project's layer table: the rich table on the terminal and a PNG plot.

`hawqc` prints the table after a compile; `hawqc report OUTDIR [--plot FILE.png]` (in `hawqc.cli`)
prints it again from `OUTDIR/hawqc_report.json` and draws per-layer bit widths (weight,
accumulator, result) and BOPs with matplotlib.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from hawqc.errors import UserInputError
from hawqc.layer_table import compact_type
from hawqc.temporaries import replace_atomically

REPORT_FILE = "hawqc_report.json"
# Wide enough that a table printed into a pipe or a log is not wrapped at 80 columns.
_PIPE_WIDTH = 200


def _shape(dims: list[int]) -> str:
    return "x".join(map(str, dims)) if dims else "-"


def _count(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render_table(table: dict[str, Any], file: TextIO | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    out = file or sys.stdout
    console = Console(file=out, width=None if out.isatty() else _PIPE_WIDTH)
    view = Table(title="layers", title_justify="left")
    for header, justify in [
        ("layer", "left"), ("op", "left"), ("in", "right"), ("out", "right"), ("weight", "left"),
        ("accum", "left"), ("result", "left"), ("mults", "right"), ("BOPs", "right"), ("RF", "right"),
        ("cycles*", "right"),
    ]:  # fmt: skip
        view.add_column(header, justify=justify)
    for row in table["layers"]:
        view.add_row(
            row["name"], row["op"], _shape(row["input_shape"]), _shape(row["output_shape"]),
            compact_type(row["weight"]), compact_type(row["accum"]), compact_type(row["result"]),
            _count(row["multiplications"]), _count(row["bops"]), str(row["reuse_factor"]),
            _count(row["latency_cycles"]),
        )  # fmt: skip
    totals = table["totals"]
    view.add_section()
    view.add_row(
        f"total ({totals['layers']} layers)", "", "", "", "", "", "",
        _count(totals["multiplications"]), _count(totals["bops"]), "", _count(totals["latency_cycles_estimate"]),
    )  # fmt: skip
    console.print(view)
    console.print(f"* latency in clock cycles, {table['latency_note']}")


def load_report(outdir: Path) -> dict[str, Any]:
    path = outdir / REPORT_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (is {outdir} a project hawqc wrote?)")
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(report, dict) or not isinstance(report.get("layer_table"), dict):
        raise UserInputError(f"{path}: has no layer table (written by an older hawqc: compile again)")
    return report


def _bits(text: str | None) -> int:
    match = re.search(r"<(\d+),", text or "")
    return int(match.group(1)) if match else 0


def plot(table: dict[str, Any], path: Path, title: str = "") -> None:
    """Two panels over the layers: bit widths of weight / accumulator / result, and BOPs."""
    if path.suffix.lower() != ".png":
        raise UserInputError(f"{path}: --plot writes a PNG; name the file .png")
    if not path.parent.is_dir():
        raise UserInputError(f"{path.parent}: no such directory for --plot")
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import numpy as np

    rows = table["layers"]
    names = [row["name"] for row in rows]
    x = np.arange(len(rows))
    fig, (widths, bops) = plt.subplots(2, 1, figsize=(max(6.0, 0.6 * len(rows) + 2), 7), sharex=True)
    for offset, role in zip((-0.27, 0.0, 0.27), ("weight", "accum", "result")):
        widths.bar(x + offset, [_bits(row[role]) for row in rows], width=0.27, label=role)
    widths.set_ylabel("bits")
    widths.legend()
    widths.set_title(title or "per-layer bit widths and BOPs")
    bops.bar(x, [row["bops"] or 0 for row in rows], color="tab:purple")
    bops.set_ylabel("BOPs")
    bops.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    fig.tight_layout()
    try:
        replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
