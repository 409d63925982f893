"""``lpot quantize MODEL -c conf.yaml -o out.onnx --calib DATA``: apply one configuration, no tuning.

``-c`` takes an LPOT YAML (its ``quantization`` section: approach, format, the first value of each
``model_wise`` list, ``op_wise`` and ``optype_wise`` entries, the first calibration sampling size) or
a :class:`~lpot_ir.ir.quant.TuningConfig` YAML/JSON (``approach``, ``format``, ``global``,
``overrides``). Without ``-c`` this CPU's safe default is used. ``--calib`` is a ``.npy`` file, an
``.npz`` file or a folder of them, one array per model input (see ``docs/calibration.md``: each input
keeps its samples on its batch axis; ``--batch-axis NAME=AXIS`` where the model's dimension names do not
tell). The quantized model is written with its recipe (``<stem>.recipe.json``) beside it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lpot_ir.backends.onnxruntime.batching import parse_batch_axes
from lpot_ir.backends.onnxruntime.capabilities import default_op_config
from lpot_ir.calibration import load_calibration_files
from lpot_ir.config import load_config
from lpot_ir.errors import ConfigError, paragraph
from lpot_ir.frontends import resolve_model
from lpot_ir.ir.quant import (
    Approach,
    DType,
    OpOverride,
    OpQuantConfig,
    QuantFormat,
    QuantSpec,
    ScopeKind,
    SpecOverride,
    TuningConfig,
)
from lpot_ir.quantizer import ModelQuantizer, apply_recipe, default_config

__all__ = ["add_parser", "add_batch_axis_argument", "run", "load_tuning_config", "tuning_config_from_lpot"]

logger = logging.getLogger(__name__)

_TUNING_KEYS = {"global", "overrides", "calib_sampling_size"}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``quantize`` subcommand."""
    parser = subparsers.add_parser(
        "quantize",
        help="quantize a model with one configuration (no tuning)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument(
        "model", help="the FP32 model: .onnx, a TorchScript file, a SavedModel folder, a frozen .pb, .keras/.h5, "
        "or an MXNet -symbol.json"
    )
    parser.add_argument("--framework", help="override framework detection (onnx, pytorch, tensorflow, keras, mxnet)")
    parser.add_argument("--params", help="MXNet: the .params file (default: <prefix>-0000.params beside the symbol)")
    parser.add_argument("-c", "--config", help="LPOT YAML or TuningConfig YAML/JSON (default: this CPU's safe default)")
    parser.add_argument("-o", "--output", required=True, help="where to write the quantized .onnx (recipe beside it)")
    parser.add_argument("--calib", help="calibration data: .npy, .npz or a folder of them (static approach)")
    parser.add_argument("--approach", choices=[a.value for a in Approach], help="override the approach")
    parser.add_argument("--format", choices=[f.value for f in QuantFormat], help="override the format (qdq/qoperator)")
    parser.add_argument("--recipe", help="apply a saved recipe instead of calibrating (no --calib needed)")
    add_batch_axis_argument(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``lpot quantize``; return the exit code (LpotErrors propagate to the CLI, which prints them)."""

    output = Path(args.output)

    batch_axes = parse_batch_axes(args.batch_axis) or None
    example = _ExampleInputs(args.calib) if args.calib else None
    converted = resolve_model(args.model, framework=args.framework, calib_dataloader=example, params=args.params)
    model = converted.model
    name_map = converted.aliases_map
    if converted.framework != "onnx":
        print(f"Converted the {converted.framework} model to ONNX: " + "; ".join(converted.notes))
    if args.recipe:
        qmodel = apply_recipe(model, args.recipe, name_map=name_map)
    else:
        config = load_tuning_config(args.config) if args.config else default_config()
        overrides: dict[str, Any] = {}
        if args.approach:
            overrides["approach"] = Approach(args.approach)
        if args.format:
            overrides["format"] = QuantFormat(args.format)
        if overrides:
            config = TuningConfig(**{**_fields(config), **overrides})
        quantizer = ModelQuantizer(
            model, approach=config.approach, progress=True, name_map=name_map, batch_axes=batch_axes
        )
        if config.approach is not Approach.DYNAMIC:
            if not args.calib:
                raise ConfigError(
                    f"Static quantization of '{args.model}' needs calibration data: pass --calib DATA (a .npy "
                    "file, an .npz file or a folder of them), or --approach post_training_dynamic_quant."
                )
            quantizer.calib_dataloader = load_calibration_files(
                args.calib, quantizer.fp32_model, batch_axes=batch_axes
            )
        qmodel = quantizer.quantize(config)
    path = qmodel.save(output)
    fp32 = qmodel.fp32_nodes
    print(f"Quantized {len(qmodel.quantized_nodes)} node(s); {len(fp32)} covered node(s) stay FP32.")
    for name, reason in list(fp32.items())[:20]:
        print(f"  FP32 {name}: {reason}")
    if len(fp32) > 20:
        print(f"  ... and {len(fp32) - 20} more (see the decisions in the Python API)")
    print(f"Wrote {path} and {path.with_name(path.stem + '.recipe.json')}")
    return 0


def add_batch_axis_argument(parser: argparse.ArgumentParser) -> None:
    """``--batch-axis NAME=AXIS`` (repeatable), shared by ``quantize`` and ``tune``."""
    parser.add_argument(
        "--batch-axis",
        action="append",
        default=[],
        metavar="NAME=AXIS",
        help="which axis of input NAME holds the batch (NAME=none: not batched), where the model's dimension "
        "names do not tell; repeat per input",
    )


class _ExampleInputs:
    """One sample of the calibration data, read only if a framework exporter asks for an example input."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __iter__(self) -> Any:
        sample = _first_sample(self.path)
        return iter([] if sample is None else [sample])


def _first_sample(path: str) -> Any:
    """One sample of the calibration data (the example input a framework exporter needs), or ``None``."""

    root = Path(path)
    files = sorted(root.glob("*.np[yz]")) if root.is_dir() else [root]
    if not files or not files[0].is_file():
        return None
    data = np.load(files[0])
    if isinstance(data, np.ndarray):
        return data[:1] if data.ndim else data
    with data:
        arrays = tuple(data[key][:1] if data[key].ndim else data[key] for key in data.files)
    return arrays[0] if len(arrays) == 1 else arrays


def _fields(config: TuningConfig) -> dict[str, Any]:
    return {
        "approach": config.approach,
        "format": config.format,
        "global_config": config.global_config,
        "overrides": config.overrides,
        "calib_sampling_size": config.calib_sampling_size,
        "recovery": config.recovery,
    }


def load_tuning_config(path: str | Path) -> TuningConfig:
    """Read ``path`` as a TuningConfig YAML/JSON, or as an LPOT YAML mapped to a TuningConfig.

    Raises:
        ConfigError: the file is missing or fits neither format.
    """

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"Cannot read configuration '{p}': {exc.strerror or exc}. Check the path.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"Configuration '{p}' is not valid YAML: {paragraph(exc)}. Fix the syntax and try again."
        ) from None
    if isinstance(data, dict) and data.keys() & _TUNING_KEYS and not data.keys() & {"model", "quantization"}:
        try:
            return TuningConfig.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"Configuration '{p}' looks like a TuningConfig (it has {sorted(data.keys() & _TUNING_KEYS)}) but "
                f"does not fit it: {exc}. See docs/quantization.md for the format."
            ) from None

    return tuning_config_from_lpot(load_config(p))


