"""The tuning history: one JSON line per finished trial, appended (flushed and fsynced) at once.

The file starts with a header line that identifies the run (a content key of the model and of
everything that decides which configurations are tried and how they are judged) and records the FP32
baseline. Every finished trial is appended as soon as it is known, so a run that is killed loses at
most the trial it was running. Resuming reads the file back, checks that the header matches the run,
and hands the recorded trials to the loop, which replays them to the strategy instead of evaluating
them again.

A torn last line (the process died while writing it) is ignored with a warning; any other malformed
line is a :class:`~lpot_ir.errors.ConfigError` naming the file and line.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lpot_ir.errors import ConfigError
from lpot_ir.fileio import append_line, atomic_write
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.strategies.base import TrialResult

__all__ = ["HISTORY_FORMAT_VERSION", "HISTORY_FILE", "HistoryHeader", "TuningHistory", "trial_to_dict", "trial_from_dict"]

logger = logging.getLogger(__name__)

HISTORY_FORMAT_VERSION = 1
HISTORY_FILE = "history.jsonl"
"""The history's file name inside the workspace."""


@dataclass(frozen=True)
class HistoryHeader:
    """The first line of a history file.

    Attributes:
        run_key: content key of the run (model, space, criterion, strategy, seed, evaluation).
        baseline_accuracy: the FP32 model's accuracy.
        baseline_objectives: the FP32 model's objective values.
        details: human-readable description of what the key covers.
        advice: the advice plan fixed at the start (budget units, proxy feeds; see the tuning loop), so a
            resumed run makes the same decisions.
    """

    run_key: str
    baseline_accuracy: float
    baseline_objectives: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    advice: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "header",
            "format_version": HISTORY_FORMAT_VERSION,
            "run_key": self.run_key,
            "baseline_accuracy": self.baseline_accuracy,
            "baseline_objectives": self.baseline_objectives,
            "details": self.details,
            "advice": self.advice,
            "created": time.time(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HistoryHeader:
        return cls(
            run_key=str(data["run_key"]),
            baseline_accuracy=float(data["baseline_accuracy"]),
            baseline_objectives={str(k): float(v) for k, v in dict(data.get("baseline_objectives", {})).items()},
            details=dict(data.get("details", {})),
            advice={str(k): float(v) for k, v in dict(data.get("advice") or {}).items()},
        )


def trial_to_dict(result: TrialResult) -> dict[str, Any]:
    """A trial as one JSON object (the history line's content)."""
    return {
        "kind": "trial",
        "index": result.index,
        "key": result.config.key(),
        "config": result.config.to_dict(),
        "accuracy": result.accuracy,
        "objectives": dict(result.objectives),
        "meets_goal": result.meets_goal,
        "failed": result.failed,
        "seconds": round(result.seconds, 6),
        "worker": result.worker,
    }


def trial_from_dict(data: Mapping[str, Any]) -> TrialResult:
    """The inverse of :func:`trial_to_dict`."""
    accuracy = data.get("accuracy")
    return TrialResult(
        index=int(data["index"]),
        config=TuningConfig.from_dict(data["config"]),
        accuracy=None if accuracy is None else float(accuracy),
        objectives={str(k): float(v) for k, v in dict(data.get("objectives", {})).items()},
        meets_goal=bool(data.get("meets_goal", False)),
        failed=data.get("failed"),
        seconds=float(data.get("seconds", 0.0)),
        worker=data.get("worker"),  # absent in histories written before workers existed
    )


class TuningHistory:
    """An append-only JSONL history file.

    Args:
        path: the file (``<workspace>/history.jsonl``).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def start(self, header: HistoryHeader, trials: list[TrialResult] | tuple[TrialResult, ...] = ()) -> None:
        """Begin a new history with ``header`` (and already-known ``trials``), replacing any old file atomically."""
        lines = [json.dumps(header.to_dict(), sort_keys=True)]
        lines += [json.dumps(trial_to_dict(t), sort_keys=True) for t in trials]
        atomic_write(self.path, "\n".join(lines) + "\n")

    def append(self, result: TrialResult) -> None:
        """Append one finished trial, flushed and fsynced before returning (all or nothing: a full disk
        raises :class:`~lpot_ir.errors.WriteError` and leaves the file as it was)."""
        append_line(self.path, json.dumps(trial_to_dict(result), sort_keys=True))

    def read(self) -> tuple[HistoryHeader, list[TrialResult]]:
        """Read the header and the trials (in the order they were written).

        Raises:
            ConfigError: the file is missing, is not a history, or has a malformed line.
        """
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"Cannot read the tuning history '{self.path}' to resume from: {exc.strerror or exc}. "
                "Point tuning.workspace.resume at the history.jsonl of an earlier run (or its workspace folder)."
            ) from None
        lines = text.splitlines()
        torn = bool(text) and not text.endswith("\n")
        header: HistoryHeader | None = None
        trials: list[TrialResult] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if data.get("kind") == "header":
                    header = HistoryHeader.from_dict(data)
                elif data.get("kind") == "trial":
                    trials.append(trial_from_dict(data))
                else:
                    raise ValueError(f"unknown record kind {data.get('kind')!r}")
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                if torn and number == len(lines):
                    logger.warning("ignoring the torn last line of %s (the run was killed while writing it)", self.path)
                    continue
                raise ConfigError(
                    f"The tuning history '{self.path}' has a malformed line {number} ({exc}). It was not written "
                    "by lpot-ir or was edited; start a new run without tuning.workspace.resume."
                ) from None
        if header is None:
            raise ConfigError(
                f"'{self.path}' is not an lpot-ir tuning history (no header line). Point "
                "tuning.workspace.resume at the history.jsonl of an earlier run."
            )
        return header, trials
