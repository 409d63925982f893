"""Tuning on a real two-node Ray cluster on this machine, with a worker killed (kill -9) during a trial.

The cluster is started the way a user starts one (``ray start --head``, then ``ray start --address``
for the second node), on 127.0.0.1 with ports picked free, its own temporary folder and its own
authentication token, so that it never meets another Ray cluster on the machine. Ray advertises the
machine's own address for 127.0.0.1 (a multi-node cluster cannot run on the loopback alone in Ray).

Stopping: ``ray stop`` stops *every* Ray process of the user on the machine (other runs' clusters
too), so the finalizer stops this cluster's processes only, by pid: those whose command line names
its temporary folder or its head port.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lpot_ir.tuning import Evaluator, tune
from tests.tuning.distributed_helpers import MisbehaveOnce, random_config

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_ports() -> list[str]:
    """Every port a node opens, free (two nodes share this machine: Ray's fixed defaults would clash)."""
    workers = _free_port()
    return [
        "--node-manager-port", str(_free_port()),
        "--object-manager-port", str(_free_port()),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--dashboard-agent-grpc-port", str(_free_port()),
        "--metrics-export-port", str(_free_port()),
        "--runtime-env-agent-port", str(_free_port()),
        "--min-worker-port", str(workers),
        "--max-worker-port", str(workers + 40),
    ]  # fmt: skip


def _ray_start(*args: str) -> None:
    done = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args[:2])} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


def _stop(temp_dir: str, port: int) -> None:
    """Kill this cluster's processes (found by its temporary folder or head port), by pid."""
    mine = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(process.info.get("cmdline") or [])
        if temp_dir in line or f":{port} " in f"{line} " or f":{port}," in line:
            mine.append(process)
    for process in mine:
        try:
            process.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(mine, timeout=10)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head node and a second node, one CPU each; yields the head's address."""
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))  # nodes, workers and driver
    started: list[tuple[str, int]] = []
    try:
        for attempt in (1, 2):  # the ports are picked free, then bound by Ray: another process may take one between
            temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths stay under 108 bytes
            port = _free_port()
            started.append((temp_dir, port))
            common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--temp-dir", temp_dir]
            try:
                _ray_start("--head", "--port", str(port), "--include-dashboard", "false",
                           "--ray-client-server-port", str(_free_port()), *common, *_node_ports())  # fmt: skip
                _ray_start("--address", f"127.0.0.1:{port}", *common, *_node_ports())
                break
            except RuntimeError:
                _stop(temp_dir, port)
                if attempt == 2:
                    raise
        yield f"127.0.0.1:{port}"
    finally:
        for temp_dir, port in started:
            _stop(temp_dir, port)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _kill_when_announced(marker: Path, killed: list[int], stop: threading.Event) -> None:
    """kill -9 the Ray worker process that writes its pid into ``marker`` (it then sleeps in its trial)."""
    while not stop.is_set():
        try:
            pid = int(marker.read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.05)
            continue
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        return


def test_tuning_on_a_ray_cluster_survives_a_killed_worker(digits, quantizer, tmp_path, ray_cluster):
    reference = tune(random_config(tmp_path / "ref"), quantizer, Evaluator(eval_func=digits.eval_func), progress=False)

    marker = tmp_path / "announced"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_when_announced, args=(marker, killed, stop), daemon=True)
    killer.start()
    config = random_config(tmp_path / "ws", distributed={"backend": "ray", "address": ray_cluster})
    try:
        outcome = tune(config, quantizer, Evaluator(eval_func=MisbehaveOnce(digits, marker, "wait", seconds=60)), progress=False)
    finally:
        stop.set()
        killer.join()

    assert len(killed) == 1  # a worker process died with SIGKILL in the middle of a trial
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    assert [(t.config.key(), t.accuracy, t.failed) for t in outcome.trials] == [
        (t.config.key(), t.accuracy, t.failed) for t in reference.trials
    ]  # its trial ran again elsewhere; nothing is missing or failed
    assert outcome.best.config.key() == reference.best.config.key()
    workers = {t.worker for t in outcome.trials}
    assert all(w and w.startswith("ray:") for w in workers)
    assert f":{killed[0]}" not in " ".join(sorted(workers))  # the killed process finished nothing
