"""`hawqc build OUTDIR`: runs the vendor tool as hls4ml 1.3.0's own `build()` does and reads its reports.

No vendor tool is installed here: a fake one (tests/fake_vendor_tool.py) stands on the PATH under
the tool's name, records how it was called and writes sample reports. The command hawqc runs is
compared with the one hls4ml's own `build()` runs on the same project (through hls4ml's
`FilesystemModelGraph`, which re-reads our hls4ml_config.yml), and the numbers hawqc reads with the
ones hls4ml's `parse_vivado_report` reads from the same files.
"""

from __future__ import annotations

import contextlib
import io
import json
import stat
import sys
from pathlib import Path

import fake_vendor_tool as fake
import pytest
from conftest import REPO

from hawqc.cli import main

JET_TAGGER = REPO / "examples" / "jet_tagger" / "jet_tagger_hawq.onnx"
TOOLS = {"vivado": "vivado_hls", "vitis": "vitis-run", "catapult": "catapult"}


@pytest.fixture(scope="module")
def projects(tmp_path_factory) -> dict[str, Path]:
    """One written project per backend (no C simulation: `hawqc build` does not need one)."""
    root = tmp_path_factory.mktemp("projects")
    written = {}
    for backend in TOOLS:
        assert main([str(JET_TAGGER), "-o", str(root / backend), "--backend", backend]) == 0
        written[backend] = root / backend
    return written


@pytest.fixture
def project(projects, request, tmp_path) -> Path:
    """A fresh copy of the backend's project, so that builds do not see each other's reports."""
    import shutil

    copy = tmp_path / request.param
    shutil.copytree(projects[request.param], copy)
    return copy


