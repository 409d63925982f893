"""Score a model on a suite task folder: the one evaluation every tool's run uses.

Importable from ANY venv (lpot-ir's, Intel Neural Compressor's, NNCF's): it imports only numpy, onnx,
onnxruntime and its sibling ``metrics.py`` (loaded by path, so this file works as a module of the
``suite`` package, as ``benchmarks.suite.evaluate`` and as a file imported by path), never lpot_ir.

A task folder (see docs/benchmarks.md, "Task folders") holds ``task.json``, ``model.onnx``,
``calib.npz`` and ``eval.npz``. Feeds are stored under ``<i:04d>/<input name>``; eval references under
``<i:04d>/__ref__/<key>``.

Recurrent tasks: ``task.json`` may have ``"carry": {"<output name>": "<input name>"}``. Then, when feed
``i`` has the reference ``__ref__/continues`` = 1 and feed ``i - 1`` was the feed run just before it,
the input is replaced by that output of feed ``i - 1`` (the model's own state flows through the
stream, so quantization error accumulates as it would in deployment). Every stored feed still holds
the FP32 model's state for that input, so each feed alone is complete (calibration, tools that feed
samples one by one).

Functions:
    load_task(task_dir) -> dict: the parsed task.json.
    load_feeds(path) -> list of feed dicts (model inputs only).
    load_references(path) -> list of reference dicts (the ``__ref__/`` entries, prefix removed).
    evaluate(model, task_dir, *, threads=1, indices=None) -> float: run the eval feeds through ONNX
        Runtime (one intra-op thread) and return the task's metric.
    evaluate_with(run, task_dir, *, indices=None) -> float: the same with your own runner
        (``run(feed) -> {output name: array}`` or a list of arrays in the model's output order), e.g.
        a framework model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REF",
    "load_task",
    "load_feeds",
    "load_references",
    "load_npz_entries",
    "evaluate",
    "evaluate_with",
    "run_feeds",
    "make_session",
    "metric_module",
]

REF = "__ref__"
"""The key segment that marks a reference (not a model input) in ``eval.npz``."""

Feed = dict[str, np.ndarray]
_CACHE: dict[tuple[str, int, int], tuple[list[Feed], list[Feed]]] = {}
_CACHE_FILES = 2


def metric_module() -> Any:
    """The sibling ``metrics.py`` (loaded by path, once)."""
    name = "_lpot_suite_metrics"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("metrics.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_task(task_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``task.json`` of a task folder."""
    path = Path(task_dir) / "task.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: build the task first (benchmarks/suite/tasks.py --build NAME)")
    return json.loads(path.read_text())


def load_npz_entries(path: str | os.PathLike[str]) -> tuple[list[Feed], list[Feed]]:
    """(feeds, references) of a ``calib.npz``/``eval.npz``, in index order; cached per file version."""
    path = os.fspath(path)
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _CACHE:
        feeds: dict[int, Feed] = {}
        refs: dict[int, Feed] = {}
        with np.load(path, allow_pickle=False) as data:
            for entry in data.files:
                index, _, rest = entry.partition("/")
                i = int(index)
                if rest.startswith(REF + "/"):
                    refs.setdefault(i, {})[rest[len(REF) + 1 :]] = data[entry]
                else:
                    feeds.setdefault(i, {})[rest] = data[entry]
        count = max([*feeds, *refs], default=-1) + 1
        if sorted(feeds) != list(range(count)):
            raise ValueError(f"{path}: feed indices must be 0..{count - 1} without gaps")
        while len(_CACHE) >= _CACHE_FILES:  # eval sets are large: keep the most recent files only
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = ([feeds[i] for i in range(count)], [refs.get(i, {}) for i in range(count)])
    return _CACHE[key]


def load_feeds(path: str | os.PathLike[str]) -> list[Feed]:
    """The list of feed dicts (``{input name: array}``) of a ``calib.npz`` or ``eval.npz``."""
    return list(load_npz_entries(path)[0])


def load_references(path: str | os.PathLike[str]) -> list[Feed]:
    """The list of reference dicts (``{key: array}``) of an ``eval.npz``, one per feed."""
    return list(load_npz_entries(path)[1])


