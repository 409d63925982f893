"""``lpot optimize MODEL -o OUT``: run the FP32 pipeline (cleanup and fusion) and save the result atomically.

Prints what each rule changed and the node count before and after. The input file is never overwritten
unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lpot_ir.errors import ConfigError
from lpot_ir.ir.model import all_nodes, load_model, save_model
from lpot_ir.passes.base import run_pipeline

__all__ = ["PIPELINE", "add_parser", "run"]

logger = logging.getLogger(__name__)

PIPELINE = "fp32-optimize"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``optimize`` subcommand."""
    parser = subparsers.add_parser(
        "optimize",
        help="apply the FP32 cleanup/fusion pipeline and save the model",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("model", help="the .onnx model")
    parser.add_argument("-o", "--output", required=True, help="where to write the optimized .onnx")
    parser.add_argument("--force", action="store_true", help="allow OUT to be the input file (overwrite it)")
    return parser


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (b.exists() and a.exists() and a.samefile(b))
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    """Optimize ``args.model`` into ``args.output``; LpotErrors propagate to the CLI."""

    source, output = Path(args.model), Path(args.output)
    if _same_file(source, output) and not args.force:
        raise ConfigError(
            f"The output '{output}' is the input model itself; lpot does not overwrite your model. Choose another "
            "path with -o, or pass --force to replace the input file (it is written atomically)."
        )
    model = load_model(source)
    before = sum(1 for _ in all_nodes(model))
    report = run_pipeline(model, PIPELINE)
    after = sum(1 for _ in all_nodes(report.model))
    saved = save_model(report.model, output)
    print(report)
    print()
    print(f"nodes: {before} -> {after} ({after - before:+d})")
    print(f"saved: {saved}")
    return 0
