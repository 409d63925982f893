"""Where evaluations run: in the tuning process, in local worker processes, or on a Ray cluster.

The tuning loop quantizes every candidate itself (its quantizer holds the calibration statistics and
the quantized-weight caches, and the strategies' proxy readings share them) and hands an executor
*jobs*: a trial index and the candidate ONNX model. The executor evaluates them, as many at once as it
has workers, and returns an :class:`EvalResult` for each as it finishes (in any order):

* :class:`InProcessExecutor` (the default, ``tuning.workers: 1``): today's behaviour, the evaluation
  is called in the tuning process. With ``tuning.exit_policy.eval_timeout`` it runs in a thread and is
  abandoned when it takes too long (a thread cannot be killed: it is left running).
* :class:`LocalProcessExecutor` (``tuning.workers: N`` > 1): N worker processes on this machine
  (:func:`lpot_ir.tuning.worker.main`), each set up once with the evaluation.
* :class:`RayExecutor` (``tuning.distributed: {backend: ray, address: ...}``): one Ray task per
  evaluation; the evaluation is put into Ray's object store once and loaded once per Ray worker process.

What ships to workers: the evaluation (the ``eval_func``, or the dataloader + metric, pickled with
cloudpickle) once per worker; the FP32 model once (the baseline evaluation); each candidate's
serialized model once per job. :func:`shipped_evaluation` checks up front that the evaluation can be
pickled, and says what to change when it cannot.

Faults: a worker process that dies during an evaluation (killed, out of memory, a crash) has the
evaluation run again elsewhere, up to :data:`MAX_ATTEMPTS` attempts in all (Ray retries the task
itself; the local pool starts a new worker and runs it again). An evaluation that takes longer than
``eval_timeout`` seconds has its worker process killed (Ray: ``ray.cancel(force=True)``) and its trial
is recorded as failed.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_connections
from pathlib import Path
from typing import Any

import onnx

from lpot_ir.errors import ConfigError, EvaluationError, first_line
from lpot_ir.tuning.worker import ray_evaluate

__all__ = [
    "MAX_ATTEMPTS",
    "EvalResult",
    "EvalExecutor",
    "InProcessExecutor",
    "LocalProcessExecutor",
    "RayExecutor",
    "ShippedEvaluation",
    "shipped_evaluation",
    "make_executor",
    "ships_evaluation",
    "where_evaluations_run",
]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""Attempts of an evaluation whose worker dies before it finishes (the first one included)."""

STARTUP_TIMEOUT = 300.0
"""Seconds local worker processes may take to start and load the evaluation."""

WORKER_COMMAND = "import sys; from lpot_ir.tuning.worker import main; sys.exit(main(sys.argv[1:]))"
"""What a local worker process runs (``-c``, not ``-m``: the package imports the module first)."""

IN_PROCESS = "in-process"
"""The ``worker`` of a trial evaluated in the tuning process."""


@dataclass(frozen=True)
class EvalResult:
    """The outcome of one evaluation.

    Attributes:
        index: the trial index of the job (``-1``: the FP32 baseline).
        accuracy: the measured accuracy, ``None`` if the evaluation failed.
        error: why it failed (the exception's first line, or the timeout), else ``None``.
        seconds: how long the evaluation took where it ran.
        worker: who ran it (``in-process``, ``process:<slot>:<pid>``, ``ray:<node>:<pid>``).
        exception: the exception the evaluation raised, when it could be brought back.
        timed_out: the evaluation was stopped by ``eval_timeout``.
    """

    index: int
    accuracy: float | None
    error: str | None
    seconds: float
    worker: str
    exception: BaseException | None = None
    timed_out: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """A result sent back by :mod:`lpot_ir.tuning.worker`."""
        exception = None
        if data.get("exception") is not None:
            try:
                exception = pickle.loads(data["exception"])
            except Exception:  # a class the driver cannot import: the text is enough
                exception = None
        return cls(
            index=int(data["index"]),
            accuracy=data.get("accuracy"),
            error=data.get("error"),
            seconds=float(data.get("seconds", 0.0)),
            worker=str(data.get("worker", "")),
            exception=exception,
        )


