"""``lpot tune conf.yaml -m MODEL``: accuracy-driven tuning driven by an LPOT YAML.

The YAML gives the evaluation (``evaluation.accuracy``: dataloader + metric), the calibration data
(``quantization.calibration.dataloader``, or ``--calib DATA``), the tuning space, the strategy, the
accuracy criterion, the exit policy and the workspace. The best model, its recipe, the history, the
report (``report.txt``, ``tuning.png``) and the per-op decisions are written to the workspace.
``--resume`` continues a killed run from the workspace's history without re-evaluating finished trials
(a workspace without a history yet, killed before its FP32 baseline was recorded, starts a new run).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from lpot_ir.backends.onnxruntime.batching import parse_batch_axes
from lpot_ir.calibration import load_calibration_files
from lpot_ir.commands.quantize import add_batch_axis_argument
from lpot_ir.config import load_config
from lpot_ir.ir.model import load_model
from lpot_ir.quantization import Quantization
from lpot_ir.tuning.tensorboard import TENSORBOARD_DIR, tensorboard_command

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``tune`` subcommand."""
    parser = subparsers.add_parser(
        "tune",
        help="accuracy-driven tuning from an LPOT YAML",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("config", help="the LPOT YAML configuration")
    parser.add_argument("-m", "--model", required=True, help="the FP32 model (.onnx, or a framework model file)")
    parser.add_argument("--calib", help="calibration data (.npy, .npz or a folder of them) instead of the YAML's dataloader")
    parser.add_argument("-w", "--workspace", help="override tuning.workspace.path")
    parser.add_argument("--resume", action="store_true", help="continue the run recorded in the workspace's history")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_batch_axis_argument(parser)
    parser.set_defaults(func=run)
    return parser


def _with_workspace(config: Any, path: str | None, resume: bool) -> Any:
    workspace = config.tuning.workspace
    if path is not None:
        workspace = dataclasses.replace(workspace, path=path)
    history = Path(workspace.path) / "history.jsonl"
    if resume and not history.is_file():  # killed before the FP32 baseline was recorded: nothing to resume
        logger.warning("--resume: no tuning history in %s yet; starting a new run there", workspace.path)
    elif resume:
        workspace = dataclasses.replace(workspace, resume=str(history))
    if workspace is config.tuning.workspace:
        return config
    return dataclasses.replace(config, tuning=dataclasses.replace(config.tuning, workspace=workspace))


def run(args: argparse.Namespace) -> int:
    """Run ``lpot tune``; LpotErrors propagate to the CLI, which prints them and exits 2."""

    config = _with_workspace(load_config(args.config), args.workspace, args.resume)

    batch_axes = parse_batch_axes(args.batch_axis)
    if batch_axes:
        model = dataclasses.replace(config.model, batch_axes={**config.model.batch_axes, **batch_axes})
        config = dataclasses.replace(config, model=model)
    quantizer = Quantization(config)
    quantizer.progress = not args.no_progress
    quantizer.model = args.model
    if args.calib:
        quantizer.calib_dataloader = load_calibration_files(
            args.calib, load_model(args.model), batch_axes=dict(config.model.batch_axes) or None
        )
    quantizer.fit()
    outcome = quantizer.outcome
    best = outcome.best
    lines = []
    if outcome.baseline_accuracy is not None:
        lines.append(f"FP32 accuracy:   {outcome.baseline_accuracy:.4f}")
    if best is not None and best.accuracy is not None:
        lines.append(f"INT8 accuracy:   {best.accuracy:.4f} (trial {best.index})")
    if outcome.relative_loss is not None:
        lines.append(f"relative loss:   {outcome.relative_loss:.2%} ({'meets' if outcome.met_goal else 'does NOT meet'} the criterion)")
    lines.append(f"trials:          {len(outcome.trials)} ({outcome.evaluated} evaluated, {outcome.replayed} resumed); {outcome.stop_reason}")
    if outcome.speedup is not None:
        verdict = "" if outcome.faster_than_fp32 else " (NOT faster than FP32: for speed, keep the FP32 model)"
        lines.append(f"INT8 speedup:    {outcome.speedup:.2f}x{verdict}")
    lines.append(f"wall time:       {outcome.wall_seconds:.1f} s")
    for name in ("model", "report", "plot", "decisions"):
        if name in outcome.files:
            lines.append(f"{name + ':':<16} {outcome.files[name]}")
    if (Path(outcome.workspace) / TENSORBOARD_DIR).is_dir():
        lines.append(f"{'tensorboard:':<16} {' '.join(tensorboard_command(outcome.workspace))}")
    if outcome.warning:
        lines.append(f"WARNING: {outcome.warning}")
    print("\n".join(lines))
    return 0
