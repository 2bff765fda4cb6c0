"""The output directory (`-o`): never half-written, never lost, one writer at a time.

A compile writes its project into a temporary sibling of the output directory,
`.<name>.hawqc-tmp-<pid>-<token>` in the same parent (so that moving it is a rename on one file
system), and moves it into place only when everything, verification included, is done:
- no directory there (or an empty one): one `rename`;
- an old project (`--force`): one `renameat2(RENAME_EXCHANGE)`, which swaps the two directories
  atomically, then the old one, now under the temporary name, is deleted. A SIGKILL at any moment
  leaves at `-o` either the old project, intact, or the new one, complete; at worst a temporary
  remains, which the next compile into the same directory removes. Where the file system cannot
  exchange (some network and FUSE file systems), the old project is renamed aside to
  `.<name>.hawqc-old-<pid>-<token>` first; if the process dies before the new one is renamed in,
  the next compile puts it back.
Everything the project records names the final directory, not the temporary: text files the
backend wrote with the temporary's path in them (hls4ml's `OutputDir`, Catapult's weights
directory) are rewritten before anything reads them.

Only one compile at a time writes one output directory: the first holds an flock on
`.<name>.hawqc-lock` in the parent (the kernel releases it when the process dies, however it
dies); a second is refused with one line. The lock file is removed when the compile ends.

What is refused before anything is written, each in one line (exit code 2): a path under a file
(`-o afile/sub`), a dangling symbolic link, the current directory or one that contains it (`-o .`,
`-o ..`: replacing it would pull the directory out from under the shell), a directory that contains
a file this compile reads (the model, `--inputs`, `--outputs`), a mount point (a rename cannot
replace it), a non-empty directory without `--force`; and a parent directory hawqc cannot write
in (read-only file system, immutable, no permission), since the project is made there.

A symbolic link to a directory is followed: the directory it points to is replaced (the new
project is made beside that directory) and the link keeps pointing to it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import signal
import stat
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hawqc import temporaries
from hawqc.errors import OptionError, UserInputError

LOCK_SUFFIX = ".hawqc-lock"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_SYS_RENAMEAT2_X86_64 = 316


class OutputDirectory:
    """`-o` of one compile: `check()` refuses what cannot work, before anything is written; `with
    output.writing() as staging:` holds the lock and a fresh temporary directory to write into;
    `commit()`, the last step inside, moves it into place. Leaving the block without `commit()`
    (an error, Ctrl-C, SIGTERM) removes the temporary and whatever parents `writing` created."""

    def __init__(self, given: str | Path, *, force: bool, reads: Sequence[Path | None] = ()) -> None:
        self.given = Path(given)
        self.force = force
        self.reads = [Path(p) for p in reads if p is not None]
        # Absolute, every symbolic link followed: where the project really goes.
        self.final = Path(os.path.realpath(self.given))
        self.parent = self.final.parent
        self.staging: Path | None = None
        self.committed = False
        self._lock_fd: int | None = None
        self._staging_fd: int | None = None
        self._created: list[Path] = []

    # --- before anything is written ---------------------------------------------------------------

    def check(self) -> None:
        try:
            self._check()
        except OSError as error:  # e.g. a parent the user may not look into
            raise UserInputError(f"{self.given}: {error.strerror or error}") from None

    def _check(self) -> None:
        given, final = self.given, self.final
        for link in (given, *given.parents):
            if link.is_symlink() and not link.exists():
                raise UserInputError(f"{given}: {link} is a symbolic link to {os.readlink(link)}, which does not exist")
        for ancestor in (final, *final.parents):
            if ancestor.exists() or ancestor.is_symlink():
                if not ancestor.is_dir():
                    where = "exists" if ancestor == final else f"is inside {ancestor}, which exists"
                    raise UserInputError(f"{given}: {where} and is not a directory")
                break
        try:
            cwd = Path(os.getcwd())
        except OSError:  # the current directory was deleted: nothing to protect
            cwd = None
        if cwd is not None and cwd.is_relative_to(final):
            raise UserInputError(
                f"{given}: is the current directory or contains it; the output directory is replaced "
                "as a whole, so give a directory of its own (e.g. -o proj)"
            )
        for read in self.reads:
            if read.exists() and Path(os.path.realpath(read)).is_relative_to(final):
                raise UserInputError(
                    f"{given}: contains {read}, which this compile reads; the output directory is replaced "
                    "as a whole, so give a directory of its own"
                )
        if final.is_dir():
            if os.path.ismount(final):
                raise UserInputError(
                    f"{given}: is a mount point; hawqc makes the project beside the output directory and renames "
                    "it into place, which a mount point cannot take: give a directory inside it"
                )
            self._check_contents()

    def _check_contents(self) -> None:
        try:
            empty = not any(self.final.iterdir())
        except OSError as error:
            raise UserInputError(f"{self.given}: cannot read the directory ({error.strerror})") from None
        if not empty and not self.force:
            raise OptionError(f"{self.given}: directory is not empty (use {{}} to replace it)", "force=True")

    # --- writing ------------------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[Path]:
        try:
            self._lock()
            self._recover()
            self.check()  # again, under the lock: a compile that just ended may have filled it
            yield self._make_staging()
        finally:
            self._clean_up()

    def _cannot_write(self, error: OSError) -> UserInputError:
        return UserInputError(
            f"{self.given}: cannot write in {self.parent} ({error.strerror or error}); hawqc makes the project "
            "beside the output directory and renames it into place, so it needs to write in its parent"
        )

    def _lock(self) -> None:
        path = self.parent / f".{self.final.name}{LOCK_SUFFIX}"
        for _ in range(3):
            try:
                self._make_parents()
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                continue  # another compile just removed a parent it had made: make it again
            except OSError as error:
                raise self._cannot_write(error) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno != errno.EWOULDBLOCK:
                    raise self._cannot_write(error) from None
                raise UserInputError(
                    f"{self.given}: another hawqc is writing this directory (it holds {path}); wait for it to finish"
                ) from None
            # The holder before us removes the file as it lets go: make sure we locked the file
            # that is there, not one that was just removed.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)
        raise UserInputError(f"{self.given}: cannot take the lock {path}: it keeps changing")

    def _make_parents(self) -> None:
        missing = []
        for ancestor in self.parent, *self.parent.parents:
            if ancestor.is_dir():
                break
            missing.append(ancestor)
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                continue
            self._created.append(directory)

    def _recover(self) -> None:
        """Under the lock, what killed compiles into this directory left: a project renamed aside
        (only where exchanging was impossible) is put back if nothing replaced it; temporaries go."""
        name = self.final.name
        for aside, fd in temporaries.abandoned(self.parent, name, mark=temporaries.ASIDE):
            try:
                if not self.final.exists():
                    os.rename(aside, self.final)
                else:
                    shutil.rmtree(aside, ignore_errors=True)
            except OSError:
                pass  # left for a later run
            finally:
                os.close(fd)
        temporaries.remove_abandoned(self.parent, name)

    def _make_staging(self) -> Path:
        staging = self.parent / temporaries.temporary_name(self.final.name)
        try:
            staging.mkdir()
        except OSError as error:
            raise self._cannot_write(error) from None
        self.staging = staging
        self._staging_fd = temporaries.hold(staging)
        return staging

    def rewrite_paths(self) -> None:
        """Replace the temporary's path by the final one in the text files written so far."""
        assert self.staging is not None
        old = str(self.staging.resolve()).encode()
        new = str(self.final).encode()
        for path in self.staging.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            if old in data and b"\0" not in data:
                path.write_bytes(data.replace(old, new))

    def commit(self) -> None:
        """Move the finished project into place (see the module's docstring)."""
        assert self.staging is not None
        staging, final = self.staging, self.final
        try:
            if final.exists():
                os.chmod(staging, stat.S_IMODE(final.stat().st_mode))  # keep the directory's permissions
            with _signals_held():
                if not final.exists():
                    os.rename(staging, final)
                elif not _exchange(staging, final):
                    self._replace_in_two_steps()
                self.committed = True
        except OSError as error:
            raise UserInputError(f"{self.given}: cannot move the new project into place ({error.strerror or error})") from None

    def _replace_in_two_steps(self) -> None:
        aside = self.parent / temporaries.temporary_name(self.final.name, mark=temporaries.ASIDE)
        os.rename(self.final, aside)
        try:
            fd = temporaries.hold(aside)
        except OSError:
            fd = None
        try:
            os.rename(self.staging, self.final)
        except OSError:
            os.rename(aside, self.final)
            raise
        finally:
            if fd is not None:
                os.close(fd)
        # The old project is garbage now: under a temporary's name, never to be put back.
        try:
            os.rename(aside, self.staging)
        except OSError:
            self.staging = aside  # removed all the same, just under the other name

    def _clean_up(self) -> None:
        if self.staging is not None:
            # Not committed: the half-written project. Committed: the old one, swapped out.
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._staging_fd is not None:
            os.close(self._staging_fd)
            self._staging_fd = None
        if self._lock_fd is not None:
            (self.parent / f".{self.final.name}{LOCK_SUFFIX}").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None
        if not self.committed:
            for directory in reversed(self._created):
                try:
                    directory.rmdir()
                except OSError:
                    break  # someone else put something there


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the kernel or the
    file system cannot, any other failure raises."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    args = (_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if hasattr(libc, "renameat2"):  # glibc 2.28 and later
        function = libc.renameat2
        function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        result = function(*args)
    elif os.uname().machine == "x86_64":
        function = libc.syscall
        function.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        result = function(_SYS_RENAMEAT2_X86_64, *args)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait while the project is moved into place: the steps in between must
    not be cut (an interrupt then takes effect right after)."""
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
