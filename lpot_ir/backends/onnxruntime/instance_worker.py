"""One benchmark instance in its own process: ``python -m lpot_ir.backends.onnxruntime.instance_worker``.

The parent (:func:`lpot_ir.backends.onnxruntime.benchmarking.benchmark_model`) starts one such process per
instance with :func:`start_instance` and talks to it through pipes, so the user's script is never
re-imported (as ``multiprocessing``'s spawn would do, which needs an ``if __name__ == "__main__"`` guard).

Protocol (frames are one kind byte, an 8-byte big-endian length, then a pickle):

1. parent -> child, stdin: a frame holding the :class:`InstanceJob`;
2. the child pins itself to ``job.cores``, makes a session, runs the warmup, and sends a ``R`` (ready) frame;
3. when every instance is ready the parent writes ``go\\n`` (anything else, or EOF, makes the child stop);
4. the child times its iterations and sends an ``O`` frame ``(seconds, samples)``; any failure is an
   ``E`` frame ``(exception type name, message)``.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.backends.onnxruntime.timing import time_feeds

__all__ = ["InstanceJob", "start_instance", "read_frame", "write_frame", "main"]

_HEADER = struct.Struct(">cQ")


@dataclass(frozen=True)
class InstanceJob:
    """What one instance runs (``model``: the serialized model, or a path, so external data is found)."""

    index: int
    cores: tuple[int, ...]
    model: bytes | str
    feeds: list[dict[str, np.ndarray]]
    warmup: int
    iterations: int
    optimization_level: str


def write_frame(stream: IO[bytes], kind: bytes, payload: Any) -> None:
    """Write one frame and flush."""
    data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(kind, len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> tuple[bytes, Any] | None:
    """Read one frame; ``None`` at end of stream."""
    header = _read_exact(stream, _HEADER.size)
    if header is None:
        return None
    kind, length = _HEADER.unpack(header)
    data = _read_exact(stream, length)
    if data is None:
        return None
    return kind, pickle.loads(data)


def start_instance(job: InstanceJob) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start the worker process for ``job`` and send it the job; return the process and its stderr file."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lpot_ir.backends.onnxruntime.instance_worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env,
    )
    assert proc.stdin is not None
    write_frame(proc.stdin, b"J", job)
    return proc, stderr


def main() -> int:
    """Worker entry point (see the module docstring)."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the frames
    frame = read_frame(stdin)
    if frame is None:
        return 1
    job: InstanceJob = frame[1]
    try:
        os.sched_setaffinity(0, job.cores)
        session = make_session(
            job.model, intra_op_threads=len(job.cores), inter_op_threads=1, optimization_level=job.optimization_level
        )

        def wait_for_go() -> None:
            write_frame(stdout, b"R", None)
            if stdin.readline().strip() != b"go":
                raise SystemExit(3)

        seconds, samples = time_feeds(
            session, job.feeds, warmup=job.warmup, iterations=job.iterations, before_timing=wait_for_go
        )
        write_frame(stdout, b"O", (seconds, samples))
    except SystemExit:
        raise
    except BaseException as exc:  # everything goes back to the parent, which raises it
        write_frame(stdout, b"E", (type(exc).__name__, str(exc)))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
