"""``lpot tensorboard WORKSPACE``: the command that opens a tuning run's TensorBoard files (``--run`` runs it).

A tuning run with ``tuning.tensorboard: true`` writes one TensorBoard run per trial under
``WORKSPACE/tensorboard/trial_<n>/`` (see docs/tensorboard.md). This prints
``tensorboard --logdir WORKSPACE/tensorboard``; with ``--run`` it starts TensorBoard (with the
interpreter lpot-ir runs on) and waits until it is stopped.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import subprocess
import sys
from pathlib import Path

from lpot_ir.errors import ConfigError
from lpot_ir.tuning.tensorboard import TENSORBOARD_DIR, tensorboard_command

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tensorboard`` on the ``lpot`` command's subparsers."""
    parser = subparsers.add_parser(
        "tensorboard",
        help="print (or run) the command that opens a tuning workspace's TensorBoard files",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("workspace", help="the tuning workspace (tuning.workspace.path)")
    parser.add_argument("--run", action="store_true", help="start TensorBoard instead of printing the command")
    parser.add_argument("--port", type=int, default=None, help="TensorBoard's port (default 6006)")
    parser.set_defaults(command="tensorboard")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print or run the TensorBoard command for ``args.workspace``."""
    logdir = Path(args.workspace) / TENSORBOARD_DIR
    trials = sorted(p.name for p in logdir.glob("trial_*") if p.is_dir()) if logdir.is_dir() else []
    if not trials:
        raise ConfigError(
            f"No TensorBoard runs in '{logdir}': tune with tuning.tensorboard: true (YAML) to write one per trial "
            f"into <workspace>/{TENSORBOARD_DIR}/trial_<n>/."
        )
    command = tensorboard_command(args.workspace) + (["--port", str(args.port)] if args.port else [])
    if not args.run:
        print(f"{shlex.join(command)}    # {len(trials)} trial run(s): {', '.join(trials[:5])}{' ...' if len(trials) > 5 else ''}")
        return 0
    try:
        import tensorboard  # noqa: F401  (checks it is installed; it is started as a module below)
    except ImportError:
        raise ConfigError("TensorBoard is not installed: pip install tensorboard (make install installs it).") from None
    return subprocess.call([sys.executable, "-m", "tensorboard.main", *command[1:]])
