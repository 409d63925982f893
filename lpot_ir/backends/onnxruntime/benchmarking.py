"""Latency and throughput with ONNX Runtime: one or several instances, and side-by-side comparisons.

:func:`benchmark_model` is LPOT's performance benchmark: ``warmup`` untimed batches, then ``iterations``
timed batches (``time.perf_counter`` around each ``session.run``), per instance. With
``num_instances > 1`` every instance runs in its own Python process (a subprocess, see
:mod:`.instance_worker`; the user's script is not re-imported), pinned with ``os.sched_setaffinity`` to its
own ``cores_per_instance`` cores, with that many intra-op threads
and one inter-op thread; all instances finish their warmup before any starts timing. A single instance
runs in the calling process (not pinned) with ``cores_per_instance`` intra-op threads. Latency is per
batch; percentiles pool the timed batches of all instances; throughput (samples per second) is summed
over instances.

:func:`compare_latency` follows the project's benchmark convention: one intra-op thread, interleaved
rounds with the order of the models rotated each round, and the median of per-round latency ratios
relative to the first model (ratios, not absolute times, are what carry over between machines).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir import errors
from lpot_ir.backends.onnxruntime.instance_worker import InstanceJob, read_frame, start_instance
from lpot_ir.backends.onnxruntime.session import (
    SessionSource,
    input_specs,
    make_feed,
    make_session,
    model_bytes,
)
from lpot_ir.backends.onnxruntime.synthetic import synthetic_inputs
from lpot_ir.backends.onnxruntime.timing import count_samples, time_feeds
from lpot_ir.errors import ConfigError, DataError, EvaluationError, LpotError
from lpot_ir.ir.model import weight_bytes

__all__ = [
    "DEFAULT_SYNTHETIC_ITERATIONS",
    "LatencyStats",
    "InstanceTiming",
    "PerformanceResult",
    "LatencyComparison",
    "available_cores",
    "plan_instances",
    "time_feeds",
    "benchmark_model",
    "compare_latency",
    "compare_runners",
    "format_table",
]

logger = logging.getLogger(__name__)

DEFAULT_SYNTHETIC_ITERATIONS = 100
"""Timed iterations when the input is synthetic and ``iterations`` is -1 (there is no dataloader to exhaust)."""

def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None) -> str:
    """A plain-text table: columns padded to the widest cell, numbers right-aligned."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
    numeric = [all(_is_number(r[i]) for r in body) and bool(body) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=False)).rstrip()

    out = [title] if title else []
    out += [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in body]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class LatencyStats:
    """Per-batch latency in milliseconds."""

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float

    @classmethod
    def from_seconds(cls, seconds: Sequence[float] | np.ndarray) -> LatencyStats:
        """Percentiles (numpy's linear interpolation) of per-batch times given in seconds."""
        ms = np.asarray(seconds, dtype=np.float64) * 1e3
        if ms.size == 0:
            raise ValueError("no timings")
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(float(p50), float(p90), float(p99), float(ms.mean()), float(ms.min()), float(ms.max()))


