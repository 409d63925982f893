"""Run Intel Neural Compressor 2.6's accuracy-driven tuning on one ONNX classifier and report one JSON line.

This script runs INSIDE the INC 2.6 virtual environment (see ``benchmarks/tuning_vs_inc.py``, which
creates that venv and calls this script by subprocess). It imports nothing from ``lpot_ir``: that venv
has onnx 1.15 / onnxruntime 1.18 / numpy 1.26, which lpot-ir does not support.

What it does:

* loads the FP32 ``.onnx`` and two ``.npz`` files: evaluation (``x`` images, ``y`` labels) and
  calibration (``x``);
* runs ``neural_compressor.quantization.fit`` with ``PostTrainingQuantConfig(approach="static",
  quant_format=..., quant_level=...)``, ``TuningCriterion(strategy=..., timeout=0, max_trials=...)`` and
  ``AccuracyCriterion(criterion="relative", tolerable_loss=..., higher_is_better=True)``, a calibration
  dataloader over the calibration split (batches of ``--calib-batch``), and an ``eval_func`` that
  receives an ``onnx.ModelProto`` and returns top-1 accuracy on the evaluation split computed with
  ONNX Runtime (one intra-op and one inter-op thread, batches of 250, CPU provider: the same function
  as ``lpot_ir.examples_data.model_accuracy``);
* counts ``eval_func`` calls (the FP32 baseline included) and times them, times the whole ``fit``;
* saves the INT8 model atomically to ``--output``, re-evaluates the saved file (not counted) and prints
  one JSON line with the results on stdout; INC's own log goes to stderr. ``eval_ends`` in the JSON
  says when each ``eval_func`` call returned, in seconds after ``fit`` began.

``quant_level`` is INC's: ``auto`` (its default) evaluates the all-INT8 configuration, then runs the
*conservative* strategy (whole op types back to INT8 one type at a time, from an FP32 start), and the
chosen strategy only if that fails; ``1`` runs the chosen strategy alone. INC 2.6 needed no workaround
on this model.

Usage (inside the INC venv)::

    python benchmarks/inc_driver.py --model fp32.onnx --eval eval.npz --calib calib.npz \
        --output inc_int8.onnx --quant-format QDQ --workspace /tmp/inc_ws
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent / "suite" / "peers"))
from driver_common import save_model_atomic  # noqa: E402  (stdlib + numpy + onnx only: runs in INC's venv)

__all__ = ["CountingEval", "NumpyCalibLoader", "top1_accuracy", "main"]

logger = logging.getLogger("inc_driver")


def top1_accuracy(model: Any, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 250) -> float:
    """Top-1 accuracy of an ONNX classifier with ONNX Runtime (1 intra-op thread, CPU provider)."""
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = session.run(None, {name: inputs[start : start + batch_size]})[0]
        correct += int((np.argmax(logits, axis=1) == labels[start : start + batch_size]).sum())
    return correct / len(inputs)


class CountingEval:
    """The ``eval_func`` given to INC: top-1 accuracy, with every call counted and timed."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray, repeat: int = 1) -> None:
        self.repeat = repeat
        self.inputs = inputs
        self.labels = labels
        self.calls = 0
        self.seconds = 0.0
        self.accuracies: list[float] = []
        self.ends: list[float] = []
        self.origin = time.perf_counter()
        self.first_call_at: float | None = None

    def __call__(self, model: Any) -> float:
        began = time.perf_counter()
        if self.first_call_at is None:
            self.first_call_at = began
        for _ in range(self.repeat):  # --eval-repeat: a validation set that many times larger
            accuracy = top1_accuracy(model, self.inputs, self.labels)
        self.seconds += time.perf_counter() - began
        self.calls += 1
        self.accuracies.append(accuracy)
        self.ends.append(time.perf_counter() - self.origin)
        logger.info("eval_func call %d: accuracy %.4f", self.calls, accuracy)
        return accuracy


class NumpyCalibLoader:
    """A calibration dataloader INC accepts: ``batch_size`` and iteration over ``(inputs, labels)``."""

    def __init__(self, inputs: np.ndarray, batch_size: int) -> None:
        self.inputs = inputs
        self.batch_size = batch_size

    def __iter__(self):
        for start in range(0, len(self.inputs), self.batch_size):
            batch = self.inputs[start : start + self.batch_size]
            yield batch, np.zeros(len(batch), dtype=np.int64)

    def __len__(self) -> int:
        return (len(self.inputs) + self.batch_size - 1) // self.batch_size


