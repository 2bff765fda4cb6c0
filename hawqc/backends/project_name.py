"""`--project-name`: the generated project's top function and the stem of its file names.

hls4ml pastes the name into C++ (`void NAME(input_t global_in[16], ...)`, `#include "NAME.h"`) and
into file names (`firmware/NAME.cpp`, `NAME_prj/`), beside identifiers of its own. A name that is
a C++ keyword or one of those identifiers makes the C simulation fail to compile only after the
whole lowering, with a compiler error about generated code; a name longer than a file name may be
ends in an OSError while hls4ml writes. Each is refused here, first, naming the option.
"""

from __future__ import annotations

import re

import onnx_ir as ir

from hawqc.errors import OptionError

# A file name is at most 255 bytes; hls4ml appends suffixes such as `_bridge.cpp` and `_prj`.
MAX_LENGTH = 128

_CPP_KEYWORDS = frozenset(
    """alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t
    char32_t class compl concept const consteval constexpr constinit const_cast continue co_await
    co_return co_yield decltype default delete do double dynamic_cast else enum explicit export extern
    false float for friend goto if inline int long mutable namespace new noexcept not not_eq nullptr
    operator or or_eq private protected public register reinterpret_cast requires return short signed
    sizeof static static_assert static_cast struct switch template this thread_local throw true try
    typedef typeid typename union unsigned using virtual void volatile wchar_t while xor xor_eq""".split()
)
# Names the generated C++ (or what it includes) defines itself: the test bench's `main`, the
# namespaces, and hls4ml's weight (`w2`, `b2`, `s2`), config (`config2`) and layer (`layer2_out`)
# names. Names ending in `_t` are POSIX's (`size_t`) and hls4ml's types (`input_t`, `layer2_t`);
# `ap_` / `AP_` are Xilinx's arbitrary-precision types and macros; `_X...` and `__` are the compiler's.
_RESERVED = frozenset({"main", "std", "nnet", "hls"})
_RESERVED_PATTERN = re.compile(r"[wbs]\d+|config\d+|layer\d+_\w*|\w*_t|ap_\w*|AP_\w*|_[A-Z]\w*|\w*__\w*")


def check_project_name(name: str) -> str:
    """`name` if it can name the project; UserInputError naming `--project-name` otherwise."""
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise OptionError(f"{{}} {name!r} is not a C identifier", "project_name")
    if len(name) > MAX_LENGTH:
        raise OptionError(f"{{}} is {len(name)} characters long; at most {MAX_LENGTH} (it names files)", "project_name")
    if name in _CPP_KEYWORDS:
        raise OptionError(f"{{}} {name!r} is a C++ keyword", "project_name")
    if name in _RESERVED or _RESERVED_PATTERN.fullmatch(name):
        raise OptionError(f"{{}} {name!r} is a name the generated C++ uses itself; choose another", "project_name")
    return name


def check_name_free(name: str, model: ir.Model) -> None:
    """The generated top function's input argument is named after the graph's input."""
    for value in model.graph.inputs:
        if value.name == name:
            raise OptionError(f"{{}} {name!r} is also the name of the model's input; choose another", "project_name")
