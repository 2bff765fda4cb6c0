"""Read the vendor tools' synthesis reports into one plain dict (the `synthesis` section of
`hawqc_report.json`).

Vivado HLS and Vitis HLS: `<project>_prj/solution1/syn/report/<top>_csynth.xml`, the file hls4ml's
own `parse_vivado_report` reads (same element paths: `PerformanceEstimates/SummaryOfOverallLatency`,
`AreaEstimates/Resources`; Vivado calls the DSPs `DSP48E`, Vitis `DSP`), and after co-simulation
`.../sim/report/<top>_cosim.rpt` (a `|`-table with a Verilog / VHDL row).

Catapult: the solution directory `<project>_prj/<top>.v<N>` holds `cycle.rpt` (its "Processes/Blocks
in Design" table ends in a `Design Total:` row: real operations, latency, throughput, reset length,
II, in cycles) and `rtl.rpt` (`Total Area Score:` post-scheduling, post-DP & FSM, post-assignment).
hls4ml 1.3.0 parses neither (its `parse_catapult_report` reads only the Vivado utilization report of
an optional RTL synthesis); the format here is the one of published Catapult reports, and FPGA
resources (BRAM/DSP/FF/LUT) exist for Catapult only after that RTL synthesis, so they are left out.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hawqc.errors import BackendError

# Resource names as hawqc reports them; Vivado HLS's DSP48E is Vitis HLS's DSP.
_RESOURCE_NAMES = {"BRAM_18K": "BRAM_18K", "DSP48E": "DSP", "DSP": "DSP", "FF": "FF", "LUT": "LUT", "URAM": "URAM"}


def _number(text: str | None) -> int | float | str | None:
    if text is None:
        return None
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text  # "undef", "-" and the like stay as the tool wrote them


def _text(root: ET.Element, path: str, report: Path) -> str:
    node = root.find(path)
    if node is None or node.text is None:
        raise BackendError(f"{report}: no {path} in the synthesis report")
    return node.text


def read_vivado_csynth(report: Path) -> dict[str, Any]:
    """Latency, interval, clock and resources of a Vivado/Vitis HLS `<top>_csynth.xml`."""
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError as error:
        raise BackendError(f"{report}: unreadable synthesis report ({error})") from None
    latency = "./PerformanceEstimates/SummaryOfOverallLatency"
    result: dict[str, Any] = {
        "clock_period_ns": {
            "target": _number(_text(root, "./UserAssignments/TargetClockPeriod", report)),
            "estimated": _number(_text(root, "./PerformanceEstimates/SummaryOfTimingAnalysis/EstimatedClockPeriod", report)),
        },
        "latency_cycles": {
            "best": _number(_text(root, f"{latency}/Best-caseLatency", report)),
            "worst": _number(_text(root, f"{latency}/Worst-caseLatency", report)),
        },
        "interval_cycles": {
            "min": _number(_text(root, f"{latency}/Interval-min", report)),
            "max": _number(_text(root, f"{latency}/Interval-max", report)),
        },
    }
    for section, key in (("./AreaEstimates/Resources", "resources"), ("./AreaEstimates/AvailableResources", "available")):
        node = root.find(section)
        if node is None:
            raise BackendError(f"{report}: no {section} in the synthesis report")
        result[key] = {_RESOURCE_NAMES.get(child.tag, child.tag): _number(child.text) for child in node}
    return result


def read_vivado_cosim(report: Path) -> dict[str, Any]:
    """The Verilog (or VHDL) row of a Vivado/Vitis `<top>_cosim.rpt`: status, latency and interval."""
    for line in report.read_text(errors="replace").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[0] in ("Verilog", "VHDL") and cells[1] != "NA":
            rtl, status, lat_min, lat_avg, lat_max, ii_min, ii_avg, ii_max = cells[:8]
            return {
                "rtl": rtl,
                "status": status,
                "latency_cycles": {"min": _number(lat_min), "avg": _number(lat_avg), "max": _number(lat_max)},
                "interval_cycles": {"min": _number(ii_min), "avg": _number(ii_avg), "max": _number(ii_max)},
            }
    raise BackendError(f"{report}: no Verilog or VHDL result row in the co-simulation report")


_DESIGN_TOTAL = re.compile(r"^\s*Design Total:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", re.MULTILINE)
_AREA_SCORE = re.compile(r"^\s*Total Area Score:\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", re.MULTILINE)


def read_catapult_solution(solution: Path) -> dict[str, Any]:
    """Latency, throughput, II (cycles) and area score of a Catapult solution directory."""
    cycle, rtl = solution / "cycle.rpt", solution / "rtl.rpt"
    if not cycle.is_file():
        raise BackendError(f"{cycle}: no Catapult cycle report")
    total = _DESIGN_TOTAL.search(cycle.read_text(errors="replace"))
    if total is None:
        raise BackendError(f"{cycle}: no 'Design Total:' row")
    operations, latency, throughput, _reset, interval = (int(g) for g in total.groups())
    result: dict[str, Any] = {
        "latency_cycles": {"best": latency, "worst": latency},
        "throughput_cycles": throughput,
        "interval_cycles": {"min": interval, "max": interval},
        "operations": operations,
    }
    if rtl.is_file():
        area = _AREA_SCORE.search(rtl.read_text(errors="replace"))
        if area is not None:
            # Post-scheduling, post-DP & FSM, post-assignment: the last is the most complete estimate.
            result["area_score"] = float(area.group(3))
    return result
