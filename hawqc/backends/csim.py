"""Compile a written project's C simulation with g++, cache it, and run it from Python.

hls4ml's own `compile()` runs `build_lib.sh` and reloads a fresh library on every call. hawqc calls
g++ directly with the flags of that script (see each backend's `CSimRecipe`) so that it can:
- cache the library by a content hash of everything that goes into it (all firmware sources and
  headers, the bridge, the flags, the compiler's version), under
  `${HAWQC_CACHE_DIR:-~/.cache/hawqc}/csim/<hash>.so`, so repeated runs and tests do not recompile;
  concurrent writers are safe: each builds in its own temporary directory and publishes with an
  atomic rename (two writers of one hash produce the same bytes, the last rename wins); a build
  directory of a killed run (`.<hash>.hawqc-tmp-<pid>-...`) is removed by the next build once its
  owner is gone (`hawqc.temporaries`);
- compile the translation units in parallel;
- link in a batched entry point (`csim_batch.py`: the loop over samples in C++, run over threads);
- measure each g++ child (wall time, CPU time, peak RSS);
- report a compile error with g++'s own message (Catapult's build_lib.sh has no `set -e` and would
  only leave a missing `.so` behind).
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hawqc.backends import csim_units
from hawqc.backends.csim_batch import PRIVATE_STATICS_FLAG, BatchedLibrary, batch_source
from hawqc.backends.project import CSimRecipe, LoweredProject
from hawqc.errors import BackendError
from hawqc.temporaries import owned_directory, remove_abandoned, remove_old_unowned

CACHE_ENV = "HAWQC_CACHE_DIR"
# Part of every cache key: bump when the way libraries are built or loaded changes.
CACHE_FORMAT = "csim-3"
BUILD_PRODUCT_SUFFIXES = (".so", ".o")
# Build directories as hawqc named them before they carried their owner's pid (tempfile.mkdtemp).
_UNOWNED_BUILD_DIR = re.compile(r"^\.[0-9a-f]{32}\.[a-z0-9_]{8}$")
_DAY = 24 * 3600


def cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "hawqc")
    return Path(root).expanduser() / "csim"


@functools.cache
def _compiler_identity(cxx: str) -> str:
    try:
        done = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as error:
        raise BackendError(f"C++ compiler {cxx!r} is not usable: {error}") from error
    return done.stdout.splitlines()[0] if done.stdout else cxx


@functools.cache
def _accepts(cxx: str, flag: str) -> bool:
    """Does the compiler accept `flag`? (build_lib.sh's probe: compile an empty file with -Werror)."""
    done = subprocess.run(
        [cxx, "-Werror", "-fsyntax-only", flag, "-xc++", "-", "-o", os.devnull],
        input=b"",
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def compiler_flags(recipe: CSimRecipe, cxx: str = "g++") -> list[str]:
    _compiler_identity(cxx)  # a missing compiler is reported as such, not by the first probe
    flags = list(recipe.cxxflags)
    std = next((s for s in recipe.std_candidates if _accepts(cxx, f"-std={s}")), recipe.std_candidates[-1])
    flags.append(f"-std={std}")
    flags.extend(f for f in recipe.optional_flags if _accepts(cxx, f))
    return flags


def _hash_file(digest: hashlib._Hash, path: Path, rel: str, unhashed: tuple[str, ...]) -> None:
    data = path.read_bytes()
    if unhashed and rel.endswith((".cpp", ".h")):
        lines = data.splitlines(keepends=True)
        data = b"".join(line for line in lines if not line.lstrip().startswith(tuple(p.encode() for p in unhashed)))
    digest.update(f"{rel}\0{len(data)}\0".encode())
    digest.update(data)


def cache_key(project: LoweredProject, flags: list[str], cxx: str = "g++") -> str:
    """Content hash of what the library is built from: every file under firmware/ (sources, headers,
    weights; not libraries or objects), the listed sources, the flags and the compiler's version line."""
    recipe = project.csim
    digest = hashlib.sha256()
    header = [CACHE_FORMAT, _compiler_identity(cxx), *flags, "|", *recipe.include_dirs, "|", *recipe.sources]
    header += ["|", recipe.entry, str(recipe.runtime_weights_dir)]
    # How the units are built: the shared precompiled header's identity and the split (csim_units.py).
    header += ["|", csim_units.build_identity(csim_units.plan_pch(project, flags, _compiler_identity(cxx), cache_dir()))]
    digest.update("\0".join(header).encode())
    digest.update(batch_source(recipe.entry).encode())
    outdir = project.outdir
    # Not build products: hls4ml's own compile() leaves its library in firmware/.
    files = {
        p.relative_to(outdir).as_posix(): p
        for p in (outdir / "firmware").rglob("*")
        if p.is_file() and p.suffix not in BUILD_PRODUCT_SUFFIXES
    }
    for rel in recipe.sources:
        files[rel] = outdir / rel
    for rel in sorted(files):
        _hash_file(digest, files[rel], rel, recipe.unhashed_line_prefixes)
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class CompileStats:
    """`seconds`: wall time of compiling and linking (0 on a cache hit); `cpu_seconds`: user+system
    time of all g++ children; `peak_rss_bytes`: the largest resident set of any one g++ child
    (including its cc1plus), as reported by wait4 for that child. `precompiled_header`: "built"
    (in this compile, counted in the figures), "reused", "none" (none applies) or "fell back" (g++
    refused it or a split unit failed: compiled the plain way); `units`: compile commands run."""

    seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    cached: bool
    jobs: int
    precompiled_header: str = "none"
    units: int = 0


def _publish_dir(src: Path, dst: Path) -> None:
    try:
        os.rename(src, dst)
    except OSError:
        # Another writer published the same hash first; its copy has the same content.
        if not dst.is_dir():
            raise


def _build(project: LoweredProject, flags: list[str], key: str, root: Path, cxx: str, jobs: int) -> CompileStats:
    recipe = project.csim
    outdir = project.outdir
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned(root)
    remove_old_unowned(root, _UNOWNED_BUILD_DIR, _DAY)
    with owned_directory(root, key) as workdir:
        defines = []
        weights = root / f"{key}.weights"
        if recipe.runtime_weights_dir is not None:
            # The library will read its weights from the cache's copy, published with it below.
            escaped = str(weights).replace("\\", "\\\\").replace('"', '\\"')
            defines.append(f'-DWEIGHTS_DIR="{escaped}"')
        includes = [f"-I{outdir / inc}" for inc in recipe.include_dirs]
        start = time.perf_counter()
        library, built = csim_units.build_library(
            project, flags, includes, defines, workdir, cxx, jobs, root, _compiler_identity(cxx)
        )
        seconds = time.perf_counter() - start
        if recipe.runtime_weights_dir is not None and not weights.is_dir():
            shutil.copytree(outdir / recipe.runtime_weights_dir, workdir / "weights")
            _publish_dir(workdir / "weights", weights)
        # Last: a library in the cache means everything it needs is there.
        os.replace(library, root / f"{key}.so")
        everything = built.results
        return CompileStats(
            seconds=seconds,
            cpu_seconds=sum(r.cpu_seconds for r in everything),
            peak_rss_bytes=max(r.peak_rss_bytes for r in everything),
            cached=False,
            jobs=jobs,
            precompiled_header=built.pch,
            units=built.units,
        )


class CSim:
    """A compiled C simulation: `predict(x)` runs every sample through the generated C++ function,
    the whole batch in one call of the batched entry, split over threads (`csim_batch.py`).

    Inputs go in as float64 and are converted by the bridge (`nnet::convert_data`, i.e. the input
    type's own rounding and saturation: that conversion is the input Quant); outputs come back as
    float64 via the fixed-point type's exact `to_double` (output types are at most 53 bits wide).
    Both sides are flat C-order arrays of one sample, for io_parallel and io_stream alike (the
    bridge packs and unpacks the streams): a channels-last [H, W, C] value is flattened in that
    order, which is numpy's row-major order of the sample.
    """

    def __init__(
        self, library: Path, project: LoweredProject, compile_stats: CompileStats, flags: list[str] | None = None
    ) -> None:
        self.library = library
        self.project = project
        self.compile_stats = compile_stats
        # The flags the library was built with (default: the recipe's with g++).
        private_statics = PRIVATE_STATICS_FLAG in (flags if flags is not None else compiler_flags(project.csim))
        self._batched = BatchedLibrary(library, project.csim.entry, private_statics)

    def stats(self) -> dict[str, object]:
        """The compile figures as plain data (for reports)."""
        return {"library": str(self.library), **asdict(self.compile_stats)}

    def predict(self, x: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """Outputs of shape (n, *output_shape) for inputs of shape (n, *input_shape) or (n, input_size).

        `threads`: at most this many (default `HAWQC_CSIM_THREADS`, else the usable cores), and
        never fewer than `MIN_SAMPLES_PER_THREAD` samples each."""
        flat, out = self._buffers(x)
        self._batched.run(flat, out, threads)
        return out.reshape((len(out), *self.project.output_shape))

    def predict_each(self, x: np.ndarray) -> np.ndarray:
        """`predict` with one ctypes call of the bridge's per-sample function per sample, as hls4ml's
        own `predict()` runs it (kept to check the batched entry against)."""
        flat, out = self._buffers(x)
        in_ptr, out_ptr = flat.ctypes.data, out.ctypes.data
        for i in range(len(flat)):
            self._batched.per_sample(in_ptr + i * flat.strides[0], out_ptr + i * out.strides[0])
        return out.reshape((len(out), *self.project.output_shape))

    def _buffers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The inputs as C-contiguous float64 rows, and zeroed output rows."""
        x = np.asarray(x)
        n = x.shape[0] if x.ndim > 0 else 0
        per_sample, accepted = tuple(x.shape[1:]), (tuple(self.project.input_shape), (self.project.input_size,))
        # The graph's own [1, ...] spelling of one sample; a leading 1 of the input layer's own shape
        # (one channel of a [N, 1, H, W] input that no image op made channels-last) stays.
        while per_sample not in accepted and len(per_sample) > 1 and per_sample[0] == 1:
            per_sample = per_sample[1:]
        if per_sample not in accepted:
            # A same-sized array of another layout (channels-first, say) would be read in the wrong order.
            raise ValueError(
                f"C simulation of {self.project.outdir.name} takes {self.project.input_size} values per sample "
                f"(shape {list(self.project.input_shape)}, channels last, or flat), got array of shape {list(x.shape)}"
            )
        flat = np.ascontiguousarray(x.reshape(n, -1), dtype=np.float64) if n else np.zeros((0, self.project.input_size))
        return flat, np.zeros((n, self.project.output_size), dtype=np.float64)


def compile_csim(project: LoweredProject, *, cxx: str = "g++", jobs: int | None = None) -> CSim:
    """The C simulation of `project`, from the cache or compiled now (and then cached)."""
    flags = compiler_flags(project.csim, cxx)
    key = cache_key(project, flags, cxx)
    root = cache_dir()
    library = root / f"{key}.so"
    workers = jobs if jobs is not None else max(1, min(len(project.csim.sources), os.cpu_count() or 1))
    if library.is_file():
        stats = CompileStats(seconds=0.0, cpu_seconds=0.0, peak_rss_bytes=0, cached=True, jobs=workers)
    else:
        stats = _build(project, flags, key, root, cxx, workers)
    return CSim(library, project, stats, flags)
