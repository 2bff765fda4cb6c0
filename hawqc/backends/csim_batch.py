"""The batched entry point of a compiled C simulation, and running it over several threads.

hls4ml's `predict()` makes one ctypes call per sample (allocating the output and checking both
arrays in Python each time). hawqc links one more translation unit into the library, the loop over
samples in C++ around the bridge's own per-sample function, so that a whole batch is one call; the
per-sample function and therefore the results are hls4ml's.

Threads: ctypes releases the GIL during a foreign call, so Python threads that each call the batch
entry on a contiguous slice run in parallel. They must not share one loaded library: hls4ml's
kernels keep mutable `static` state (the io_stream line buffers and pixel counters of
`nnet_conv2d_stream.h`, lazily filled activation tables, Catapult's weights read on first call),
which is only correct one sample at a time. Each thread therefore runs its own copy of the library:
the file is copied under another name and loaded with RTLD_LOCAL, so every copy has its own static
data (the libraries are built with `-fno-gnu-unique`, which keeps template statics out of the
process-wide unique-symbol table; without it all copies would share them, and one thread is used).
Within a thread, samples go through a copy in order, as in the per-sample path.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hawqc.errors import BackendError, UserInputError
from hawqc.temporaries import owned_directory

# Below this many samples per thread, starting threads (and loading library copies) costs more than
# it saves.
MIN_SAMPLES_PER_THREAD = 64
THREADS_ENV = "HAWQC_CSIM_THREADS"
# Without it, static data of template functions is shared between loaded copies of a library.
PRIVATE_STATICS_FLAG = "-fno-gnu-unique"


def batch_entry(entry: str) -> str:
    return f"{entry}_batch"


def batch_source(entry: str) -> str:
    """C++ of the batched entry: `n` samples of `in_size` doubles in, `out_size` doubles out each,
    through the bridge's `entry(double *in, double *out)`, one after the other."""
    batch = batch_entry(entry)
    return f"""// Written by hawqc: the loop over samples of the C simulation, in C++.
extern "C" void {entry}(double *input, double *output);

extern "C" void {batch}(double *inputs, double *outputs, long n, long in_size, long out_size) {{
    for (long i = 0; i < n; ++i) {{
        {entry}(inputs + i * in_size, outputs + i * out_size);
    }}
}}
"""


def default_threads() -> int:
    """`HAWQC_CSIM_THREADS` if set, else the cores this process may run on."""
    value = os.environ.get(THREADS_ENV)
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise UserInputError(f"{THREADS_ENV}={value!r}: expected a positive thread count")
        return threads
    return len(os.sched_getaffinity(0))


def _bind(lib: ctypes.CDLL, name: str, argtypes: list) -> ctypes._CFuncPtr:
    try:
        fn = getattr(lib, name)
    except AttributeError as error:
        raise BackendError(f"{lib._name}: no function {name!r}") from error
    fn.argtypes = argtypes
    fn.restype = None
    return fn


class BatchedLibrary:
    """Copies of one compiled library, each with its own static data: copy 0 is the library itself
    (its per-sample `entry` too), the others are loaded on demand when a batch uses more threads."""

    def __init__(self, library: Path, entry: str, private_statics: bool) -> None:
        self.library = library
        self.entry = entry
        self.private_statics = private_statics
        first = ctypes.CDLL(str(library), mode=os.RTLD_LOCAL)
        self.per_sample = _bind(first, entry, [ctypes.c_void_p, ctypes.c_void_p])
        self._batch = [self._bind_batch(first)]
        self._handles = [first]

    def _bind_batch(self, lib: ctypes.CDLL) -> ctypes._CFuncPtr:
        argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long]
        return _bind(lib, batch_entry(self.entry), argtypes)

    def _copies(self, count: int) -> list[ctypes._CFuncPtr]:
        while len(self._batch) < count:
            # dlopen returns the already loaded library for the same file (it compares device and
            # inode), so each copy is a file of its own; it is removed once mapped.
            with owned_directory(Path(tempfile.gettempdir()), "hawqc-csim-copy") as scratch:
                copy = scratch / f"copy{len(self._batch)}.so"
                shutil.copyfile(self.library, copy)
                lib = ctypes.CDLL(str(copy), mode=os.RTLD_LOCAL)
            self._handles.append(lib)
            self._batch.append(self._bind_batch(lib))
        return self._batch[:count]

    def threads_for(self, n: int, threads: int | None) -> int:
        wanted = default_threads() if threads is None else threads
        if wanted < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        if not self.private_statics:
            return 1
        return max(1, min(wanted, n // MIN_SAMPLES_PER_THREAD))

    def run(self, inputs: np.ndarray, outputs: np.ndarray, threads: int | None = None) -> None:
        """`outputs[i] = f(inputs[i])` for every row; both C-contiguous float64, 2-D."""
        n, in_size = inputs.shape
        out_size = outputs.shape[1]
        count = self.threads_for(n, threads)
        if count == 1:
            self._batch[0](inputs.ctypes.data, outputs.ctypes.data, n, in_size, out_size)
            return
        functions = self._copies(count)
        bounds = np.linspace(0, n, count + 1).astype(int)

        def run_slice(k: int) -> None:
            lo, hi = int(bounds[k]), int(bounds[k + 1])
            functions[k](inputs[lo:].ctypes.data, outputs[lo:].ctypes.data, hi - lo, in_size, out_size)

        with ThreadPoolExecutor(count, thread_name_prefix="hawqc-csim") as pool:
            list(pool.map(run_slice, range(count)))
