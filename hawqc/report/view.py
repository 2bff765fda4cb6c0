"""Showing a compiled project's layer table: the rich table on the terminal and a PNG plot.

`hawqc` prints the table after a compile; `hawqc report OUTDIR [--plot FILE.png]` (in `hawqc.cli.compile`)
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
from hawqc.report.layer_table import compact_type
from hawqc.temporaries import replace_atomically

REPORT_FILE = "hawqc_report.json"
# The default table fits a 100-column terminal; a pipe or a log gets that width too, so that what a
# user pastes looks like what they saw. `--wide` has every column and the full types.
NARROW_WIDTH = 100
_WIDE_PIPE_WIDTH = 200


def _shape(dims: list[int]) -> str:
    return "x".join(map(str, dims)) if dims else "-"


def _count(value: float | int | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _short_type(text: str | None) -> str:
    """`fixed<6,1,RND_CONV,SAT_SYM>` -> `fixed<6,1>`: width and integer bits; the modes are in --wide."""
    return re.sub(r"^(u?fixed<\d+,-?\d+)(,[^>]*)?>$", r"\1>", compact_type(text))


def _short_op(op: str) -> str:
    """`Activation(relu)` -> `relu`: the function says what the layer is."""
    match = re.fullmatch(r"Activation\((.+)\)", op)
    return match.group(1) if match else op


# (header, justify, cell of a row, cell of the totals row); the narrow view is the subset below.
_COLUMNS = {
    "layer": ("left", lambda r: r["name"], lambda t: f"total ({t['layers']} layers)"),
    "op": ("left", lambda r: r["op"], lambda t: ""),
    "in": ("right", lambda r: _shape(r["input_shape"]), lambda t: ""),
    "out": ("right", lambda r: _shape(r["output_shape"]), lambda t: ""),
    "weight": ("left", lambda r: compact_type(r["weight"]), lambda t: ""),
    "accum": ("left", lambda r: compact_type(r["accum"]), lambda t: ""),
    "result": ("left", lambda r: compact_type(r["result"]), lambda t: ""),
    "mults": ("right", lambda r: _count(r["multiplications"]), lambda t: _count(t["multiplications"])),
    "BOPs": ("right", lambda r: _count(r["bops"]), lambda t: _count(t["bops"])),
    "RF": ("right", lambda r: str(r["reuse_factor"]), lambda t: ""),
    "cycles*": ("right", lambda r: _count(r["latency_cycles"]), lambda t: _count(t["latency_cycles_estimate"])),
}
_NARROW = ("layer", "op", "out", "weight", "accum", "result", "BOPs", "cycles*")
_NARROW_CELLS = {
    "op": lambda r: _short_op(r["op"]),
    "weight": lambda r: _short_type(r["weight"]),
    "accum": lambda r: _short_type(r["accum"]),
    "result": lambda r: _short_type(r["result"]),
}


def render_table(table: dict[str, Any], file: TextIO | None = None, *, wide: bool = False) -> None:
    """The layer table. By default the columns that fit a 100-column terminal, types without their
    rounding and saturation modes, and long cells wrapped rather than cut; `wide`: every column."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = file or sys.stdout
    width = None if out.isatty() else (_WIDE_PIPE_WIDTH if wide else NARROW_WIDTH)
    console = Console(file=out, width=width)
    names = tuple(_COLUMNS) if wide else _NARROW
    cells = {name: _COLUMNS[name][1] for name in names} | ({} if wide else _NARROW_CELLS)
    if wide:
        view = Table(title="layers", title_justify="left")
    else:
        view = Table(
            title="layers", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
        )
    for name in names:
        # Names wrap when the terminal is too narrow; ops, counts, shapes and types stay whole.
        folds = name == "layer"
        view.add_column(name, justify=_COLUMNS[name][0], overflow="fold", no_wrap=not folds)
    for row in table["layers"]:
        view.add_row(*(cells[name](row) for name in names))
    view.add_section()
    view.add_row(*(_COLUMNS[name][2](table["totals"]) for name in names))
    console.print(view)
    console.print(f"* latency in clock cycles, {table['latency_note']}", overflow="fold")
    if not wide:
        console.print("all columns and full types: hawqc report OUTDIR --wide")


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
# `hawqc.report.layer_table.build_table` writes it).
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
    try:
        replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    except OSError as err:
        raise UserInputError(f"{path}: cannot write ({err.strerror or type(err).__name__})") from None
    finally:
        plt.close(fig)
