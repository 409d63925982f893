"""The isolated MXNet environment: a virtual environment with MXNet 1.9.1, created once and cached.

MXNet 1.9.1 needs ``numpy<1.24`` and its ONNX exporter ``onnx<1.15``; neither can share an environment
with lpot-ir's onnx/onnxruntime. :func:`ensure_mxnet_env` creates (default ``~/.cache/lpot-ir/mxnet-env``,
overridable with ``LPOT_IR_MXNET_ENV``) a venv with :data:`MXNET_ENV_REQUIREMENTS`; the MXNet frontend
(:mod:`lpot_ir.frontends.mxnet`) and the MXNet lowering (:mod:`lpot_ir.backends.export.mxnet_lowering`)
run their scripts with its interpreter. The interpreter that creates it is ``LPOT_IR_MXNET_PYTHON`` or
the current one; it must be Python 3.8-3.11 (numpy 1.23 has no wheels for newer versions).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lpot_ir.errors import ConversionError

__all__ = ["MXNET_ENV_REQUIREMENTS", "mxnet_env_dir", "mxnet_env_python", "ensure_mxnet_env", "install_hint"]

logger = logging.getLogger(__name__)

MXNET_ENV_REQUIREMENTS = ("mxnet==1.9.1", "numpy==1.23.5", "onnx==1.14.1")
"""What the isolated environment holds (the newest numpy<1.24 and onnx<1.15 with cp38-cp311 wheels)."""

_READY = "lpot-ir-env.json"
def mxnet_env_dir() -> Path:
    """Where the isolated MXNet environment lives (``LPOT_IR_MXNET_ENV`` or ``~/.cache/lpot-ir/mxnet-env``)."""
    override = os.environ.get("LPOT_IR_MXNET_ENV")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lpot-ir" / "mxnet-env"


def mxnet_env_python(env: Path | None = None) -> Path:
    """The interpreter of the isolated environment."""
    env = env or mxnet_env_dir()
    return env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def install_hint(env: Path) -> str:
    reqs = " ".join(f"'{r}'" for r in MXNET_ENV_REQUIREMENTS)
    return (
        f"Create it by hand with a Python 3.8-3.11: python3.11 -m venv {env} && {env}/bin/python -m pip install {reqs} "
        "(or point LPOT_IR_MXNET_ENV at an existing environment that has them)."
    )


def _is_ready(env: Path) -> bool:
    marker = env / _READY
    if not marker.exists() or not mxnet_env_python(env).exists():
        return False
    try:
        return tuple(json.loads(marker.read_text())["requirements"]) == MXNET_ENV_REQUIREMENTS
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def _locked(env: Path) -> Iterator[None]:
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_mxnet_env(env: Path | None = None, *, timeout: float = 1200.0) -> Path:
    """Create (once) the isolated MXNet environment and return its interpreter.

    Safe to call from several processes at once (a file lock serializes creation). An environment that
    ``LPOT_IR_MXNET_ENV`` points at and that imports ``mxnet.onnx`` is used as is.

    Raises:
        ConversionError: creating it failed; the message says exactly what to install.
    """
    env = env or mxnet_env_dir()
    python = mxnet_env_python(env)
    if _is_ready(env):
        return python
    with _locked(env):
        if _is_ready(env):
            return python
        if python.exists() and _imports_mxnet_onnx(python):
            _write_marker(env, adopted=True)
            return python
        base = os.environ.get("LPOT_IR_MXNET_PYTHON") or sys.executable
        start = time.monotonic()
        logger.warning("creating the isolated MXNet converter environment at %s (once; about a minute)", env)
        if env.exists():
            shutil.rmtree(env)
        steps = [
            [base, "-m", "venv", str(env)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                *MXNET_ENV_REQUIREMENTS,
            ],
        ]
        for cmd in steps:
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise ConversionError(
                    f"Creating the isolated MXNet environment failed running {' '.join(cmd)!r} ({exc}). "
                    + install_hint(env)
                ) from None
            if proc.returncode != 0:
                tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise ConversionError(
                    f"Creating the isolated MXNet environment failed: {' '.join(cmd)!r} exited {proc.returncode} "
                    f"({tail}). " + install_hint(env)
                )
        if not _imports_mxnet_onnx(python):
            raise ConversionError(
                f"The isolated MXNet environment at {env} was created but cannot import mxnet.onnx. "
                + install_hint(env)
            )
        _write_marker(env, seconds=round(time.monotonic() - start, 1))
        logger.warning("MXNet converter environment ready in %.0f s", time.monotonic() - start)
    return python


def _imports_mxnet_onnx(python: Path) -> bool:
    try:
        proc = subprocess.run(
            [str(python), "-c", "import mxnet.onnx, onnx, numpy"],
            capture_output=True,
            timeout=300,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def _write_marker(env: Path, **info: Any) -> None:
    data = json.dumps({"requirements": list(MXNET_ENV_REQUIREMENTS), **info})
    tmp = env / (_READY + ".tmp")
    tmp.write_text(data)
    os.replace(tmp, env / _READY)
