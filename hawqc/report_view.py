"""Showing a compiled project's layer table: the rich table on the terminal and a PNG plot.

`hawqc` prints the table after a compile; `hawqc report OUTDIR [--plot FILE.png]` (in `hawqc.cli`)
prints it again from `OUTDIR/hawqc_report.json` and draws per-layer bit widths (weight,
accumulator, result) and BOPs with matplotlib.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from hawqc.errors import UserInputError
from hawqc.layer_table import compact_type

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
    """The report hawqc wrote into `outdir`, with every entry `hawqc report` reads checked: the file
    may have been edited by hand, and a missing key is said naming the file and the entry."""
    path = outdir / REPORT_FILE
    if not path.is_file():
        raise UserInputError(f"{path}: no such file (is {outdir} a project hawqc wrote?)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise UserInputError(f"{path}: cannot read ({err.strerror or type(err).__name__})") from None
    except json.JSONDecodeError as err:
        raise UserInputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(report, dict):
        raise UserInputError(f"{path}: expected a JSON object, got a {type(report).__name__}")
    if not isinstance(report.get("layer_table"), dict):
        raise UserInputError(f"{path}: has no layer table (written by an older hawqc: compile again)")
    problem = _table_problem(report["layer_table"]) or _fields_problem(report, _REPORT_FIELDS, "")
    if problem is not None:
        raise UserInputError(f"{path}: {problem}")
    return report


# What `render_table`, `plot` and the plot's title read, and the JSON each must be (as
# `hawqc.layer_table.build_table` writes it).
_FIELD_KINDS = {
    "string": lambda v: isinstance(v, str),
    "string or null": lambda v: v is None or isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "integer or null": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    "number or null": lambda v: v is None or (isinstance(v, int | float) and not isinstance(v, bool)),
    "list of integers": lambda v: isinstance(v, list) and all(isinstance(d, int) and not isinstance(d, bool) for d in v),
}
_ROW_FIELDS = {
    "name": "string", "op": "string", "input_shape": "list of integers", "output_shape": "list of integers",
    "weight": "string or null", "accum": "string or null", "result": "string or null",
    "multiplications": "number or null", "bops": "number or null", "reuse_factor": "integer or null",
    "latency_cycles": "number or null",
}  # fmt: skip
_TOTAL_FIELDS = {
    "layers": "integer", "multiplications": "number or null", "bops": "number or null",
    "latency_cycles_estimate": "number or null",
}  # fmt: skip
_TABLE_FIELDS = {"latency_note": "string"}
_REPORT_FIELDS = {"model": "string", "backend": "string"}  # optional: only the plot's title reads them


def _fields_problem(entry: dict[str, Any], fields: dict[str, str], where: str, *, required: bool = False) -> str | None:
    """What is wrong with `entry`'s fields, named by their path in the file (`where.key`)."""
    for key, kind in fields.items():
        path = f"{where}.{key}" if where else key
        if key not in entry:
            if required:
                return f"{where}: missing key '{key}'"
        elif not _FIELD_KINDS[kind](entry[key]):
            return f"{path}: expected {kind}, got {json.dumps(entry[key])[:40]}"
    return None


def _table_problem(table: dict[str, Any]) -> str | None:
    rows = table.get("layers")
    if not isinstance(rows, list):
        return "layer_table.layers: expected a list of layers" if "layers" in table else "layer_table: missing key 'layers'"
    for index, row in enumerate(rows):
        where = f"layer_table.layers[{index}]"
        if not isinstance(row, dict):
            return f"{where}: expected an object with keys {', '.join(_ROW_FIELDS)}"
        problem = _fields_problem(row, _ROW_FIELDS, where, required=True)
        if problem is not None:
            return problem
    totals = table.get("totals")
    if not isinstance(totals, dict):
        return "layer_table.totals: expected an object" if "totals" in table else "layer_table: missing key 'totals'"
    return _fields_problem(totals, _TOTAL_FIELDS, "layer_table.totals", required=True) or _fields_problem(
        table, _TABLE_FIELDS, "layer_table", required=True
    )


def _bits(text: str | None) -> int:
    match = re.search(r"<(\d+),", text or "")
    return int(match.group(1)) if match else 0


def plot(table: dict[str, Any], path: Path, title: str = "") -> None:
    """Two panels over the layers: bit widths of weight / accumulator / result, and BOPs."""
    if path.suffix.lower() != ".png":
        raise UserInputError(f"{path}: --plot writes a PNG; name the file .png")
    if not path.parent.is_dir():
        raise UserInputError(f"{path.parent}: no such directory for --plot")
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory; --plot writes a PNG file")
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100)
        tmp.replace(path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise UserInputError(f"{path}: cannot write ({err.strerror or type(err).__name__})") from None
    finally:
        plt.close(fig)
