"""Atomic file writes: the one way lpot-ir writes a file a user may already have.

Everything is written to a temporary file in the destination folder, flushed to disk, then renamed
onto the destination with ``os.replace`` (atomic on POSIX and Windows), and the folder is synced so the
rename survives a power cut. A crash, a kill, a full disk or an exception part-way leaves the previous
file untouched. A failed write (full disk, file size limit, read-only folder) raises
:class:`~lpot_ir.errors.WriteError`: one paragraph naming the file, and still an ``OSError``.

Temporary files are named ``.<name>.<host>-<pid>.<random><suffix>``. A process killed with SIGKILL cannot
remove its own, so every write removes those in its folder whose process (on this host) is gone: a killed
run's temporaries last only until the next file is written in the same folder. A new file gets the permissions of a plain ``open()`` (``0o666`` minus the umask); a
replaced file keeps its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from lpot_ir.errors import WriteError

__all__ = ["WRITE_ERRNOS", "atomic_path", "atomic_paths", "atomic_write", "append_line", "fsync_file", "fsync_folder",
           "remove_stale_temporaries", "temporary_prefix", "write_error"]

WRITE_ERRNOS = frozenset(
    getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EDQUOT", "EROFS", "EIO", "EACCES", "EPERM") if hasattr(errno, name)
)
"""Errors of a failed write that are the environment's, not lpot-ir's (reported as :class:`WriteError`)."""

_HOST = socket.gethostname().replace(".", "_").replace("/", "_") or "host"


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def temporary_prefix(dest: Path) -> str:
    """The name prefix of this process's temporaries for ``dest`` (see the module docstring)."""
    return f".{dest.name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(dest: str | os.PathLike[str]) -> int:
    """Remove the temporaries left in ``dest``'s folder by processes of this host that no longer run (a
    killed writer of any file there); return how many.

    Temporaries of live processes (a parallel writer) and of other hosts (a shared folder) are left alone.
    """
    folder = Path(dest).parent
    pattern = re.compile(r"\..+\." + re.escape(_HOST) + r"-(\d+)\.[^.]*(\..*)?")
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.fullmatch(entry.name) if entry.name.startswith(".") else None
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def write_error(
    dest: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], exc: OSError, *, kept: str = ""
) -> WriteError:
    """A :class:`WriteError` for ``exc`` raised while writing ``dest`` (one path, or the paths written
    together; keeps ``errno``); ``kept`` says what was left as it was (default: the earlier files)."""
    names = [dest] if isinstance(dest, (str, os.PathLike)) else list(dest)
    what = " and ".join(f"'{os.fspath(n)}'" for n in names)
    unchanged = (
        "Nothing was replaced: an earlier file at that path is unchanged."
        if len(names) == 1
        else "Nothing was replaced: the earlier files at those paths are unchanged."
    )
    reason = exc.strerror or str(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno or 0, "")
    hint = {
        errno.ENOSPC: "Free disk space, or write somewhere else.",
        errno.EFBIG: "The file is larger than this process may write (ulimit -f); raise the limit.",
        errno.EROFS: "The folder is on a read-only file system; write somewhere else.",
        errno.EACCES: "Check the folder's permissions, or write somewhere else.",
        errno.EPERM: "Check the folder's permissions, or write somewhere else.",
    }.get(exc.errno or 0, "Check the disk and the folder's permissions, or write somewhere else.")
    error = WriteError(
        f"Could not write {what}: {reason}{f' ({code})' if code else ''}. {kept or unchanged} {hint}"
    )
    error.errno = exc.errno
    return error


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data to disk."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_folder(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename in it) to disk; best effort (not every system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode(dest: Path) -> int:
    try:
        return stat.S_IMODE(dest.stat().st_mode)
    except OSError:
        return 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, rename it onto ``path``.

    Use it for writers that want a file name (``fig.savefig(tmp)``); the temporary file keeps ``suffix``
    so such writers pick the right format. Parent folders are created.

    Raises:
        WriteError: the folder cannot be created or written, or the disk is full (``ENOSPC``/``EFBIG``/...
            raised inside the block too); the destination is unchanged.
    """
    with atomic_paths([path], suffixes=[suffix]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike[str]], *, suffixes: Sequence[str] | None = None) -> Iterator[list[Path]]:
    """Temporary paths beside several files, all renamed onto them when the block succeeds.

    Every file is written and flushed before the first rename, so a full disk or an error while writing
    any of them changes none of them (a model and its recipe stay a pair). Only a kill between the renames
    (microseconds) can leave some renamed and some not.

    Raises:
        WriteError: as :func:`atomic_path`; no destination is changed.
    """
    dests = [Path(p) for p in paths]
    suffixes = list(suffixes) if suffixes is not None else [".tmp"] * len(dests)
    temps: list[Path] = []
    try:
        for dest, suffix in zip(dests, suffixes, strict=True):
            dest.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(dest)
            fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=temporary_prefix(dest), suffix=suffix)
            os.close(fd)
            temps.append(Path(tmp_name))
    except OSError as exc:
        _remove(temps)
        raise write_error(dests[len(temps)], exc) from exc
    try:
        yield list(temps)
        for dest, tmp in zip(dests, temps, strict=True):
            fsync_file(tmp)
            os.chmod(tmp, _new_file_mode(dest))
        for dest, tmp in zip(dests, temps, strict=True):
            os.replace(tmp, dest)
    except BaseException as exc:
        _remove(temps)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError) and exc.errno in WRITE_ERRNOS:
            raise write_error(dests[0] if len(dests) == 1 else dests, exc) from exc
        raise
    for folder in dict.fromkeys(d.parent for d in dests):
        fsync_folder(folder)


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            path.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically and return the path."""
    dest = Path(path)
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
    return dest


def append_line(path: str | os.PathLike[str], line: str) -> None:
    """Append one line (``line`` plus a newline) to ``path``, flushed and fsynced; all or nothing.

    When the write fails part-way (full disk), the file is cut back to its previous length, so it never
    holds half a line that later lines would follow.

    Raises:
        WriteError: the line could not be written; the file is as it was.
    """
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    dest = Path(path)
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_error(dest, exc) from exc
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
                os.fsync(fd)
            raise write_error(dest, exc, kept="The file was cut back to its earlier content.") from exc
    finally:
        os.close(fd)
