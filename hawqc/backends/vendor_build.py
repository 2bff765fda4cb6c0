"""`hawqc build OUTDIR`: run the vendor HLS tool on a written project, as hls4ml 1.3.0's own
`build()` runs it, and put the synthesis results into `hawqc_report.json`.

The command lines are those of hls4ml's backends (`VivadoBackend.build`, `VitisBackend.build`,
`CatapultBackend.build`), with C simulation off (hawqc's own, bit-checked C simulation has run at
compile time) and C synthesis on:
- Vivado: `vivado_hls -f build_prj.tcl "reset=False csim=False synth=True cosim=... ..."`;
- Vitis: the options go into `build_opt.tcl`, then `vitis-run --tcl build_prj.tcl --mode hls`
  (Vitis 2024.2 and later); a `vitis_hls` without `vitis-run` (Vitis HLS up to 2024.1) runs the
  same script as `vitis_hls -f build_prj.tcl`;
- Catapult: `catapult -product ultra -shell -f build_prj.tcl -eval 'set ::argv "..."'`, the
  executable found on PATH, else in `$MGC_HOME/bin` or `$CATAPULT_HOME/bin`.
The tool's output goes to `OUTDIR/hawqc_build.log`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hawqc.backends.synthesis_reports import (
    read_catapult_solution,
    read_vivado_cosim,
    read_vivado_csynth,
)
from hawqc.errors import BackendError, UserInputError
from hawqc.temporaries import replace_atomically

LOG_NAME = "hawqc_build.log"
REPORT_NAME = "hawqc_report.json"


@dataclass(frozen=True)
class ProjectInfo:
    outdir: Path
    backend: str  # hls4ml's name: Vivado, Vitis, Catapult
    project_name: str


@dataclass(frozen=True)
class VendorCommand:
    tool: str  # what was looked up and found, for the report
    argv: tuple[str, ...]
    # Files to write into the project before running (Vitis reads its options from build_opt.tcl).
    files: tuple[tuple[str, str], ...] = ()


def read_project(outdir: Path) -> ProjectInfo:
    """The backend and top function of a written project, from its `hls4ml_config.yml`."""
    config_path = outdir / "hls4ml_config.yml"
    if not outdir.is_dir():
        raise UserInputError(f"{outdir}: no such project directory")
    if not config_path.is_file():
        raise UserInputError(f"{outdir}: no hls4ml_config.yml (not a project written by hawqc)")
    import yaml

    from hawqc.backends.hls4ml_config_file import load_hls4ml_config

    try:
        config = load_hls4ml_config(config_path.read_text())
    except yaml.YAMLError as error:
        raise UserInputError(f"{config_path}: unreadable ({str(error).splitlines()[0]})") from None
    backend, name = (config or {}).get("Backend"), (config or {}).get("ProjectName")
    if backend not in ("Vivado", "Vitis", "Catapult") or not isinstance(name, str):
        raise UserInputError(f"{config_path}: Backend {backend!r} / ProjectName {name!r}: hawqc builds Vivado, Vitis and Catapult projects")
    return ProjectInfo(outdir, backend, name)


def _flags(values: dict[str, bool | int]) -> str:
    # hls4ml formats Python's values into the Tcl argument: True / False, numbers as they are.
    return " ".join(f"{key}={value}" for key, value in values.items())


def vendor_command(project: ProjectInfo, cosim: bool) -> VendorCommand:
    """The command hls4ml 1.3.0 would run for `project`; UserInputError naming the tool if absent."""
    if project.backend == "Vivado":
        tool = _require("vivado_hls")
        flags = dict(reset=False, csim=False, synth=True, cosim=cosim, validation=False, export=False, vsynth=False, fifo_opt=False)  # fmt: skip
        return VendorCommand("vivado_hls", (tool, "-f", "build_prj.tcl", _flags(flags)))
    if project.backend == "Vitis":
        options = dict(reset=0, csim=0, synth=1, cosim=int(cosim), validation=0, export=0, vsynth=0, fifo_opt=0)
        build_opt = "array set opt {\n" + "".join(f"    {k:<10} {v}\n" for k, v in options.items()) + "}\n"
        files = (("build_opt.tcl", build_opt),)
        if shutil.which("vitis-run"):
            return VendorCommand("vitis-run", (shutil.which("vitis-run"), "--tcl", "build_prj.tcl", "--mode", "hls"), files)
        if shutil.which("vitis_hls"):
            return VendorCommand("vitis_hls", (shutil.which("vitis_hls"), "-f", "build_prj.tcl"), files)
        raise UserInputError("vitis-run (or vitis_hls) is not on the PATH: Vitis HLS is needed to build a Vitis project")
    tool = _catapult()
    flags = dict(reset=False, csim=False, synth=True, cosim=cosim, validation=False, export=False, vsynth=False, fifo_opt=False,
                 bitfile=False, ran_frame=5, sw_opt=False, power=False, da=False, vhdl=False, verilog=True, bup=False)  # fmt: skip
    return VendorCommand("catapult", (tool, "-product", "ultra", "-shell", "-f", "build_prj.tcl", "-eval", f'set ::argv "{_flags(flags)}"'))  # fmt: skip


def _require(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise UserInputError(f"{tool} is not on the PATH: it is needed to build this project")
    return found


def _catapult() -> str:
    found = shutil.which("catapult")
    if found:
        return found
    for home in ("MGC_HOME", "CATAPULT_HOME"):
        if os.environ.get(home):
            candidate = shutil.which(str(Path(os.environ[home]) / "bin" / "catapult"))
            if candidate:
                return candidate
    raise UserInputError("catapult is not on the PATH (nor in $MGC_HOME/bin or $CATAPULT_HOME/bin): it is needed to build this project")


def build_project(outdir: Path, cosim: bool = False) -> dict[str, Any]:
    """Run the vendor tool on `outdir`, parse its reports, store them as the report's `synthesis`."""
    outdir = Path(outdir).resolve()
    project = read_project(outdir)
    command = vendor_command(project, cosim)
    for name, text in command.files:
        (outdir / name).write_text(text)
    log = outdir / LOG_NAME
    start = time.perf_counter()
    with log.open("w") as out:
        completed = subprocess.run(
            command.argv, cwd=outdir, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False
        )
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise BackendError(f"{command.tool} failed (exit code {completed.returncode}); its output is in {log}")
    synthesis: dict[str, Any] = {
        "tool": command.tool,
        "command": [Path(command.argv[0]).name, *command.argv[1:]],
        "seconds": round(seconds, 3),
        "log": LOG_NAME,
        # Catapult's co-simulation (SCVerify, msim) leaves no report hawqc reads: its result is in the log.
        "cosim_requested": cosim,
        **_read_reports(project, cosim),
    }
    _store(outdir / REPORT_NAME, synthesis)
    return synthesis


