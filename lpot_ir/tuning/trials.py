"""The propose / evaluate / observe loop of :func:`lpot_ir.tuning.loop.tune`, over an executor.

:class:`TrialRunner` asks the strategy for as many configurations as the executor has free workers
(:meth:`~lpot_ir.strategies.base.TuneStrategy.propose_batch`), quantizes each here (the quantizer holds
the calibration statistics and caches), submits the models to the executor
(:mod:`lpot_ir.tuning.executors`), and as evaluations finish measures objectives, appends the trial to
the history at once and tells the strategy. With one worker this is one trial at a time, exactly the
sequence of the loop before executors existed.

Exit policy: ``timeout: 0`` stops at the first trial that meets the accuracy criterion -- the first in
the order of proposal, so that N workers choose what one would: trials still running after it are
cancelled and those that finished after it are kept in the history but not chosen from. A positive
``timeout`` (seconds, counting the time of resumed trials) and ``max_trials`` (trials proposed, resumed
ones included) bound the search; evaluations already running are waited for. An exhausted strategy ends
it. No configuration is evaluated twice (the strategy base class never re-proposes a known key, and the
loop checks again). ``eval_timeout`` bounds each evaluation (the executor stops it; the trial fails).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lpot_ir.errors import LpotError, first_line
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies import TrialResult
from lpot_ir.tuning.executors import EvalExecutor, EvalResult
from lpot_ir.tuning.history import TuningHistory
from lpot_ir.tuning.objectives import ObjectiveMeter

__all__ = ["TrialRunner"]

logger = logging.getLogger(__name__)


@dataclass
class _Running:
    """A trial whose evaluation was submitted: what the loop needs when its result comes."""

    position: int
    config: TuningConfig
    quantized: Any
    began: float
    quantize_seconds: float


@dataclass
class TrialRunner:
    """The propose / evaluate / observe loop over an executor (see the module docstring)."""

    strategy: Any
    executor: EvalExecutor
    quantize: Callable[[TuningConfig], Any]
    meter: ObjectiveMeter
    context: Any
    history: TuningHistory
    exit_policy: Any
    recorded: list[TrialResult]
    start: float
    slots: list[TrialResult | None] = field(default_factory=list)
    running: dict[int, _Running] = field(default_factory=dict)
    seen: dict[str, TrialResult] = field(default_factory=dict)
    stop_reason: str = ""
    first_success: int | None = None
    evaluated: int = 0
    replayed: int = 0
    replayed_seconds: float = 0.0
    progress: Callable[[list[TrialResult]], None] | None = None
    replay: dict[str, TrialResult] = field(default_factory=dict)

    def run(self) -> None:
        """Propose, evaluate and observe until the exit policy or the strategy ends the search."""
        self.replay = {t.config.key(): t for t in self.recorded}
        while True:
            if not self.stop_reason:
                self._propose()
            if not self.running:
                if self.stop_reason:
                    return
                continue  # results arrived while proposing (replayed, failed quantization): propose again
            self._finish(self._wait())

    # -- proposing -------------------------------------------------------------------------------

    def _stop(self, why: str) -> None:
        if not self.stop_reason:
            self.stop_reason = why

    def _propose(self) -> None:
        policy = self.exit_policy
        while not self.stop_reason and len(self.running) < self.executor.capacity:
            if len(self.slots) >= policy.max_trials:
                self._stop(f"max_trials ({policy.max_trials}) reached")
                return
            elapsed = time.perf_counter() - self.start + self.replayed_seconds
            if policy.timeout > 0 and elapsed >= policy.timeout:
                self._stop(f"timeout ({policy.timeout} s) reached")
                return
            room = min(self.executor.capacity - len(self.running), policy.max_trials - len(self.slots))
            batch = self.strategy.propose_batch(room)
            if batch is None:
                self._stop("the search space is exhausted")
                return
            if not batch:
                if not self.running:  # nothing to wait for: a strategy bug, never loop forever
                    self._stop("the strategy waits for results but none are pending")
                return
            for proposal in batch:
                self._start(proposal)
                if self.stop_reason:
                    return

    def _start(self, proposal: TuningConfig) -> None:
        key = proposal.key()
        if key in self.seen:  # the base class prevents this; never evaluate twice regardless
            self.strategy.observe(dataclasses.replace(self.seen[key], config=proposal))
            return
        position = len(self.slots)
        self.slots.append(None)
        if key in self.replay:
            result = self.replay.pop(key)
            self.replayed += 1
            self.replayed_seconds += result.seconds / self.executor.capacity
            self._record(position, result, append=False)
            return
        sequential = all(t.worker in (None, "in-process") for t in self.recorded)  # else the history may have holes
        if self.replay and position < len(self.recorded) and sequential:
            logger.warning(
                "resume: the strategy proposed a configuration the earlier run did not try at trial %d; "
                "the resumed run diverges from it (is the strategy deterministic for its seed?)",
                position,
            )
        began = time.perf_counter()
        try:
            quantized = self.quantize(proposal)
        except Exception as exc:  # one bad configuration must not end tuning
            failed = f"quantization failed: {first_line(exc)}"
            logger.warning("trial %d: %s", position, failed, exc_info=not isinstance(exc, LpotError))
            result = TrialResult(position, proposal, None, {}, False, failed, time.perf_counter() - began)
            self._record(position, self._observed(position, proposal, None, result), append=True)
            return
        quantize_seconds = time.perf_counter() - began
        self.running[position] = _Running(position, proposal, quantized, began, quantize_seconds)
        self.executor.submit(position, quantized.model)

    # -- results ---------------------------------------------------------------------------------

    def _wait(self) -> tuple[_Running, EvalResult]:
        while True:
            done = self.executor.wait()
            job = self.running.pop(done.index, None)
            if job is not None:
                return job, done

    def _finish(self, item: tuple[_Running, EvalResult]) -> None:
        job, done = item
        measured = time.perf_counter()
        accuracy: float | None = None
        objectives: dict[str, float] = {}
        failed: str | None = None
        if done.error is not None or done.accuracy is None:
            failed = done.error if done.timed_out else f"evaluation failed: {done.error}"
            logger.warning("trial %d: %s; the trial is marked failed and tuning goes on", job.position, failed)
        else:
            accuracy = float(done.accuracy)
            try:
                objectives = self.meter(job.quantized.model)
            except Exception as exc:
                failed = f"objective measurement failed: {first_line(exc)}"
                logger.warning("trial %d: %s", job.position, failed)
        self.evaluated += 1
        meets = failed is None and accuracy is not None and self.context.meets_goal(accuracy)
        seconds = job.quantize_seconds + done.seconds + (time.perf_counter() - measured)
        result = TrialResult(
            index=job.position,
            config=job.config,
            accuracy=accuracy if failed is None else None,
            objectives=objectives,
            meets_goal=meets,
            failed=failed,
            seconds=seconds,
            worker=done.worker,
        )
        self._record(job.position, self._observed(job.position, job.config, job.quantized, result), append=True)

    def _observed(self, position: int, config: TuningConfig, quantized: Any, result: TrialResult) -> TrialResult:
        """Log the trial and tell the observers (TensorBoard...)."""
        loss = self.context.relative_loss(result.accuracy)
        logger.info(
            "trial %d: accuracy %s (%s relative loss)%s%s",
            position,
            "failed" if result.accuracy is None else f"{result.accuracy:.4f}",
            "-" if loss is None else f"{loss:.2%}",
            ", meets the criterion" if result.meets_goal else "",
            f" [{result.worker}]" if result.worker and self.executor.capacity > 1 else "",
        )
        for observer in self.context.trial_observers:
            try:
                observer(position, config, quantized, result)
            except Exception as exc:  # an observer (a report writer) must not end tuning
                logger.warning("trial %d: observer %s failed: %s", position, type(observer).__name__, first_line(exc))
        return result

    def _record(self, position: int, result: TrialResult, *, append: bool) -> None:
        if append:
            self.history.append(result)
        self.slots[position] = result
        self.seen[result.config.key()] = result
        self.strategy.observe(result)
        if self.progress is not None:
            self.progress([t for t in self.slots if t is not None])
        if self.exit_policy.timeout == 0 and result.meets_goal:
            if self.first_success is None or position < self.first_success:
                self.first_success = position
                self.stop_reason = f"trial {result.index} meets the accuracy criterion (timeout 0: first success)"
            for later in [p for p in self.running if p > position]:  # one worker would never have run them
                self._cancel(later, "a trial proposed before it met the accuracy criterion")
        for key in list(self.strategy.superseded):
            for p, job in list(self.running.items()):
                if job.config.key() == key:
                    self._cancel(p, "an alternative before it met the accuracy criterion")

    def _cancel(self, position: int, why: str) -> None:
        job = self.running.pop(position)
        self.executor.cancel(position)
        self.strategy.withdraw(job.config)
        logger.info("trial %d: cancelled (%s)", position, why)

    def considered(self) -> list[TrialResult]:
        """The trials the best model is chosen from, in proposal order: every finished one, except those
        that one worker would not have run (after the first success with timeout 0, or superseded)."""
        out = []
        superseded = self.strategy.superseded
        for position, trial in enumerate(self.slots):
            if trial is None:
                continue
            if self.first_success is not None and position > self.first_success:
                continue
            if trial.config.key() in superseded:
                continue
            out.append(trial)
        left_out = sum(t is not None for t in self.slots) - len(out)
        if left_out:
            logger.info(
                "%d trial(s) that finished after the decisive one (speculative with several workers) are in the "
                "history but not chosen from", left_out,
            )  # fmt: skip
        return out
