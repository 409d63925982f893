"""Real write failures for the fault tests: a file size limit (any user, any POSIX system) and a full tmpfs
(root only).

``file_size_limit(n)`` lowers this process's ``RLIMIT_FSIZE`` soft limit: the kernel then writes at most
``n`` bytes into any file and fails the rest of the write with ``EFBIG`` (``SIGXFSZ`` is ignored meanwhile,
else it would end the process). ``full_tmpfs()`` mounts a small tmpfs and fills it, so the next write fails
with ``ENOSPC`` as on a full disk.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["file_size_limit", "fill", "full_tmpfs", "snapshot", "temporaries"]


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes in any file fail with ``EFBIG`` inside the block."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def full_tmpfs(size_kb: int = 512) -> Iterator[Path]:
    """A folder on a freshly mounted tmpfs of ``size_kb`` KiB (fill it with :func:`fill`), unmounted after.

    Skips the test when not root or when mounting is not allowed (containers without CAP_SYS_ADMIN).
    """
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder = Path(tempfile.mkdtemp(prefix="lpot-full-disk-"))
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        folder.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def fill(folder: Path, free_bytes: int = 0) -> None:
    """Fill the file system of ``folder`` until at most ``free_bytes`` are left."""
    filler = folder / "filler"
    with open(filler, "ab") as handle:
        chunk = b"\0" * 65536
        while True:
            left = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
            if left <= free_bytes:
                break
            try:
                handle.write(chunk[: max(1, min(len(chunk), left - free_bytes))])
                handle.flush()
            except OSError:
                break


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes), to compare before and after a failed write."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    """Names of temporary files or folders left under ``folder`` (hidden names)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))
