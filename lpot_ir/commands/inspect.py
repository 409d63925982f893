"""``lpot inspect MODEL``: inputs and outputs (shapes, dtypes), opsets, op histogram, parameter count."""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from lpot_ir.inspection import summarize_model

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``inspect`` subcommand."""
    parser = subparsers.add_parser(
        "inspect",
        help="show a model's inputs/outputs, opsets, op histogram and parameter count",
        description=__doc__,
    )
    parser.add_argument("model", help="the .onnx model")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the summary; LpotErrors (a bad model file) propagate to the CLI, which prints them."""

    summary = summarize_model(args.model)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print(summary.to_text())
    return 0
