"""NNCF on one suite task: ``quantize_with_accuracy_control`` (ONNX backend, relative 1%) or plain ``quantize``.

Runs INSIDE NNCF's venv (``benchmarks/suite/peers/venvs.py`` builds it: nncf 3.4.0 with onnx 1.23.2
and onnxruntime 1.32.0, the versions lpot-ir's own venv has); ``run_peer("nncf", ...)`` and
``run_peer("nncf-quantize", ...)`` call this script by subprocess. Imports nothing from ``lpot_ir``.

NNCF 3.x supports accuracy control for ONNX models directly (``nncf/onnx/quantization/quantize_model.py``,
``quantize_with_accuracy_control_impl``), so the ONNX model is tuned and the result is an ONNX QDQ
model: no OpenVINO conversion is involved and the INT8 model is compared like every other tool's.

``--mode accuracy-control`` (default)::

    nncf.quantize_with_accuracy_control(model, calibration_dataset=nncf.Dataset(<calib.npz feeds>),
        validation_dataset=nncf.Dataset(<eval.npz feed indices>, <index -> feed>),
        validation_fn=<the suite's evaluate on those feeds, counted>,
        max_drop=0.01, drop_type=nncf.DropType.RELATIVE, subset_size=<number of calibration feeds>)

``--mode quantize``: ``nncf.quantize(model, calibration_dataset, subset_size=...)`` (no accuracy
control); the driver scores the FP32 and INT8 models itself, outside the timer.

Conventions and workarounds:

* ``validation_fn(model, items)`` gets an ``onnx.ModelProto`` and an iterable of validation items (here
  indices into eval.npz). NNCF calls it on the whole validation set (an *evaluation*), on single items
  (to get one metric value per item for its ranking) and on its ranking subset; the driver counts the
  whole-set calls as evaluations and the rest as subset calls (``eval_equivalents`` adds them up in
  units of the whole set). For a metric that means nothing on one feed (:data:`SET_LEVEL_METRICS`),
  ``validation_fn`` raises on a subset; NNCF then (``Evaluator.determine_mode``) ranks quantizers by
  the change of the model's raw outputs instead. ONNX Runtime sessions are cached per model
  (``driver_common.cache_sessions``), as a user scoring one item at a time would do.
* NNCF treats a higher metric as better. For a lower-is-better metric ``validation_fn`` returns the
  negated metric (the relative drop it computes is then the relative increase of the metric); the
  result JSON reports the metric itself.
* Every calibration feed is one calibration item, and ``subset_size`` is their number (NNCF's default,
  300, would cut or not, depending on the task).
* ``model_type=nncf.ModelType.TRANSFORMER`` when the graph has attention (a Softmax fed by a MatMul),
  as NNCF's documentation tells users of transformer models.
* NNCF has no dynamic quantization: on a task whose approach is ``dynamic`` it runs its only mode,
  static QDQ with calibration, and says so in ``notes``.

Usage (inside NNCF's venv)::

    python benchmarks/suite/peers/nncf_driver.py --task-dir TASK --out result.json --model-out int8.onnx \
        [--mode accuracy-control|quantize]
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any

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

__all__ = ["has_attention", "main"]

logger = logging.getLogger("nncf_driver")

MODES = ("accuracy-control", "quantize")

SET_LEVEL_METRICS = frozenset({"pair_retrieval_top1", "pair_retrieval_mrr"})
"""Metrics of ``benchmarks/suite/metrics.py`` that mean nothing on a single feed (retrieval among all
eval sentences): NNCF must not rank by them."""


def has_attention(model: Any) -> bool:
    """Whether some Softmax reads (directly or through Div/Mul/Add/Where scaling) a MatMul's output."""
    producers = {out: node for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.op_type != "Softmax":
            continue
        frontier, seen = list(node.input[:1]), set()
        while frontier:
            tensor = frontier.pop()
            producer = producers.get(tensor)
            if producer is None or tensor in seen:
                continue
            seen.add(tensor)
            if producer.op_type == "MatMul":
                return True
            if producer.op_type in {"Div", "Mul", "Add", "Where", "Cast"}:
                frontier.extend(producer.input)
    return False


def _tune(args: Any, result: dict[str, Any]) -> None:
    evaluate = load_evaluate_module(args.evaluate)
    import nncf
    import onnx
    import onnxruntime

    result.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, mode=args.mode)
    # What the user has before calling the tool: the model (rewritten if NNCF needs it) and the data.
    prepared = time.perf_counter()
    task = SuiteTask.load(args.task_dir, evaluate)
    eval_feeds = evaluate.load_feeds(task.task_dir / "eval.npz")
    peer = prepare_peer_model(onnx.load(str(task.model_path)), [*task.calib_feeds, *eval_feeds])
    result["notes"].extend(peer.notes)
    model = peer.model
    result["prepare_seconds"] = round(time.perf_counter() - prepared, 3)
    began = time.perf_counter()  # the clock: from building NNCF's datasets until NNCF returns
    counting = CountingEval(evaluate, task, origin=began, restore=peer.restore_interface)
    sign = 1.0 if task.higher_is_better else -1.0
    calibration = nncf.Dataset([peer.feed(f) for f in task.calib_feeds])
    kwargs: dict[str, Any] = {"subset_size": len(task.calib_feeds)}
    if has_attention(model):
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        result["notes"].append("model_type=TRANSFORMER (the graph has attention)")
    if task.approach != "static":
        result["notes"].append(
            f"the task's approach is {task.approach!r}; NNCF has only static quantization (QDQ, calibrated)"
        )
    result["notes"].append(f"calibration: all {len(task.calib_feeds)} feeds of calib.npz (subset_size)")

    set_level = task.info["metric"] in SET_LEVEL_METRICS
    if set_level and args.mode == "accuracy-control":
        result["notes"].append(
            f"{task.info['metric']} is defined on the whole eval set only: validation_fn refuses subsets, "
            "so NNCF ranks quantizers by the change of raw outputs"
        )

    def validation_fn(candidate: Any, items: Iterable[Any]) -> tuple[float, None]:
        indices = [int(i) for i in items]
        if set_level and len(indices) != task.eval_size:
            raise ValueError(f"{task.info['metric']} cannot score a subset of the eval set")
        return sign * counting(candidate, indices), None

    try:
        with contextlib.redirect_stdout(sys.stderr):
            if args.mode == "accuracy-control":
                validation = nncf.Dataset(
                    list(range(task.eval_size)), lambda index: peer.feed(eval_feeds[index])
                )
                q_model = nncf.quantize_with_accuracy_control(
                    model,
                    calibration_dataset=calibration,
                    validation_dataset=validation,
                    validation_fn=validation_fn,
                    max_drop=args.criterion_relative,
                    drop_type=nncf.DropType.RELATIVE,
                    **kwargs,
                )
            else:
                q_model = nncf.quantize(model, calibration, **kwargs)
    finally:
        result["wall_seconds"] = round(time.perf_counter() - began, 3)
        result.update(counting.summary())
        result["fp32_accuracy"] = counting.accuracies[0] if counting.accuracies else None
    int8 = peer.restore_interface(q_model)
    save_model_atomic(int8, args.model_out)
    result["model"] = str(args.model_out)
    describe_model(int8, result)
    if result["fp32_accuracy"] is None:  # plain quantize: score the FP32 model here, not counted
        result["fp32_accuracy"] = float(evaluate.evaluate(str(task.model_path), task.task_dir, threads=1))
    result["accuracy"] = float(evaluate.evaluate(str(args.model_out), task.task_dir, threads=1))
    result["goal_met"] = goal_met(
        result["fp32_accuracy"], result["accuracy"], args.criterion_relative, task.higher_is_better
    )


def main(argv: list[str] | None = None) -> int:
    """Run NNCF on one task; writes the result JSON; returns the exit code."""
    parser = driver_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, default="accuracy-control")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    try:
        from importlib.metadata import version

        tool_version = version("nncf")
    except Exception:  # noqa: BLE001
        tool_version = "unknown"
    tool = "nncf" if args.mode == "accuracy-control" else "nncf-quantize"
    return run_driver(args, tool, tool_version, lambda result: _tune(args, result))


if __name__ == "__main__":
    sys.exit(main())