def _timed_out(index: int, timeout: float, worker: str, seconds: float, how: str) -> EvalResult:
    return EvalResult(index, None, f"evaluation timed out after {timeout:g} s ({how})", seconds, worker, timed_out=True)


def _drop_finished(finished: collections.deque[EvalResult], index: int) -> bool:
    """Remove trial ``index``'s result from ``finished`` (not yet collected); whether it was there."""
    for result in list(finished):
        if result.index == index:
            finished.remove(result)
            return True
    return False


class EvalExecutor(ABC):
    """Runs evaluations; see the module docstring.

    Attributes:
        capacity: how many evaluations run at once.
        description: where evaluations run, for logs and reports.
    """

    capacity: int = 1
    description: str = ""

    @abstractmethod
    def submit(self, index: int, model: onnx.ModelProto) -> None:
        """Start evaluating ``model`` for trial ``index`` (queued if every worker is busy)."""

    @abstractmethod
    def wait(self) -> EvalResult:
        """The next finished evaluation (blocks until one finishes).

        Raises:
            RuntimeError: nothing was submitted that has not been returned.
        """

    @abstractmethod
    def cancel(self, index: int) -> bool:
        """Stop evaluating trial ``index`` (its result will not come); ``False`` if it cannot be stopped."""

    @property
    @abstractmethod
    def in_flight(self) -> int:
        """Evaluations submitted and not returned yet."""

    def evaluate(self, index: int, model: onnx.ModelProto) -> EvalResult:
        """Evaluate one model and wait for it (the FP32 baseline: nothing else is in flight)."""
        self.submit(index, model)
        return self.wait()

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (evaluations still running are abandoned)."""

    def __enter__(self) -> EvalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- in the tuning process --------------------------------------------------------------------------


class InProcessExecutor(EvalExecutor):
    """Evaluations in the tuning process, one at a time (the default).

    Args:
        evaluation: ``model -> accuracy`` (an :class:`~lpot_ir.tuning.evaluation.Evaluator`).
        timeout: seconds an evaluation may take (0: no limit). Over it, the trial fails and the
            evaluation's thread is left running: code in this process cannot be stopped from outside.
    """

    capacity = 1
    description = "in the tuning process"

    def __init__(self, evaluation: Any, timeout: float = 0.0) -> None:
        self.evaluation = evaluation
        self.timeout = float(timeout)
        self._queue: collections.deque[tuple[int, onnx.ModelProto]] = collections.deque()
        self.abandoned = 0
        """Evaluations abandoned by the timeout (their threads may still run)."""

    def submit(self, index: int, model: onnx.ModelProto) -> None:
        self._queue.append((index, model))

    @property
    def in_flight(self) -> int:
        return len(self._queue)

    def cancel(self, index: int) -> bool:
        for item in list(self._queue):
            if item[0] == index:
                self._queue.remove(item)
                return True
        return False

    def close(self) -> None:
        self._queue.clear()

    def wait(self) -> EvalResult:
        if not self._queue:
            raise RuntimeError("wait() with no evaluation submitted")
        index, model = self._queue.popleft()
        began = time.perf_counter()
        if self.timeout <= 0:
            try:
                accuracy = self.evaluation(model)
            except Exception as exc:  # the user's eval_func may raise anything: the loop records it
                return EvalResult(index, None, first_line(exc), time.perf_counter() - began, IN_PROCESS, exc)
            return EvalResult(index, float(accuracy), None, time.perf_counter() - began, IN_PROCESS)
        return self._run_with_timeout(index, model, began)

    def _run_with_timeout(self, index: int, model: onnx.ModelProto, began: float) -> EvalResult:
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["accuracy"] = self.evaluation(model)
            except BaseException as exc:  # reported to the loop below
                box["exception"] = exc

        thread = threading.Thread(target=run, name=f"lpot-evaluation-{index}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        seconds = time.perf_counter() - began
        if thread.is_alive():
            self.abandoned += 1
            logger.warning(
                "trial %d: the evaluation did not finish within eval_timeout (%g s); its thread is left running "
                "(an evaluation in the tuning process cannot be stopped; with tuning.workers >= 2 a hung "
                "evaluation's worker process is killed instead)",
                index, self.timeout,
            )  # fmt: skip
            return _timed_out(index, self.timeout, IN_PROCESS, seconds, "its thread was left running")
        if "exception" in box:
            exc = box["exception"]
            return EvalResult(index, None, first_line(exc), seconds, IN_PROCESS, exc)
        return EvalResult(index, float(box["accuracy"]), None, seconds, IN_PROCESS)


# -- shipping the evaluation ------------------------------------------------------------------------


@dataclass(frozen=True)
class ShippedEvaluation:
    """The evaluation as bytes for workers.

    Attributes:
        payload: cloudpickle bytes of the evaluation.
        digest: sha256 of ``payload`` (workers keep the loaded evaluation under it).
    """

    payload: bytes
    digest: str


def shipped_evaluation(evaluation: Any, where: str) -> ShippedEvaluation:
    """Pickle ``evaluation`` for workers, checking that it loads back.

    Args:
        evaluation: the :class:`~lpot_ir.tuning.evaluation.Evaluator`.
        where: the setting that sends evaluations to workers (for the message).

    Raises:
        EvaluationError: it cannot be pickled (a closure over an ONNX Runtime session, an open file, a
            lock, a generator...): the message names the part that fails when it can, and what to change.
        ConfigError: cloudpickle is not installed.
    """
    try:
        import cloudpickle
    except ImportError:
        raise ConfigError(
            f"{where} sends evaluations to worker processes, which needs cloudpickle: install it with `pip install "
            "'lpot-ir[distributed]'`, or evaluate in this process (tuning.workers: 1 without tuning.distributed)."
        ) from None

    try:
        payload = cloudpickle.dumps(evaluation)
        cloudpickle.loads(payload)
    except Exception as exc:
        culprit = _unpicklable_part(evaluation)
        found = f" The part that cannot be pickled: {culprit}." if culprit else ""
        raise EvaluationError(
            f"The evaluation cannot be sent to worker processes ({where}): pickling it with cloudpickle failed "
            f"with {first_line(exc)}.{found} Workers evaluate in other processes (or machines), so the eval_func "
            "and everything it refers to must be picklable: create ONNX Runtime sessions, open files, sockets and "
            "locks inside eval_func (it receives the candidate as an onnx.ModelProto), refer to data by path or as "
            "numpy arrays, and define eval_func at module level or as a closure over picklable values. Or evaluate "
            "in this process: tuning.workers: 1 without tuning.distributed."
        ) from None
    return ShippedEvaluation(payload, hashlib.sha256(payload).hexdigest())


def _unpicklable_part(evaluation: Any) -> str | None:
    """Name the first variable of ``evaluation``'s eval_func (closure, globals, bound object, attributes)
    that cannot be pickled."""
    import cloudpickle

    def fails(value: Any) -> bool:
        try:
            cloudpickle.dumps(value)
        except Exception:
            return True
        return False

    func = getattr(evaluation, "eval_func", None) or evaluation
    candidates: list[tuple[str, Any]] = []
    owner = getattr(func, "__self__", None)
    if owner is not None:
        candidates += [(f"{type(owner).__name__}.{k}", v) for k, v in vars(owner).items()] if hasattr(owner, "__dict__") else []
        func = getattr(func, "__func__", func)
    code = getattr(func, "__code__", None)
    if code is not None:
        cells = getattr(func, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, cells, strict=False):
            try:
                candidates.append((f"the closure variable '{name}'", cell.cell_contents))
            except ValueError:  # an empty cell
                continue
        module_globals = getattr(func, "__globals__", {})
        candidates += [(f"the global '{n}'", module_globals[n]) for n in code.co_names if n in module_globals]
    elif hasattr(evaluation, "__dict__"):
        candidates += [(f"{type(evaluation).__name__}.{k}", v) for k, v in vars(evaluation).items()]
    for label, value in candidates:
        if fails(value):
            return f"{label} ({type(value).__module__}.{type(value).__qualname__})"
    return None


def _python_path() -> str:
    """PYTHONPATH for worker processes: lpot_ir's own folder first (it may not be installed)."""
    root = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + rest if rest else "")