def _op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(Counter(node.op_type for node in model.graph.node).items()))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="FP32 .onnx model")
    parser.add_argument("--eval", required=True, type=Path, help=".npz with x (inputs) and y (labels)")
    parser.add_argument("--calib", required=True, type=Path, help=".npz with x (inputs)")
    parser.add_argument("--output", required=True, type=Path, help="where to save the INT8 model")
    parser.add_argument("--workspace", required=True, type=Path, help="INC's workspace folder")
    parser.add_argument("--quant-format", default="QDQ", choices=("QDQ", "QOperator", "default"))
    parser.add_argument("--strategy", default="basic")
    parser.add_argument(
        "--quant-level",
        default="auto",
        help='PostTrainingQuantConfig.quant_level: "auto" (INC\'s default: conservative op-type tuning first, '
        "then the strategy) or 1 (the strategy alone)",
    )
    parser.add_argument("--max-trials", type=int, default=100)
    parser.add_argument("--timeout", type=int, default=0)
    parser.add_argument("--relative", type=float, default=0.01, help="tolerable relative accuracy loss")
    parser.add_argument("--calib-batch", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1978)
    parser.add_argument("--eval-repeat", type=int, default=1, help="score the eval split this many times per call")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run INC's tuning and print one JSON line; returns the exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    eval_data = np.load(args.eval)
    inputs, labels = eval_data["x"], eval_data["y"]
    calib = NumpyCalibLoader(np.load(args.calib)["x"], args.calib_batch)
    counting = CountingEval(inputs, labels, args.eval_repeat)

    import neural_compressor
    from neural_compressor import PostTrainingQuantConfig, quantization, set_random_seed, set_workspace
    from neural_compressor.config import AccuracyCriterion, TuningCriterion

    args.workspace.mkdir(parents=True, exist_ok=True)
    set_workspace(str(args.workspace))
    set_random_seed(args.seed)
    conf_kwargs: dict[str, Any] = {
        "quant_level": args.quant_level if args.quant_level == "auto" else int(args.quant_level)
    }
    if args.quant_format != "default":
        conf_kwargs["quant_format"] = args.quant_format
    conf = PostTrainingQuantConfig(
        approach="static",
        tuning_criterion=TuningCriterion(
            strategy=args.strategy, timeout=args.timeout, max_trials=args.max_trials
        ),
        accuracy_criterion=AccuracyCriterion(
            higher_is_better=True, criterion="relative", tolerable_loss=args.relative
        ),
        **conf_kwargs,
    )
    fp32 = onnx.load(str(args.model))
    # INC logs to stdout; keep stdout for our one JSON line.
    began = counting.origin = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        q_model = quantization.fit(fp32, conf, calib_dataloader=calib, eval_func=counting)
    wall = time.perf_counter() - began

    result: dict[str, Any] = {
        "tool": "neural-compressor",
        "version": neural_compressor.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
        "strategy": args.strategy,
        "quant_format": args.quant_format,
        "quant_level": args.quant_level,
        "evaluations": counting.calls,
        "eval_seconds": round(counting.seconds, 3),
        "wall_seconds": round(wall, 3),
        "setup_seconds_before_first_eval": (
            None if counting.first_call_at is None else round(counting.first_call_at - began, 3)
        ),
        "accuracies": counting.accuracies,
        "eval_ends": [round(t, 4) for t in counting.ends],
        "fp32_accuracy": counting.accuracies[0] if counting.accuracies else None,
        "output": None,
    }
    if q_model is None:
        result["met_goal"] = False
        result["error"] = "quantization.fit returned None: no configuration met the accuracy criterion"
    else:
        save_model_atomic(q_model.model, args.output)
        int8_accuracy = top1_accuracy(args.output, inputs, labels)
        fp32_accuracy = result["fp32_accuracy"]
        result.update(
            met_goal=bool(fp32_accuracy and (fp32_accuracy - int8_accuracy) / fp32_accuracy <= args.relative),
            output=str(args.output),
            int8_accuracy=int8_accuracy,
            op_types=_op_histogram(q_model.model),
        )
    print(json.dumps(result), flush=True)
    return 0 if q_model is not None else 1


if __name__ == "__main__":
    sys.exit(main())
