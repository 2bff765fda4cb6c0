"""The plan of an hls4ml project: hls4ml layers in order, each with every type hawqc chose for it.

The planner (`hls4ml_planner.py`) fills it from the graph; the lowering hands the layer dicts and
their types to hls4ml; the checks (`hls4ml_checks.py`) compare what hls4ml built and wrote with it.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field

from hawqc.ir.qtypes import FixedType

# C++ keywords that a graph name might spell; hls4ml uses layer names as C++ identifiers.
_CPP_KEYWORDS = frozenset(
    [
        "alignas", "alignof", "and", "asm", "auto", "bitand", "bitor", "bool", "break", "case",
        "catch", "char", "class", "compl", "const", "constexpr", "continue", "default",
        "delete", "do", "double", "else", "enum", "explicit", "export", "extern", "false",
        "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace",
        "new", "noexcept", "not", "nullptr", "operator", "or", "private", "protected", "public",
        "register", "return", "short", "signed", "sizeof", "static", "struct", "switch",
        "template", "this", "throw", "true", "try", "typedef", "typeid", "typename", "union",
        "unsigned", "using", "virtual", "void", "volatile", "while", "xor"
    ]
)

# Prefixes of the layers hls4ml inserts itself (io_stream: `clone_<name>`, `zp1d_<name>`,
# `zp2d_<name>`, `repack_<name>`). No planned name starts with one, so no inserted name can equal
# a planned one.
HLS4ML_INSERTED_PREFIXES = ("clone_", "zp1d_", "zp2d_", "repack_")


@dataclass
class Planned:
    """One hls4ml layer: its dict for `from_layer_list`, the role -> type map hawqc chose
    (`result` always; `weight`, `bias`, `accum`, `scale`, `param` where the kernel has them), and
    `op`/`source` for reports and messages."""

    name: str
    op: str
    source: str
    layer: dict
    types: dict[str, FixedType]
    # hls4ml may drop this layer without changing a result: a linear activation whose input type
    # equals its result type (eliminate_linear_activation), or a reshape (no arithmetic; io_parallel
    # drops a final one, io_stream turns a flatten into a repack or an in-place view).
    removable: bool = False
    # The types to put in hls4ml's config where hls4ml is known to turn them into `types[role]`
    # (Catapult widens pooling accumulators); the checks then find `types[role]`.
    configured: dict[str, FixedType] = field(default_factory=dict)

    def config_types(self) -> dict[str, FixedType]:
        return {**self.types, **self.configured}

    @property
    def inputs(self) -> list[str]:
        return list(self.layer["inputs"])


@dataclass
class Plan:
    layers: list[Planned] = field(default_factory=list)
    by_name: dict[str, Planned] = field(default_factory=dict)
    # graph value name -> the layer that computes it
    value_layer: dict[str, str] = field(default_factory=dict)
    # layer name -> the shape of its result as hls4ml holds it (no batch dimension); differs from
    # the graph's shape where hls4ml drops unit dims (global pooling gives [channels]).
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    used_names: set[str] = field(default_factory=set)
    input_name: str = ""
    input_shape: tuple[int, ...] = ()

    def add(self, planned: Planned, shape: tuple[int, ...]) -> None:
        self.layers.append(planned)
        self.by_name[planned.name] = planned
        self.shapes[planned.name] = tuple(int(d) for d in shape)

    def unique_name(self, raw: str) -> str:
        """A valid C++ identifier, unique case-insensitively (hls4ml lower-cases names in its config)."""
        name = re.sub(r"\W", "_", raw) or "layer"
        if name[0].isdigit():
            name = "n_" + name
        if name.lower() == "input" or name in _CPP_KEYWORDS or keyword.iskeyword(name):
            name += "_"
        if name.lower().startswith(HLS4ML_INSERTED_PREFIXES):
            name = "l_" + name
        candidate, i = name, 1
        while candidate.lower() in self.used_names:
            candidate = f"{name}_{i}"
            i += 1
        self.used_names.add(candidate.lower())
        return candidate