@dataclass(frozen=True)
class InstanceTiming:
    """What one instance measured."""

    index: int
    cores: tuple[int, ...]
    iterations: int
    samples: int
    seconds: float
    latency: LatencyStats

    @property
    def throughput(self) -> float:
        """Samples per second of this instance."""
        return self.samples / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class PerformanceResult:
    """The result of a performance benchmark (LPOT's ``mode='performance'``).

    Attributes:
        latency_p50_ms, latency_p90_ms, latency_p99_ms, latency_mean_ms: per-batch latency, pooled over
            the timed batches of all instances.
        throughput: samples per second, summed over instances.
        batch_size: samples in the first batch.
        warmup: untimed batches per instance.
        iterations: timed batches per instance.
        instances: how many instances ran.
        cores_per_instance: intra-op threads (and pinned cores, with several instances) of each instance.
        samples: timed samples over all instances.
        per_instance: each instance's own numbers.
    """

    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_mean_ms: float
    throughput: float
    batch_size: int
    warmup: int
    iterations: int
    instances: int
    cores_per_instance: int
    samples: int
    per_instance: tuple[InstanceTiming, ...] = ()

    @classmethod
    def from_instances(
        cls, timings: Sequence[tuple[InstanceTiming, np.ndarray]], *, batch_size: int, warmup: int, cores: int
    ) -> PerformanceResult:
        """Combine instances: pooled latency percentiles, summed throughput and samples."""
        pooled = LatencyStats.from_seconds(np.concatenate([seconds for _, seconds in timings]))
        instances = tuple(t for t, _ in timings)
        return cls(
            latency_p50_ms=pooled.p50_ms,
            latency_p90_ms=pooled.p90_ms,
            latency_p99_ms=pooled.p99_ms,
            latency_mean_ms=pooled.mean_ms,
            throughput=float(sum(t.throughput for t in instances)),
            batch_size=batch_size,
            warmup=warmup,
            iterations=instances[0].iterations,
            instances=len(instances),
            cores_per_instance=cores,
            samples=sum(t.samples for t in instances),
            per_instance=instances,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types)."""
        data = asdict(self)
        data["mode"] = "performance"
        data["per_instance"] = [
            {**asdict(t), "cores": list(t.cores), "throughput": t.throughput} for t in self.per_instance
        ]
        return data

    def __str__(self) -> str:
        rows = [
            ("latency p50 (ms/batch)", self.latency_p50_ms),
            ("latency p90 (ms/batch)", self.latency_p90_ms),
            ("latency p99 (ms/batch)", self.latency_p99_ms),
            ("latency mean (ms/batch)", self.latency_mean_ms),
            ("throughput (samples/s)", self.throughput),
            ("batch size", self.batch_size),
            ("warmup", self.warmup),
            ("iterations", self.iterations),
            ("instances", self.instances),
            ("cores per instance", self.cores_per_instance),
            ("samples", self.samples),
        ]
        text = format_table(("performance", "value"), rows)
        if len(self.per_instance) > 1:
            text += "\n\n" + format_table(
                ("instance", "cores", "iterations", "p50 ms", "mean ms", "samples/s"),
                [
                    (t.index, ",".join(map(str, t.cores)), t.iterations, t.latency.p50_ms, t.latency.mean_ms,
                     t.throughput)
                    for t in self.per_instance
                ],
            )
        return text


def available_cores() -> list[int]:
    """The ids of the cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def plan_instances(num_instances: int, cores_per_instance: int | None = None) -> list[tuple[int, ...]]:
    """Give each instance its own cores.

    Args:
        num_instances: instances to run side by side.
        cores_per_instance: cores of each; ``None`` = the available cores divided by ``num_instances``.

    Returns:
        One tuple of core ids per instance (disjoint).

    Raises:
        ConfigError: the request needs more cores than this process may use.
    """
    cores = available_cores()
    if num_instances < 1:
        raise ConfigError(f"num_of_instance must be at least 1, got {num_instances}.")
    if cores_per_instance is None:
        cores_per_instance = len(cores) // num_instances
        if cores_per_instance < 1:
            raise ConfigError(
                f"num_of_instance is {num_instances}, but this process may use only {len(cores)} core(s) "
                f"({_core_list(cores)}); each instance needs at least one core. Lower num_of_instance "
                f"(evaluation.performance.configs / --num-instances) to at most {len(cores)}."
            )
    if cores_per_instance < 1:
        raise ConfigError(f"cores_per_instance must be at least 1, got {cores_per_instance}.")
    needed = cores_per_instance * num_instances
    if needed > len(cores):
        raise ConfigError(
            f"cores_per_instance ({cores_per_instance}) x num_of_instance ({num_instances}) needs {needed} cores, "
            f"but this process may use only {len(cores)} ({_core_list(cores)}). Lower cores_per_instance or "
            "num_of_instance (evaluation.performance.configs in the YAML, --cores-per-instance / "
            "--num-instances on the command line) so that their product is at most "
            f"{len(cores)}."
        )
    return [tuple(cores[i * cores_per_instance:(i + 1) * cores_per_instance]) for i in range(num_instances)]


def _core_list(cores: Sequence[int]) -> str:
    return "core " + ",".join(map(str, cores)) if len(cores) == 1 else "cores " + ",".join(map(str, cores))


