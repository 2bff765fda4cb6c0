"""A precompiled header of the library headers a C simulation includes, shared between projects.

Every translation unit of an hls4ml C simulation first parses the same library headers (ap_types or
ac_types, hls4ml's `nnet_utils`): ~1.8 s of the firmware unit, most of the bridge. Those headers are
copied unchanged into every project of a backend; only `nnet_code_gen.h` among them, and the files
at the top of `firmware/` (`defines.h`, `parameters.h`, the weights), are written per project.

So hawqc precompiles, once per *header set*, a header made of the library headers the project's
files include, in the order they include them (system headers too). Its key is a content hash of
everything that goes into it (the header's text, every file of the library directories, the flags,
the compiler's version line), and it is kept in `${HAWQC_CACHE_DIR:-~/.cache/hawqc}/pch/<key>/`,
so every project with the same layer kinds, backend and flags reuses it. A unit uses it through
`-include <dir>/hawqc_pch.h`; only `hawqc_pch.h.gch` exists there, so g++ either uses the
precompiled header or fails (it never silently parses something else); the caller then compiles
the normal way (`csim_units.py`).

Why pre-including these headers changes nothing: the project's own `#include`s of them come later
and are skipped by their include guards (same files: same guards), and library headers do not
depend on what a project defines before including them. That last point is checked, not assumed:
if a project file `#define`s a macro (other than its include guard) whose name appears in a library
header, or includes a header conditionally, no precompiled header is planned for it.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hawqc.backends.project import LoweredProject

# Part of every key: bump when the way headers are chosen or built changes.
PCH_FORMAT = "pch-1"
HEADER_NAME = "hawqc_pch.h"
# Written by hls4ml per project although it sits among the library headers.
GENERATED_LIBRARY_FILES = ("nnet_code_gen.h",)
# hls4ml's kernels, next to the project's own headers.
KERNEL_DIR = "firmware/nnet_utils"
BUILD_PRODUCT_SUFFIXES = (".so", ".o", ".gch")
_INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
_CONDITIONAL = re.compile(r"^\s*#\s*(if|ifdef|ifndef|endif)\b")
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)")
_GUARD = re.compile(r"\A(?:\s*//[^\n]*\n|\s*/\*.*?\*/|\s)*#\s*ifndef\s+(\w+)\s*\n\s*#\s*define\s+\1\b", re.DOTALL)


@dataclass(frozen=True)
class PrecompiledHeader:
    """`text`: the header (its `#include` lines); `search_dirs`: the directories (relative to the
    project) its includes are found in, in -I order; `path`: what units `-include` (only
    `path.gch` is ever written)."""

    key: str
    text: str
    search_dirs: tuple[str, ...]
    path: Path

    @property
    def gch(self) -> Path:
        return self.path.with_name(self.path.name + ".gch")

    @property
    def ready(self) -> bool:
        return self.gch.is_file()

    def include_flags(self) -> list[str]:
        return ["-include", str(self.path)]


def pch_root(csim_cache: Path) -> Path:
    """Next to the libraries' directory: `<HAWQC_CACHE_DIR>/pch`."""
    return csim_cache.parent / "pch"


def _library_dirs(project: LoweredProject) -> list[Path]:
    return [project.outdir / d for d in (*project.csim.include_dirs, KERNEL_DIR)]


def _is_library(path: Path, library: list[Path]) -> bool:
    return path.name not in GENERATED_LIBRARY_FILES and any(path.is_relative_to(d) for d in library)


def _resolve(name: str, quoted: bool, here: Path, search: list[Path]) -> Path | None:
    for d in ([here] if quoted else []) + search:
        candidate = d / name
        if candidate.is_file():
            return candidate.resolve()
    return None


@dataclass(frozen=True)
class _Walk:
    includes: tuple[str, ...]  # the header's include lines, in order
    project_macros: frozenset[str]  # macros project files define (not their guards)
    conditional_include: bool  # a project file includes something under #if


