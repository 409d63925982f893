"""``lpot benchmark MODEL``: latency (p50/p90/p99) and throughput in ONNX Runtime on synthetic inputs.

Inputs are random arrays of the model's dtypes and shapes; a dynamic first axis takes ``--batch-size`` and
other dynamic axes take 1, unless ``--shape NAME:1x3x224x224`` gives the full shape. With
``--num-instances N`` each instance runs in its own process pinned to ``--cores-per-instance`` cores.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any

from lpot_ir.backends.onnxruntime.benchmarking import DEFAULT_SYNTHETIC_ITERATIONS, benchmark_model
from lpot_ir.backends.onnxruntime.session import input_specs
from lpot_ir.backends.onnxruntime.synthetic import parse_shape_overrides, synthetic_shapes
from lpot_ir.errors import DataError
from lpot_ir.ir.model import load_model

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``benchmark`` subcommand."""

    parser = subparsers.add_parser(
        "benchmark",
        help="measure latency and throughput in ONNX Runtime with synthetic inputs",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("model", help="the .onnx model")
    parser.add_argument("--batch-size", type=_positive, default=1, help="size of a dynamic first axis (default 1)")
    parser.add_argument("--warmup", type=_non_negative, default=5, help="untimed runs per instance (default 5)")
    parser.add_argument(
        "--iterations", type=_positive, default=DEFAULT_SYNTHETIC_ITERATIONS,
        help=f"timed runs per instance (default {DEFAULT_SYNTHETIC_ITERATIONS})",
    )
    parser.add_argument(
        "--cores-per-instance", type=_positive, default=None,
        help="cores (intra-op threads) per instance (default: available cores / instances)",
    )
    parser.add_argument("--num-instances", type=_positive, default=1, help="instances side by side (default 1)")
    parser.add_argument(
        "--shape", action="append", default=[], metavar="NAME:DIMS",
        help="full shape of an input, e.g. data:1x3x224x224 (repeatable)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    """Benchmark ``args.model``; LpotErrors propagate to the CLI."""

    model = load_model(args.model, target_opset=None, infer=False)  # a clear error for a bad file
    specs = input_specs(model)
    shapes = parse_shape_overrides(args.shape, [s.name for s in specs])
    try:
        result = benchmark_model(
            args.model,  # the file itself: ONNX Runtime finds external data beside it
            batch_size=args.batch_size,
            warmup=args.warmup,
            iterations=args.iterations,
            cores_per_instance=args.cores_per_instance,
            num_instances=args.num_instances,
            shapes=shapes,
        )
    except DataError as exc:
        used = ", ".join(
            f"{name}:{'x'.join(map(str, shape))}"
            for name, shape in synthetic_shapes(specs, args.batch_size, shapes).items()
        )
        raise DataError(
            f"{exc} The synthetic inputs had shapes {used}; if the model needs other sizes on its dynamic axes, "
            "give them with --shape NAME:DIMS."
        ) from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"model: {args.model}")
        print(result)
    return 0