def _read_reports(project: ProjectInfo, cosim: bool) -> dict[str, Any]:
    prj = project.outdir / f"{project.project_name}_prj"
    if project.backend == "Catapult":
        solutions = sorted(prj.glob(f"{project.project_name}.v*"), key=_version_number) if prj.is_dir() else []
        if not solutions:
            raise BackendError(f"{prj}: the tool wrote no solution directory {project.project_name}.v<N>")
        return {"report": str(solutions[-1].relative_to(project.outdir)), **read_catapult_solution(solutions[-1])}
    top = project.project_name
    solution = prj / "solution1"
    candidates = [solution / "syn" / "report" / f"{top}_csynth.xml", solution / "syn" / "report" / "csynth.xml"]
    report = next((path for path in candidates if path.is_file()), None)
    if report is None:
        raise BackendError(f"{candidates[0]}: the tool wrote no synthesis report")
    result = {"report": str(report.relative_to(project.outdir)), **read_vivado_csynth(report)}
    if cosim:
        cosim_report = solution / "sim" / "report" / f"{top}_cosim.rpt"
        if not cosim_report.is_file():
            raise BackendError(f"{cosim_report}: the tool wrote no co-simulation report")
        result["cosim"] = read_vivado_cosim(cosim_report)
    return result


def _version_number(path: Path) -> int:
    suffix = path.name.rsplit(".v", 1)[-1]
    return int(suffix) if suffix.isdigit() else -1


def _store(report_path: Path, synthesis: dict[str, Any]) -> None:
    """Add (or replace) the `synthesis` section; the rest of the report stays as compile wrote it."""
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["synthesis"] = synthesis
    text = json.dumps(report, indent=2) + "\n"
    replace_atomically(report_path, lambda tmp: tmp.write_text(text))