def _failure(index: int, cores: tuple[int, ...], proc: Any, stderr: Any) -> tuple[str, str]:
    proc.wait(30)
    stderr.seek(0)
    lines = [ln for ln in stderr.read().decode("utf-8", "replace").strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else "no output"
    return "EvaluationError", (
        f"Benchmark instance {index} (cores {','.join(map(str, cores))}) ended without a result (exit code "
        f"{proc.returncode}; last message: {last}). Run with one instance to see the error directly."
    )


def _run_instances(jobs: list[InstanceJob]) -> list[tuple[np.ndarray, int]]:
    """Run each job in its own pinned worker process; all start timing together."""
    workers = []
    try:
        for job in jobs:
            workers.append(start_instance(job))
        errors_seen: list[tuple[str, str]] = []
        for job, (proc, stderr) in zip(jobs, workers, strict=True):
            assert proc.stdout is not None  # start_instance opens stdin and stdout as pipes
            frame = read_frame(proc.stdout)
            if frame is None:
                errors_seen.append(_failure(job.index, job.cores, proc, stderr))
            elif frame[0] == b"E":
                errors_seen.append(frame[1])
        go = b"stop\n" if errors_seen else b"go\n"
        for proc, _ in workers:
            assert proc.stdin is not None
            try:
                proc.stdin.write(go)
                proc.stdin.close()
            except OSError:  # the worker already ended
                pass
        results: list[tuple[np.ndarray, int]] = []
        if not errors_seen:
            for job, (proc, stderr) in zip(jobs, workers, strict=True):
                assert proc.stdout is not None
                frame = read_frame(proc.stdout)
                if frame is None:
                    errors_seen.append(_failure(job.index, job.cores, proc, stderr))
                elif frame[0] == b"E":
                    errors_seen.append(frame[1])
                else:
                    results.append(frame[1])
        for proc, _ in workers:
            proc.wait(30)
    finally:
        for proc, stderr in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None and not stream.closed:
                    stream.close()
            stderr.close()
    if errors_seen:
        kind, message = errors_seen[0]
        error_type = getattr(errors, kind, None)
        if isinstance(error_type, type) and issubclass(error_type, LpotError):
            raise error_type(message)
        raise EvaluationError(f"A benchmark instance failed: {kind}: {message}")
    return results


def _materialize(batches: Iterable[Any] | None, batch_size: int, seed: int,
                 shapes: Mapping[str, Sequence[int]] | None, specs: list[Any]) -> list[dict[str, np.ndarray]]:
    if batches is None:
        return [synthetic_inputs(specs, batch_size=batch_size, seed=seed, shapes=shapes)]
    return [make_feed(specs, batch) for batch in batches]


def benchmark_model(
    model: SessionSource,
    batches: Iterable[Any] | None = None,
    *,
    batch_size: int = 1,
    warmup: int = 5,
    iterations: int = -1,
    cores_per_instance: int | None = None,
    num_instances: int = 1,
    shapes: Mapping[str, Sequence[int]] | None = None,
    optimization_level: str = "all",
    seed: int = 0,
) -> PerformanceResult:
    """Measure latency and throughput of a model in ONNX Runtime (see the module docstring).

    Args:
        model: a path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``.
        batches: model-input batches (array / tuple / dict; see ``make_feed``), materialized once.
            ``None``: one synthetic batch (``batch_size``, ``shapes``, ``seed``; see ``synthetic_inputs``).
        batch_size: batch size of synthetic input.
        warmup: untimed batches per instance.
        iterations: timed batches per instance; -1 = every batch once (synthetic input:
            :data:`DEFAULT_SYNTHETIC_ITERATIONS`). The batches are cycled when there are fewer.
        cores_per_instance: cores and intra-op threads per instance; ``None`` = available cores / instances.
        num_instances: instances run side by side, each in its own pinned process when more than one.
        shapes: full shapes of synthetic inputs by input name.
        optimization_level: ONNX Runtime graph optimization level.
        seed: seed of synthetic input.

    Raises:
        ConfigError: bad counts, or more cores requested than available.
        DataError: a batch does not fit the model, or ONNX Runtime fails on it.
        ModelLoadError: ONNX Runtime cannot load the model.
    """
    if warmup < 0:
        raise ConfigError(f"warmup must be 0 or more, got {warmup}.")
    if iterations == 0 or iterations < -1:
        raise ConfigError(f"iteration must be a positive number of batches or -1 (all batches), got {iterations}.")
    plan = plan_instances(num_instances, cores_per_instance)
    threads = len(plan[0])
    if num_instances == 1:
        session = make_session(model, intra_op_threads=threads, inter_op_threads=1,
                               optimization_level=optimization_level)
        specs = input_specs(session)
    else:
        session = None
        if isinstance(model, (str, os.PathLike)):
            path = os.path.abspath(model)
            payload: bytes | str = path
            try:
                proto = onnx.load(path, load_external_data=False)
            except Exception:  # missing or unreadable: model_bytes raises the clear error, else re-raise
                model_bytes(model)
                raise
        else:
            payload = model_bytes(model)
            proto = onnx.load_model_from_string(payload)
        specs = input_specs(proto)
    feeds = _materialize(batches, batch_size, seed, shapes, specs)
    if not feeds:
        raise DataError("There is no batch to benchmark: the dataloader yielded nothing.")
    count = iterations if iterations > 0 else (DEFAULT_SYNTHETIC_ITERATIONS if batches is None else len(feeds))
    logger.info("benchmark: %d instance(s) x %d core(s), warmup %d, %d timed batches each",
                num_instances, threads, warmup, count)
    if session is not None:
        seconds, samples = time_feeds(session, feeds, warmup=warmup, iterations=count)
        results = [(seconds, samples)]
    else:
        jobs = [
            InstanceJob(i, cores, payload, feeds, warmup, count, optimization_level) for i, cores in enumerate(plan)
        ]
        results = _run_instances(jobs)
    timings = [
        (InstanceTiming(i, plan[i], count, samples, float(seconds.sum()), LatencyStats.from_seconds(seconds)), seconds)
        for i, (seconds, samples) in enumerate(results)
    ]
    return PerformanceResult.from_instances(timings, batch_size=count_samples(feeds[0]), warmup=warmup, cores=threads)


@dataclass(frozen=True)
class LatencyComparison:
    """Side-by-side latency of several models (see :func:`compare_latency`).

    Attributes:
        names: the models, the first being the reference.
        rounds: interleaved rounds run.
        iterations: timed runs per model per round.
        latency_ms: per model, the median over rounds of each round's median latency.
        ratio: per model, the median over rounds of (its latency / the first model's latency) in that round.
        per_round_ms: per model, each round's median latency.
    """

    names: tuple[str, ...]
    rounds: int
    iterations: int
    latency_ms: Mapping[str, float]
    ratio: Mapping[str, float]
    per_round_ms: Mapping[str, tuple[float, ...]]

    def speedup(self, name: str) -> float:
        """How many times faster than the first model (1 / ratio)."""
        return 1.0 / self.ratio[name]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON types)."""
        return {
            "names": list(self.names),
            "rounds": self.rounds,
            "iterations": self.iterations,
            "latency_ms": dict(self.latency_ms),
            "ratio": dict(self.ratio),
            "speedup": {n: self.speedup(n) for n in self.names},
            "per_round_ms": {n: list(v) for n, v in self.per_round_ms.items()},
        }

    def __str__(self) -> str:
        return format_table(
            ("model", "median ms", f"ratio vs {self.names[0]}", "speedup"),
            [(n, self.latency_ms[n], self.ratio[n], self.speedup(n)) for n in self.names],
            title=f"{self.rounds} interleaved rounds x {self.iterations} runs, 1 intra-op thread; "
                  "median of per-round ratios",
        )


def compare_latency(
    models: Mapping[str, SessionSource],
    inputs: Any = None,
    *,
    rounds: int = 5,
    iterations: int = 20,
    warmup: int = 3,
    intra_op_threads: int = 1,
    batch_size: int = 1,
    seed: int = 0,
    optimization_level: str = "all",
    budget_seconds: float | None = None,
) -> LatencyComparison:
    """Compare the latency of several models on the same input, side by side in one run.

    Each round times ``iterations`` runs of every model, in an order rotated by one each round, and takes
    each model's median; the result is the median of the per-round ratios to the first model. Models whose
    weights together exceed :data:`SIDE_BY_SIDE_BYTES` (1 GiB) are not held in memory together: each is
    timed in its own session, one after the other, in two rounds (in order, then reversed).

    Args:
        models: name -> model (path, bytes, ``onnx.ModelProto``, ``onnx_ir.Model``); the first is the
            reference. All must take the same inputs.
        inputs: one batch (array / tuple / dict) fed to every model; ``None`` = synthetic input made
            from the first model (``batch_size``, ``seed``).
        rounds: interleaved rounds.
        iterations: timed runs per model per round.
        warmup: untimed runs per model before the first round.
        intra_op_threads: threads per session (the convention is 1).
        budget_seconds: if given, fewer iterations per round (at least 1) when ``rounds`` rounds of
            ``iterations`` runs of every model would take longer than this (timed on the warm-up).

    Raises:
        ConfigError: fewer than one model, or non-positive rounds / iterations.
        DataError: the input does not fit one of the models.
    """
    if not models:
        raise ConfigError("compare_latency needs at least one model.")
    if rounds < 1 or iterations < 1:
        raise ConfigError(f"rounds and iterations must be at least 1, got {rounds} and {iterations}.")
    names = tuple(models)
    if sum(weight_bytes(m) for m in models.values() if isinstance(m, (onnx.ModelProto, ir.Model))) > SIDE_BY_SIDE_BYTES:
        return _compare_one_at_a_time(
            models, inputs, rounds=rounds, iterations=iterations, warmup=warmup, intra_op_threads=intra_op_threads,
            batch_size=batch_size, seed=seed, optimization_level=optimization_level, budget_seconds=budget_seconds,
        )  # fmt: skip
    sessions = {
        n: make_session(m, intra_op_threads=intra_op_threads, inter_op_threads=1,
                        optimization_level=optimization_level)
        for n, m in models.items()
    }
    if inputs is None:
        inputs = synthetic_inputs(sessions[names[0]], batch_size=batch_size, seed=seed)
    feeds = {n: make_feed(s, inputs) for n, s in sessions.items()}
    one_run = 0.0
    for n in names:
        seconds, _ = time_feeds(sessions[n], [feeds[n]], warmup=warmup, iterations=1)
        one_run += float(seconds[0])
    if budget_seconds is not None and one_run * rounds * iterations > budget_seconds:
        iterations = max(1, int(budget_seconds / max(one_run * rounds, 1e-9)))
    runners = {n: functools.partial(sessions[n].run, None, feeds[n]) for n in names}
    return compare_runners(runners, rounds=rounds, iterations=iterations, warmup=0)


SIDE_BY_SIDE_BYTES = 2**30
"""Models whose weights together exceed this are timed one session at a time (see :func:`compare_latency`)."""


def _compare_one_at_a_time(
    models: Mapping[str, SessionSource],
    inputs: Any,
    *,
    rounds: int,
    iterations: int,
    warmup: int,
    intra_op_threads: int,
    batch_size: int,
    seed: int,
    optimization_level: str,
    budget_seconds: float | None,
) -> LatencyComparison:
    """:func:`compare_latency` for models too large to hold in memory together: two rounds (in order, then
    reversed), each timing one model at a time in its own session, which is freed before the next is made.
    Each block runs ``rounds // 2`` times ``iterations`` runs (fewer within ``budget_seconds``)."""
    names = tuple(models)
    runs = max(1, iterations * max(1, rounds // 2))
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for order in (names, names[::-1]):
        for n in order:
            session = make_session(models[n], intra_op_threads=intra_op_threads, inter_op_threads=1,
                                   optimization_level=optimization_level)
            if inputs is None:
                inputs = synthetic_inputs(session, batch_size=batch_size, seed=seed)
            feed = make_feed(session, inputs)
            first, _ = time_feeds(session, [feed], warmup=warmup, iterations=1)
            count = runs
            if budget_seconds is not None:
                count = max(1, min(runs, int(budget_seconds / (2 * len(names)) / max(float(first[0]), 1e-9))))
            seconds, _ = time_feeds(session, [feed], warmup=0, iterations=count)
            per_round[n].append(float(np.median(seconds)) * 1e3)
            del session
    ratios = {n: [a / b for a, b in zip(per_round[n], per_round[names[0]], strict=True)] for n in names}
    return LatencyComparison(
        names=names,
        rounds=2,
        iterations=runs,
        latency_ms={n: float(np.median(per_round[n])) for n in names},
        ratio={n: float(np.median(ratios[n])) for n in names},
        per_round_ms={n: tuple(v) for n, v in per_round.items()},
    )


def compare_runners(
    runners: Mapping[str, Callable[[], object]], *, rounds: int = 5, iterations: int = 20, warmup: int = 3
) -> LatencyComparison:
    """Side-by-side latency of several callables (one run each call), interleaved as :func:`compare_latency` does.

    The comparison of ONNX Runtime sessions (:func:`compare_latency`) and of anything else that runs a model
    (a PyTorch module, a CUDA session) with the same rounds: each round times ``iterations`` calls of every
    runner, in an order rotated by one each round, and takes each one's median; the result is the median of the
    per-round ratios to the first runner.

    Raises:
        ConfigError: no runner, or non-positive rounds / iterations.
    """
    if not runners:
        raise ConfigError("compare_runners needs at least one runner.")
    if rounds < 1 or iterations < 1:
        raise ConfigError(f"rounds and iterations must be at least 1, got {rounds} and {iterations}.")
    names = tuple(runners)
    for n in names:
        for _ in range(warmup):
            runners[n]()
    clock = time.perf_counter
    per_round: dict[str, list[float]] = {n: [] for n in names}
    ratios: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        medians = {}
        for n in order:
            run = runners[n]
            seconds = np.empty(iterations, dtype=np.float64)
            for i in range(iterations):
                start = clock()
                run()
                seconds[i] = clock() - start
            medians[n] = float(np.median(seconds)) * 1e3
        for n in names:
            per_round[n].append(medians[n])
            ratios[n].append(medians[n] / medians[names[0]])
    return LatencyComparison(
        names=names,
        rounds=rounds,
        iterations=iterations,
        latency_ms={n: float(np.median(per_round[n])) for n in names},
        ratio={n: float(np.median(ratios[n])) for n in names},
        per_round_ms={n: tuple(v) for n, v in per_round.items()},
    )