# -- local worker processes --------------------------------------------------------------------------


@dataclass
class _Job:
    index: int
    model: bytes
    attempts: int = 0


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    connection: Connection
    name: str = ""
    ready: bool = False
    job: _Job | None = None
    started: float = 0.0
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.process.pid


class LocalProcessExecutor(EvalExecutor):
    """Evaluations in worker processes on this machine, one job per worker at a time.

    Args:
        shipped: the evaluation (:func:`shipped_evaluation`), sent to each worker once at start-up.
        workers: how many processes.
        threads: ONNX Runtime intra-op threads per worker (the evaluator's, when it sets none;
            ``OMP_NUM_THREADS`` for the rest).
        timeout: seconds an evaluation may take (0: no limit); over it the worker is killed.

    Raises:
        EvaluationError: a worker could not load the evaluation.
    """

    def __init__(self, shipped: ShippedEvaluation, workers: int, *, threads: int = 1, timeout: float = 0.0) -> None:
        self.shipped = shipped
        self.capacity = int(workers)
        self.threads = int(threads)
        self.timeout = float(timeout)
        self.description = f"{self.capacity} local worker processes ({self.threads} thread(s) each)"
        self._queue: collections.deque[_Job] = collections.deque()
        self._finished: collections.deque[EvalResult] = collections.deque()
        self._workers: list[_Worker] = []
        self._failed_starts = 0
        try:
            self._workers = [self._spawn(slot) for slot in range(self.capacity)]
            self._await_ready()
        except BaseException:
            self.close()
            raise

    # -- workers ---------------------------------------------------------------------------------------

    def _spawn(self, slot: int) -> _Worker:
        parent, child = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": _python_path(), "OMP_NUM_THREADS": str(self.threads)}
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", WORKER_COMMAND, str(child.fileno()), str(slot)],
                pass_fds=(child.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            child.close()
        connection = Connection(parent.detach())
        worker = _Worker(slot, process, connection)
        message = ("setup", self.shipped.payload, self.shipped.digest, list(sys.path), self.threads)
        threading.Thread(target=self._send, args=(worker, message), daemon=True).start()  # big payloads: no blocking
        return worker

    @staticmethod
    def _send(worker: _Worker, message: tuple[Any, ...]) -> None:
        try:
            worker.connection.send_bytes(pickle.dumps(message))
        except OSError:
            pass  # the worker died: its connection reports it

    def _await_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not all(w.ready for w in self._workers):
            left = deadline - time.monotonic()
            if left <= 0:
                raise EvaluationError(
                    f"The local worker processes did not start within {STARTUP_TIMEOUT:g} s. Is the machine out of "
                    "memory, or does loading the evaluation take that long?"
                )
            for connection in wait_for_connections([w.connection for w in self._workers if not w.ready], left):
                worker = next(w for w in self._workers if w.connection is connection)
                message = self._receive(worker)
                if message is None or message[0] == "setup-failed":
                    why = message[1] if message else f"it exited with code {worker.process.wait()}"
                    raise EvaluationError(
                        f"A worker process could not load the evaluation: {why}. The evaluation was pickled in this "
                        "process and must load in a fresh Python process: the modules it refers to must be "
                        "importable there (installed, or on PYTHONPATH)."
                    )
                self._handle(worker, message)

    def _receive(self, worker: _Worker) -> tuple[Any, ...] | None:
        try:
            return tuple(pickle.loads(worker.connection.recv_bytes()))
        except (EOFError, OSError):
            return None

    def _handle(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        if message[0] == "ready":
            worker.ready, worker.name = True, str(message[1])
        elif message[0] == "done" and worker.job is not None:
            worker.job = None
            self._finished.append(EvalResult.from_dict(message[1]))
        elif message[0] == "setup-failed":  # a replacement worker: the first ones loaded the same bytes
            raise EvaluationError(f"A new worker process could not load the evaluation: {message[1]}.")

    def _replace(self, worker: _Worker, kill: bool) -> None:
        if kill:
            worker.process.kill()
        worker.connection.close()
        try:
            code = worker.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            code = worker.process.wait()
        logger.info("worker process %s (pid %d) stopped with exit code %s; starting a new one", worker.slot, worker.pid, code)
        self._workers[self._workers.index(worker)] = self._spawn(worker.slot)

    def _lost(self, worker: _Worker) -> None:
        """``worker`` died: run its job again elsewhere (up to MAX_ATTEMPTS attempts), start a new worker."""
        job = worker.job
        worker.job = None
        code = worker.process.poll()
        if not worker.ready:
            self._failed_starts += 1
            if self._failed_starts > MAX_ATTEMPTS * self.capacity:
                raise EvaluationError(
                    f"Local worker processes keep exiting before they are ready ({self._failed_starts} times, last exit "
                    f"code {code}); see their output above. Is the machine out of memory?"
                )
        self._replace(worker, kill=False)
        if job is None:
            return
        if job.attempts >= MAX_ATTEMPTS:
            self._finished.append(
                EvalResult(
                    job.index, None,
                    f"the worker process died in each of {job.attempts} attempts to evaluate it (last exit code "
                    f"{worker.process.returncode}): does the evaluation crash the process or run out of memory?",
                    0.0, worker.name,
                )  # fmt: skip
            )
            return
        logger.warning(
            "trial %d: worker process %s (pid %d) died during the evaluation (exit code %s); running it again",
            job.index, worker.slot, worker.pid, code,
        )  # fmt: skip
        self._queue.appendleft(job)

    # -- jobs ------------------------------------------------------------------------------------------

    def submit(self, index: int, model: onnx.ModelProto) -> None:
        self._queue.append(_Job(index, model.SerializeToString()))
        self._dispatch()

    def _dispatch(self) -> None:
        for worker in self._workers:
            if not self._queue:
                return
            if worker.ready and worker.job is None and worker.process.poll() is None:
                job = self._queue.popleft()
                job.attempts += 1
                worker.job, worker.started = job, time.monotonic()
                self._send(worker, ("eval", job.index, job.model))

    @property
    def in_flight(self) -> int:
        return len(self._queue) + sum(w.job is not None for w in self._workers) + len(self._finished)

    def wait(self) -> EvalResult:
        while True:
            if self._finished:
                return self._finished.popleft()
            if not self.in_flight:
                raise RuntimeError("wait() with no evaluation submitted")
            self._dispatch()
            now = time.monotonic()
            deadlines = [w.started + self.timeout for w in self._workers if w.job is not None and self.timeout > 0]
            left = max(0.0, min(deadlines) - now) if deadlines else None
            for connection in wait_for_connections([w.connection for w in self._workers], left):
                worker = next((w for w in self._workers if w.connection is connection), None)
                if worker is None:
                    continue
                message = self._receive(worker)
                if message is None:
                    self._lost(worker)
                else:
                    self._handle(worker, message)
            self._expire()

    def _expire(self) -> None:
        if self.timeout <= 0:
            return
        now = time.monotonic()
        for worker in list(self._workers):
            job = worker.job
            if job is not None and now - worker.started >= self.timeout:
                logger.warning(
                    "trial %d: the evaluation did not finish within eval_timeout (%g s); killing worker process %s",
                    job.index, self.timeout, worker.pid,
                )  # fmt: skip
                worker.job = None
                self._finished.append(_timed_out(job.index, self.timeout, worker.name, now - worker.started, "worker process killed"))
                self._replace(worker, kill=True)

    def cancel(self, index: int) -> bool:
        for job in list(self._queue):
            if job.index == index:
                self._queue.remove(job)
                return True
        for worker in list(self._workers):
            if worker.job is not None and worker.job.index == index:
                worker.job = None
                self._replace(worker, kill=True)
                return True
        return _drop_finished(self._finished, index)

    def close(self) -> None:
        for worker in self._workers:
            if worker.job is not None:
                worker.process.kill()
            worker.connection.close()  # an idle worker exits when its connection closes
        for worker in self._workers:
            try:
                worker.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self._workers = []


# -- Ray --------------------------------------------------------------------------------------------


def import_ray() -> Any:
    """``ray``, or a :class:`ConfigError` saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "tuning.distributed.backend is ray, but Ray is not installed. Install it with `pip install "
            "lpot-ir[distributed]` (or `pip install 'ray[default]'`) on this machine and on every node of the "
            "cluster, or remove tuning.distributed to evaluate on this machine."
        ) from None
    return ray


class RayExecutor(EvalExecutor):
    """Evaluations as Ray tasks on a Ray cluster.

    Args:
        shipped: the evaluation (:func:`shipped_evaluation`); put into the object store once.
        address: ``"auto"`` (the cluster ``ray start`` started on this machine), ``"host:port"`` (the head
            node's GCS address), or ``None`` (start a local Ray instance for this run and stop it at the end).
            When Ray is already initialized in this process, that connection is used.
        workers: evaluations at once (``None``: the cluster's CPUs / ``threads``).
        threads: CPUs each evaluation reserves (and its ONNX Runtime intra-op threads).
        timeout: seconds an evaluation may take from its submission (0: no limit); over it the task's
            worker process is killed (``ray.cancel(force=True)``).

    Raises:
        ConfigError: Ray is missing or the cluster cannot be reached.
    """

    def __init__(
        self,
        shipped: ShippedEvaluation,
        *,
        address: str | None = None,
        workers: int | None = None,
        threads: int = 1,
        timeout: float = 0.0,
    ) -> None:
        ray = import_ray()
        self._ray = ray
        self.shipped = shipped
        self.threads = int(threads)
        self.timeout = float(timeout)
        self._owns_connection = False
        if not ray.is_initialized():
            options: dict[str, Any] = {"logging_level": logging.WARNING, "configure_logging": False}
            try:
                if address is None:
                    local_cpus = (workers or os.cpu_count() or 1) * self.threads
                    ray.init(num_cpus=local_cpus, include_dashboard=False, **options)
                else:
                    ray.init(address=address, **options)
            except Exception as exc:
                raise ConfigError(
                    f"Cannot connect to the Ray cluster at tuning.distributed.address = {address!r}: {first_line(exc)}. "
                    "Start it first (`ray start --head` on the head node, `ray start --address=HEAD:6379` on the "
                    "others), give the head's address as host:port (or 'auto' on a node of the cluster), or set "
                    "address: null to start a Ray instance on this machine for the run."
                ) from None
            self._owns_connection = True
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        self.capacity = int(workers) if workers else max(1, int(cpus // self.threads))
        if self.capacity * self.threads > cpus:
            logger.warning(
                "Ray: %d evaluation(s) at once with %d CPU(s) each need %d CPUs, the cluster has %g: some will wait",
                self.capacity, self.threads, self.capacity * self.threads, cpus,
            )  # fmt: skip
        self.description = f"Ray ({self.capacity} evaluation(s) at once, {self.threads} CPU(s) each, {cpus:g} CPUs)"
        self._payload = ray.put(shipped.payload)
        self._task = ray.remote(ray_evaluate).options(
            num_cpus=self.threads, max_retries=MAX_ATTEMPTS - 1, retry_exceptions=False, name="lpot-evaluation"
        )
        self._running: dict[Any, tuple[int, float]] = {}
        self._finished: collections.deque[EvalResult] = collections.deque()

    def submit(self, index: int, model: onnx.ModelProto) -> None:
        ref = self._task.remote(
            [self._payload], self.shipped.digest, index, model.SerializeToString(), list(sys.path), self.threads
        )
        self._running[ref] = (index, time.monotonic())

    @property
    def in_flight(self) -> int:
        return len(self._running) + len(self._finished)

    def wait(self) -> EvalResult:
        ray = self._ray
        while not self._finished:
            if not self._running:
                raise RuntimeError("wait() with no evaluation submitted")
            left = None
            if self.timeout > 0:
                left = max(0.0, min(t for _, t in self._running.values()) + self.timeout - time.monotonic())
            ready, _ = ray.wait(list(self._running), num_returns=1, timeout=left)
            for ref in ready:
                index, submitted = self._running.pop(ref)
                self._finished.append(self._collect(ref, index, submitted))
            self._expire()
        return self._finished.popleft()

    def _collect(self, ref: Any, index: int, submitted: float) -> EvalResult:
        try:
            data = self._ray.get(ref)
        except Exception as exc:  # the task could not run: retries exhausted, node lost, cancelled
            return EvalResult(index, None, f"the Ray task failed: {first_line(exc)}", time.monotonic() - submitted, "ray")
        if data.get("setup_failed"):
            logger.warning("trial %d: %s", index, data["error"])
        return EvalResult.from_dict(data)

    def _expire(self) -> None:
        if self.timeout <= 0:
            return
        now = time.monotonic()
        for ref, (index, submitted) in list(self._running.items()):
            if now - submitted >= self.timeout:
                logger.warning(
                    "trial %d: the evaluation did not finish within eval_timeout (%g s); cancelling its Ray task",
                    index, self.timeout,
                )  # fmt: skip
                self._ray.cancel(ref, force=True)
                del self._running[ref]
                self._finished.append(_timed_out(index, self.timeout, "ray", now - submitted, "Ray worker killed"))

    def cancel(self, index: int) -> bool:
        for ref, (i, _) in list(self._running.items()):
            if i == index:
                self._ray.cancel(ref, force=True)
                del self._running[ref]
                return True
        return _drop_finished(self._finished, index)

    def close(self) -> None:
        for ref in list(self._running):
            try:
                self._ray.cancel(ref, force=True)
            except Exception as exc:  # closing must not raise over the loop's own error
                logger.debug("cancelling a Ray task failed: %s", exc)
        self._running.clear()
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()


# -- choosing one -------------------------------------------------------------------------------------


def make_executor(tuning: Any, evaluation: Any, shipped: ShippedEvaluation | None = None) -> EvalExecutor:
    """The executor ``tuning`` (the YAML's ``tuning`` section) asks for.

    Args:
        tuning: the :class:`~lpot_ir.config.schema.TuningSection`.
        evaluation: the evaluator.
        shipped: ``evaluation`` already pickled (:func:`shipped_evaluation`), when the caller checked it.

    Raises:
        EvaluationError: the evaluation cannot be shipped to workers, or workers cannot load it.
        ConfigError: Ray is needed and missing, or its cluster cannot be reached.
    """
    timeout = float(tuning.exit_policy.eval_timeout)
    distributed = tuning.distributed
    if distributed is None and (tuning.workers or 1) == 1:
        return InProcessExecutor(evaluation, timeout)
    if shipped is None:
        shipped = shipped_evaluation(evaluation, where_evaluations_run(tuning))
    if distributed is None:
        return LocalProcessExecutor(shipped, int(tuning.workers), threads=tuning.threads_per_worker, timeout=timeout)
    return RayExecutor(
        shipped, address=distributed.address, workers=tuning.workers, threads=tuning.threads_per_worker, timeout=timeout
    )


def where_evaluations_run(tuning: Any) -> str:
    """The YAML settings that choose the executor, for messages."""
    if tuning.distributed is not None:
        return f"tuning.distributed.backend: {tuning.distributed.backend}"
    return f"tuning.workers: {tuning.workers}"


def ships_evaluation(tuning: Any) -> bool:
    """Whether ``tuning`` sends evaluations to other processes."""
    return tuning.distributed is not None or (tuning.workers or 1) > 1

