"""Tuning wall time against the number of workers, and the overhead per evaluation of each executor.

The bundled digits model (lpot_ir.examples_data) with an evaluation made to take about
``--eval-seconds`` (the digits evaluation split run repeatedly in ONNX Runtime with one intra-op thread:
real CPU work, not a sleep, so workers compete for the cores as real evaluations do).

1. **scaling**: the random strategy for ``--trials`` trials (``timeout > 0``: every trial runs, whatever
   the workers) evaluated in the tuning process (1 worker), then in 2 and 4 local worker processes, then on
   Ray (a local Ray instance started for the run) with 2 and 4 workers; one thread per worker. Prints
   wall time and the ratio to the in-process run (interleaved ``--rounds``, median of the per-round
   ratios). All runs choose the same model (checked).
2. **parallel capacity**: 4 evaluations without tuning, one after the other in this process against 2
   and 4 local workers at once: the speed-up the machine allows at the moment (other load included).
3. **overhead**: the same candidate evaluated ``--repeats`` times one after the other through each
   executor; overhead = the driver's wall time per evaluation minus the evaluation's own time in the
   worker (shipping the model, scheduling, the result's return). Printed in ms and as a share of one
   evaluation.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/distributed.py [--eval-seconds 1] [--trials 8] [--repeats 10]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from lpot_ir.config import load_config
from lpot_ir.examples_data import DigitsExample, digits_example
from lpot_ir.quantizer import ModelQuantizer, default_config
from lpot_ir.tuning import Evaluator, tune
from lpot_ir.tuning.executors import InProcessExecutor, LocalProcessExecutor, RayExecutor, shipped_evaluation


@dataclass(frozen=True)
class RepeatedEvaluation:
    """The digits accuracy, computed ``repeats`` times (to take about a chosen time)."""

    digits: DigitsExample
    repeats: int

    def __call__(self, model: onnx.ModelProto) -> float:
        accuracy = 0.0
        for _ in range(self.repeats):
            accuracy = self.digits.eval_func(model)
        return accuracy


def calibrated(digits: DigitsExample, seconds: float) -> RepeatedEvaluation:
    model = onnx.load(str(digits.model_path))
    began = time.perf_counter()
    RepeatedEvaluation(digits, 3)(model)
    once = (time.perf_counter() - began) / 3
    return RepeatedEvaluation(digits, max(1, round(seconds / once)))


def config(workspace: Path, trials: int, **tuning: Any) -> Any:
    return load_config(
        {
            "model": {"name": "digits", "framework": "onnxrt_qdq"},
            "tuning": {
                "strategy": {"name": "random"},
                "accuracy_criterion": {"relative": 0.01},
                "exit_policy": {"timeout": 36000, "max_trials": trials},
                "workspace": {"path": str(workspace)},
                **tuning,
            },
        }
    )


RUNS = [
    ("in-process (1 worker)", {}),
    ("local processes, 2 workers", {"workers": 2}),
    ("local processes, 4 workers", {"workers": 4}),
    ("Ray local instance, 2 workers", {"workers": 2, "distributed": {"backend": "ray"}}),
    ("Ray local instance, 4 workers", {"workers": 4, "distributed": {"backend": "ray"}}),
]


def scaling(digits: DigitsExample, evaluation: RepeatedEvaluation, trials: int, rounds: int, folder: Path) -> None:
    """Interleaved rounds (order rotated each round); per round, each run's wall time / the in-process one's."""
    quantizer = ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))
    walls: dict[str, list[float]] = {name: [] for name, _ in RUNS}
    chosen = None
    for r in range(rounds):
        order = RUNS[r % len(RUNS):] + RUNS[: r % len(RUNS)]
        for name, tuning in order:
            began = time.perf_counter()
            workspace = folder / f"round{r}-{len(walls[name])}-{abs(hash(name))}"
            outcome = tune(config(workspace, trials, **tuning), quantizer, Evaluator(eval_func=evaluation), progress=False)
            walls[name].append(time.perf_counter() - began)
            key = outcome.best.config.key()
            chosen = chosen or key
            assert key == chosen, f"{name} chose another model"
    base = walls[RUNS[0][0]]
    print(f"\n== scaling: {trials} trials, evaluation = {evaluation.repeats} passes over the digits split, 1 thread per worker, "
          f"{rounds} interleaved round(s) ==")  # fmt: skip
    print(f"{'executor':32s} {'wall s (median)':>16s} {'ratio to in-process (median of rounds)':>40s}")
    for name, _ in RUNS:
        ratio = statistics.median(w / b for w, b in zip(walls[name], base, strict=True))
        print(f"{name:32s} {statistics.median(walls[name]):16.1f} {ratio:40.2f}")
    print("(Ray rows include starting the local Ray instance; local rows include starting the worker processes)")


def overhead(digits: DigitsExample, evaluation: RepeatedEvaluation, repeats: int) -> None:
    quantizer = ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))
    model = quantizer.quantize(default_config()).model
    evaluator = Evaluator(eval_func=evaluation)
    shipped = shipped_evaluation(evaluator, "benchmark")
    print(f"\n== overhead per evaluation: {repeats} evaluations one after the other, model {len(model.SerializeToString()) / 1e3:.0f} kB ==")
    print(f"{'executor':32s} {'start s':>8s} {'eval s':>8s} {'overhead ms':>12s} {'share':>7s}")
    makers = [
        ("in-process", lambda: InProcessExecutor(evaluator)),
        ("local process", lambda: LocalProcessExecutor(shipped, 1)),
        ("Ray (local instance)", lambda: RayExecutor(shipped, workers=1)),
    ]
    for name, make in makers:
        began = time.perf_counter()
        with make() as executor:
            start = time.perf_counter() - began
            executor.evaluate(0, model)  # warm: worker start, evaluation loaded, sessions
            walls, inside = [], []
            for index in range(1, repeats + 1):
                began = time.perf_counter()
                result = executor.evaluate(index, model)
                walls.append(time.perf_counter() - began)
                inside.append(result.seconds)
        extra = statistics.median(w - s for w, s in zip(walls, inside, strict=True))
        mean_eval = statistics.median(inside)
        print(f"{name:32s} {start:8.1f} {mean_eval:8.3f} {extra * 1e3:12.1f} {extra / mean_eval:7.1%}")


def capacity(digits: DigitsExample, evaluation: RepeatedEvaluation) -> None:
    """What this machine gives right now: 4 evaluations one after the other in this process, against the
    same 4 on 2 and 4 local workers at once (an upper bound of the tuning speed-up, overhead included)."""
    quantizer = ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))
    model = quantizer.quantize(default_config()).model
    evaluator = Evaluator(eval_func=evaluation)
    shipped = shipped_evaluation(evaluator, "benchmark")
    print("\n== parallel capacity: 4 evaluations, no tuning ==")
    print(f"{'executor':32s} {'wall s':>8s} {'ratio':>7s}")
    base = None
    for name, make in [
        ("in-process, one after the other", lambda: InProcessExecutor(evaluator)),
        ("2 local workers", lambda: LocalProcessExecutor(shipped, 2)),
        ("4 local workers", lambda: LocalProcessExecutor(shipped, 4)),
    ]:
        with make() as executor:
            for index in range(executor.capacity):  # warm every worker
                executor.submit(index, model)
            for _ in range(executor.capacity):
                executor.wait()
            began = time.perf_counter()
            for index in range(4):
                executor.submit(100 + index, model)
            for _ in range(4):
                executor.wait()
            wall = time.perf_counter() - began
        base = base or wall
        print(f"{name:32s} {wall:8.2f} {wall / base:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-seconds", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-scaling", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    digits = digits_example()
    evaluation = calibrated(digits, args.eval_seconds)
    with tempfile.TemporaryDirectory(prefix="lpot-distributed-") as folder:
        if not args.skip_scaling:
            scaling(digits, evaluation, args.trials, args.rounds, Path(folder))
    capacity(digits, evaluation)
    overhead(digits, evaluation, args.repeats)
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