def _first(values: tuple[Any, ...], default: Any) -> Any:
    return values[0] if values else default


def _spec(section: Any, default: QuantSpec) -> QuantSpec:
    dtype = _first(tuple(d for d in section.dtype if d is not DType.FP32), default.dtype)
    return QuantSpec(
        dtype=dtype,
        scheme=_first(section.scheme, default.scheme),
        granularity=_first(section.granularity, default.granularity),
        algorithm=_first(section.algorithm, default.algorithm),
        reduce_range=default.reduce_range,
    )


def _spec_override(section: Any) -> SpecOverride | None:
    values = {
        "dtype": _first(tuple(d for d in section.dtype if d is not DType.FP32), None),
        "scheme": _first(section.scheme, None),
        "granularity": _first(section.granularity, None),
        "algorithm": _first(section.algorithm, None),
    }
    return SpecOverride(**values) if any(v is not None for v in values.values()) else None


def _entry_override(entry: Any) -> OpOverride:
    if entry.fp32:
        return OpOverride(fp32=True)
    return OpOverride(fp32=False, activation=_spec_override(entry.activation), weight=_spec_override(entry.weight))


def tuning_config_from_lpot(config: Any) -> TuningConfig:
    """Map an LPOT :class:`~lpot_ir.config.Config` to one TuningConfig: the first value of every list."""

    quant = config.quantization
    base = default_op_config()
    model_wise = quant.model_wise
    if model_wise.activation.fp32_only:
        global_config = OpQuantConfig(fp32=True)
    else:
        global_config = OpQuantConfig(
            activation=_spec(model_wise.activation, base.activation), weight=_spec(model_wise.weight, base.weight)
        )
    tuning = TuningConfig(
        approach=quant.approach or Approach.STATIC,
        format=quant.format or QuantFormat.QDQ,
        global_config=global_config,
        calib_sampling_size=int(_first(quant.calibration.sampling_size, 100)),
        recovery=quant.recipes.recovery(),
    )
    for op_type, entry in quant.optype_wise.items():
        tuning = tuning.with_override(ScopeKind.OP_TYPE, op_type, _entry_override(entry))
    for name, entry in quant.op_wise.items():
        kind = ScopeKind.NAME_REGEX if any(ch in name for ch in "*+?[]()|^$\\") else ScopeKind.NODE_NAME
        tuning = tuning.with_override(kind, name, _entry_override(entry))
    return tuning
