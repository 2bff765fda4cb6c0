"""Split the instantiation of a project's layer kernels over several translation units.

Most of the compile time of an hls4ml C simulation is spent in the one unit `firmware/<project>.cpp`
instantiating and generating code for the layer kernels its top function calls (the ap_fixed
operator overloads make template instantiation slow). Those kernels do not depend on each other,
so they can be compiled in different units, in parallel, without changing what runs.

The written project is not touched: the compiler compiles rewritten *copies* of the top function's
file (`SplitSources`):

- the top unit: the file as written, except that each single-line layer call of the top function,
  `nnet::conv_2d_cl<input_t, layer2_t, config2>(global_in, layer2_out, w2, b2);`, becomes
  `hawqc_split::layer<3>(global_in, layer2_out, w2, b2);`, a call of a function template that is
  only declared there. The call deduces the template's parameter types from the arguments (arrays,
  pointers and streams by reference, exactly the types of the original call's arguments), so the
  top unit refers to one symbol per layer and instantiates no kernel. Calls of layers assigned to
  group 0 are left as they are (group 0 is compiled in the top unit).
- one unit per other group: the same file, with `parameters.h` inlined without what must be
  defined once per library (the weights, declared `extern` instead of included; the out-of-class
  definitions of static members such as the io_stream convolutions' `configN::pixels[]`, which
  their in-class declarations stand in for): those definitions stay in the top unit. Then each
  group layer's `hawqc_split::layer<N>` defined as a call of the original kernel with the same
  arguments (perfect forwarding: same types, same value categories, so the same overload and the
  same instantiation), and the top function renamed and kept with only the group's calls: never
  called, it instantiates `layer<N>` with the very argument types of the top unit's calls, and the
  linker resolves the top unit's references to those instantiations.

Anything that does not fit this shape (a call over several lines, weights in a namespace or
`static`, no top function found) is left alone: `split_top_function` returns None or keeps those
calls in the top unit, and the project compiles as one unit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The namespace of the rewritten calls (not used by hls4ml).
NAMESPACE = "hawqc_split"
# Calls that stay in the top unit: hls4ml's tracing (cheap; the trace wants them next to the layer).
_NOT_MOVED = ("nnet::save_layer_output",)
_WEIGHT_INCLUDE = re.compile(r'^\s*#\s*include\s+"(weights/[\w.]+\.h)"', re.MULTILINE)
_PARAMETERS_INCLUDE = re.compile(r'^\s*#\s*include\s+"parameters\.h"\s*$')
# hls4ml's out-of-class definition of a config's static member, in column 0:
# `const ap_uint<config2::filt_height * config2::filt_width> config2::pixels[] = {0};`.
_STATIC_MEMBER_DEFINITION = re.compile(r"^(?:const\s+)?[^=;(){}\s][^=;(){}]*\b\w+::\w+\s*(?:\[[^\]]*\]\s*)*=")
# `conv1_weight_t w2[72]` in `conv1_weight_t w2[72] = {...};` or `extern conv1_weight_t w2[72];`.
_WEIGHT_DEFINITION = re.compile(
    r"^[ \t]*(?:extern[ \t]+)?(?P<decl>[A-Za-z_][\w:<>, \t]*?[ \t]+\w+(?:[ \t]*\[[^\]\n]*\])+)[ \t]*(?:=|;)",
    re.MULTILINE,
)
_CLOSERS = {"(": ")", "[": "]", "{": "}", "<": ">"}


@dataclass(frozen=True)
class LayerCall:
    """One single-line kernel call statement of the top function."""

    line: int  # index into the file's lines
    indent: str
    callee: str  # `nnet::conv_2d_cl<input_t, layer2_t, config2>`
    arguments: str  # `global_in, layer2_out, w2, b2`
    comment: str  # what followed the `;` (hls4ml's `// <layer name>`), kept


@dataclass(frozen=True)
class WeightHeader:
    """A weights header of the project: its path as `parameters.h` includes it, and the declaration
    of its array."""

    include: str  # `weights/w2.h`
    declaration: str  # `conv1_weight_t w2[72]`


@dataclass(frozen=True)
class SplitSources:
    """The rewritten copies of `firmware/<project>.cpp`: `top` (the top function, the weights and
    group 0's kernels) and one source per further group (`groups[i]` is group i + 1)."""

    top: str
    groups: tuple[str, ...]
    # Which group each moved call went to, by call (for reports and tests): (callee, group).
    assignment: tuple[tuple[str, int], ...]


def _match(text: str, start: int) -> int:
    """Index just past the bracket that closes the one at `start` (nested brackets and string or
    character literals skipped), or -1."""
    stack = [_CLOSERS[text[start]]]
    i = start + 1
    while i < len(text) and stack:
        c = text[i]
        if c in "\"'":
            end = i + 1
            while end < len(text) and text[end] != c:
                end += 2 if text[end] == "\\" else 1
            i = end + 1
            continue
        if c == stack[-1]:
            stack.pop()
        elif c in "([{" or (c == "<" and stack[-1] == ">"):
            stack.append(_CLOSERS[c])
        elif c in ")]}":
            return -1
        i += 1
    return i if not stack else -1


def parse_call(line: str) -> tuple[str, str, str, str] | None:
    """(indent, callee, arguments, comment) of a whole-line statement `nnet::f<...>(...);`, or None."""
    m = re.match(r"(\s*)(nnet::[A-Za-z_]\w*)\s*<", line)
    if not m:
        return None
    close = _match(line, m.end() - 1)
    if close < 0:
        return None
    callee = line[len(m.group(1)) : close]
    rest = line[close:]
    paren = len(rest) - len(rest.lstrip())
    if not rest[paren:].startswith("("):
        return None
    open_at = close + paren
    end = _match(line, open_at)
    if end < 0 or not line[end:].lstrip().startswith(";"):
        return None
    comment = line[end:].lstrip()[1:]
    if comment.strip() and not comment.strip().startswith("//"):
        return None
    return m.group(1), callee.strip(), line[open_at + 1 : end - 1].strip(), comment


def _top_function(lines: list[str], project_name: str) -> tuple[int, int, int] | None:
    """(definition line, first body line, closing line) of the top function (`void <name>(` or
    Catapult's `void CCS_BLOCK(<name>)(`), written by hls4ml with its closing brace in column 0."""
    head = re.compile(rf"^void\s+(?:CCS_BLOCK\(\s*{re.escape(project_name)}\s*\)|{re.escape(project_name)})\s*\(")
    for start, line in enumerate(lines):
        if head.match(line):
            break
    else:
        return None
    body = next((i + 1 for i in range(start, len(lines)) if lines[i].rstrip().endswith("{")), None)
    if body is None:
        return None
    close = next((i for i in range(body, len(lines)) if lines[i].rstrip() == "}"), None)
    return (start, body, close) if close is not None else None


def layer_calls(source: str, project_name: str) -> list[LayerCall]:
    """The top function's single-line kernel calls, in order."""
    lines = source.split("\n")
    found = _top_function(lines, project_name)
    if found is None:
        return []
    _, body, close = found
    calls = []
    for i in range(body, close):
        parsed = parse_call(lines[i])
        if parsed is not None and not parsed[1].startswith(_NOT_MOVED):
            calls.append(LayerCall(i, *parsed))
    return calls


def weight_header(include: str, text: str) -> WeightHeader | None:
    """The array declaration of one of hls4ml's `firmware/weights/<name>.h`, or None when the header
    is not of the plain shape an `extern` declaration can stand in for (a namespace, `static`)."""
    definition = _WEIGHT_DEFINITION.search(text)
    if definition is None or re.search(r"\b(namespace|static)\b", text):
        return None
    return WeightHeader(include, " ".join(definition.group("decl").split()))


def weights_cost(weights: list[WeightHeader]) -> float:
    """Estimated compile cost of defining the weights (each element is initialized by an inlined
    ap_fixed conversion from a double: ~1.4 s for the digits CNN's 2,000 values)."""
    total = 0
    for w in weights:
        size = 1
        for dim in re.findall(r"\[([^\]]*)\]", w.declaration):
            size *= int(dim) if dim.strip().isdigit() else 1
        total += size
    return 0.0007 * total


def weight_includes(parameters_h: str) -> list[str]:
    """The weights headers `parameters.h` includes (paths relative to firmware/)."""
    return _WEIGHT_INCLUDE.findall(parameters_h)


def parameters_declarations(parameters_h: str, weights: list[WeightHeader]) -> str | None:
    """`parameters.h` for a kernel unit: the weights headers replaced by `extern` declarations of
    their arrays, static member definitions left out. None if a weights header is not in `weights`."""
    known = {w.include: w for w in weights}
    out = []
    for line in parameters_h.split("\n"):
        included = _WEIGHT_INCLUDE.match(line)
        if included:
            weight = known.get(included.group(1))
            if weight is None:
                return None
            out.append(f"extern {weight.declaration};")
        elif _STATIC_MEMBER_DEFINITION.match(line):
            out.append(f"// (defined in the top unit) {line}")
        else:
            out.append(line)
    return "\n".join(out)


# Relative compile cost of one call by kernel, for balancing the groups (CPU seconds of the digits
# CNN's kernels at -O1 on this project's reference machine; any other kernel counts as a dense).
KERNEL_COST: dict[str, float] = {
    "nnet::conv_2d_cl": 1.0,
    "nnet::conv_1d_cl": 1.0,
    "nnet::depthwise_conv_2d_cl": 1.0,
    "nnet::depthwise_conv_1d_cl": 1.0,
    "nnet::pointwise_conv_2d_cl": 1.0,
    "nnet::pointwise_conv_1d_cl": 1.0,
    "nnet::dense": 0.6,
    "nnet::normalize": 0.3,
    "nnet::pooling2d_cl": 0.3,
    "nnet::pooling1d_cl": 0.3,
    "nnet::global_pooling2d_cl": 0.3,
    "nnet::global_pooling1d_cl": 0.3,
    "nnet::add": 0.2,
    "nnet::relu": 0.2,
    "nnet::linear": 0.2,
    "nnet::load_weights_from_txt": 0.1,
}


def _config_value(parameters_h: str, config: str, name: str) -> int | None:
    body = re.search(rf"^struct {re.escape(config)}\b[^{{]*{{(.*?)^}};", parameters_h, re.MULTILINE | re.DOTALL)
    value = body and re.search(rf"\b{name}\s*=\s*(\d+)\s*;", body.group(1))
    return int(value.group(1)) if value else None


def call_cost(call: LayerCall, parameters_h: str = "") -> float:
    """Estimated compile cost. A convolution's grows with its output pixels (io_parallel's
    generated im2col code has one branch per pixel): measured 1.8 s for 8x8 and 0.8 s for 4x4."""
    kernel = call.callee.split("<", 1)[0].strip()
    cost = KERNEL_COST.get(kernel, 0.6)
    if "conv" in kernel and parameters_h:
        config = call.callee.rsplit(",", 1)[-1].strip(" >")
        pixels = (_config_value(parameters_h, config, "out_height") or 1) * (_config_value(parameters_h, config, "out_width") or 1)
        cost = 0.4 + 0.022 * pixels
    return cost


def assign_groups(calls: list[LayerCall], groups: int, top_extra: float = 0.0, parameters_h: str = "") -> list[int]:
    """Group of each call: the most expensive first, each to the group with the least so far
    (group 0 starts with `top_extra`, the top unit's own cost)."""
    load = [top_extra] + [0.0] * (groups - 1)
    assignment = [0] * len(calls)
    costs = [call_cost(c, parameters_h) for c in calls]
    for i in sorted(range(len(calls)), key=lambda i: -costs[i]):
        g = min(range(groups), key=lambda g: (load[g], g))
        assignment[i] = g
        load[g] += costs[i]
    return assignment


def _moved_call(call: LayerCall, index: int) -> str:
    return f"{call.indent}{NAMESPACE}::layer<{index}>({call.arguments});{call.comment}"


def split_top_function(
    source: str,
    parameters_h: str,
    project_name: str,
    weights: list[WeightHeader],
    groups: int,
    top_extra: float = 0.0,
) -> SplitSources | None:
    """The top unit and up to `groups - 1` kernel units for `source` (`firmware/<project>.cpp`, which
    includes `parameters.h`), or None if there is nothing to split (fewer than two calls or groups,
    no top function, no `#include "parameters.h"` line, weights of another shape)."""
    lines = source.split("\n")
    found = _top_function(lines, project_name)
    calls = layer_calls(source, project_name)
    declarations = parameters_declarations(parameters_h, weights)
    includes = [i for i, line in enumerate(lines) if _PARAMETERS_INCLUDE.match(line)]
    if found is None or groups < 2 or len(calls) < 2 or declarations is None or len(includes) != 1:
        return None
    start, _, close = found
    assignment = assign_groups(calls, min(groups, len(calls)), top_extra, parameters_h)
    used = sorted(set(assignment))
    if used == [0] or includes[0] > start:
        return None

    top = list(lines)
    for k, call in enumerate(calls):
        if assignment[k] != 0:
            top[call.line] = _moved_call(call, k)
    declaration = [
        f"// hawqc: the layer calls `{NAMESPACE}::layer<N>(...)` are kernel calls compiled in other units.",
        f"namespace {NAMESPACE} {{",
        "template <int N, class... A> void layer(A &&...a);",
        "}",
    ]
    top_source = "\n".join(declaration + top)

    units = []
    for group in (g for g in used if g != 0):
        mine = [k for k in range(len(calls)) if assignment[k] == group]
        unit = list(lines)
        unit[includes[0]] = declarations
        for k, call in enumerate(calls):
            unit[call.line] = _moved_call(call, k) if k in mine else ""
        unit[start] = unit[start].replace(f"CCS_BLOCK({project_name})", project_name, 1)
        unit[start] = re.sub(rf"\b{re.escape(project_name)}\b", f"{NAMESPACE}_instantiate_{group}", unit[start], count=1)
        kernels = [
            f"template <> struct Kernel<{k}> {{\n"
            f"    template <class... A> static void run(A &&...a) {{ {calls[k].callee}(std::forward<A>(a)...); }}\n"
            "};"
            for k in mine
        ]
        prefix = [
            f"// hawqc: the kernels of layer group {group} of {project_name}'s top function (hawqc/backends/csim_split.py).",
            "#include <utility>",
        ]
        definitions = [
            f"namespace {NAMESPACE} {{",
            "template <int N> struct Kernel;",
            *kernels,
            "// Out of line and kept: the top unit calls these instantiations.",
            "template <int N, class... A> __attribute__((noinline, used)) void layer(A &&...a) {",
            "    Kernel<N>::run(std::forward<A>(a)...);",
            "}",
            "}",
            "// Never called: instantiates the group's layer<N> with the argument types of the top unit's calls.",
        ]
        units.append("\n".join(prefix + unit[:start] + definitions + unit[start : close + 1]))
    moved = tuple((call.callee, assignment[k]) for k, call in enumerate(calls))
    return SplitSources(top=top_source, groups=tuple(units), assignment=moved)
