"""Evaluations for the executor tests: picklable, and each misbehaves once, on the first candidate it sees.

They are classes at module level so that worker processes (and Ray workers) can load them by reference.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from lpot_ir.examples_data import DigitsExample


def is_candidate(model: onnx.ModelProto) -> bool:
    """A quantized candidate (the FP32 baseline has no QuantizeLinear)."""
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


def claim(marker: Path) -> bool:
    """``True`` for exactly one caller across processes: the one that creates ``marker``."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    return True


@dataclass(frozen=True)
class MisbehaveOnce:
    """The digits accuracy; the first candidate evaluation (across all processes) misbehaves.

    Attributes:
        digits: the example.
        marker: a file created by the evaluation that misbehaves (it holds that process's pid).
        how: ``kill`` (the process kills itself with SIGKILL), ``hang`` (sleeps ``seconds``), or
            ``wait`` (sleeps ``seconds`` so that the test can kill the process from outside, then evaluates).
        seconds: how long ``hang`` and ``wait`` sleep.
    """

    digits: DigitsExample
    marker: Path
    how: str
    seconds: float = 120.0

    def __call__(self, model: onnx.ModelProto) -> Any:
        if is_candidate(model) and claim(self.marker):
            if self.how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(self.seconds)
            if self.how == "hang":
                raise AssertionError("the hung evaluation was not stopped")
        return self.digits.eval_func(model)


@dataclass(frozen=True)
class SlowEvaluation:
    """The digits accuracy after ``seconds`` of sleep (so a test can act while evaluations run)."""

    digits: DigitsExample
    seconds: float

    def __call__(self, model: onnx.ModelProto) -> Any:
        time.sleep(self.seconds)
        return self.digits.eval_func(model)


def random_config(workspace: Any, *, resume: Any = None, **tuning: Any) -> Any:
    """Random search for 4 trials, going on after the first success (every trial runs, whatever the workers)."""
    from tests.tuning.helpers import make_config

    return make_config(workspace, "random", resume=resume, timeout=3600, max_trials=4, **tuning)