def _install(bin_dir: Path, *names: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    source = Path(fake.__file__).read_text()
    for name in names:
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{source}")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """PATH holds only the fake tools' directory (and nothing else a real install could put there)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_TOOL_LOG", str(log))
    for home in ("MGC_HOME", "CATAPULT_HOME"):
        monkeypatch.delenv(home, raising=False)
    return bin_dir, log


def _calls(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _expected_args(backend: str, cosim: bool) -> list[str]:
    c = str(cosim)
    if backend == "vivado":
        return ["-f", "build_prj.tcl", f"reset=False csim=False synth=True cosim={c} validation=False export=False vsynth=False fifo_opt=False"]  # fmt: skip
    if backend == "vitis":
        return ["--tcl", "build_prj.tcl", "--mode", "hls"]
    return ["-product", "ultra", "-shell", "-f", "build_prj.tcl", "-eval",
            (f'set ::argv "reset=False csim=False synth=True cosim={c} validation=False export=False vsynth=False '
             f'fifo_opt=False bitfile=False ran_frame=5 sw_opt=False power=False da=False vhdl=False verilog=True bup=False"')]  # fmt: skip


@pytest.mark.parametrize("project", list(TOOLS), indirect=True)
def test_missing_tool_is_named(project: Path, fake_path, capsys) -> None:
    backend = project.name
    before = (project / "hawqc_report.json").read_text()
    assert main(["build", str(project)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and TOOLS[backend] in err and "not on the PATH" in err, err
    assert (project / "hawqc_report.json").read_text() == before


@pytest.mark.parametrize("cosim", [False, True])
@pytest.mark.parametrize("project", list(TOOLS), indirect=True)
def test_build_runs_the_tool_and_reads_its_report(project: Path, fake_path, cosim: bool, capsys) -> None:
    backend = project.name
    bin_dir, log = fake_path
    _install(bin_dir, TOOLS[backend])
    assert main(["build", str(project), *(["--cosim"] if cosim else [])]) == 0, capsys.readouterr().err
    (call,) = _calls(log)
    assert call["tool"] == TOOLS[backend] and Path(call["cwd"]) == project.resolve()
    assert call["args"] == _expected_args(backend, cosim)
    if backend == "vitis":
        options = dict(line.split() for line in call["build_opt"].splitlines()[1:-1])
        assert options == {"reset": "0", "csim": "0", "synth": "1", "cosim": str(int(cosim)), "validation": "0",
                           "export": "0", "vsynth": "0", "fifo_opt": "0"}  # fmt: skip

    report = json.loads((project / "hawqc_report.json").read_text())
    assert report["backend"] == backend and report["layers"]  # the compile's report is kept
    synthesis = report["synthesis"]
    assert synthesis["tool"] == TOOLS[backend] and synthesis["cosim_requested"] == cosim
    assert (project / synthesis["log"]).read_text().startswith(f"{TOOLS[backend]}: fake run")
    if backend == "catapult":
        c = fake.CATAPULT
        assert synthesis["latency_cycles"] == {"best": c["latency"], "worst": c["latency"]}
        assert synthesis["interval_cycles"] == {"min": c["interval"], "max": c["interval"]}
        assert synthesis["throughput_cycles"] == c["throughput"] and synthesis["area_score"] == c["area"]
        assert synthesis["report"] == "myproject_prj/myproject.v1"
        return
    assert synthesis["latency_cycles"] == {"best": fake.LATENCY[0], "worst": fake.LATENCY[1]}
    assert synthesis["interval_cycles"] == {"min": fake.INTERVAL[0], "max": fake.INTERVAL[1]}
    assert synthesis["clock_period_ns"] == {"target": fake.TARGET_CLOCK, "estimated": fake.ESTIMATED_CLOCK}
    assert synthesis["resources"] == fake.RESOURCES and synthesis["available"] == fake.AVAILABLE
    assert synthesis["report"] == "myproject_prj/solution1/syn/report/myproject_csynth.xml"
    if cosim:
        lo, avg, hi = fake.COSIM_LATENCY
        assert synthesis["cosim"]["status"] == "Pass"
        assert synthesis["cosim"]["latency_cycles"] == {"min": lo, "avg": avg, "max": hi}
    else:
        assert "cosim" not in synthesis
    out = capsys.readouterr().out
    assert f"latency {fake.LATENCY[0]}..{fake.LATENCY[1]} cycles" in out and "DSP 12" in out


@pytest.mark.parametrize("project", list(TOOLS), indirect=True)
def test_hawqc_runs_what_hls4mls_own_build_runs(project: Path, fake_path) -> None:
    """hls4ml re-reads the project from its hls4ml_config.yml and builds it with its own command."""
    from hls4ml.utils.link import FilesystemModelGraph

    backend = project.name
    bin_dir, log = fake_path
    _install(bin_dir, TOOLS[backend])
    assert main(["build", str(project)]) == 0
    ours = json.loads((project / "hawqc_report.json").read_text())["synthesis"]

    graph = FilesystemModelGraph(project)
    assert graph.config.get_project_name() == "myproject" and graph.config.backend.name.lower() == backend
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = graph.build(csim=False, synth=True, cosim=False, **({"log_to_stdout": False} if backend == "vitis" else {}))
    first, second = _calls(log)
    assert second["args"] == first["args"]
    assert second.get("build_opt") == first.get("build_opt")
    if backend != "catapult":
        csynth = theirs["CSynthesisReport"]
        assert int(csynth["BestLatency"]) == ours["latency_cycles"]["best"]
        assert int(csynth["WorstLatency"]) == ours["latency_cycles"]["worst"]
        assert int(csynth["IntervalMax"]) == ours["interval_cycles"]["max"]
        assert {k: int(csynth[k]) for k in ("BRAM_18K", "DSP", "FF", "LUT", "URAM")} == ours["resources"]


def test_vitis_hls_without_vitis_run(projects, fake_path, tmp_path) -> None:
    """Vitis HLS before 2024.2 has no vitis-run; its vitis_hls runs the same build_prj.tcl."""
    import shutil

    bin_dir, log = fake_path
    _install(bin_dir, "vitis_hls")
    project = tmp_path / "vitis"
    shutil.copytree(projects["vitis"], project)
    assert main(["build", str(project)]) == 0
    (call,) = _calls(log)
    assert call["tool"] == "vitis_hls" and call["args"] == ["-f", "build_prj.tcl"]
    assert json.loads((project / "hawqc_report.json").read_text())["synthesis"]["tool"] == "vitis_hls"


@pytest.mark.parametrize("project", ["vivado"], indirect=True)
def test_a_failing_tool_is_an_error_naming_its_log(project: Path, fake_path, monkeypatch, capsys) -> None:
    bin_dir, _ = fake_path
    _install(bin_dir, "vivado_hls")
    monkeypatch.setenv("FAKE_TOOL_EXIT", "3")
    assert main(["build", str(project)]) == 3
    err = capsys.readouterr().err.strip()
    assert "vivado_hls failed (exit code 3)" in err and "hawqc_build.log" in err and "\n" not in err
    assert "synthesis" not in json.loads((project / "hawqc_report.json").read_text())


def test_not_a_project(tmp_path, capsys) -> None:
    assert main(["build", str(tmp_path)]) == 2
    assert "no hls4ml_config.yml" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "missing")]) == 2
    assert "no such project directory" in capsys.readouterr().err


def test_catapult_is_found_under_mgc_home(projects, fake_path, tmp_path, monkeypatch) -> None:
    """hls4ml's Catapult build looks in $MGC_HOME/bin when catapult is not on the PATH."""
    import shutil

    _, log = fake_path
    home = tmp_path / "mgc"
    (home / "bin").mkdir(parents=True)
    _install(home / "bin", "catapult")
    monkeypatch.setenv("MGC_HOME", str(home))
    project = tmp_path / "catapult"
    shutil.copytree(projects["catapult"], project)
    assert main(["build", str(project)]) == 0
    (call,) = _calls(log)
    assert call["tool"] == "catapult" and call["args"][:2] == ["-product", "ultra"]
