"""What both peer drivers share: the task folder, the counted evaluation function, the result JSON.

The drivers (``inc_driver.py``, ``nncf_driver.py``) run as scripts INSIDE a peer's venv, so this module
imports only the standard library, numpy and onnx, and nothing from ``lpot_ir``; the drivers import it
as a sibling (``import driver_common``: a script's own folder is first on ``sys.path``). The suite's
``evaluate.py`` is loaded by path (it is venv-agnostic: numpy, onnx, onnxruntime and its sibling
``metrics.py``), so every tool is scored by the same function on the same data.

The result JSON (one file, written atomically) has the keys every driver fills:
``tool``, ``version``, ``goal_met``, ``evaluations`` (eval function calls on the whole evaluation set,
the FP32 baseline included), ``wall_seconds`` (from the tool's configuration until it returned; loading
the model and data and any model rewrite before that are ``prepare_seconds``),
``accuracy`` (the saved INT8 model re-scored, not counted), ``fp32_accuracy``, ``model`` (the INT8
``.onnx``), ``notes``; ``error`` when the tool could not produce a model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import onnx

__all__ = [
    "SuiteTask",
    "CountingEval",
    "cache_sessions",
    "load_evaluate_module",
    "goal_met",
    "save_model_atomic",
    "write_json_atomic",
    "op_histogram",
    "quantized_node_count",
    "all_nodes",
    "describe_model",
    "driver_arguments",
    "run_driver",
]

logger = logging.getLogger("peer_driver")

_DEFAULT_EVALUATE = Path(__file__).resolve().parents[1] / "evaluate.py"


def load_evaluate_module(path: str | os.PathLike[str] | None = None) -> ModuleType:
    """The suite's ``evaluate.py``, imported by path (default: ``benchmarks/suite/evaluate.py``)."""
    path = Path(path) if path is not None else _DEFAULT_EVALUATE
    if not path.is_file():
        raise FileNotFoundError(
            f"The suite's evaluation module {path} does not exist. The peer drivers score models with "
            "benchmarks/suite/evaluate.py; pass --evaluate PATH to use another copy of it."
        )
    spec = importlib.util.spec_from_file_location("suite_evaluate", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class SuiteTask:
    """A task folder (``docs/benchmarks.md``, "The real-model suite"): task.json, model.onnx, calib.npz, eval.npz."""

    task_dir: Path
    info: dict[str, Any]
    calib_feeds: list[dict[str, Any]]
    eval_size: int

    @classmethod
    def load(cls, task_dir: str | os.PathLike[str], evaluate: ModuleType) -> SuiteTask:
        task_dir = Path(task_dir)
        info = evaluate.load_task(task_dir)
        calib = list(evaluate.load_feeds(task_dir / "calib.npz"))
        eval_size = len(evaluate.load_feeds(task_dir / "eval.npz"))
        return cls(task_dir, info, calib, eval_size)

    @property
    def model_path(self) -> Path:
        return self.task_dir / "model.onnx"

    @property
    def higher_is_better(self) -> bool:
        return bool(self.info.get("higher_is_better", True))

    @property
    def approach(self) -> str:
        return str(self.info.get("approach", "static"))


@dataclass
class CountingEval:
    """The task's ``evaluate``, with every call counted and timed.

    A call on the whole evaluation set is an *evaluation*. A call on a subset (NNCF scores single
    items and its ranking subset to rank its quantizers) is counted apart, with the number of feeds it
    scored, so ``eval_equivalents`` = all scored feeds / evaluation-set size says what the subsets cost.
    """

    evaluate: ModuleType
    task: SuiteTask
    origin: float = field(default_factory=time.perf_counter)
    accuracies: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    seconds: float = 0.0
    subset_calls: int = 0
    subset_feeds: int = 0
    subset_seconds: float = 0.0
    restore: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None
    """Applied to a model before it is scored (``PeerModel.restore_interface`` of a rewritten model)."""

    def __post_init__(self) -> None:
        cache_sessions(self.evaluate)

    @property
    def evaluations(self) -> int:
        return len(self.accuracies)

    @property
    def eval_equivalents(self) -> float:
        return self.evaluations + self.subset_feeds / max(1, self.task.eval_size)

    def __call__(self, model: Any, indices: Sequence[int] | None = None) -> float:
        model = _as_evaluable(model)
        if self.restore is not None and isinstance(model, onnx.ModelProto):
            model = self.restore(model)
        whole = indices is None or list(indices) == list(range(self.task.eval_size))
        began = time.perf_counter()
        value = float(
            self.evaluate.evaluate(
                model, self.task.task_dir, threads=1, indices=None if whole else list(indices)
            )
        )
        if whole:
            self.seconds += time.perf_counter() - began
            self.accuracies.append(value)
            self.ends.append(time.perf_counter() - self.origin)
            logger.info("evaluation %d: %.6f", self.evaluations, value)
        else:
            self.subset_seconds += time.perf_counter() - began
            self.subset_calls += 1
            self.subset_feeds += len(indices or ())
        return value

    def summary(self) -> dict[str, Any]:
        return {
            "evaluations": self.evaluations,
            "eval_seconds": round(self.seconds, 3),
            "accuracies": self.accuracies,
            "eval_ends": [round(t, 3) for t in self.ends],
            "subset_eval_calls": self.subset_calls,
            "subset_eval_feeds": self.subset_feeds,
            "subset_eval_seconds": round(self.subset_seconds, 3),
            "eval_equivalents": round(self.eval_equivalents, 3),
        }


def cache_sessions(evaluate: ModuleType, size: int = 2) -> None:
    """Make ``evaluate.make_session`` reuse the sessions of the last ``size`` models it was given.

    NNCF scores the same model on one item after another (one ``validation_fn`` call each); a new
    ONNX Runtime session per call would make session creation, not the tool, dominate its wall time.
    Models are recognised by a digest of their serialized bytes (a tool may edit a ModelProto in
    place), so a cached session always runs exactly the model it is asked for. Idempotent.
    """
    make = evaluate.make_session
    if getattr(make, "lpot_ir_cached", False):
        return
    cache: dict[tuple[bytes, int], Any] = {}

    def cached(model: Any, threads: int = 1) -> Any:
        if hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        if not isinstance(model, bytes):
            return make(model, threads)
        key = (hashlib.blake2b(model, digest_size=16).digest(), threads)
        if key not in cache:
            while len(cache) >= size:
                cache.pop(next(iter(cache)))
            cache[key] = make(model, threads)
        return cache[key]

    cached.lpot_ir_cached = True  # type: ignore[attr-defined]
    evaluate.make_session = cached


def _as_evaluable(model: Any) -> Any:
    """A path, bytes or ModelProto for ``evaluate``; unwraps a tool's model wrapper (``.model``)."""
    if isinstance(model, (str, bytes, os.PathLike, onnx.ModelProto)):
        return model
    inner = getattr(model, "model", None)
    if isinstance(inner, onnx.ModelProto):
        return inner
    raise TypeError(f"cannot evaluate a {type(model).__name__}")


def goal_met(fp32: float | None, value: float | None, relative: float, higher_is_better: bool) -> bool:
    """Whether ``value`` is within ``relative`` of ``fp32`` (loss relative to |fp32|), with a 1e-9 slack."""
    if fp32 is None or value is None:
        return False
    loss = (fp32 - value) if higher_is_better else (value - fp32)
    return loss <= relative * abs(fp32) + 1e-9


def save_model_atomic(model: onnx.ModelProto, path: Path) -> None:
    """``onnx.save`` through a temporary file in the same folder, then an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomic(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` as JSON through a temporary file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2, default=str)
    os.replace(tmp, path)


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Node count per op type, subgraphs (If/Loop/Scan bodies) included."""
    return dict(sorted(Counter(node.op_type for node in all_nodes(model.graph)).items()))


_QUANTIZED_OPS = frozenset({"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger"})


def quantized_node_count(model: onnx.ModelProto) -> int:
    """Nodes that quantize (Q, dynamic Q, QLinear*, *Integer), subgraphs included: 0 = nothing was quantized."""
    return sum(
        1
        for node in all_nodes(model.graph)
        if node.op_type in _QUANTIZED_OPS or node.op_type.startswith("QLinear")
    )


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph``, those of If branches and loop bodies (GRAPH/GRAPHS attributes) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from all_nodes(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from all_nodes(sub)


def describe_model(model: onnx.ModelProto, result: dict[str, Any]) -> None:
    """Put the INT8 model's op histogram and quantized-node count into ``result`` (a note if it is 0)."""
    result["op_types"] = op_histogram(model)
    result["quantized_nodes"] = quantized_node_count(model)
    if result["quantized_nodes"] == 0:
        result["notes"].append("the returned model has no quantized node: it is the FP32 model")


def driver_arguments(description: str) -> argparse.ArgumentParser:
    """The CLI every driver shares."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--task-dir", required=True, type=Path, help="the suite task folder")
    parser.add_argument("--out", required=True, type=Path, help="where to write the result JSON")
    parser.add_argument("--model-out", required=True, type=Path, help="where to save the INT8 .onnx")
    parser.add_argument("--criterion-relative", type=float, default=0.01, help="tolerable relative loss")
    parser.add_argument("--workspace", type=Path, default=None, help="the tool's scratch folder")
    parser.add_argument(
        "--evaluate", type=Path, default=None, help="the suite's evaluate.py (default: ../evaluate.py)"
    )
    return parser


def run_driver(
    args: argparse.Namespace, tool: str, version: str, body: Callable[[dict[str, Any]], None]
) -> int:
    """Run ``body(result)`` and write ``result`` to ``args.out``, with ``error`` set if ``body`` raised.

    ``body`` fills the result dict as it goes, so a failure still reports how far the tool got.
    Returns the exit code: 0 when a model was produced, 1 otherwise.
    """
    result: dict[str, Any] = {
        "tool": tool,
        "version": version,
        "task": args.task_dir.name,
        "goal_met": False,
        "evaluations": 0,
        "wall_seconds": None,
        "accuracy": None,
        "fp32_accuracy": None,
        "model": None,
        "criterion_relative": args.criterion_relative,
        "notes": [],
    }
    try:
        body(result)
    except BaseException as error:  # noqa: BLE001 - recorded in the result, which the suite reports
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc()[-6000:]
        logger.error("%s failed: %s", tool, result["error"])
        if isinstance(error, KeyboardInterrupt):
            write_json_atomic(result, args.out)
            raise
    write_json_atomic(result, args.out)
    return 0 if result.get("model") else 1
