"""``lpot summarize MODEL``: print a model's likely input and output nodes with shapes and dtypes.

Works on every supported format: ``.onnx``, TorchScript ``.pt``, TensorFlow SavedModel folders and frozen
``.pb`` graphs (the candidates for ``model.inputs`` / ``model.outputs``, as TensorFlow's summarize_graph
listed them), Keras ``.keras``/``.h5`` and MXNet ``-symbol.json``.
"""

from __future__ import annotations

import argparse
import json
import logging

from lpot_ir.frontends.summary import summarize

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``summarize`` on the ``lpot`` command's subparsers."""
    parser = subparsers.add_parser(
        "summarize",
        help="list a model's likely inputs and outputs (shapes, dtypes)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("model", help="model file or SavedModel folder")
    parser.add_argument(
        "--framework",
        default=None,
        help="override the detected framework (onnx, pytorch, tensorflow, keras, mxnet)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.set_defaults(command="summarize")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the summary of ``args.model``; 0 on success (errors propagate as ``LpotError``)."""

    summary = summarize(args.model, framework=args.framework)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, default=str))
    else:
        print(summary.to_text())
    return 0
