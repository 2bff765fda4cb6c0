"""The report a user reads: the per-layer table, `hawqc report [--plot]`, progress only on a terminal."""

from __future__ import annotations

import io
import itertools
import json
import math
import re

import pytest
from conftest import JET_TAGGER

from hawqc.cli import main
from hawqc.flow import progress
from hawqc.flow.driver import CompileOptions, compile_model
from hawqc.report.layer_table import build_table, latency_cycles
from hawqc.report.view import render_table


@pytest.fixture(scope="module")
def jet(tmp_path_factory):
    return compile_model(JET_TAGGER, tmp_path_factory.mktemp("table") / "proj", CompileOptions())


def test_rows_carry_types_multiplications_bops_and_reuse(jet):
    table = jet.report.layer_table
    rows = {row["name"]: row for row in table["layers"]}
    assert [row["name"] for row in table["layers"]] == [layer.name for layer in jet.project.layers]
    dense = [p for p in jet.project.plan.layers if p.op == "Dense"]
    bops = jet.report.bops["layers"]
    assert len(dense) == len(bops) >= 2
    for planned, entry in zip(dense, bops):
        row = rows[planned.name]
        n_in, n_out = planned.layer["n_in"], planned.layer["n_out"]
        assert row["input_shape"] == [n_in] and row["output_shape"] == [n_out]
        assert row["multiplications"] == n_in * n_out
        assert row["bops"] == entry["bops"]
        assert (row["weight"], row["accum"], row["result"]) == tuple(str(planned.types[r]) for r in ("weight", "accum", "result"))
        assert row["reuse_factor"] == 1 and row["strategy"] == "Latency"
        assert row["latency_cycles"] == 1 + math.ceil(math.log2(n_in))
    totals = table["totals"]
    assert totals["bops"] == jet.report.bops["total"]
    assert totals["multiplications"] == sum(row["multiplications"] for row in table["layers"])
    assert totals["latency_cycles_estimate"] == sum(row["latency_cycles"] for row in table["layers"]) > 0
    assert table["latency_note"].startswith("estimate")
    # It is in the report on disk, for `hawqc report`.
    assert json.loads((jet.outdir / "hawqc_report.json").read_text())["layer_table"] == json.loads(json.dumps(table))


def test_reuse_factor_and_strategy_are_read_back_from_the_project(jet, tmp_path):
    import shutil

    import yaml

    copy = tmp_path / "proj"
    shutil.copytree(jet.outdir, copy)
    config_path = copy / "hls4ml_config.yml"
    config = yaml.safe_load(config_path.read_text())
    first_dense = next(p for p in jet.project.plan.layers if p.op == "Dense")
    config["HLSConfig"]["LayerName"][first_dense.name]["ReuseFactor"] = 4
    config_path.write_text(yaml.safe_dump(config))
    import dataclasses

    table = build_table(jet.model, dataclasses.replace(jet.project, outdir=copy))
    row = next(r for r in table["layers"] if r["name"] == first_dense.name)
    assert row["reuse_factor"] == 4
    assert row["latency_cycles"] == 4 + math.ceil(math.log2(first_dense.layer["n_in"]))
    config["HLSConfig"]["LayerName"][first_dense.name]["Strategy"] = "Resource"
    config_path.write_text(yaml.safe_dump(config))
    table = build_table(jet.model, dataclasses.replace(jet.project, outdir=copy))
    assert table["totals"]["latency_cycles_estimate"] is None and table["latency_note"].startswith("no estimate")


def test_io_stream_has_no_latency_estimate(tmp_path):
    result = compile_model(JET_TAGGER, tmp_path / "proj", CompileOptions(io_type="io_stream"))
    table = result.report.layer_table
    assert table["totals"]["latency_cycles_estimate"] is None
    assert all(row["latency_cycles"] is None for row in table["layers"])


def test_latency_model():
    assert latency_cycles("Dense", 64, 1, 1) == 7
    assert latency_cycles("Conv2D", 9, 2, 1) == 2 + 4
    assert latency_cycles("MaxPooling2D", None, 1, 4) == 2
    assert latency_cycles("Reshape", None, 1, 1) == 0
    assert latency_cycles("Activation(relu)", None, 1, 1) == 1


