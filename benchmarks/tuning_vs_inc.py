"""Accuracy-driven tuning, lpot-ir against Intel Neural Compressor 2.6, on the bundled digits example.

The model is :func:`lpot_ir.examples_data.digits_example` (a small depthwise CNN trained on
scikit-learn's digits, with one outlier activation channel, so that quantizing every op loses more
than 1% and tuning must keep some ops in FP32). Both tools get the same FP32 ``.onnx``, the same
calibration split (100 samples, batches of 10), the same evaluation function (top-1 accuracy on the
500-sample evaluation split with ONNX Runtime, one thread, batches of 250, receiving an
``onnx.ModelProto``) and the same criterion: relative loss <= 1%, ``timeout 0`` (stop at the first
configuration that meets it), ``max_trials 100``, seed 1978.

Every run happens in a fresh process, timed after the imports:

* **lpot-ir**: one process per strategy (basic, mse, bayesian, tpe, exhaustive, random) and format,
  through ``lpot_ir.Quantization`` (``quantizer.model``, ``.calib_dataloader``, ``.eval_func``,
  ``fit()``). The timer starts before ``Quantization(conf)`` and stops when ``fit`` returns (the best
  model saved, its recipe, report and plot written).
* **INC 2.6**: ``benchmarks/inc_driver.py`` in INC's own venv (``neural_compressor.quantization.fit``,
  strategy ``basic``), for each ``--inc-formats`` (QDQ, QOperator) and ``--inc-quant-levels``: ``auto``
  is INC's default (it tries the all-INT8 configuration, then *conservative* op-type-wise tuning, then
  the strategy), ``1`` runs the basic strategy alone. The timer wraps ``fit``.

Evaluations are ``eval_func`` calls, the FP32 baseline included, counted the same way on both sides.
"evals to goal" / "wall to goal" are the count and the elapsed time when the first evaluation that meets
the criterion returned; "evals" / "wall" are the totals until the tool returned.

Then the final models are evaluated again here (ONNX Runtime of lpot-ir's venv, same function) and
their latency measured side by side with
:func:`lpot_ir.backends.onnxruntime.compare_latency` (one intra-op thread, interleaved rounds with the
order rotated, median of per-round ratios), at batch 1 and batch 64, on real evaluation images.

INC's venv lives in ``$LPOT_IR_INC_VENV`` (default ``~/.cache/lpot_ir/inc26-venv``); if it is missing it is
created with ``python3 -m venv`` and ``pip install`` of ``INC_VENV.packages`` (about 1.5 minutes), by
``benchmarks/suite/peers/venvs.py``, which the real-model suite's peer drivers share.

Usage (from the repository root)::

    .venv/bin/python benchmarks/tuning_vs_inc.py [--strategies basic,mse,...] [--inc-formats QDQ,QOperator]
        [--inc-quant-levels auto,1] [--workdir DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from suite.peers.venvs import INC_VENV, ensure_venv  # benchmarks/ is this script's sys.path[0]

__all__ = ["RunResult", "main"]

logger = logging.getLogger("tuning_vs_inc")

STRATEGIES = ("basic", "mse", "bayesian", "tpe", "exhaustive", "random")
RELATIVE = 0.01
MAX_TRIALS = 100
SEED = 1978
CALIB_BATCH = 10
_HERE = Path(__file__).resolve().parent


# --------------------------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    """One tuning run, as both sides report it."""

    name: str
    tool: str
    evaluations: int
    wall_seconds: float
    evals_to_goal: int | None
    wall_to_goal: float | None
    fp32_accuracy: float
    output: str | None
    int8_accuracy: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def relative_loss(self) -> float | None:
        if self.int8_accuracy is None:
            return None
        return (self.fp32_accuracy - self.int8_accuracy) / self.fp32_accuracy


def _goal_progress(accuracies: list[float], ends: list[float] | None) -> tuple[int | None, float | None]:
    """(1-based index, end time) of the first evaluation after the baseline that meets the criterion."""
    if not accuracies:
        return None, None
    baseline = accuracies[0]
    for i, accuracy in enumerate(accuracies[1:], start=1):
        if (baseline - accuracy) / baseline <= RELATIVE + 1e-12:
            return i + 1, (ends[i] if ends else None)
    return None, None


def _write_data(workdir: Path) -> tuple[Path, Path, Path]:
    from lpot_ir.examples_data import digits_example

    example = digits_example()
    fp32 = workdir / "fp32.onnx"
    shutil.copyfile(example.model_path, fp32)
    np.savez(workdir / "eval.npz", x=example.eval_data, y=example.eval_labels)
    np.savez(workdir / "calib.npz", x=example.calib_data)
    return fp32, workdir / "eval.npz", workdir / "calib.npz"


def run_ours_here(strategy: str, fmt: str, workdir: Path, eval_repeat: int = 1) -> dict[str, Any]:
    """One lpot-ir tuning run in this process (called in a fresh subprocess by :func:`run_ours`)."""
    from lpot_ir.data import DataLoader
    from lpot_ir.examples_data import model_accuracy

    data = np.load(workdir / "eval.npz")
    inputs, labels = data["x"], data["y"]
    calib_x = np.load(workdir / "calib.npz")["x"]
    calib = DataLoader(_Pairs(calib_x, np.zeros(len(calib_x), dtype=np.int64)), batch_size=CALIB_BATCH)
    workspace = workdir / f"ws_ours_{strategy}_{fmt}"
    shutil.rmtree(workspace, ignore_errors=True)
    accuracies: list[float] = []
    ends: list[float] = []
    from lpot_ir import Quantization  # noqa: F401  (imported outside the timer, like INC's own import)

    began = time.perf_counter()

    def eval_func(model: Any) -> float:
        for _ in range(eval_repeat):  # --eval-repeat: stands for a validation set that many times larger
            accuracy = model_accuracy(model, inputs, labels)
        accuracies.append(accuracy)
        ends.append(time.perf_counter() - began)
        return accuracy

    conf = {
        "quantization": {"approach": "post_training_static_quant", "format": fmt},
        "tuning": {
            "strategy": {"name": strategy},
            "accuracy_criterion": {"relative": RELATIVE, "higher_is_better": True},
            "exit_policy": {"timeout": 0, "max_trials": MAX_TRIALS},
            "random_seed": SEED,
            "workspace": {"path": str(workspace)},
        },
    }
    fp32_path = str(workdir / "fp32.onnx")
    details = _tune_with_lpot_ir(conf, fp32_path, calib, eval_func, began)
    wall = time.perf_counter() - began
    output = workdir / f"ours_{strategy}_{fmt}.onnx"
    shutil.copyfile(details.pop("model_file"), output)
    evals_to_goal, wall_to_goal = _goal_progress(accuracies, ends)
    return {
        "name": f"lpot-ir {strategy} ({fmt})",
        "tool": "lpot-ir",
        "evaluations": len(accuracies),
        "wall_seconds": wall,
        "evals_to_goal": evals_to_goal,
        "wall_to_goal": wall_to_goal,
        "fp32_accuracy": accuracies[0],
        "output": str(output),
        "details": {
            "accuracies": accuracies,
            "eval_ends": [round(t, 4) for t in ends],
            **details,
        },
    }


def _tune_with_lpot_ir(
    conf: dict[str, Any], model: str, calib: Any, eval_func: Any, began: float
) -> dict[str, Any]:
    """Tune through ``lpot_ir.Quantization`` (imported by the caller, outside the timer)."""
    from lpot_ir import Quantization

    quantizer = Quantization(conf)
    quantizer.progress = False
    quantizer.model = model
    quantizer.calib_dataloader = calib
    quantizer.eval_func = eval_func
    quantizer.fit()
    outcome = quantizer.outcome
    return {
        "model_file": outcome.files["model"],
        "stop_reason": outcome.stop_reason,
        "trials": len(outcome.trials),
        "sensitivity_calls": outcome.sensitivity_calls,
        "proxy_runs": getattr(outcome, "proxy_readings", 0),
        "fp32_nodes": sorted(n for n, d in outcome.decisions.items() if not d.get("quantized")),
        "tuning_report_speedup": outcome.speedup,
    }


class _Pairs:
    def __init__(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[index], self.labels[index]


def _last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in the output:\n{stdout[-2000:]}")


def run_ours(strategy: str, fmt: str, workdir: Path, eval_repeat: int = 1) -> RunResult:
    """One lpot-ir run in a fresh process."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_ours",
        strategy,
        "--_format",
        fmt,
        "--workdir",
        str(workdir),
        "--eval-repeat",
        str(eval_repeat),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    (workdir / f"ours_{strategy}_{fmt}.log").write_text(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"lpot-ir {strategy} failed:\n{done.stderr[-3000:]}")
    return RunResult(**_last_json(done.stdout))


