"""The worker side of :mod:`lpot_ir.tuning.executors`: what runs in a worker process.

A worker holds the evaluation (the :class:`~lpot_ir.tuning.evaluation.Evaluator`, shipped once as
cloudpickle bytes and kept by its digest) and evaluates candidate models sent as serialized ONNX bytes.
:func:`evaluate_bytes` is the one function both kinds of worker run:

* a local worker process (:func:`main` with ``FD SLOT``, :class:`LocalProcessExecutor`) reads
  messages from the socket ``FD``: ``("setup", evaluation, digest, sys_path, threads)`` once, then
  ``("eval", index, model_bytes)`` per job; it answers ``("ready", name)`` and ``("done", result)``;
* a Ray task (:class:`RayExecutor`) calls :func:`ray_evaluate`.

A result is a plain dict (index, accuracy, error, exception, seconds, worker) so that nothing but
builtins crosses process boundaries; ``exception`` is the pickled exception when it can be pickled
(the FP32 baseline re-raises an :class:`~lpot_ir.errors.LpotError` as it is).
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import onnx

from lpot_ir.errors import first_line

__all__ = ["evaluate_bytes", "load_evaluation", "ray_evaluate", "extend_sys_path", "main"]

_EVALUATIONS: dict[str, Any] = {}
"""Evaluations loaded in this process, by digest (a worker process keeps one; Ray reuses processes)."""


def extend_sys_path(paths: Sequence[str]) -> None:
    """Append the driver's import paths that exist here and are missing (the evaluation may import
    modules that only the driver's ``sys.path`` finds, e.g. a script's folder)."""
    for path in paths:
        if path not in sys.path and (path == "" or os.path.isdir(path)):
            sys.path.append(path)


def load_evaluation(digest: str, payload: Callable[[], bytes], sys_path: Sequence[str], threads: int) -> Any:
    """The evaluation with ``digest``, unpickled once per process from ``payload()``.

    ``threads`` becomes the evaluator's ONNX Runtime intra-op thread count when it has none.
    """
    evaluation = _EVALUATIONS.get(digest)
    if evaluation is None:
        import cloudpickle

        extend_sys_path(sys_path)
        evaluation = cloudpickle.loads(payload())
        if getattr(evaluation, "intra_op_threads", 0) is None:
            evaluation.intra_op_threads = threads
        _EVALUATIONS.clear()
        _EVALUATIONS[digest] = evaluation
    return evaluation


def _constant(value: bytes) -> Callable[[], bytes]:
    return lambda: value


def evaluate_bytes(evaluation: Any, index: int, model: bytes, worker: str) -> dict[str, Any]:
    """Run ``evaluation`` on the serialized ONNX ``model``; never raises."""
    began = time.perf_counter()
    accuracy: float | None = None
    error: str | None = None
    exception: bytes | None = None
    try:
        accuracy = float(evaluation(onnx.load_from_string(model)))
    except Exception as exc:  # the user's eval_func may raise anything: the driver records it
        error = first_line(exc)
        try:
            exception = pickle.dumps(exc)
        except Exception:  # an exception that cannot be pickled is reported by its text
            exception = None
    return {
        "index": index,
        "accuracy": accuracy,
        "error": error,
        "exception": exception,
        "seconds": time.perf_counter() - began,
        "worker": worker,
    }


def ray_evaluate(
    boxed: list[Any], digest: str, index: int, model: bytes, sys_path: list[str], threads: int
) -> dict[str, Any]:
    """The Ray task: ``boxed[0]`` is the ObjectRef of the evaluation bytes (boxed in a list so that Ray
    does not fetch it for every task; it is fetched once per worker process)."""
    import ray

    context = ray.get_runtime_context()
    worker = f"ray:{context.get_node_id()[:8]}:{os.getpid()}"
    try:
        evaluation = load_evaluation(digest, lambda: ray.get(boxed[0]), sys_path, threads)
    except Exception as exc:
        return {
            "index": index,
            "accuracy": None,
            "error": f"the evaluation could not be loaded on the worker: {first_line(exc)}",
            "exception": None,
            "seconds": 0.0,
            "worker": worker,
            "setup_failed": True,
        }
    return evaluate_bytes(evaluation, index, model, worker)


def main(argv: Sequence[str] | None = None) -> int:
    """A local worker process, given ``FD SLOT`` (the socket to the driver, the worker's slot number)."""
    args = list(sys.argv[1:] if argv is None else argv)
    sock = socket.socket(fileno=int(args[0]))
    connection = Connection(sock.detach())
    name = f"process:{args[1]}:{os.getpid()}"
    evaluation: Any = None
    while True:
        try:
            message = pickle.loads(connection.recv_bytes())
        except (EOFError, OSError):
            return 0  # the driver closed the connection: done
        kind = message[0]
        if kind == "setup":
            _, payload, digest, sys_path, threads = message
            try:
                evaluation = load_evaluation(digest, _constant(payload), sys_path, threads)
            except Exception as exc:
                connection.send_bytes(pickle.dumps(("setup-failed", first_line(exc))))
                return 1
            connection.send_bytes(pickle.dumps(("ready", name)))
        elif kind == "eval":
            _, index, model = message
            connection.send_bytes(pickle.dumps(("done", evaluate_bytes(evaluation, index, model, name))))
        else:
            return 0