def make_session(model: Any, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session (``threads`` intra-op threads, one inter-op thread, sequential) for
    a path, bytes or ``onnx.ModelProto``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def run_feeds(
    run: Callable[[Feed], Any],
    feeds: Sequence[Feed],
    references: Sequence[Mapping[str, np.ndarray]],
    output_names: Sequence[str],
    *,
    carry: Mapping[str, str] | None = None,
    indices: Sequence[int] | None = None,
) -> list[dict[str, np.ndarray]]:
    """Run ``run`` on the chosen feeds (all by default), carrying recurrent state as the task says.

    Returns:
        One ``{output name: array}`` per chosen feed, in the order of ``indices``.
    """
    chosen = list(range(len(feeds))) if indices is None else [int(i) for i in indices]
    results: list[dict[str, np.ndarray]] = []
    previous_index: int | None = None
    previous: dict[str, np.ndarray] | None = None
    for i in chosen:
        feed = feeds[i]
        if carry and previous is not None and previous_index == i - 1 and _continues(references[i]):
            feed = {**feed, **{dst: previous[src] for src, dst in carry.items()}}
        raw = run(feed)
        if isinstance(raw, Mapping):
            out = {str(k): np.asarray(v) for k, v in raw.items()}
        else:
            out = {name: np.asarray(v) for name, v in zip(output_names, raw, strict=False)}
        results.append(out)
        previous_index, previous = i, out
    return results


def _continues(ref: Mapping[str, np.ndarray]) -> bool:
    flag = ref.get("continues")
    return flag is not None and bool(np.asarray(flag).reshape(-1)[0])


def _score(task: Mapping[str, Any], outputs: Sequence[Mapping[str, np.ndarray]], refs: Sequence[Feed]) -> float:
    metric = metric_module().metric_function(task["metric"])
    return float(metric(outputs, refs, **task.get("metric_params", {})))


def evaluate_with(
    run: Callable[[Feed], Any],
    task_dir: str | os.PathLike[str],
    *,
    indices: Sequence[int] | None = None,
) -> float:
    """The task's metric over its eval feeds (or the ``indices`` subset), running each feed with ``run``.

    Args:
        run: ``feed -> {output name: array}``, or a list/tuple of arrays in the order of task.json's
            ``outputs``.
        task_dir: the task folder.
        indices: score only these eval feeds (in this order); default all.
    """
    task = load_task(task_dir)
    feeds, refs = load_npz_entries(Path(task_dir) / "eval.npz")
    output_names = [o[0] for o in task["outputs"]]
    outputs = run_feeds(run, feeds, refs, output_names, carry=task.get("carry"), indices=indices)
    chosen = range(len(feeds)) if indices is None else [int(i) for i in indices]
    return _score(task, outputs, [refs[i] for i in chosen])


def evaluate(
    model: Any,
    task_dir: str | os.PathLike[str],
    *,
    threads: int = 1,
    indices: Sequence[int] | None = None,
) -> float:
    """The task's metric of ``model`` (a path, bytes or ``onnx.ModelProto``) on the task's eval feeds,
    run by ONNX Runtime with ``threads`` intra-op threads (one by default).

    Inputs and outputs are matched to task.json's by name, or by position when the model's input names
    differ (a tool that re-exported the model); outputs are always taken in the model's order.
    """
    session = make_session(model, threads)
    task = load_task(task_dir)
    inputs = [i.name for i in session.get_inputs()]
    task_inputs = [i[0] for i in task["inputs"]]
    # A tool may rename inputs/outputs (a framework export): match them by position then.
    rename = {} if set(inputs) == set(task_inputs) else dict(zip(task_inputs, inputs, strict=False))
    outputs = [o[0] for o in task["outputs"]]

    def run(feed: Feed) -> dict[str, np.ndarray]:
        feed = {rename.get(k, k): v for k, v in feed.items()}
        return dict(zip(outputs, session.run(None, feed), strict=False))

    return evaluate_with(run, task_dir, indices=indices)
