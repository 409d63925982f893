"""The real-model suite's peer tools: Intel Neural Compressor 2.6 and NNCF, each in its own venv.

:func:`run_peer` is what the suite runner calls: it builds the peer's venv when missing
(:mod:`.venvs`), runs the peer's driver script there by subprocess with a timeout, and returns the
driver's result JSON. The drivers (``inc_driver.py``, ``nncf_driver.py``) score every model with the
suite's own ``benchmarks/suite/evaluate.py``, so all tools are compared on the same model, data and
metric. Peers, versions and workarounds: docs/benchmarks.md, "Peers".

This package is stdlib-only (lpot-ir's venv imports it; the peer venvs run only the driver scripts),
and imports its own modules relatively, so it works as ``benchmarks.suite.peers`` (repository root on
``sys.path``) and as ``suite.peers`` (a script in ``benchmarks/``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .venvs import INC_VENV, NNCF_VENV, PEER_VENVS, PeerVenv, ensure_venv, venv_path

__all__ = [
    "Peer",
    "PEERS",
    "run_peer",
    "INC_VENV",
    "NNCF_VENV",
    "PEER_VENVS",
    "PeerVenv",
    "ensure_venv",
    "venv_path",
]

logger = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
DEFAULT_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Peer:
    """One peer row of the suite: which venv, which driver script, which extra driver arguments."""

    name: str
    label: str
    venv: PeerVenv
    driver: str
    extra_args: tuple[str, ...] = ()


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("inc", "INC 2.6 basic (QDQ, quant_level auto)", INC_VENV, "inc_driver.py"),
        Peer(
            "nncf",
            "NNCF quantize_with_accuracy_control",
            NNCF_VENV,
            "nncf_driver.py",
            ("--mode", "accuracy-control"),
        ),
        Peer(
            "nncf-quantize",
            "NNCF quantize (no accuracy control)",
            NNCF_VENV,
            "nncf_driver.py",
            ("--mode", "quantize"),
        ),
    )
}
"""The peers :func:`run_peer` knows, by name."""


def run_peer(
    name: str,
    task_dir: str | os.PathLike[str],
    workdir: str | os.PathLike[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    criterion_relative: float = 0.01,
    evaluate: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Run one peer on one suite task and return its result.

    Args:
        name: a key of :data:`PEERS` (``"inc"``, ``"nncf"``, ``"nncf-quantize"``).
        task_dir: the task folder (task.json, model.onnx, calib.npz, eval.npz).
        workdir: where the result JSON, the INT8 model, the log and the tool's workspace go
            (``<workdir>/<name>.json``, ``<name>.int8.onnx``, ``<name>.log``, ``<name>_ws/``).
        timeout: seconds before the driver (and everything it started) is killed.
        criterion_relative: the tolerable relative metric loss.
        evaluate: the suite's ``evaluate.py`` (default: ``benchmarks/suite/evaluate.py``).

    Returns:
        The driver's JSON (keys ``tool``, ``version``, ``goal_met``, ``evaluations``, ``wall_seconds``,
        ``accuracy``, ``fp32_accuracy``, ``model``, ``notes``, ...) plus ``peer``, ``log``,
        ``exit_code``, ``venv_seconds`` (the venv build time, ``None`` when it existed) and
        ``run_seconds`` (the whole subprocess, imports included); or, when no JSON came back, a dict
        with ``error`` (and the same extra keys).
    """
    if name not in PEERS:
        raise KeyError(f"unknown peer {name!r}: the peers are {', '.join(PEERS)}")
    peer = PEERS[name]
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out, model_out, log = workdir / f"{name}.json", workdir / f"{name}.int8.onnx", workdir / f"{name}.log"
    base: dict[str, Any] = {"peer": name, "label": peer.label, "log": str(log), "venv_seconds": None}
    try:
        python, base["venv_seconds"] = ensure_venv(peer.venv)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
        return {**base, "error": f"the {peer.venv.name} venv could not be built: {error}"}
    for stale in (out, model_out):
        stale.unlink(missing_ok=True)
    command = [
        str(python), str(_HERE / peer.driver), *peer.extra_args,
        "--task-dir", str(Path(task_dir).resolve()), "--out", str(out), "--model-out", str(model_out),
        "--criterion-relative", repr(criterion_relative), "--workspace", str(workdir / f"{name}_ws"),
    ]  # fmt: skip
    if evaluate is not None:
        command += ["--evaluate", str(Path(evaluate).resolve())]
    # The peer venv must not see lpot-ir's tree or site-packages.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    logger.info("%s on %s: %s", name, Path(task_dir).name, " ".join(command))
    began = time.perf_counter()
    with open(log, "w") as log_file:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            exit_code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the driver's own process group only
            process.wait()
            return {
                **base,
                "error": f"timed out after {timeout:.0f} s (killed)",
                "run_seconds": round(time.perf_counter() - began, 3),
            }
    base.update(exit_code=exit_code, run_seconds=round(time.perf_counter() - began, 3))
    if not out.exists():
        tail = log.read_text(errors="replace")[-2000:]
        return {**base, "error": f"the driver exited with {exit_code} and wrote no result; log tail:\n{tail}"}
    return {**json.loads(out.read_text()), **base}