def run_inc(python: Path, fmt: str, level: str, workdir: Path, eval_repeat: int = 1) -> RunResult:
    """One INC 2.6 run in its venv (``benchmarks/inc_driver.py``)."""
    output = workdir / f"inc_{fmt}_level-{level}.onnx"
    cmd = [
        str(python), str(_HERE / "inc_driver.py"),
        "--model", str(workdir / "fp32.onnx"), "--eval", str(workdir / "eval.npz"),
        "--calib", str(workdir / "calib.npz"), "--output", str(output),
        "--workspace", str(workdir / f"ws_inc_{fmt}_{level}"), "--quant-format", fmt, "--quant-level", level,
        "--strategy", "basic", "--max-trials", str(MAX_TRIALS), "--timeout", "0",
        "--relative", str(RELATIVE), "--calib-batch", str(CALIB_BATCH), "--seed", str(SEED),
        "--eval-repeat", str(eval_repeat),
    ]  # fmt: skip
    shutil.rmtree(workdir / f"ws_inc_{fmt}_{level}", ignore_errors=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    (workdir / f"inc_{fmt}_level-{level}.log").write_text(done.stderr)
    try:
        data = _last_json(done.stdout)
    except RuntimeError:
        raise RuntimeError(f"INC 2.6 ({fmt}, quant_level {level}) failed:\n{done.stderr[-3000:]}") from None
    accuracies = data["accuracies"]
    evals_to_goal, _ = _goal_progress(accuracies, None)
    ends = data.get("eval_ends")
    return RunResult(
        name=f"INC 2.6 basic ({fmt}, quant_level {level})",
        tool="neural-compressor",
        evaluations=data["evaluations"],
        wall_seconds=data["wall_seconds"],
        evals_to_goal=evals_to_goal,
        wall_to_goal=ends[evals_to_goal - 1] if ends and evals_to_goal else None,
        fp32_accuracy=accuracies[0],
        output=data.get("output"),
        details={k: v for k, v in data.items() if k not in ("evaluations", "wall_seconds", "output")},
    )


# --------------------------------------------------------------------------------------------- report


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None:
        return "-"
    return format(value, spec) if isinstance(value, float) else str(value)


def _latency(
    runs: list[RunResult], fp32: Path, inputs: np.ndarray, batch: int, rounds: int, iterations: int
) -> Any:
    from lpot_ir.backends.onnxruntime import compare_latency

    models: dict[str, Any] = {"fp32": str(fp32)}
    models.update({r.name: r.output for r in runs if r.output})
    return compare_latency(
        models, inputs[:batch], rounds=max(rounds, len(models)), iterations=iterations, warmup=5
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--formats", default="qdq", help="lpot-ir formats to run each strategy in (qdq, qoperator)"
    )
    parser.add_argument("--inc-formats", default="QDQ,QOperator")
    parser.add_argument("--inc-quant-levels", default="auto,1")
    parser.add_argument(
        "--inc-reference", default="QDQ,auto", help="FORMAT,LEVEL of the INC run to compare with"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--iterations", type=int, default=100, help="timed runs per model per round at batch 1"
    )
    parser.add_argument(
        "--eval-repeat", type=int, default=1,
        help="each eval_func call scores the eval split this many times (same on both sides): the cost of "
        "a realistic validation set, where evaluations, not fixed overheads, decide the wall time",
    )
    parser.add_argument("--_ours", help=argparse.SUPPRESS)
    parser.add_argument("--_format", default="qdq", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._ours:  # child process: one lpot-ir run
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        print(json.dumps(run_ours_here(args._ours, args._format, args.workdir, args.eval_repeat), default=str))
        return 0

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lpot_tuning_vs_inc_"))
    workdir.mkdir(parents=True, exist_ok=True)
    inc_python, venv_seconds = ensure_venv(INC_VENV)
    fp32, eval_npz, _ = _write_data(workdir)

    runs: list[RunResult] = []
    for fmt in args.formats.split(","):
        for strategy in args.strategies.split(","):
            logger.info("lpot-ir %s (%s) ...", strategy, fmt)
            runs.append(run_ours(strategy, fmt, workdir, args.eval_repeat))
    inc_runs: list[RunResult] = []
    for level in args.inc_quant_levels.split(","):
        for fmt in args.inc_formats.split(","):
            logger.info("INC 2.6 basic (%s, quant_level %s) ...", fmt, level)
            inc_runs.append(run_inc(inc_python, fmt, level, workdir, args.eval_repeat))
    ref_fmt, ref_level = args.inc_reference.split(",")
    reference = next(r for r in inc_runs if f"({ref_fmt}, quant_level {ref_level})" in r.name)

    from lpot_ir.examples_data import model_accuracy

    data = np.load(eval_npz)
    for run in runs + inc_runs:
        if run.output:
            run.int8_accuracy = model_accuracy(run.output, data["x"], data["y"])
    logger.info("measuring latency at batch 1 and 64 ...")
    lat1 = _latency(runs + inc_runs, fp32, data["x"], 1, args.rounds, args.iterations)
    lat64 = _latency(runs + inc_runs, fp32, data["x"], 64, args.rounds, max(5, args.iterations // 10))

    headers = [
        "run", "evals to goal", "evals", "wall to goal s", "wall s", "FP32 acc", "INT8 acc", "rel loss",
        "speedup b1", "speedup b64", "lat vs INC b1", "lat vs INC b64",
    ]  # fmt: skip
    rows = []
    for run in runs + inc_runs:
        has = run.output is not None
        rows.append([
            run.name, _fmt(run.evals_to_goal), str(run.evaluations), _fmt(run.wall_to_goal, ".2f"),
            _fmt(run.wall_seconds, ".2f"), _fmt(run.fp32_accuracy, ".4f"), _fmt(run.int8_accuracy, ".4f"),
            _fmt(run.relative_loss, ".2%"),
            _fmt(lat1.speedup(run.name), ".2f") if has else "-",
            _fmt(lat64.speedup(run.name), ".2f") if has else "-",
            _fmt(lat1.ratio[run.name] / lat1.ratio[reference.name], ".2f") if has else "-",
            _fmt(lat64.ratio[run.name] / lat64.ratio[reference.name], ".2f") if has else "-",
        ])  # fmt: skip
    print(f"digits example, relative loss <= {RELATIVE:.0%}, timeout 0, max_trials {MAX_TRIALS}, seed {SEED}")
    print(f"INC reference for 'lat vs INC' (latency ours / INC, < 1 = ours faster): {reference.name}")
    from lpot_ir.backends.onnxruntime.benchmarking import format_table

    print(format_table(headers, rows))
    print()
    for batch, lat in ((1, lat1), (64, lat64)):
        print(f"batch {batch}: " + str(lat))
        print()
    default = next((r for r in runs if r.name.startswith("lpot-ir basic")), None)
    if default is not None and default.evals_to_goal and reference.evals_to_goal:
        print(
            f"target (lpot-ir basic vs {reference.name}): evaluations to goal {default.evals_to_goal} vs "
            f"{reference.evals_to_goal} (<= half: {default.evals_to_goal * 2 <= reference.evals_to_goal}); "
            f"wall {default.wall_seconds:.2f} s vs {reference.wall_seconds:.2f} s "
            f"(<= half: {default.wall_seconds * 2 <= reference.wall_seconds}); latency ratio b1 "
            f"{lat1.ratio[default.name] / lat1.ratio[reference.name]:.2f}, b64 "
            f"{lat64.ratio[default.name] / lat64.ratio[reference.name]:.2f} (<= 1: equal or faster)"
        )
    if venv_seconds is not None:
        print(f"INC venv created in {venv_seconds:.0f} s")
    print(f"models, logs and workspaces in {workdir}")
    if args.json:
        payload = {
            "runs": [{**r.__dict__, "relative_loss": r.relative_loss} for r in runs + inc_runs],
            "latency_batch1": lat1.to_dict(),
            "latency_batch64": lat64.to_dict(),
            "reference": reference.name,
            "inc_venv_seconds": venv_seconds,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
