"""Intel Neural Compressor 2.6 on one suite task: accuracy-driven tuning, basic strategy, relative 1%.

Runs INSIDE INC 2.6's venv (``benchmarks/suite/peers/venvs.py`` builds it; ``run_peer("inc", ...)``
calls this script by subprocess). Imports nothing from ``lpot_ir``.

What it runs, as a user following INC's documentation would::

    quantization.fit(model, PostTrainingQuantConfig(
            approach=<task.json "approach">, quant_format="QDQ" (static only),
            calibration_sampling_size=[<number of calibration feeds>],
            tuning_criterion=TuningCriterion(strategy="basic", timeout=0, max_trials=100),
            accuracy_criterion=AccuracyCriterion(criterion="relative", tolerable_loss=0.01,
                                                 higher_is_better=<task.json>)),
        calib_dataloader=<calib.npz, one feed per batch>, eval_func=<the suite's evaluate, counted>)

``quant_level`` is INC's default ("auto": the all-INT8 configuration first, then INC's *conservative*
op-type-wise tuning, then the basic strategy). Conventions and workarounds, read from INC 2.6's ONNX
Runtime adaptor (``neural_compressor/adaptor/ox_utils/calibration.py``, ``adaptor/onnxrt.py``):

* The calibration dataloader yields ``(inputs, label)`` and has a ``batch_size``; INC runs
  ``ceil(calibration_sampling_size / batch_size)`` batches. Every feed of calib.npz is one batch (a
  dict ``{input name: array}``, which INC accepts for any number of inputs, scalars included), so
  ``batch_size = 1`` and ``calibration_sampling_size = [number of feeds]``: INC calibrates on all
  of calib.npz, like the other tools (its default, 100, would silently cut it).
* ``approach="dynamic"``: no calibration dataloader, and no ``quant_format`` (INC 2.6 has no dynamic
  QDQ format: it warns and uses its integer-ops format, ``MatMulInteger``/``DynamicQuantizeLinear``).
* ``eval_func`` receives an ``onnx.ModelProto`` and returns the task's metric for it; INC calls it
  once for the FP32 baseline, then once per trial.

Usage (inside INC's venv)::

    python benchmarks/suite/peers/inc_driver.py --task-dir TASK --out result.json --model-out int8.onnx
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from driver_common import (
    CountingEval,
    SuiteTask,
    describe_model,
    driver_arguments,
    goal_met,
    load_evaluate_module,
    run_driver,
    save_model_atomic,
)
from graph_fixes import prepare_peer_model

__all__ = ["ErrorRecords", "FeedLoader", "main"]

logger = logging.getLogger("inc_driver")

MAX_TRIALS = 100
SEED = 1978


class ErrorRecords(logging.Handler):
    """Keeps INC's ERROR log records: ``fit`` catches exceptions during tuning, logs them, returns None."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


class FeedLoader:
    """INC's calibration dataloader: each feed is one batch ``(inputs dict, dummy label)``."""

    batch_size = 1

    def __init__(self, feeds: list[dict[str, Any]]) -> None:
        self.feeds = feeds

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        for feed in self.feeds:
            yield {name: np.asarray(value) for name, value in feed.items()}, 0

    def __len__(self) -> int:
        return len(self.feeds)


def _tune(args: Any, result: dict[str, Any]) -> None:
    evaluate = load_evaluate_module(args.evaluate)
    import onnx
    import onnxruntime
    from neural_compressor import PostTrainingQuantConfig, quantization, set_random_seed, set_workspace
    from neural_compressor.config import AccuracyCriterion, TuningCriterion

    errors = ErrorRecords()
    logging.getLogger("neural_compressor").addHandler(errors)
    result.update(
        onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, strategy="basic", quant_level="auto"
    )
    # What the user has before calling the tool: the model (rewritten if INC needs it) and the data.
    prepared = time.perf_counter()
    task = SuiteTask.load(args.task_dir, evaluate)
    fp32 = onnx.load(str(task.model_path))
    peer = prepare_peer_model(fp32, [*task.calib_feeds, *evaluate.load_feeds(task.task_dir / "eval.npz")])
    result["notes"].extend(peer.notes)
    result["prepare_seconds"] = round(time.perf_counter() - prepared, 3)
    began = time.perf_counter()  # the clock: from INC's configuration until fit returns
    counting = CountingEval(evaluate, task, origin=began, restore=peer.restore_interface)
    workspace = args.workspace or args.out.parent / f"inc_ws_{task.task_dir.name}"
    workspace.mkdir(parents=True, exist_ok=True)
    set_workspace(str(workspace))
    set_random_seed(SEED)
    static = task.approach == "static"
    conf_kwargs: dict[str, Any] = {}
    if static:
        conf_kwargs.update(quant_format="QDQ", calibration_sampling_size=[len(task.calib_feeds)])
        result["quant_format"] = "QDQ"
    else:
        result["quant_format"] = "integer ops (INC 2.6 dynamic has no QDQ format)"
    conf = PostTrainingQuantConfig(
        approach="static" if static else "dynamic",
        tuning_criterion=TuningCriterion(strategy="basic", timeout=0, max_trials=MAX_TRIALS),
        accuracy_criterion=AccuracyCriterion(
            criterion="relative",
            tolerable_loss=args.criterion_relative,
            higher_is_better=task.higher_is_better,
        ),
        **conf_kwargs,
    )
    result["approach"] = task.approach
    loader = FeedLoader([peer.feed(f) for f in task.calib_feeds]) if static else None
    try:
        # INC prints its tuning log to stdout: keep it with the rest of the log on stderr.
        with contextlib.redirect_stdout(sys.stderr):
            q_model = quantization.fit(peer.model, conf, calib_dataloader=loader, eval_func=counting)
    finally:
        result["wall_seconds"] = round(time.perf_counter() - began, 3)
        result.update(counting.summary())
        result["fp32_accuracy"] = counting.accuracies[0] if counting.accuracies else None
    result["notes"].append(
        f"calibration: all {len(task.calib_feeds)} feeds of calib.npz, one feed per batch (batch_size=1, "
        f"calibration_sampling_size={len(task.calib_feeds)})"
        if static
        else "dynamic: no calibration"
    )
    result["inc_errors"] = errors.messages
    if q_model is None:
        raised = [m for m in errors.messages if m.startswith("Unexpected exception")]
        result["error"] = "quantization.fit returned None: " + (
            f"INC could not quantize the model ({'; '.join(raised)})"
            if raised
            else "no configuration met the accuracy criterion"
        )
        return
    int8 = peer.restore_interface(q_model.model)
    save_model_atomic(int8, args.model_out)
    result["model"] = str(args.model_out)
    describe_model(int8, result)
    result["accuracy"] = float(evaluate.evaluate(str(args.model_out), task.task_dir, threads=1))
    result["goal_met"] = goal_met(
        result["fp32_accuracy"], result["accuracy"], args.criterion_relative, task.higher_is_better
    )


def main(argv: list[str] | None = None) -> int:
    """Run INC 2.6's tuning on one task; writes the result JSON; returns the exit code."""
    args = driver_arguments(__doc__.split("\n\n")[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        from importlib.metadata import version

        tool_version = version("neural-compressor")
    except Exception:  # noqa: BLE001
        tool_version = "unknown"
    return run_driver(args, "neural-compressor", tool_version, lambda result: _tune(args, result))


if __name__ == "__main__":
    sys.exit(main())
