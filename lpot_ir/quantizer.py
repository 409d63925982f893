"""The compile-style quantization API: ``quantize(model, config, calib_dataloader) -> QuantizedModel``.

:class:`ModelQuantizer` is what one tuning trial calls. Everything expensive is computed once per
instance: loading (opset upgrade, names), the ``fp32-optimize`` pipeline, the capability analysis, and
calibration (once per (algorithm set, sampling size), over every tensor any configuration could need).
Applying one :class:`~lpot_ir.ir.quant.TuningConfig` is then cheap: deserialize the optimized model,
annotate, insert Q/DQ (or rewrite dynamically), optionally lower to QOperator, serialize.

A configuration whose ``recovery`` turns on FP32 rewrites (cross-layer equalization, SmoothQuant) is
applied to a *prepared* model: a copy of the optimized model rewritten once per setting (the rewrites
read per-channel ranges from one calibration of the FP32 model), then calibrated on its own (cached per
prepared model, since its activations differ).

A :class:`QuantizedModel` carries its :class:`Recipe`: the configuration, the exact ranges used and the
factors of the recovery rewrites. :func:`apply_recipe` replays a recipe on the FP32 model and reproduces
the INT8 model bit for bit, without calibration data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from lpot_ir.backends.onnxruntime.capabilities import (
    OpCategory,
    QuantizableNode,
    default_op_config,
    quantizable_nodes,
)
from lpot_ir.errors import LpotError, QuantizationError
from lpot_ir.fileio import atomic_write
from lpot_ir.ir.model import load_model, model_digest, save_model, to_proto
from lpot_ir.ir.quant import (
    Approach,
    CalibAlgorithm,
    Fp32Reason,
    OpQuantConfig,
    QuantFormat,
    TensorRange,
    TuningConfig,
)
from lpot_ir.passes.quantization.pipeline import quantize_model
from lpot_ir.passes.quantization.recovery.prepare import (
    PrepareResult,
    PrepareSettings,
    factors_from_dict,
    factors_to_dict,
    prepare_model,
    recovery_statistics,
)
from lpot_ir.passes.quantization.recovery.report import SiteFactors

__all__ = [
    "RECIPE_FORMAT_VERSION",
    "NodeDecision",
    "Recipe",
    "QuantizedModel",
    "ModelQuantizer",
    "quantize",
    "apply_recipe",
    "default_config",
    "recipe_path_for",
]

logger = logging.getLogger(__name__)

RECIPE_FORMAT_VERSION = 1


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("lpot-ir")
    except Exception:  # not installed as a distribution (running from a source tree)
        return "0.0.0+unknown"


def default_config(approach: Approach | str = Approach.STATIC, fmt: QuantFormat | str = QuantFormat.QDQ) -> TuningConfig:
    """The safe default configuration for this CPU (see :func:`~...capabilities.default_op_config`)."""
    return TuningConfig(approach=Approach(approach), format=QuantFormat(fmt), global_config=default_op_config())


@dataclass(frozen=True)
class NodeDecision:
    """What happened to one node the capability table covers.

    Attributes:
        name: node name.
        op_type: op type.
        quantized: whether it runs in INT8 (annotated and rewritten).
        config: its effective configuration (``None`` when it cannot be quantized at all).
        reason: why it stays FP32 (``None`` when quantized).
        note: adjustments made to fit what the node supports (e.g. per_channel -> per_tensor).
        aliases: the framework's name(s) for the node (e.g. the PyTorch module path ``layer1.0.conv1``).
    """

    name: str
    op_type: str
    quantized: bool
    config: OpQuantConfig | None = None
    reason: Fp32Reason | None = None
    note: str = ""
    aliases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op_type": self.op_type, "quantized": self.quantized}
        if self.aliases:
            out["aliases"] = list(self.aliases)
        if self.config is not None:
            out["config"] = self.config.to_dict()
        if self.reason is not None:
            out["reason"] = {"category": self.reason.category.value, "detail": self.reason.detail}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Recipe:
    """Everything needed to rebuild a quantized model from its FP32 model, without data.

    Attributes:
        fp32_model_digest: content hash of the loaded FP32 model the recipe was made from.
        config: the tuning configuration.
        ranges: value name -> the activation range used.
        lpot_ir_version: the version that wrote the recipe.
        format_version: the recipe file format.
        factors: per-channel factors of the recovery rewrites (technique -> site -> factors), replayed
            as they are, so the prepared model does not depend on calibration data or on the CPU.
    """

    fp32_model_digest: str
    config: TuningConfig
    ranges: Mapping[str, TensorRange] = field(default_factory=dict)
    lpot_ir_version: str = field(default_factory=_version)
    format_version: int = RECIPE_FORMAT_VERSION
    factors: Mapping[str, Mapping[str, SiteFactors]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "format_version": self.format_version,
            "fp32_model_digest": self.fp32_model_digest,
            "config": self.config.to_dict(),
            "ranges": {name: r.to_list() for name, r in sorted(self.ranges.items())},
            "lpot_ir_version": self.lpot_ir_version,
        }
        factors = factors_to_dict(self.factors)
        if factors:  # omitted without recovery rewrites: plain recipes are unchanged
            out["recovery_factors"] = factors
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "the recipe") -> Recipe:
        try:
            version = int(data.get("format_version", 0))
            if version != RECIPE_FORMAT_VERSION:
                raise QuantizationError(
                    f"{source} has recipe format_version {version}; this lpot-ir reads version "
                    f"{RECIPE_FORMAT_VERSION}. Re-create the recipe with this version (quantize the FP32 model again)."
                )
            return cls(
                fp32_model_digest=str(data["fp32_model_digest"]),
                config=TuningConfig.from_dict(data["config"]),
                ranges={str(k): TensorRange.from_list(v) for k, v in dict(data.get("ranges", {})).items()},
                lpot_ir_version=str(data.get("lpot_ir_version", "")),
                format_version=version,
                factors=factors_from_dict(data.get("recovery_factors") or {}),
            )
        except LpotError:
            raise
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise QuantizationError(
                f"{source} is not a valid lpot-ir recipe ({type(exc).__name__}: {exc}). A recipe is the "
                "'<model>.recipe.json' written beside a quantized model by QuantizedModel.save()."
            ) from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the recipe as JSON, atomically."""
        return atomic_write(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Recipe:
        """Read a recipe JSON file (``QuantizationError`` if it is missing or malformed)."""
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except OSError as exc:
            raise QuantizationError(f"Cannot read recipe '{p}': {exc.strerror or exc}. Check the path.") from None
        except json.JSONDecodeError as exc:
            raise QuantizationError(
                f"Recipe '{p}' is not valid JSON (line {exc.lineno}: {exc.msg}); it may be truncated. "
                "Re-create it by quantizing the FP32 model again."
            ) from None
        if not isinstance(data, dict):
            raise QuantizationError(f"Recipe '{p}' holds a JSON {type(data).__name__}, not a recipe object.")
        return cls.from_dict(data, source=f"Recipe '{p}'")


def recipe_path_for(model_path: str | os.PathLike[str]) -> Path:
    """The recipe file saved beside a model: ``<stem>.recipe.json``."""
    p = Path(model_path)
    return p.with_name(f"{p.stem}.recipe.json")


@dataclass
class QuantizedModel:
    """A quantized model, the configuration and recipe that made it, and a decision per covered node.

    Attributes:
        model: the quantized ``onnx.ModelProto``.
        config: the tuning configuration applied.
        recipe: the configuration plus the ranges used (replay with :func:`apply_recipe`).
        decisions: node name -> :class:`NodeDecision`, for every node the capability table covers.
    """

    model: onnx.ModelProto
    config: TuningConfig
    recipe: Recipe
    decisions: dict[str, NodeDecision] = field(default_factory=dict)
    recovery: PrepareResult | None = None
    """What the recovery rewrites did (sites applied and declined), when the configuration turned any on."""

    @property
    def fp32_nodes(self) -> dict[str, Fp32Reason]:
        """Covered nodes that stay FP32, with the reason."""
        return {n: d.reason for n, d in self.decisions.items() if not d.quantized and d.reason is not None}

    @property
    def quantized_nodes(self) -> list[str]:
        """Names of the nodes that run in INT8."""
        return [n for n, d in self.decisions.items() if d.quantized]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` and its recipe to ``<stem>.recipe.json`` beside it (both atomic)."""
        dest = save_model(self.model, path)
        self.recipe.save(recipe_path_for(dest))
        return dest

    def export(self, target: str = "onnx", path: str | os.PathLike[str] | None = None) -> Any:
        """Export the quantized model for another runtime.

        Args:
            target: ``"onnx"`` (the portable Q/DQ model; :meth:`save`), ``"pytorch"`` (a ``torch.nn.Module``
                that runs without ONNX Runtime) or ``"tensorflow"`` (a SavedModel folder).
            path: where to write (required for ``onnx`` and ``tensorflow``; ignored for ``pytorch``).

        Returns:
            The written path, or the ``torch.nn.Module`` for ``pytorch``.
        """
        from lpot_ir import frontends

        kind = target.lower()
        if kind == "pytorch":
            return frontends.export_to_pytorch(self.model)
        if kind not in ("onnx", "tensorflow"):
            raise QuantizationError(
                f"Unknown export target {target!r}. Use 'onnx' (the Q/DQ model), 'pytorch' (a torch.nn.Module) or "
                "'tensorflow' (a SavedModel folder)."
            )
        if path is None:
            raise QuantizationError(f"export({target!r}) writes files: pass path=..., e.g. export({target!r}, 'out').")
        if kind == "onnx":
            return self.save(path)
        return frontends.export_to_tensorflow(self.model, path)


class ModelQuantizer:
    """Quantizes one FP32 model under many configurations, computing the expensive parts once.

    Args:
        model: a path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``.
        calib_dataloader: calibration batches (static approach); see :func:`lpot_ir.calibration.calibrate`.
        approach: the default approach (a configuration's own ``approach`` wins).
        workspace: folder for the calibration cache (``<workspace>/calibration``), or ``None``.
        name_map: node name -> framework name(s), usable in configuration scopes.
        optimize: run the ``fp32-optimize`` pipeline first.
        progress: show calibration progress.

    Attributes:
        fp32_model: the loaded, optimized FP32 model (do not modify).
        fp32_digest: content hash of the loaded (not yet optimized) model, recorded in recipes.
        nodes: quantizable nodes for ``approach``.
        unsupported: covered nodes that cannot be quantized, with reasons.
    """

    def __init__(
        self,
        model: Any,
        calib_dataloader: Iterable[Any] | None = None,
        *,
        approach: Approach | str = Approach.STATIC,
        workspace: str | os.PathLike[str] | None = None,
        name_map: Mapping[str, str | Sequence[str]] | None = None,
        optimize: bool = True,
        progress: bool = False,
    ) -> None:
        loaded = load_model(model)
        self.fp32_digest = model_digest(loaded)
        self.fp32_model = _optimize(loaded) if optimize else loaded
        self._fp32_proto = to_proto(self.fp32_model)
        self.approach = Approach(approach)
        self.calib_dataloader = calib_dataloader
        self.workspace = Path(workspace) if workspace is not None else None
        self.name_map = name_map
        self.progress = progress
        self._nodes: dict[Approach, tuple[list[QuantizableNode], dict[str, Fp32Reason]]] = {}
        self._calibrations: dict[tuple[frozenset[CalibAlgorithm], int], Any] = {}
        self._weight_cache: dict[tuple[object, ...], Any] = {}  # quantized weights, shared by every config
        self._prepared: dict[tuple[PrepareSettings, int | None], _PreparedModel] = {}
        self._channel_stats: dict[int, Any] = {}
        self.nodes, self.unsupported = self.nodes_for(self.approach)

    def _aliases(self, name: str) -> tuple[str, ...]:
        alias = (self.name_map or {}).get(name)
        if alias is None:
            return ()
        return (alias,) if isinstance(alias, str) else tuple(alias)

    def nodes_for(self, approach: Approach | str) -> tuple[list[QuantizableNode], dict[str, Fp32Reason]]:
        """Quantizable nodes and unsupported reasons for ``approach`` (cached)."""
        approach = Approach(approach)
        if approach is Approach.QAT:
            approach = Approach.STATIC
        if approach not in self._nodes:
            self._nodes[approach] = quantizable_nodes(self.fp32_model, approach, name_map=self.name_map)
        return self._nodes[approach]

    # -- calibration -------------------------------------------------------------------------------

    def calibration_tensors(self) -> list[str]:
        """Every activation any static configuration could need a range for."""
        return _calibration_tensors(self.fp32_model, self.nodes_for(Approach.STATIC)[0])

    def _no_data_error(self) -> QuantizationError:
        return QuantizationError(
            "Static quantization needs calibration data, but no calib_dataloader was given. Pass "
            "calib_dataloader= (Python) or --calib DATA (CLI), or use approach post_training_dynamic_quant."
        )

    def calibration(self, algorithms: Iterable[CalibAlgorithm], sampling_size: int) -> Any:
        """The :class:`~lpot_ir.calibration.CalibrationResult` for these algorithms and size (cached)."""
        algos = frozenset(CalibAlgorithm(a) for a in algorithms) | {CalibAlgorithm.MINMAX}
        for (cached_algos, size), result in self._calibrations.items():
            if size == sampling_size and algos <= cached_algos:
                return result
        result = self._calibrate(self.fp32_model, self.calibration_tensors(), algos, sampling_size)
        self._calibrations[(algos, sampling_size)] = result
        return result

    def _calibrate(
        self, model: ir.Model, tensors: list[str], algos: frozenset[CalibAlgorithm], sampling_size: int,
        channel_axes: Mapping[str, int] | None = None,
    ) -> Any:
        from lpot_ir.calibration import calibrate

        if self.calib_dataloader is None:
            raise self._no_data_error()
        cache_dir = self.workspace / "calibration" if self.workspace is not None else None
        ordered: list[CalibAlgorithm] = sorted(algos, key=lambda a: a.value)
        return calibrate(
            model,
            self.calib_dataloader,
            tensors=tensors,
            algorithms=ordered,
            sampling_size=sampling_size,
            progress=self.progress,
            cache_dir=cache_dir,
            channel_axes=channel_axes,
        )

    # -- recovery rewrites (prepared models) -------------------------------------------------------

    def channel_statistics(self, sampling_size: int) -> Any:
        """Per-channel ranges of the FP32 model's activations the recovery rewrites read (one run, cached).

        ``None`` when there is no calibration data.
        """
        if self.calib_dataloader is None:
            return None
        if sampling_size not in self._channel_stats:
            wanted = recovery_statistics(self.fp32_model)
            self._channel_stats[sampling_size] = (
                self._calibrate(self.fp32_model, [], frozenset({CalibAlgorithm.MINMAX}), sampling_size, wanted)
                if wanted else None
            )
        return self._channel_stats[sampling_size]

    def prepared(
        self, settings: PrepareSettings, sampling_size: int = 100,
        factors: Mapping[str, Mapping[str, SiteFactors]] | None = None,
    ) -> _PreparedModel:
        """The FP32 model rewritten for ``settings`` (cached per setting; ``factors`` replays a recipe)."""
        key = (settings, None if factors is not None else sampling_size)
        if factors is None and key in self._prepared:
            return self._prepared[key]
        model = ir.serde.deserialize_model(self._fp32_proto)
        ranges = None
        if factors is None:
            stats = self.channel_statistics(sampling_size)
            ranges = dict(stats.channels) if stats is not None else None
        result = prepare_model(model, settings, ranges, factors=factors)
        logger.info("Recovery rewrites for %s:\n%s", settings, result)
        prepared = _PreparedModel(self, settings, model, result)
        if factors is None:
            self._prepared[key] = prepared
        return prepared

    # -- applying a configuration ------------------------------------------------------------------

    def quantize(self, config: TuningConfig | None = None) -> QuantizedModel:
        """Apply ``config`` (this CPU's default when ``None``) and return the quantized model."""
        config = config or default_config(self.approach)
        settings = PrepareSettings.from_recovery(config.recovery)
        prepared = self.prepared(settings, config.calib_sampling_size) if settings.active else None
        range_of: Callable[[str, CalibAlgorithm], TensorRange | None] = _no_ranges
        if config.approach is not Approach.DYNAMIC:
            algorithms, size = _algorithms(config), config.calib_sampling_size
            result = prepared.calibration(algorithms, size) if prepared else self.calibration(algorithms, size)

            def range_of(name: str, algorithm: CalibAlgorithm) -> TensorRange | None:
                try:
                    return result.range(name, algorithm)
                except KeyError:
                    return None

        return self._apply(config, range_of, prepared)

    def apply_ranges(
        self, config: TuningConfig, ranges: Mapping[str, TensorRange],
        factors: Mapping[str, Mapping[str, SiteFactors]] | None = None,
    ) -> QuantizedModel:
        """Apply ``config`` with given activation ranges (no calibration); used by :func:`apply_recipe`.

        ``factors`` are the recovery rewrites' factors to replay (from a recipe); with recovery rewrites on
        and no factors, they are computed (which needs calibration data for SmoothQuant).
        """
        settings = PrepareSettings.from_recovery(config.recovery)
        prepared = self.prepared(settings, config.calib_sampling_size, factors) if settings.active else None
        return self._apply(config, lambda name, _algorithm: ranges.get(name), prepared)

    def _apply(
        self, config: TuningConfig, range_of: Callable[[str, CalibAlgorithm], TensorRange | None],
        prepared: _PreparedModel | None = None,
    ) -> QuantizedModel:
        source = prepared.proto if prepared is not None else self._fp32_proto
        model = ir.serde.deserialize_model(source)
        nodes, unsupported = prepared.nodes_for(config.approach) if prepared else self.nodes_for(config.approach)
        weight_cache = prepared.weight_cache if prepared is not None else self._weight_cache
        report = quantize_model(
            model, config, range_of, nodes=nodes, unsupported=unsupported, weight_cache=weight_cache
        )
        result, dropped, used = report.annotations, report.dropped, report.used_ranges
        proto = to_proto(model)
        decisions: dict[str, NodeDecision] = {}
        quantized = set(result.quantized) - set(dropped)
        for qnode in nodes:
            name = qnode.name
            reason = dropped.get(name) or result.fp32.get(name)
            decisions[name] = NodeDecision(
                name, qnode.op_type, name in quantized, result.configs.get(name),
                None if name in quantized else reason, result.notes.get(name, ""), qnode.aliases,
            )
        op_types = {n.name: n.op_type for n in self.fp32_model.graph.all_nodes()} if unsupported else {}
        for name, reason in unsupported.items():
            decisions[name] = NodeDecision(name, op_types.get(name, ""), False, None, reason, "", self._aliases(name))
        factors = prepared.result.factors if prepared is not None else {}
        recipe = Recipe(self.fp32_digest, config, used, factors=factors)
        quantized_model = QuantizedModel(proto, config, recipe, decisions)
        if prepared is not None:
            quantized_model.recovery = prepared.result
        return quantized_model


class _PreparedModel:
    """The FP32 model rewritten by the recovery rewrites of one setting, with its own caches.

    Its activations differ from the FP32 model's, so it is calibrated on its own (the on-disk cache keys
    by model content); its weights differ under the same names, so quantized weights are cached apart.
    """

    def __init__(self, owner: ModelQuantizer, settings: PrepareSettings, model: ir.Model, result: PrepareResult):
        self.owner = owner
        self.settings = settings
        self.model = model
        self.result = result
        self.proto = to_proto(model)
        self.weight_cache: dict[tuple[object, ...], Any] = {}
        self._nodes: dict[Approach, tuple[list[QuantizableNode], dict[str, Fp32Reason]]] = {}
        self._calibrations: dict[tuple[frozenset[CalibAlgorithm], int], Any] = {}

    def nodes_for(self, approach: Approach | str) -> tuple[list[QuantizableNode], dict[str, Fp32Reason]]:
        approach = Approach(approach)
        if approach is Approach.QAT:
            approach = Approach.STATIC
        if approach not in self._nodes:
            self._nodes[approach] = quantizable_nodes(self.model, approach, name_map=self.owner.name_map)
        return self._nodes[approach]

    def calibration(self, algorithms: Iterable[CalibAlgorithm], sampling_size: int) -> Any:
        algos = frozenset(CalibAlgorithm(a) for a in algorithms) | {CalibAlgorithm.MINMAX}
        for (cached_algos, size), result in self._calibrations.items():
            if size == sampling_size and algos <= cached_algos:
                return result
        tensors = _calibration_tensors(self.model, self.nodes_for(Approach.STATIC)[0])
        result = self.owner._calibrate(self.model, tensors, algos, sampling_size)
        self._calibrations[(algos, sampling_size)] = result
        return result


def _calibration_tensors(model: ir.Model, nodes: list[QuantizableNode]) -> list[str]:
    """Every activation a static configuration of ``model`` could need a range for."""
    graph_nodes = {n.name: n for n in model.graph}
    names: dict[str, None] = {}
    for qnode in nodes:
        node = graph_nodes.get(qnode.name)
        if node is None or qnode.category is OpCategory.EMBEDDING:
            continue
        for i, value in enumerate(node.inputs):
            if value is None or i in qnode.weight_inputs or value.const_value is not None:
                continue
            if value.dtype in (None, ir.DataType.FLOAT) and value.name:
                names[value.name] = None
        for value in node.outputs:
            if value.dtype in (None, ir.DataType.FLOAT) and value.name:
                names[value.name] = None
    return list(names)


def _no_ranges(_name: str, _algorithm: CalibAlgorithm) -> TensorRange | None:
    return None


def _algorithms(config: TuningConfig) -> set[CalibAlgorithm]:
    algos = {config.global_config.activation.algorithm}
    for scoped in config.overrides:
        act = scoped.override.activation
        if act is not None and act.algorithm is not None:
            algos.add(act.algorithm)
    return algos


def _optimize(model: ir.Model) -> ir.Model:
    """Run the ``fp32-optimize`` pipeline; on failure keep the model as loaded (with a warning)."""
    backup = to_proto(model)
    try:
        from lpot_ir.passes.base import run_pipeline

        report = run_pipeline(model, "fp32-optimize")
        model = getattr(report, "model", None) or model
    except Exception as exc:  # an optimizer failure must not stop quantization: fall back to the loaded model
        logger.warning("fp32-optimize failed (%s: %s); quantizing the model as loaded.", type(exc).__name__, exc)
        model = ir.serde.deserialize_model(backup)
    # weights stored in Constant nodes become initializers, so they can be stored quantized
    LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1)(model)
    return model


def quantize(
    model: Any,
    config: TuningConfig | None = None,
    calib_dataloader: Iterable[Any] | None = None,
    **kwargs: Any,
) -> QuantizedModel:
    """Quantize ``model`` under ``config`` (this CPU's safe default when ``None``).

    Args:
        model: a path (``.onnx`` or a framework model file or folder), bytes, ``onnx.ModelProto``,
            ``onnx_ir.Model``, or a framework object (``torch.nn.Module``, ``keras.Model``, ...).
        config: the :class:`TuningConfig`.
        calib_dataloader: calibration batches (static approach; also the example inputs for exporting a
            framework model).
        **kwargs: ``framework``, ``params`` (MXNet), ``inputs``/``outputs`` (frozen TensorFlow graphs) for
            the frontend; the rest goes to :class:`ModelQuantizer` (``workspace``, ``optimize``, ``progress``).

    Returns:
        The :class:`QuantizedModel`; for a framework model, scopes and decisions also know its names.
    """
    from lpot_ir.frontends import resolve_model

    approach = config.approach if config is not None else kwargs.pop("approach", Approach.STATIC)
    kwargs.pop("approach", None)
    frontend_options = {k: kwargs.pop(k) for k in ("framework", "params", "inputs", "outputs") if k in kwargs}
    converted = resolve_model(model, calib_dataloader=calib_dataloader, **frontend_options)
    if converted.framework != "onnx":
        model = converted.model
        kwargs.setdefault("name_map", {k: v for k, v in converted.name_map.items() if v and v != k} or None)
    quantizer = ModelQuantizer(model, calib_dataloader, approach=approach, **kwargs)
    return quantizer.quantize(config or default_config(approach))


def apply_recipe(fp32_model: Any, recipe: Recipe | str | os.PathLike[str], **kwargs: Any) -> QuantizedModel:
    """Rebuild the quantized model a recipe describes, bit for bit, without calibration data.

    Args:
        fp32_model: the FP32 model the recipe was made from.
        recipe: a :class:`Recipe` or the path of its JSON file.
        **kwargs: passed to :class:`ModelQuantizer` (``name_map``).

    Raises:
        QuantizationError: the recipe is malformed or was made from a different model.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    quantizer = ModelQuantizer(fp32_model, approach=recipe.config.approach, **kwargs)
    if quantizer.fp32_digest != recipe.fp32_model_digest:
        raise QuantizationError(
            "The recipe was made from a different FP32 model: its digest "
            f"{recipe.fp32_model_digest[:16]}... does not match this model's {quantizer.fp32_digest[:16]}.... "
            "Apply the recipe to the exact FP32 model it was created from, or quantize this model again."
        )
    return quantizer.apply_ranges(recipe.config, recipe.ranges, recipe.factors)
