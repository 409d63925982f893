"""The peer tools' own virtual environments (Intel Neural Compressor 2.6, NNCF), created when missing.

Peers never go into lpot-ir's environment: INC 2.6 needs onnx 1.15 / onnxruntime 1.18 / numpy 1.x,
which lpot-ir does not support, and NNCF brings its own dependency tree. Each peer gets a venv under
``~/.cache/lpot_ir/`` (or the folder its environment variable names), built with ``python3 -m venv`` and
``pip install`` of its pinned :attr:`PeerVenv.packages`. A marker file in the venv records the package
list it was built from: a venv built from another list (or a half-built one) is moved aside to
``<venv>.stale`` (a process may still run from it; the next rebuild deletes it) and rebuilt, a venv
without a marker whose import check passes (made by an older script) is adopted. A lock file next
to the venv keeps two benchmark processes from building the same venv at once.

This module is stdlib-only: benchmark scripts import it from lpot-ir's venv before any peer venv exists.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PeerVenv", "INC_VENV", "NNCF_VENV", "PEER_VENVS", "venv_path", "ensure_venv"]

logger = logging.getLogger(__name__)

_MARKER = ".lpot_ir_peer_venv"


@dataclass(frozen=True)
class PeerVenv:
    """How to build and check one peer's venv.

    Attributes:
        name: short name (``"inc"``, ``"nncf"``).
        env_var: environment variable that overrides the venv's folder.
        default_dir: folder name under ``~/.cache/lpot_ir/`` when ``env_var`` is unset.
        packages: pinned pip requirements, installed in one ``pip install``.
        check: Python code run with the venv's interpreter; it must exit 0 in a usable venv.
        expected_minutes: the build time to announce in the log.
        post_install: commands (argv, the first item a script in the venv's ``bin/``) run once after
            the install.
    """

    name: str
    env_var: str
    default_dir: str
    packages: tuple[str, ...]
    check: str
    expected_minutes: float
    post_install: tuple[tuple[str, ...], ...] = ()

    @property
    def spec(self) -> str:
        """The marker text: one requirement per line, then the post-install commands."""
        return "".join(f"{line}\n" for line in (*self.packages, *(" ".join(c) for c in self.post_install)))


INC_VENV = PeerVenv(
    name="inc",
    env_var="LPOT_IR_INC_VENV",
    default_dir="inc26-venv",
    # pip resolves numpy 1.26.4 from onnxruntime 1.18.1's `numpy<2`: no numpy pin needed.
    packages=(
        "neural-compressor==2.6",
        "onnx==1.15.0",
        "onnxruntime==1.18.1",
        "ml_dtypes<0.6",
        "setuptools<70",
        "six",
        "scikit-learn",
    ),
    check="import neural_compressor, onnx, onnxruntime; assert neural_compressor.__version__ == '2.6'",
    expected_minutes=1.5,
)
"""Intel Neural Compressor 2.6: the last INC release with ONNX Runtime accuracy-driven tuning."""

NNCF_VENV = PeerVenv(
    name="nncf",
    env_var="LPOT_IR_NNCF_VENV",
    default_dir="nncf34-venv",
    # onnx / onnxruntime pinned to lpot-ir's own versions, so both sides evaluate with the same runtime.
    packages=("nncf==3.4.0", "onnx==1.23.2", "onnxruntime==1.32.0"),
    check="import nncf, onnx, onnxruntime; assert nncf.__version__ == '3.4.0'",
    expected_minutes=1.5,
    # NNCF sends usage telemetry (openvino-telemetry) unless the user opts out; this is the documented
    # opt-out (it writes ~/intel/openvino_telemetry). There is no network here to send it to anyway.
    post_install=(("opt_in_out", "--opt_out"),),
)
"""NNCF 3.4.0 with its ONNX backend (``quantize_with_accuracy_control`` supports ONNX models)."""

PEER_VENVS: dict[str, PeerVenv] = {spec.name: spec for spec in (INC_VENV, NNCF_VENV)}


def venv_path(spec: PeerVenv) -> Path:
    """``$<env_var>`` or ``~/.cache/lpot_ir/<default_dir>``."""
    env = os.environ.get(spec.env_var)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lpot_ir" / spec.default_dir


def _works(spec: PeerVenv, python: Path) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", spec.check], capture_output=True).returncode == 0


def _ready(spec: PeerVenv, path: Path, python: Path) -> bool:
    marker = path / _MARKER
    if marker.exists():
        return marker.read_text() == spec.spec
    if _works(spec, python):  # built by an older script, same packages: adopt it
        marker.write_text(spec.spec)
        return True
    return False


def ensure_venv(spec: PeerVenv, path: Path | None = None) -> tuple[Path, float | None]:
    """The peer venv's python, building the venv first if it is missing, stale or incomplete.

    Args:
        spec: which peer.
        path: the venv folder (default :func:`venv_path`).

    Returns:
        The venv's python and the seconds the build took (``None`` if the venv was already there).

    Raises:
        RuntimeError: ``pip install`` failed, or the built venv fails its import check.
    """
    path = Path(path) if path is not None else venv_path(spec)
    python = path / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
        if _ready(spec, path, python):
            return python, None
        if path.exists():
            # Moved aside, not deleted: a process may still be running from it (a long peer run).
            aside = path.with_name(path.name + ".stale")
            logger.info("moving the stale or incomplete %s venv %s aside to %s", spec.name, path, aside)
            shutil.rmtree(aside, ignore_errors=True)
            path.rename(aside)
        base = shutil.which("python3") or sys.executable
        logger.info(
            "creating the %s venv in %s (about %.1f minutes): pip install %s",
            spec.name, path, spec.expected_minutes, " ".join(spec.packages),
        )  # fmt: skip
        began = time.perf_counter()
        subprocess.run([base, "-m", "venv", str(path)], check=True)
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *spec.packages],
            capture_output=True,
            text=True,
        )
        if pip.returncode != 0:
            raise RuntimeError(
                f"Building the {spec.name} venv in {path} failed: `pip install {' '.join(spec.packages)}` "
                f"exited with {pip.returncode}. Its last output:\n{pip.stderr[-3000:]}\nFix the cause (a "
                f"registry that cannot be reached, a Python version without wheels for these pins) and "
                f"re-run; the half-built venv is rebuilt from scratch next time."
            )
        for command in spec.post_install:
            subprocess.run([str(path / "bin" / command[0]), *command[1:]], check=True, capture_output=True)
        seconds = time.perf_counter() - began
        if not _works(spec, python):
            check = subprocess.run([str(python), "-c", spec.check], capture_output=True, text=True)
            raise RuntimeError(
                f"The {spec.name} venv in {path} was installed but its import check fails:\n"
                f"{check.stderr[-3000:]}\nRemove {path} and re-run to rebuild it."
            )
        (path / _MARKER).write_text(spec.spec)
        logger.info("%s venv ready in %.0f s", spec.name, seconds)
        return python, seconds
