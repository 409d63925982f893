"""The real-model suite: every tool on the same pretrained models, data and metric, side by side in one run.

For each task of ``benchmarks/suite/tasks.py`` (``--tasks a,b`` or ``all``) this script

1. builds the task folder once (``--workdir``, default ``~/.cache/lpot_ir/suite``) and scores FP32;
2. runs **lpot-ir's default tuning** through the public API, as a new user would: ``lpot_ir.Quantization``
   with the template's tuning section (strategy ``basic``, relative 1%, ``timeout: 0``,
   ``max_trials: 100``), ``calib_dataloader`` = the task's calibration feeds, ``eval_func`` = the task's
   evaluation wrapped in a call counter. A PyTorch / TensorFlow task hands lpot-ir the framework model
   (``torch.nn.Module`` / SavedModel folder), so ``eval_func`` receives the frontend's framework-native
   callable and runs the feeds through it;
3. runs **ONNX Runtime's** ``quantize_static`` (after ``quant_pre_process``, QDQ, ``per_channel=True``,
   otherwise ORT's defaults, the calibration feeds through a ``CalibrationDataReader``) and, for tasks
   whose natural approach is dynamic, ``quantize_dynamic`` (defaults);
4. runs the **peers** (``--peers``, default ``inc,nncf``): ``benchmarks/suite/peers`` (Intel Neural
   Compressor 2.6 basic, NNCF ``quantize_with_accuracy_control``), each by subprocess in its own venv,
   skipped with a note when the driver or its venv is not there;
5. re-scores every resulting model with the same ``evaluate`` (not counted), measures its latency against
   FP32 side by side (:func:`lpot_ir.backends.onnxruntime.compare_latency`: one intra-op thread,
   interleaved rounds with the order rotated, median of per-round ratios; on the task's own eval feed
   ``latency_feed``, at the task's natural batch), counts the compute ops left in FP32 and the file size.

Columns: **goal met** (relative loss <= 1% by the re-score), **evals** (``eval_func`` calls on the whole
eval set, the FP32 baseline included; ORT's one-shot quantizers make none), **wall s** (the tool's run,
after imports: lpot-ir from ``Quantization(conf)`` until ``fit`` returns, ORT pre-processing included),
**INT8 metric**, **rel loss**, **speedup** (FP32 latency / INT8 latency), **FP32 ops** (see
:func:`fp32_compute_ops`) and **MB** (the ``.onnx`` file).

Usage (from the repository root, lpot-ir's venv with ``pip install -e '.[suite]'``)::

    python benchmarks/real_models.py --tasks all [--peers inc,nncf] [--json out.json] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))

from suite import evaluate as suite_eval  # noqa: E402
from suite.tasks import TASKS, TaskSpec, build_task, default_workdir, missing_modules, task_names  # noqa: E402

__all__ = ["ToolRun", "COMPUTE_OPS", "INTEGER_OPS", "fp32_compute_ops", "run_lpot_ir", "run_ort", "main"]

logger = logging.getLogger("real_models")

RELATIVE = 0.01
MAX_TRIALS = 100
SEED = 1978

COMPUTE_OPS = frozenset(
    {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN", "Attention", "MultiHeadAttention",
     "FusedConv", "FusedMatMul", "Einsum"}
)  # fmt: skip
"""Op types whose FP32 execution is what INT8 quantization is meant to replace."""

INTEGER_OPS = frozenset(
    {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "QAttention",
     "QGemm", "DynamicQuantizeLSTM", "DynamicQuantizeMatMul"}
)  # fmt: skip
"""Integer versions of :data:`COMPUTE_OPS` (QOperator form and ONNX Runtime's contrib integer ops)."""


def fp32_compute_ops(model: onnx.ModelProto) -> tuple[int, int]:
    """(compute ops left in FP32, all compute ops), one definition for every tool.

    A compute op is a node of :data:`COMPUTE_OPS` or of their integer versions (:data:`INTEGER_OPS`).
    It is INT8 when it is an integer op, or when its activation input (the first
    input that is not a weight: not an initializer, not a ``Constant`` output, not a
    ``DequantizeLinear`` of one) is the output of a ``DequantizeLinear`` (a Q/DQ model). Every other
    compute op runs in FP32. Subgraphs (If/Loop bodies) are included.
    """
    fp32 = total = 0
    for graph in _graphs(model.graph):
        producers = {out: node for node in graph.node for out in node.output}
        constants = {init.name for init in graph.initializer}
        constants |= {n.output[0] for n in graph.node if n.op_type == "Constant"}

        for node in graph.node:
            integer = node.op_type in INTEGER_OPS
            if not integer and node.op_type not in COMPUTE_OPS:
                continue
            total += 1
            if integer:
                continue
            activation = next((i for i in node.input if i and not _is_weight(i, producers, constants)), None)
            producer = producers.get(activation) if activation else None
            if producer is None or producer.op_type != "DequantizeLinear":
                fp32 += 1
    return fp32, total


def _is_weight(name: str, producers: Mapping[str, onnx.NodeProto], constants: set[str]) -> bool:
    """An initializer, a Constant's output, or a DequantizeLinear of one of those."""
    if name in constants:
        return True
    node = producers.get(name)
    return node is not None and node.op_type == "DequantizeLinear" and node.input[0] in constants


def _graphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found += _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for g in attr.graphs:
                    found += _graphs(g)
    return found


# --------------------------------------------------------------------------------------------- runs


@dataclass
class ToolRun:
    """One tool's result on one task."""

    tool: str
    model: str | None
    evaluations: int | None
    wall_seconds: float | None
    tool_goal_met: bool | None = None
    accuracy: float | None = None
    relative_loss: float | None = None
    goal_met: bool | None = None
    speedup: float | None = None
    fp32_ops: int | None = None
    compute_ops: int | None = None
    megabytes: float | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class CountingEval:
    """The task's evaluation as ``eval_func``: counts calls and records each value and its end time."""

    def __init__(self, spec: TaskSpec, folder: Path, began: float) -> None:
        self.spec, self.folder, self.began = spec, folder, began
        self.values: list[float] = []
        self.ends: list[float] = []
        self.seconds = 0.0
        task = suite_eval.load_task(folder)
        self.input_names = [i[0] for i in task["inputs"]]

    def __call__(self, model: Any) -> float:
        start = time.perf_counter()
        if isinstance(model, onnx.ModelProto):
            value = suite_eval.evaluate(model, self.folder, threads=1)
        elif self.spec.frontend == "pytorch":
            value = suite_eval.evaluate_with(self._torch_runner(model), self.folder)
        else:
            value = suite_eval.evaluate_with(self._tf_runner(model), self.folder)
        now = time.perf_counter()
        self.seconds += now - start
        self.values.append(value)
        self.ends.append(now - self.began)
        logger.info("  eval_func call %d: %.6f (%.1f s)", len(self.values), value, now - start)
        return value

    def _torch_runner(self, module: Any) -> Any:
        import torch

        def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                out = module(*[torch.from_numpy(np.ascontiguousarray(feed[n])) for n in self.input_names])
            flat = out if isinstance(out, (tuple, list)) else [out]
            return [t.numpy() for t in flat]

        return run

    def _tf_runner(self, fn: Any) -> Any:
        def run(feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            out = fn(*[feed[n] for n in self.input_names])
            flat = list(out.values()) if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else [out]
            return [np.asarray(t) for t in flat]

        return run


def _calibration_batches(spec: TaskSpec, folder: Path) -> list[Any]:
    """The calibration feeds as a user's dataloader yields them: a dict per batch for an ONNX model,
    positional arrays (one array for a one-input model) for a framework model."""
    task = suite_eval.load_task(folder)
    names = [i[0] for i in task["inputs"]]
    feeds = suite_eval.load_feeds(folder / "calib.npz")
    if spec.frontend == "onnx":
        return [dict(f) for f in feeds]
    return [f[names[0]] if len(names) == 1 else tuple(f[n] for n in names) for f in feeds]


def _lpot_yaml(task: Mapping[str, Any], workspace: Path) -> str:
    approach = "post_training_dynamic_quant" if task["approach"] == "dynamic" else "post_training_static_quant"
    hib = "true" if task["higher_is_better"] else "false"
    return f"""version: 1.0
model:
  name: {task["name"]}
quantization:
  approach: {approach}
tuning:
  strategy:
    name: basic
  accuracy_criterion:
    relative: {RELATIVE}
    higher_is_better: {hib}
  exit_policy:
    timeout: 0
    max_trials: {MAX_TRIALS}
  random_seed: {SEED}
  workspace:
    path: {workspace}
"""


def run_lpot_ir(spec: TaskSpec, folder: Path, rundir: Path) -> ToolRun:
    """lpot-ir's default tuning through ``lpot_ir.Quantization``, timed from ``Quantization(conf)``."""
    from lpot_ir import Quantization

    task = suite_eval.load_task(folder)
    workspace = rundir / "lpot_ir_ws"
    shutil.rmtree(workspace, ignore_errors=True)
    model = spec.framework_model(folder)  # the user's model object: loaded before the clock starts
    calib = _calibration_batches(spec, folder)
    conf = _lpot_yaml(task, workspace)
    log = logging.FileHandler(rundir / "lpot_ir.log", mode="w")  # lpot-ir's own INFO log, for the record
    log.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    lpot_logger = logging.getLogger("lpot_ir")
    lpot_logger.addHandler(log)
    lpot_logger.setLevel(logging.INFO)
    began = time.perf_counter()
    cpu_began = time.process_time()
    counter = CountingEval(spec, folder, began)
    try:
        quantizer = Quantization(conf)
        quantizer.progress = False
        quantizer.model = model
        quantizer.calib_dataloader = calib
        quantizer.eval_func = counter
        quantizer.fit()
    finally:
        lpot_logger.removeHandler(log)
        log.close()
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu_began
    outcome = quantizer.outcome
    output = rundir / "lpot_ir.int8.onnx"
    shutil.copyfile(outcome.files["model"], output)
    fp32_nodes = sorted(n for n, d in outcome.decisions.items() if not d.get("quantized"))
    return ToolRun(
        tool="lpot-ir basic (default)",
        model=str(output),
        evaluations=len(counter.values),
        wall_seconds=wall,
        tool_goal_met=bool(outcome.met_goal),
        details={
            "eval_values": counter.values,
            "eval_ends": [round(t, 3) for t in counter.ends],
            "eval_seconds": round(counter.seconds, 3),
            "cpu_seconds": round(cpu, 1),
            "trials": len(outcome.trials),
            "stop_reason": str(outcome.stop_reason),
            "sensitivity_calls": outcome.sensitivity_calls,
            "proxy_runs": getattr(outcome, "estimate_calls", 0),
            "tool_speedup": outcome.speedup,
            "tool_warning": outcome.warning,
            "fp32_decisions": len(fp32_nodes),
            "fp32_nodes": fp32_nodes,
            "yaml": conf,
        },
    )


class _Reader:
    """ORT's ``CalibrationDataReader`` over the calibration feeds (built lazily: ORT imported inside)."""

    def __new__(cls, feeds: Sequence[Mapping[str, np.ndarray]]) -> Any:
        from onnxruntime.quantization import CalibrationDataReader

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(feeds)

            def get_next(self) -> dict[str, np.ndarray] | None:
                return dict(next(self._it, None) or {}) or None

            def rewind(self) -> None:
                self._it = iter(feeds)

        return Reader()


def run_ort(folder: Path, rundir: Path, approach: str) -> ToolRun:
    """ONNX Runtime's one-shot quantizer as its documentation shows it: ``quant_pre_process`` then
    ``quantize_static`` (QDQ, per-channel weights, MinMax; ORT's default QInt8 activations and weights),
    or ``quantize_dynamic`` (defaults) for ``approach="dynamic"``."""
    source = folder / "model.onnx"
    prepared = rundir / f"ort_{approach}.prep.onnx"
    output = rundir / f"ort_{approach}.int8.onnx"
    began = time.perf_counter()
    cpu_began = time.process_time()
    with _working_directory(rundir):  # ORT leaves <uuid>.data files in the cwd when quant_pre_process fails
        note = _ort_quantize(source, prepared, output, folder, approach)
    wall = time.perf_counter() - began
    prepared.unlink(missing_ok=True)
    name = "ORT quantize_dynamic" if approach == "dynamic" else "ORT quantize_static (QDQ, per-channel)"
    return ToolRun(
        tool=name, model=str(output), evaluations=0, wall_seconds=wall, note=note,
        details={"cpu_seconds": round(time.process_time() - cpu_began, 1)},
    )  # fmt: skip


@contextlib.contextmanager
def _working_directory(path: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _ort_quantize(source: Path, prepared: Path, output: Path, folder: Path, approach: str) -> str:
    from onnxruntime.quantization import QuantFormat, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    note = ""
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception as error:  # noqa: BLE001 - ORT raises anything; a user would quantize the original then
        note = f"quant_pre_process failed ({_first_line(error, 120)}); quantized the original"
        shutil.copyfile(source, prepared)
    if approach == "dynamic":
        quantize_dynamic(str(prepared), str(output))
    else:
        feeds = suite_eval.load_feeds(folder / "calib.npz")
        quantize_static(
            str(prepared), str(output), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True
        )
    return note


def run_peers(names: Sequence[str], folder: Path, rundir: Path, timeout: float) -> list[ToolRun]:
    """The peers by subprocess in their venvs (``benchmarks/suite/peers``); missing ones are noted."""
    if not names:
        return []
    try:
        from suite.peers import PEERS, run_peer
    except ImportError as error:
        return [ToolRun(tool=n, model=None, evaluations=None, wall_seconds=None,
                        note=f"skipped: benchmarks/suite/peers is not there ({error})") for n in names]  # fmt: skip
    runs = []
    for name in names:
        if name not in PEERS:
            runs.append(ToolRun(tool=name, model=None, evaluations=None, wall_seconds=None,
                                note=f"skipped: unknown peer (known: {', '.join(PEERS)})"))  # fmt: skip
            continue
        logger.info("%s ...", PEERS[name].label)
        result = run_peer(name, folder, rundir / "peers", timeout=timeout, criterion_relative=RELATIVE)
        model = result.get("model")
        runs.append(
            ToolRun(
                tool=result.get("label", name),
                model=model if model and Path(model).exists() else None,
                evaluations=result.get("evaluations"),
                wall_seconds=result.get("wall_seconds"),
                tool_goal_met=result.get("goal_met"),
                note=f"failed: {str(result['error']).splitlines()[0][:200]}" if result.get("error") else "",
                details={k: v for k, v in result.items() if k not in ("model",)},
            )
        )
    return runs


# --------------------------------------------------------------------------------------------- scoring


def _tool_key(run: ToolRun, peers: Sequence[str]) -> str:
    """``lpot-ir``, ``ort`` or the peer's name: what ``--reuse`` names."""
    if run.tool.startswith("lpot-ir"):
        return "lpot-ir"
    if run.tool.startswith("ORT"):
        return "ort"
    return str(run.details.get("peer") or next((p for p in peers if p in run.tool.lower()), run.tool))


def _save_runs(rundir: Path, runs: Sequence[ToolRun], peers: Sequence[str]) -> None:
    """Each tool's raw result (before re-scoring) in RUNDIR/runs.json, for ``--reuse``."""
    saved = {}
    path = rundir / "runs.json"
    if path.exists():
        saved = json.loads(path.read_text())
    fresh: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        fresh.setdefault(_tool_key(run, peers), []).append(asdict(run))
    saved.update(fresh)
    path.write_text(json.dumps(saved, indent=1, default=str))


def _load_runs(rundir: Path, reuse: set[str]) -> dict[str, list[ToolRun]]:
    path = rundir / "runs.json"
    if not reuse or not path.exists():
        return {}
    saved = json.loads(path.read_text())
    found = {}
    for key in reuse:
        entries = [ToolRun(**e) for e in saved.get(key, [])]
        if entries and all(e.model is None or Path(e.model).exists() for e in entries):
            found[key] = entries
            logger.info("reusing %s from %s", key, path)
    return found


def _latency_inputs(folder: Path) -> tuple[np.ndarray, ...]:
    task = suite_eval.load_task(folder)
    feed = suite_eval.load_feeds(folder / "eval.npz")[int(task.get("latency_feed", 0))]
    return tuple(feed[i[0]] for i in task["inputs"])


def _iterations(model: Path, inputs: tuple[np.ndarray, ...]) -> int:
    """Timed runs per model per round: about 0.4 s of FP32 work, 3 to 100."""
    session = suite_eval.make_session(str(model), 1)
    names = [i.name for i in session.get_inputs()]
    feed = dict(zip(names, inputs, strict=True))
    session.run(None, feed)
    start = time.perf_counter()
    session.run(None, feed)
    return int(min(100, max(3, 0.4 / max(time.perf_counter() - start, 1e-4))))


def score_runs(task: Mapping[str, Any], folder: Path, fp32: float, runs: list[ToolRun], rounds: int) -> dict[str, Any]:
    """Re-score, count ops, size, and measure every model's latency against FP32 side by side."""
    from lpot_ir.backends.onnxruntime import compare_latency

    sign = 1.0 if task["higher_is_better"] else -1.0
    for run in runs:
        if not run.model:
            continue
        run.accuracy = suite_eval.evaluate(run.model, folder, threads=1)
        run.relative_loss = sign * (fp32 - run.accuracy) / abs(fp32) if fp32 else None
        run.goal_met = run.relative_loss is not None and run.relative_loss <= RELATIVE + 1e-12
        run.fp32_ops, run.compute_ops = fp32_compute_ops(onnx.load(run.model, load_external_data=False))
        run.megabytes = os.path.getsize(run.model) / 2**20
    inputs = _latency_inputs(folder)
    fp32_model = folder / "model.onnx"
    models: dict[str, Any] = {"FP32": str(fp32_model)}
    models.update({run.tool: run.model for run in runs if run.model})
    iterations = _iterations(fp32_model, inputs)
    if len(models) == 1:
        return {"latency": None, "fp32_compute_ops": fp32_compute_ops(onnx.load(str(fp32_model)))[1],
                "fp32_megabytes": os.path.getsize(fp32_model) / 2**20}  # fmt: skip
    logger.info("latency: %d models, %d rounds x %d runs, batch of feed %s", len(models), rounds, iterations, task.get("latency_feed", 0))
    comparison = compare_latency(models, inputs, rounds=max(rounds, len(models)), iterations=iterations, warmup=3)
    for run in runs:
        if run.model:
            run.speedup = comparison.speedup(run.tool)
    fp32_ops, total = fp32_compute_ops(onnx.load(str(fp32_model), load_external_data=False))
    return {
        "latency": comparison.to_dict(),
        "latency_iterations": iterations,
        "fp32_compute_ops": total,
        "fp32_megabytes": os.path.getsize(fp32_model) / 2**20,
    }


# --------------------------------------------------------------------------------------------- report


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def _fmt(value: Any, spec: str = ".4f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    return format(value, spec) if isinstance(value, float) else str(value)


def markdown_table(name: str, task: Mapping[str, Any], fp32: float, runs: Sequence[ToolRun], extra: Mapping[str, Any]) -> str:
    lines = [
        f"### {name}: {task['metric']} (FP32 {fp32:.4f}, {extra['fp32_compute_ops']} compute ops, "
        f"{extra['fp32_megabytes']:.1f} MB)",
        "",
        "| tool | goal met | evals | wall s | CPU s | INT8 metric | rel loss | speedup | FP32 ops | MB | note |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in runs:
        ops = f"{r.fp32_ops}/{r.compute_ops}" if r.fp32_ops is not None else "-"
        lines.append(
            f"| {r.tool} | {_fmt(r.goal_met)} | {_fmt(r.evaluations)} | {_fmt(r.wall_seconds, '.1f')} | "
            f"{_fmt(r.details.get('cpu_seconds'), '.1f')} | "
            f"{_fmt(r.accuracy)} | {_fmt(r.relative_loss, '.2%')} | {_fmt(r.speedup, '.2f')}x | {ops} | "
            f"{_fmt(r.megabytes, '.2f' if (r.megabytes or 0) < 10 else '.1f')} | {r.note} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="all", help=f"'all' or some of: {', '.join(TASKS)}")
    parser.add_argument("--tools", default="lpot-ir,ort", help="lpot-ir, ort (comma-separated)")
    parser.add_argument("--peers", default="inc,nncf", help="peer names (benchmarks/suite/peers); '' for none")
    parser.add_argument("--workdir", type=Path, default=None, help=f"task folders (default {default_workdir()})")
    parser.add_argument("--rundir", type=Path, default=None, help="models, logs, workspaces (default WORKDIR/runs)")
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved latency rounds (at least one per model)")
    parser.add_argument("--peer-timeout", type=float, default=3600.0)
    parser.add_argument(
        "--reuse", default="",
        help="tools whose models from an earlier run in RUNDIR to reuse instead of running them again "
        "(lpot-ir, ort and/or peer names, e.g. 'ort,inc,nncf': develop lpot-ir against fixed peer results); "
        "reused models are re-scored and re-timed",
    )  # fmt: skip
    args = parser.parse_args(argv)
    reuse = {t.strip() for t in args.reuse.split(",") if t.strip()}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("lpot_ir",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    workdir = (args.workdir or default_workdir()).expanduser().resolve()
    rundir_root = (args.rundir or workdir / "runs").expanduser().resolve()
    tools = {t.strip() for t in args.tools.split(",") if t.strip()}
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    results: dict[str, Any] = {"load_average_start": os.getloadavg(), "tasks": {}}
    tables = []
    for name in task_names(args.tasks):
        spec = TASKS[name]
        missing = missing_modules(spec)
        if missing:
            print(f"{name}: skipped (missing {', '.join(missing)}: pip install -e '.[suite]')")
            results["tasks"][name] = {"skipped": f"missing {', '.join(missing)}"}
            continue
        folder = build_task(name, workdir)
        task = suite_eval.load_task(folder)
        rundir = rundir_root / name
        rundir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        fp32 = suite_eval.evaluate(folder / "model.onnx", folder, threads=1)
        fp32_eval_seconds = time.perf_counter() - start
        logger.info("%s: FP32 %s = %.6f (%.1f s per evaluation)", name, task["metric"], fp32, fp32_eval_seconds)
        runs: list[ToolRun] = []
        reused = _load_runs(rundir, reuse)
        if "lpot-ir" in tools and "lpot-ir" in reused:
            runs += reused["lpot-ir"]
        elif "lpot-ir" in tools:
            logger.info("%s: lpot-ir default tuning ...", name)
            try:
                runs.append(run_lpot_ir(spec, folder, rundir))
            except Exception as error:  # noqa: BLE001 - report the failure in the table, keep the suite going
                logger.exception("lpot-ir failed on %s", name)
                runs.append(ToolRun("lpot-ir basic (default)", None, None, None, note=f"failed: {_first_line(error)}"))
        if "ort" in tools and "ort" in reused:
            runs += reused["ort"]
        elif "ort" in tools:
            approaches = ["static", "dynamic"] if task["approach"] == "dynamic" else ["static"]
            for approach in approaches:
                logger.info("%s: ORT %s ...", name, approach)
                try:
                    runs.append(run_ort(folder, rundir, approach))
                except Exception as error:  # noqa: BLE001
                    logger.exception("ORT %s failed on %s", approach, name)
                    runs.append(ToolRun(f"ORT quantize_{approach}", None, None, None, note=f"failed: {_first_line(error)}"))
        runs += run_peers([p for p in peers if p not in reused], folder, rundir, args.peer_timeout)
        runs += [r for p in peers if p in reused for r in reused[p]]
        _save_runs(rundir, runs, peers)
        extra = score_runs(task, folder, fp32, runs, args.rounds)
        table = markdown_table(name, task, fp32, runs, extra)
        tables.append(table)
        print(table + "\n", flush=True)
        results["tasks"][name] = {
            "fp32": fp32,
            "fp32_eval_seconds": fp32_eval_seconds,
            "metric": task["metric"],
            "frontend": task["frontend"],
            "runs": [asdict(r) for r in runs],
            **extra,
        }
    results["load_average_end"] = os.getloadavg()
    print(f"load average: start {results['load_average_start']}, end {results['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