def _walk(project: LoweredProject, search_rel: tuple[str, ...]) -> _Walk:
    """The library and system headers reached from the project's own files, depth first."""
    outdir = project.outdir.resolve()
    search = [outdir / d for d in search_rel]
    library = [d.resolve() for d in _library_dirs(project)]
    includes: list[str] = []
    macros: set[str] = set()
    conditional = False
    seen: set[Path] = set()

    def spell(path: Path) -> str | None:
        for d in search:
            if path.is_relative_to(d):
                rel = path.relative_to(d).as_posix()
                # The name must find this very file when the header is compiled.
                return f'#include "{rel}"' if _resolve(rel, False, d, search) == path else None
        return None

    def visit(path: Path) -> None:
        nonlocal conditional
        if path in seen:
            return
        seen.add(path)
        text = path.read_text(errors="replace")
        guard = _GUARD.match(text)
        depth = -1 if guard else 0  # the include guard's #ifndef does not count
        for line in text.splitlines():
            cond = _CONDITIONAL.match(line)
            if cond:
                depth += -1 if cond.group(1) == "endif" else 1
                continue
            define = _DEFINE.match(line)
            if define and (guard is None or define.group(1) != guard.group(1)):
                macros.add(define.group(1))
            inc = _INCLUDE.match(line)
            if not inc:
                continue
            if depth > 0:
                conditional = True
                continue
            quoted, name = inc.group(1) == '"', inc.group(2)
            found = _resolve(name, quoted, path.parent, search)
            if found is None:
                line_text = f"#include <{name}>"
                if not quoted and line_text not in includes:
                    includes.append(line_text)  # a system header
                continue
            if _is_library(found, library):
                spelled = spell(found)
                if spelled is not None and spelled not in includes:
                    includes.append(spelled)
            elif found.is_relative_to(outdir):
                visit(found)

    for src in project.csim.sources:
        visit((outdir / src).resolve())
    return _Walk(tuple(includes), frozenset(macros), conditional)


def _library_files(project: LoweredProject) -> dict[str, Path]:
    files = {}
    for d in _library_dirs(project):
        for p in d.rglob("*"):
            if p.is_file() and p.name not in GENERATED_LIBRARY_FILES and p.suffix not in BUILD_PRODUCT_SUFFIXES:
                files[p.relative_to(project.outdir).as_posix()] = p
    return files


def plan_precompiled_header(
    project: LoweredProject, flags: list[str], compiler: str, csim_cache: Path
) -> PrecompiledHeader | None:
    """The precompiled header for `project`'s units compiled with `flags` by `compiler` (its
    version line), or None when none applies (see the module's docstring; also for projects
    compiled with a per-library `-D` define, whose headers would differ per library)."""
    recipe = project.csim
    if recipe.runtime_weights_dir is not None:
        return None  # its units get -D WEIGHTS_DIR=<this library's weights>, used in nnet_helpers.h
    search_rel = (*recipe.include_dirs, "firmware")
    walk = _walk(project, search_rel)
    if walk.conditional_include or not walk.includes:
        return None
    files = _library_files(project)
    texts = {rel: p.read_bytes() for rel, p in sorted(files.items())}
    if walk.project_macros:
        pattern = re.compile(rb"\b(" + b"|".join(re.escape(m.encode()) for m in sorted(walk.project_macros)) + rb")\b")
        if any(pattern.search(data) for data in texts.values()):
            return None
    text = "// hawqc: the library headers of the project's C simulation (hawqc/backends/csim_pch.py).\n"
    text += "\n".join(walk.includes) + "\n"
    digest = hashlib.sha256()
    digest.update("\0".join([PCH_FORMAT, compiler, *flags, "|", *search_rel, "|", text]).encode())
    for rel, data in texts.items():
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    key = digest.hexdigest()[:32]
    return PrecompiledHeader(key=key, text=text, search_dirs=search_rel, path=pch_root(csim_cache) / key / HEADER_NAME)


def build_command(pch: PrecompiledHeader, project: LoweredProject, cxx: str, flags: list[str], workdir: Path) -> tuple[list[str], Path]:
    """The g++ command that precompiles `pch` from this project's copy of the headers into
    `workdir`, and the file it writes (to be published with `publish`)."""
    header = workdir / HEADER_NAME
    header.write_text(pch.text)
    out = workdir / (HEADER_NAME + ".gch")
    includes = [f"-I{project.outdir / d}" for d in pch.search_dirs]
    return [cxx, *flags, *includes, "-x", "c++-header", str(header), "-o", str(out)], out


def publish(built: Path, pch: PrecompiledHeader) -> None:
    """Atomically: a unit sees either no precompiled header or a whole one."""
    pch.path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(built, pch.gch)


def discard(pch: PrecompiledHeader) -> None:
    """Forget a precompiled header g++ refused (it is built again when next needed)."""
    try:
        pch.gch.unlink()
    except FileNotFoundError:
        pass
