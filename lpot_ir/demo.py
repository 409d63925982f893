"""``python -m lpot_ir.demo`` (``make demo``): accuracy-driven tuning on the bundled example.

The bundled example (:mod:`lpot_ir.examples_data`) is a real depthwise-separable CNN trained in
about 15 s on scikit-learn's handwritten digits, with an outlier activation channel that makes
quantizing every op lose about a fifth of its accuracy. The demo tunes it with the default ``basic`` strategy
against a 1% relative-loss criterion and prints the FP32 and INT8 accuracy, the relative loss, the
trials, the wall time and the INT8 speedup (ONNX Runtime, one thread, interleaved rounds). The
workspace (best model, recipe, history, report, plot, per-op decisions) goes to ``--workspace``.

It also prints the CPU's INT8 extensions (AMX, VNNI, AVX-512, AVX2): the speedup, and the last digits
of the INT8 accuracies, depend on them (see ``docs/reproducibility.md``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import onnx

from lpot_ir import Quantization
from lpot_ir.backends.onnxruntime.capabilities import cpu_features
from lpot_ir.errors import LpotError
from lpot_ir.examples_data import digits_example
from lpot_ir.metrics.relative import relative_loss
from lpot_ir.tuning.finalize import measure_speedup

__all__ = ["main", "demo_config"]

logger = logging.getLogger(__name__)


def demo_config(workspace: str, strategy: str = "basic", seed: int = 1978) -> dict:
    """The demo's configuration as a dict (the same keys as the YAML)."""
    return {
        "model": {"name": "digits_dwcnn", "framework": "onnxrt_qdq"},
        "quantization": {"approach": "post_training_static_quant", "calibration": {"sampling_size": 100}},
        "tuning": {
            "strategy": {"name": strategy},
            "accuracy_criterion": {"relative": 0.01},
            # a positive timeout lets the strategy shrink the FP32 set after the first success
            # (the search ends earlier when the strategy has nothing left to try)
            "exit_policy": {"timeout": 120, "max_trials": 30},
            "random_seed": seed,
            "workspace": {"path": workspace},
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lpot_ir.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default="lpot_demo_workspace", help="where the results go")
    parser.add_argument("--strategy", default="basic", help="tuning strategy (basic, mse, bayesian, tpe, exhaustive, random)")
    parser.add_argument("--seed", type=int, default=1978, help="random seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


    began = time.perf_counter()
    print("Preparing the bundled example (digits CNN; trained once in ~15-30 s, then cached) ...", flush=True)
    example = digits_example()
    print(f"  model: {example.model_path}", flush=True)
    try:
        quantizer = Quantization(demo_config(args.workspace, args.strategy, args.seed))
        quantizer.model = str(example.model_path)
        quantizer.calib_dataloader = example.calib_dataloader(batch_size=10)
        quantizer.eval_dataloader = example.eval_dataloader(batch_size=100)
        quantizer.metric = {"topk": 1}
        tuning_start = time.perf_counter()
        quantizer.fit()
        tuning_seconds = time.perf_counter() - tuning_start
    except LpotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outcome = quantizer.outcome


    all_int8 = next(
        (t.accuracy for t in outcome.trials if not any(o.override.fp32 for o in t.config.overrides)), None
    )
    fp32 = onnx.load(str(example.model_path))
    speedup = measure_speedup(fp32, outcome.model.model, {"input": example.eval_data[:100]})
    best = outcome.best
    fp32_ops = sorted(n for n, d in outcome.decisions.items() if not d["quantized"])
    print()
    print("lpot-ir demo: accuracy-driven INT8 tuning of the digits CNN (ONNX Runtime, CPU)")
    print(f"  CPU                   {cpu_features().describe()}")
    print(f"  FP32 accuracy         {outcome.baseline_accuracy:.4f}  (500 held-out digits)")
    if all_int8 is not None:
        loss0 = relative_loss(outcome.baseline_accuracy, all_int8) or 0.0
        print(f"  all-INT8 accuracy     {all_int8:.4f}  (relative loss {loss0:.2%})")
    elif outcome.proxy_readings:
        print(
            "  all-INT8 accuracy     not evaluated: the first trial already kept in FP32 the ops that the latency "
            "model (two profiled runs) found faster in FP32"
        )
    print(f"  tuned INT8 accuracy   {best.accuracy:.4f}  (trial {best.index})")
    print(f"  relative loss         {outcome.relative_loss:.2%}  (criterion: at most 1.00%; {'met' if outcome.met_goal else 'NOT met'})")
    print(
        f"  evaluations           {len(outcome.trials) + 1}  (FP32 baseline + {len(outcome.trials)} INT8 trial(s); "
        f"strategy {args.strategy}; {outcome.stop_reason})"
    )
    print(f"  ops kept in FP32      {len(fp32_ops)}: {', '.join(fp32_ops) or 'none'}")
    print(f"  tuning wall time      {tuning_seconds:.1f} s  (total with data preparation {time.perf_counter() - began:.1f} s)")
    if speedup is not None:
        print(
            f"  INT8 speedup          {speedup:.2f}x  (batch 100, 1 thread, median of 15 interleaved rounds vs FP32; "
            "varies by CPU)"
        )
    print(f"  workspace             {Path(args.workspace).resolve()}  (best_model.onnx, report.txt, tuning.png, decisions.json)")
    if outcome.warning:
        print(f"  WARNING: {outcome.warning}")
    return 0 if outcome.met_goal else 1


if __name__ == "__main__":
    sys.exit(main())
