"""The tuning report: a text table of trials, a PNG plot, and the per-op decisions with their reasons.

Everything is written atomically into the workspace:

* ``report.txt``: the run's summary (baseline, criterion, best trial, why the search stopped, speedup),
  one row per trial, and the decision for every node the capability table covers.
* ``tuning.png``: accuracy per trial (with the criterion's threshold) and latency per trial
  (matplotlib's ``Agg`` canvas, no pyplot: no display and no global state; the import starts in a
  background thread when tuning starts, so it costs no wall time on small models).
* ``decisions.json``: node -> ``{op_type, quantized, precision, reason}`` (precision: ``int8``/``uint8``,
  ``bf16``/``fp16`` or ``fp32``).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lpot_ir.backends.onnxruntime.benchmarking import format_table
from lpot_ir.fileio import atomic_path, atomic_write
from lpot_ir.metrics.relative import relative_loss
from lpot_ir.strategies.base import TrialResult

__all__ = ["prefetch_plotting", "write_text_atomic", "format_trials", "format_decisions", "write_report", "write_plot", "write_decisions"]

logger = logging.getLogger(__name__)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :mod:`lpot_ir.fileio`)."""
    return atomic_write(path, text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    return format_table(headers, rows)


def format_trials(
    trials: Sequence[TrialResult],
    baseline: float | None,
    fp32_nodes: Mapping[int, int],
    best_index: int | None,
    higher_is_better: bool = True,
) -> str:
    """One row per trial: accuracy, relative loss, goal, FP32 nodes, latency, size, seconds, status."""
    rows = []
    for t in trials:
        loss = "-"
        value = relative_loss(baseline, t.accuracy, higher_is_better=higher_is_better) if baseline else None
        if value is not None:
            loss = f"{value:.2%}"
        latency = t.objectives.get("performance")
        size = t.objectives.get("modelsize")
        status = "failed: " + t.failed if t.failed else ("best" if t.index == best_index else "")
        rows.append(
            (
                t.index,
                t.config.key(),
                "-" if t.accuracy is None else f"{t.accuracy:.4f}",
                loss,
                "yes" if t.meets_goal else "no",
                fp32_nodes.get(t.index, 0),
                "-" if latency is None else f"{latency * 1e3:.3f}",
                "-" if size is None else f"{size / 1024:.1f}",
                f"{t.seconds:.2f}",
                status,
            )
        )
    headers = ("trial", "config key", "accuracy", "rel. loss", "meets", "fp32 ops", "latency ms", "size KiB", "seconds", "")
    return _table(headers, rows) if rows else "(no trials)"


def format_decisions(decisions: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per node: op type, INT8 or FP32, and the reason."""
    rows = [
        (name, d.get("op_type", ""), d.get("precision") or ("int8" if d.get("quantized") else "fp32"), d.get("reason", "") or "")
        for name, d in decisions.items()
    ]
    return _table(("node", "op", "runs in", "reason"), rows) if rows else "(no quantizable nodes)"


def write_report(path: Path, summary: Sequence[tuple[str, Any]], trials_table: str, decisions_table: str) -> Path:
    """Write ``report.txt``."""
    width = max((len(k) for k, _ in summary), default=0)
    lines = ["lpot-ir tuning report", "=" * 21, ""]
    lines += [f"{k.ljust(width)}  {v}" for k, v in summary]
    lines += ["", "Trials", "------", trials_table, "", "Per-op decisions", "----------------", decisions_table, ""]
    return write_text_atomic(path, "\n".join(lines))


def write_decisions(path: Path, decisions: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``decisions.json``."""
    return write_text_atomic(path, json.dumps(decisions, indent=1) + "\n")


_PREFETCH: threading.Thread | None = None


def _import_plotting() -> None:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
    except ImportError:
        pass


def prefetch_plotting() -> None:
    """Import matplotlib in a background thread while tuning runs (it takes a second or two)."""
    global _PREFETCH
    if _PREFETCH is None and "matplotlib.figure" not in sys.modules:
        _PREFETCH = threading.Thread(target=_import_plotting, name="lpot-ir-prefetch-matplotlib", daemon=True)
        _PREFETCH.start()


def write_plot(
    path: Path,
    trials: Sequence[TrialResult],
    baseline: float | None,
    threshold: float | None,
    best_index: int | None,
) -> Path | None:
    """Write ``tuning.png``: accuracy per trial (left axis) and latency per trial (right axis)."""
    if _PREFETCH is not None:
        _PREFETCH.join()
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed; no tuning plot (pip install lpot-ir[tuning])")
        return None
    xs = [t.index for t in trials]
    accuracy = [t.accuracy if t.accuracy is not None else math.nan for t in trials]
    latency = [t.objectives.get("performance", math.nan) * 1e3 for t in trials]
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(xs, accuracy, "o-", color="tab:blue", label="accuracy")
    failed = [t.index for t in trials if t.failed]
    if failed:
        ax.plot(failed, [baseline or 0.0] * len(failed), "x", color="tab:red", label="failed")
    if baseline is not None:
        ax.axhline(baseline, color="tab:gray", linestyle=":", label="FP32 accuracy")
    if threshold is not None:
        ax.axhline(threshold, color="tab:orange", linestyle="--", label="criterion")
    if best_index is not None and best_index in xs:
        i = xs.index(best_index)
        ax.plot([best_index], [accuracy[i]], "*", color="gold", markersize=16, markeredgecolor="black", label="best")
    ax.set_xlabel("trial")
    ax.set_ylabel("accuracy")
    ax.set_xticks(xs)
    right = ax.twinx()
    right.plot(xs, latency, "s--", color="tab:green", alpha=0.7, label="latency")
    right.set_ylabel("latency (ms per batch)")
    handles = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="lower right", fontsize="small")
    ax.set_title("lpot-ir tuning: accuracy and latency per trial")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    return path
