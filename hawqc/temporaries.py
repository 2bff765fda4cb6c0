"""Temporary files and directories that a later run can tell are abandoned, and removes.

hawqc writes beside its targets and renames into place (the output directory, a cached C
simulation, a model written by `hawqc-opt -o`), so a process killed with SIGKILL, or a machine that
lost power, leaves a temporary behind. Each one is named `.<stem>.hawqc-tmp-<pid>-<token>[suffix]`
(hidden, next to what it becomes) and, while it is in use, its owner holds an flock on it. A
temporary is abandoned when both say so: the process of that pid is gone and nobody holds the lock.
The lock alone covers a pid reused by another process; the pid alone covers the moment between
creating a temporary and locking it, and a temporary nobody ever locked (a file a library wrote
beside one of ours). Concurrent runs therefore never remove each other's temporaries, in one pid
namespace or across containers sharing a directory (flock is the kernel's, pids are not).

flock rather than a lock-file library: a lock held on the temporary itself goes away with its
owner, needs no second file, and works on directories; the library's `Timeout` would also not
tell "someone holds it" from "cannot create it here" (a read-only file system).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

MARK = "hawqc-tmp"
# A kind of its own for what must not be mistaken for a temporary: an old project renamed aside
# (`hawqc.flow.output_dir`), which is put back rather than removed.
ASIDE = "hawqc-old"
_NAME = re.compile(
    rf"^\.(?P<stem>.+)\.(?P<mark>{MARK}|{ASIDE})-(?P<pid>\d+)-(?P<token>[0-9a-f]+)(?P<suffix>(\.\w+)*)$"
)


def temporary_name(stem: str, suffix: str = "", mark: str = MARK) -> str:
    """A fresh name for a temporary of this process: `.<stem>.hawqc-tmp-<pid>-<token><suffix>`."""
    return f".{stem}.{mark}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def hold(path: Path) -> int:
    """Lock `path` (a file or a directory) for as long as the returned descriptor stays open."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _try_hold(path: Path) -> int | None:
    """The lock of an abandoned temporary, or None while someone holds it (or it is gone)."""
    try:
        return hold(path)
    except OSError as error:
        if error.errno in (errno.EWOULDBLOCK, errno.ENOENT, errno.ELOOP):
            return None
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def abandoned(parent: Path, stem: str | None = None, mark: str = MARK) -> Iterator[tuple[Path, int]]:
    """The abandoned temporaries (or, with `mark=ASIDE`, asides) in `parent`, of `stem` or of any,
    each yielded with its lock held (the caller closes the descriptor once it has removed or
    reused it)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        match = _NAME.match(name)
        if match is None or match["mark"] != mark or (stem is not None and match["stem"] != stem):
            continue
        pid = int(match["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        path = parent / name
        try:
            fd = _try_hold(path)
        except OSError:
            continue  # not ours to judge (unreadable): leave it
        if fd is not None:
            yield path, fd


def remove_abandoned(parent: Path, stem: str | None = None) -> list[Path]:
    """Remove the abandoned temporaries in `parent` (of `stem`, or of any); returns what went."""
    removed = []
    for path, fd in abandoned(parent, stem):
        try:
            _remove(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


def remove_old_unowned(parent: Path, pattern: re.Pattern[str], age_seconds: float) -> None:
    """Temporaries of an older naming (no pid): removed once nobody holds them and nothing has
    touched them for `age_seconds` (no build takes that long)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    now = time.time()
    for name in names:
        if not pattern.match(name):
            continue
        path = parent / name
        try:
            if now - path.lstat().st_mtime < age_seconds:
                continue
            fd = _try_hold(path)
        except OSError:
            continue
        if fd is not None:
            try:
                _remove(path)
            finally:
                os.close(fd)


@contextmanager
def owned_directory(parent: Path, stem: str) -> Iterator[Path]:
    """A fresh locked temporary directory `parent/.<stem>.hawqc-tmp-...`, removed afterwards
    (abandoned ones of the same stem, left by killed runs, are removed first)."""
    remove_abandoned(parent, stem)
    path = parent / temporary_name(stem)
    path.mkdir(mode=0o700)
    fd = hold(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def replace_atomically(path: Path, write: Callable[[Path], None], suffix: str = "") -> None:
    """`write(temporary)` beside `path`, then rename it over `path`: readers see the old file or
    the whole new one. `suffix` ends the temporary's name (for writers that go by the suffix)."""
    path = Path(path)
    remove_abandoned(path.parent, path.name)
    tmp = path.with_name(temporary_name(path.name, suffix))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        write(tmp)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
