"""A stand-in for vivado_hls / vitis-run / vitis_hls / catapult, for testing `hawqc build`.

Installed by the tests as an executable under the vendor tool's name. It appends one JSON line to
`$FAKE_TOOL_LOG` (its name, arguments, working directory, and the `build_opt.tcl` Vitis reads), then
writes the reports the real tool writes, with the numbers below, in the places hls4ml's own report
readers look. `$FAKE_TOOL_EXIT` makes it fail instead.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# What the sample reports say; the tests compare hawqc_report.json with these.
LATENCY = (9, 11)
INTERVAL = (1, 2)
RESOURCES = {"BRAM_18K": 2, "DSP": 12, "FF": 4321, "LUT": 9876, "URAM": 0}
AVAILABLE = {"BRAM_18K": 5376, "DSP": 12288, "FF": 3456000, "LUT": 1728000, "URAM": 1280}
TARGET_CLOCK, ESTIMATED_CLOCK = 5.0, 3.65
COSIM_LATENCY = (9, 10, 11)
CATAPULT = {"operations": 1970, "latency": 25, "throughput": 3, "interval": 1, "area": 586221.4}


def _csynth_xml(top: str, dsp_tag: str) -> str:
    resources = "".join(f"<{dsp_tag if k == 'DSP' else k}>{v}</{dsp_tag if k == 'DSP' else k}>" for k, v in RESOURCES.items())
    available = "".join(f"<{dsp_tag if k == 'DSP' else k}>{v}</{dsp_tag if k == 'DSP' else k}>" for k, v in AVAILABLE.items())
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<profile>
  <ReportVersion><Version>2023.2</Version></ReportVersion>
  <UserAssignments><unit>ns</unit><Part>xcvu13p-flga2577-2-e</Part><TopModelName>{top}</TopModelName>
    <TargetClockPeriod>{TARGET_CLOCK:.2f}</TargetClockPeriod><ClockUncertainty>1.35</ClockUncertainty></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><unit>ns</unit><EstimatedClockPeriod>{ESTIMATED_CLOCK:.3f}</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency><unit>clock cycles</unit><Best-caseLatency>{LATENCY[0]}</Best-caseLatency>
      <Average-caseLatency>{LATENCY[0]}</Average-caseLatency><Worst-caseLatency>{LATENCY[1]}</Worst-caseLatency>
      <Interval-min>{INTERVAL[0]}</Interval-min><Interval-max>{INTERVAL[1]}</Interval-max></SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources>{resources}</Resources>
    <AvailableResources>{available}</AvailableResources>
  </AreaEstimates>
</profile>
"""


def _cosim_rpt(top: str) -> str:
    lo, avg, hi = COSIM_LATENCY
    return f"""================================================================
== Vivado HLS Report
================================================================
+ General Information:
    * Top:            {top}
+ Wrapper Report:
+----------+--------+-----+-----+-----+-----+-----+-----+
|          |        |      Latency    |     Interval    |
|    RTL   | Status | min | avg | max | min | avg | max |
+----------+--------+-----+-----+-----+-----+-----+-----+
|      VHDL|      NA|   NA|   NA|   NA|   NA|   NA|   NA|
|   Verilog|    Pass|{lo:>5}|{avg:>5}|{hi:>5}|{INTERVAL[0]:>5}|{INTERVAL[0]:>5}|{INTERVAL[0]:>5}|
+----------+--------+-----+-----+-----+-----+-----+-----+
"""


def _vivado_like(top: str, dsp_tag: str, cosim: bool) -> None:
    prj = Path(f"{top}_prj")
    (prj / "solution1" / "syn" / "report").mkdir(parents=True, exist_ok=True)
    # hls4ml's parse_vivado_report finds the solutions in this file.
    (prj / ("vivado_hls.app" if dsp_tag == "DSP48E" else "hls.app")).write_text(
        '<project xmlns="com.autoesl.autopilot.project" name="p"><solutions><solution name="solution1"/></solutions></project>'
    )
    (prj / "solution1" / "syn" / "report" / f"{top}_csynth.xml").write_text(_csynth_xml(top, dsp_tag))
    (prj / "solution1" / "syn" / "report" / f"{top}_csynth.rpt").write_text("== Synthesis report (text) ==\n")
    if cosim:
        (prj / "solution1" / "sim" / "report").mkdir(parents=True, exist_ok=True)
        (prj / "solution1" / "sim" / "report" / f"{top}_cosim.rpt").write_text(_cosim_rpt(top))


def _catapult(top: str) -> None:
    solution = Path(f"{top}_prj") / f"{top}.v1"
    solution.mkdir(parents=True, exist_ok=True)
    c = CATAPULT
    (solution / "cycle.rpt").write_text(
        "Processes/Blocks in Design\n"
        "  Process                                      Real Operation(s) count Latency Throughput Reset Length II Comments\n"
        "  -------------------------------------------- ----------------------- ------- ---------- ------------ -- --------\n"
        f"  /{top}/nnet::dense<input_t,layer2_t,config2>/core            128       1          3            0  0\n"
        f"  Design Total:                                {c['operations']:>10} {c['latency']:>7} {c['throughput']:>10} {1:>12} {c['interval']:>2}\n"
        "\nClock Information\n  clk          rising 5.000             20.00    0.000000 ...\n"
    )
    (solution / "rtl.rpt").write_text(
        "Area Scores\n"
        "                        Post-Scheduling     Post-DP & FSM   Post-Assignment\n"
        "    ----------------- ----------------- ----------------- -----------------\n"
        f"    Total Area Score:   560291.8          588659.5          {c['area']}\n"
    )
    (solution / "nnet_layer_results.txt").write_text("layer results\n")


def main() -> int:
    tool = Path(sys.argv[0]).name
    record = {"tool": tool, "args": sys.argv[1:], "cwd": os.getcwd()}
    if Path("build_opt.tcl").is_file():
        record["build_opt"] = Path("build_opt.tcl").read_text()
    with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
        log.write(json.dumps(record) + "\n")
    print(f"{tool}: fake run in {os.getcwd()}")
    if os.environ.get("FAKE_TOOL_EXIT"):
        return int(os.environ["FAKE_TOOL_EXIT"])
    # The real tools learn the top function from the project's Tcl; the same name is in the config.
    top = next(line.split()[1] for line in Path("hls4ml_config.yml").read_text().splitlines() if line.startswith("ProjectName:"))
    if tool == "catapult":
        _catapult(top)
    elif tool == "vivado_hls":
        _vivado_like(top, "DSP48E", cosim="cosim=True" in " ".join(sys.argv[1:]))
    else:  # vitis-run, vitis_hls: the options are in build_opt.tcl
        options = dict(line.split() for line in record.get("build_opt", "").splitlines()[1:-1])
        _vivado_like(top, "DSP", cosim=options.get("cosim") == "1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