def test_compile_prints_the_table_and_report_replots_it(jet, tmp_path, capsys):
    proj = tmp_path / "proj"
    assert main([str(JET_TAGGER), "-o", str(proj)]) == 0
    out, err = capsys.readouterr()
    names = [row["name"] for row in jet.report.layer_table["layers"]]
    assert all(name in out for name in names) and "total (" in out and "estimate" in out
    assert err == ""  # no progress bars or colour codes outside a terminal
    assert "\x1b[" not in out
    png = tmp_path / "layers.png"
    assert main(["report", str(proj), "--plot", str(png)]) == 0
    out, _ = capsys.readouterr()
    assert all(name in out for name in names) and f"wrote {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize(
    "args, message",
    [
        (["{tmp}/nowhere"], "hawqc_report.json: no such file"),
        (["{proj}", "--plot", "{tmp}/plot.jpg"], "plot.jpg: --plot writes a PNG"),
        (["{proj}", "--plot", "{tmp}/no/dir/plot.png"], "no such directory"),
    ],
)
def test_report_errors_exit_2(jet, tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path, proj=jet.outdir) for a in args]
    assert main(["report", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*png"))


def test_report_of_an_old_report_without_a_table_exits_2(tmp_path, capsys):
    (tmp_path / "hawqc_report.json").write_text(json.dumps({"model": "m", "layers": []}))
    assert main(["report", str(tmp_path)]) == 2
    assert "has no layer table" in capsys.readouterr().err


def test_progress_only_on_a_terminal(monkeypatch, capsys):
    # Off a terminal the slices are as large as memory allows and there is no bar; on one they are
    # also small enough (a fiftieth of the total) for a bar that moves.
    assert progress.slice_length(1000, 400) == 400
    with progress.bar(1000, "work") as advance:
        advance(400)
    monkeypatch.setattr(progress, "enabled", lambda: True)
    assert progress.slice_length(1000, 400) == 20 and progress.slice_length(1000, 5) == 5
    assert progress.slice_length(10, 400) == 1
    with progress.bar(1000, "work") as advance:
        for _ in range(50):
            advance(20)
    assert capsys.readouterr().out == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _long_table() -> dict:
    """A table with a long layer name, a big shape and big counts, as a CNN's report has."""
    row = {
        "name": "a_rather_long_layer_name_from_an_export_conv2d_17_bias_add", "op": "Activation(leaky_relu)",
        "input_shape": [128, 128, 64], "output_shape": [128, 128, 64],
        "weight": "fixed<6,1,RND_CONV,SAT_SYM>", "accum": "fixed<24,12,RND_CONV,SAT>", "result": "ufixed<16,8,RND_CONV,SAT>",
        "multiplications": 123456789, "bops": 98765432101, "reuse_factor": 64, "latency_cycles": 1234567,
    }  # fmt: skip
    totals = {"layers": 1, "multiplications": 123456789, "bops": 98765432101, "latency_cycles_estimate": 1234567}
    return {"layers": [row], "totals": totals, "latency_note": "estimate: a note long enough to need more than one line " * 3}


@pytest.mark.parametrize("terminal", [False, True])
def test_the_default_table_reads_on_100_columns(jet, terminal, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    for table in (jet.report.layer_table, _long_table()):
        out = _Terminal() if terminal else io.StringIO()
        render_table(table, out)
        text = out.getvalue()
        lines = re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines()  # without the terminal's colours
        assert max(len(line) for line in lines) <= 100, text
        assert "…" not in text  # wrapped, never cut
        # A long name is folded over the lines of its row (the first column), whole.
        body = lines[lines.index(next(line for line in lines if line.startswith("───"))) + 1 :]
        rows = list(itertools.takewhile(str.strip, body))
        if len(table["layers"]) == 1:
            assert "".join(line.split()[0] for line in rows) == table["layers"][0]["name"]
        assert "--wide" in text
    jet_text = io.StringIO()
    render_table(jet.report.layer_table, jet_text)
    # The bundled example: every row on one line, its types whole, without their modes.
    for row in jet.report.layer_table["layers"]:
        line = next(line for line in jet_text.getvalue().splitlines() if line.startswith(row["name"] + " "))
        for role in ("weight", "accum", "result"):
            if row[role]:
                assert re.sub(r",[A-Z_]+", "", row[role]) in line


def test_the_wide_table_has_every_column_and_the_modes(jet, capsys):
    assert main(["report", str(jet.outdir), "--wide"]) == 0
    out = capsys.readouterr().out
    for header in ("in", "mults", "RF", "BOPs", "cycles*"):
        assert f" {header} " in out
    assert "RND_CONV" in out and "SAT_SYM" in out
    assert main(["report", str(jet.outdir)]) == 0
    narrow = capsys.readouterr().out
    assert "RND_CONV" not in narrow and " mults " not in narrow
