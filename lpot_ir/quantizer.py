"""The compile-style quantization API: ``quantize(model, config, calib_dataloader) -> QuantizedModel``.

:class:`ModelQuantizer` is what one tuning trial calls. Everything expensive is computed once per
instance: loading (opset upgrade, names), the ``fp32-optimize`` pipeline, the capability analysis, and
calibration (once per (algorithm set, sampling size), over every tensor any configuration could need).
Applying one :class:`~lpot_ir.ir.quant.TuningConfig` is then cheap: deserialize the optimized model,
annotate, insert Q/DQ (or rewrite dynamically), optionally lower to QOperator, serialize.

A :class:`QuantizedModel` carries its :class:`Recipe`: the configuration, the exact ranges used and
the per-channel factors of the accuracy-recovery rewrites. :func:`apply_recipe` replays a recipe on the
FP32 model and reproduces the INT8 model bit for bit, without calibration data (unless a recovery step
of the ``int8-refine`` stage reads calibration data).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import LiftConstantsToInitializersPass

from lpot_ir import __version__, frontends
from lpot_ir.backends.onnxruntime.batching import feeds_from_batches
from lpot_ir.backends.onnxruntime.capabilities import (
    OpCategory,
    QuantizableNode,
    default_op_config,
    quantizable_nodes,
)
from lpot_ir.calibration import calibrate
from lpot_ir.errors import LpotError, QuantizationError
from lpot_ir.fileio import atomic_write
from lpot_ir.frontends import resolve_model
from lpot_ir.ir.model import (
    all_nodes,
    drop_weights,
    load_model,
    model_digest,
    release_external_tensors,
    save_model,
    to_proto,
)
from lpot_ir.ir.quant import (
    FP32,
    Approach,
    Backend,
    CalibAlgorithm,
    DType,
    Fp32Reason,
    OpOverride,
    OpQuantConfig,
    QuantFormat,
    RecoveryOptions,
    ScopeKind,
    TensorRange,
    TuningConfig,
    WeightRounding,
)
from lpot_ir.passes.base import (
    PIPELINES,
    StepReport,
    available_passes,
    pipeline_steps,
    pipeline_version,
    run_pipeline,
)
from lpot_ir.passes.quantization import (
    PREPARE_PIPELINE,
    PipelineRecord,
    QuantizationContext,
    no_ranges,
    prepare_model,
    quantize_model,
    select_pipeline,
)
from lpot_ir.passes.quantization.context import Feeds, RangeLookup, WeightCache
from lpot_ir.passes.quantization.recovery import (
    RecoveryPassResult,
    RecoveryReport,
    SiteFactors,
    factors_from_dict,
    factors_of,
    factors_to_dict,
    recovery_statistics,
)

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

RECIPE_FORMAT_VERSION = 4
"""Recipe file format. 2 added ``pipeline`` (name, version, steps); 3 added ``records`` (the decisions steps
took from calibration data, replayed without it), and is written only when a step recorded something; 4 added
mixed precision (``float_dtype`` in node configurations, the configuration's ``backend``), and is written only
when the configuration uses bf16/fp16, so older lpot-ir versions refuse such a recipe instead of replaying it
in FP32. Version 1 to 3 recipes still load; version 1 replays with the pipeline its configuration selects."""

_RECORDS_FORMAT_VERSION = 3
_READABLE_RECIPE_VERSIONS = (1, 2, 3, 4)


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
        reason: why it stays FP32 (``None`` when it runs in INT8, bf16 or fp16).
        note: adjustments made to fit what the node supports (e.g. per_channel -> per_tensor).
        aliases: the framework's name(s) for the node (e.g. the PyTorch module path ``layer1.0.conv1``).
        float_dtype: the float type it runs in when not INT8 (``bf16``/``fp16`` from the ``mixed-precision``
            step, else ``fp32``).
    """

    name: str
    op_type: str
    quantized: bool
    config: OpQuantConfig | None = None
    reason: Fp32Reason | None = None
    note: str = ""
    aliases: tuple[str, ...] = ()
    float_dtype: DType = DType.FP32

    @property
    def precision(self) -> str:
        """What it runs in, for reports: ``int8`` (8-bit integers, signed or not), ``bf16``, ``fp16`` or ``fp32``."""
        return "int8" if self.quantized else str(self.float_dtype)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "op_type": self.op_type, "quantized": self.quantized}
        if self.float_dtype is not DType.FP32:
            out["float_dtype"] = self.float_dtype.value
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
        pipeline: the quantization pipeline that ran (name, version, steps); ``None`` in version 1 recipes.
        factors: per-channel factors of the ``int8-prepare`` recovery rewrites (technique -> site ->
            factors), replayed as they are, so the prepared model needs neither calibration data nor the
            same CPU (float powers may round differently elsewhere).
        records: step name -> the decisions it took from calibration data (accuracy-recovery passes:
            clip ratios, learned roundings, bias corrections, chosen schemes), replayed without data.
    """

    fp32_model_digest: str
    config: TuningConfig
    ranges: Mapping[str, TensorRange] = field(default_factory=dict)
    lpot_ir_version: str = __version__
    format_version: int = 2
    pipeline: PipelineRecord | None = None
    factors: Mapping[str, Mapping[str, SiteFactors]] = field(default_factory=dict)
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": self.format_version,
            "fp32_model_digest": self.fp32_model_digest,
            "config": self.config.to_dict(),
            "ranges": {name: r.to_list() for name, r in sorted(self.ranges.items())},
            "lpot_ir_version": self.lpot_ir_version,
        }
        if self.pipeline is not None:
            out["pipeline"] = self.pipeline.to_dict()
        factors = factors_to_dict(self.factors)
        if factors:  # omitted without recovery rewrites: plain recipes are unchanged
            out["recovery_factors"] = factors
        if self.records:  # omitted when no step recorded anything: such recipes stay readable by version 2
            out["format_version"] = _RECORDS_FORMAT_VERSION
            out["records"] = {step: dict(data) for step, data in sorted(self.records.items())}
        if self.config.uses_low_precision_float or self.config.backend is not Backend.ONNXRUNTIME_CPU:
            out["format_version"] = RECIPE_FORMAT_VERSION  # readers before version 4 would drop bf16/fp16
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "the recipe") -> Recipe:
        try:
            version = int(data.get("format_version", 0))
            if version not in _READABLE_RECIPE_VERSIONS:
                raise QuantizationError(
                    f"{source} has recipe format_version {version}; this lpot-ir reads versions "
                    f"{', '.join(map(str, _READABLE_RECIPE_VERSIONS))}. Re-create the recipe with this version "
                    "(quantize the FP32 model again)."
                )
            pipeline = data.get("pipeline") if version >= 2 else None
            return cls(
                fp32_model_digest=str(data["fp32_model_digest"]),
                config=TuningConfig.from_dict(data["config"]),
                ranges={str(k): TensorRange.from_list(v) for k, v in dict(data.get("ranges", {})).items()},
                lpot_ir_version=str(data.get("lpot_ir_version", "")),
                format_version=version,
                pipeline=PipelineRecord.from_dict(pipeline) if pipeline is not None else None,
                factors=factors_from_dict(data.get("recovery_factors") or {}),
                records={str(k): dict(v) for k, v in dict(data.get("records") or {}).items()},
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
        steps: what each step of the quantization pipeline did (changes, per-rule counts, ``details``,
            time); the passes' results themselves are not kept.
        recovery: technique -> what the ``int8-prepare`` recovery rewrite did (sites applied and
            declined with reasons, factors), for the techniques the configuration turned on.
    """

    model: onnx.ModelProto
    config: TuningConfig
    recipe: Recipe
    decisions: dict[str, NodeDecision] = field(default_factory=dict)
    steps: tuple[StepReport, ...] = field(default=(), repr=False, compare=False)
    recovery: Mapping[str, RecoveryReport] = field(default_factory=dict, repr=False, compare=False)

    def step(self, name: str) -> StepReport:
        """The report of the pipeline step ``name`` (``KeyError`` if it did not run)."""
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def fp32_nodes(self) -> dict[str, Fp32Reason]:
        """Covered nodes that stay FP32, with the reason."""
        return {n: d.reason for n, d in self.decisions.items() if not d.quantized and d.reason is not None}

    @property
    def quantized_nodes(self) -> list[str]:
        """Names of the nodes that run in INT8."""
        return [n for n, d in self.decisions.items() if d.quantized]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model to ``path`` and its recipe to ``<stem>.recipe.json`` beside it, atomically and
        together (a full disk changes neither; see :func:`~lpot_ir.ir.model.save_model`)."""
        dest = Path(path)
        return save_model(self.model, dest, companions={recipe_path_for(dest): self.recipe.to_json() + "\n"})

    def export(self, target: str = "onnx", path: str | os.PathLike[str] | None = None) -> Any:
        """Export the quantized model for another runtime.

        Args:
            target: ``"onnx"`` (the portable Q/DQ model; :meth:`save`), ``"pytorch"`` (a ``torch.nn.Module``
                that runs without ONNX Runtime), ``"tensorflow"`` (a SavedModel folder) or ``"mxnet"``
                (``<path>-symbol.json`` + ``<path>-0000.params``, checked against ONNX Runtime in the isolated
                MXNet environment; Q/DQ emulated in FP32, see :mod:`lpot_ir.backends.export.mxnet_lowering`).
            path: where to write (required for ``onnx``, ``tensorflow`` and ``mxnet``; ignored for ``pytorch``).

        Returns:
            The written path, the ``torch.nn.Module`` for ``pytorch``, or the ``MXNetExport`` for ``mxnet``.
        """

        kind = target.lower()
        if kind == "pytorch":
            return frontends.export_to_pytorch(self.model)
        if kind not in ("onnx", "tensorflow", "mxnet"):
            raise QuantizationError(
                f"Unknown export target {target!r}. Use 'onnx' (the Q/DQ model), 'pytorch' (a torch.nn.Module), "
                "'tensorflow' (a SavedModel folder) or 'mxnet' (symbol + params)."
            )
        if path is None:
            raise QuantizationError(f"export({target!r}) writes files: pass path=..., e.g. export({target!r}, 'out').")
        if kind == "onnx":
            return self.save(path)
        if kind == "mxnet":
            return frontends.export_to_mxnet(self.model, path)
        return frontends.export_to_tensorflow(self.model, path)


@dataclass(frozen=True, eq=False)
class _Prepared:
    """The FP32 model a quantization starts from after the ``int8-prepare`` stage, and what hangs off it.

    ``key`` is ``None`` for the optimized model itself (no prepare step changed it); calibrations,
    quantizable nodes and quantized weights are cached per prepared model. ``recovery`` holds what the
    recovery rewrites of the stage reported (also when they changed nothing).
    """

    key: tuple[object, ...] | None
    proto: onnx.ModelProto
    weight_cache: WeightCache = field(default_factory=dict)
    recovery: Mapping[str, RecoveryReport] = field(default_factory=dict)


class ModelQuantizer:
    """Quantizes one FP32 model under many configurations, computing the expensive parts once.

    A configuration runs the ``int8-prepare`` stage (FP32 rewrites; cached per prepared-model key),
    calibrates the prepared model (cached per prepared model, algorithm set and sampling size), then
    the quantization pipeline the configuration selects (see :mod:`lpot_ir.passes.quantization`).

    Args:
        model: a path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``.
        calib_dataloader: calibration batches (static approach); see :func:`lpot_ir.calibration.calibrate`.
        approach: the default approach (a configuration's own ``approach`` wins).
        workspace: folder for the calibration cache (``<workspace>/calibration``), or ``None``.
        name_map: node name -> framework name(s), usable in configuration scopes.
        optimize: run the ``fp32-optimize`` pipeline first.
        progress: show calibration progress.
        batch_axes: ``{input name: batch axis or None}`` for inputs whose batch axis the model's dimension
            names do not tell (see :class:`~lpot_ir.backends.onnxruntime.batching.BatchLayout`); used by
            calibration and by the tuning loop's sensitivity and accuracy proxy.
        recovery_options: samples and work budgets of the data-driven accuracy-recovery passes
            (:class:`~lpot_ir.ir.quant.RecoveryOptions`).
        fixed_ranges: activation ranges that take precedence over calibration (the ranges learned by
            quantization-aware training); calibration runs only for a tensor they do not cover.

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
        batch_axes: Mapping[str, int | None] | None = None,
        recovery_options: RecoveryOptions | None = None,
        fixed_ranges: Mapping[str, TensorRange] | None = None,
    ) -> None:
        loaded = load_model(model)
        self.fp32_digest = model_digest(loaded)
        self.fp32_model = _optimize(loaded) if optimize else loaded
        release_external_tensors(self.fp32_model)
        self._base = _Prepared(None, to_proto(self.fp32_model))
        self.approach = Approach(approach)
        self.calib_dataloader = calib_dataloader
        self.workspace = Path(workspace) if workspace is not None else None
        self.name_map = name_map
        self.progress = progress
        self.batch_axes = dict(batch_axes) if batch_axes else None
        self.fixed_ranges: dict[str, TensorRange] = dict(fixed_ranges or {})
        self._nodes: dict[tuple[object, Approach], tuple[list[QuantizableNode], dict[str, Fp32Reason]]] = {}
        self._calibrations: dict[tuple[object, frozenset[CalibAlgorithm], int], Any] = {}
        self._prepared: dict[tuple[object, ...], _Prepared] = {}
        self._feeds: dict[int, list[dict[str, Any]]] = {}
        self.recovery_options = recovery_options or RecoveryOptions()
        self._channel_stats: dict[int, dict[str, Any]] = {}
        self._recovered: OrderedDict[str, Recipe] = OrderedDict()
        self.nodes, self.unsupported = self.nodes_for(self.approach)

    def _aliases(self, name: str) -> tuple[str, ...]:
        alias = (self.name_map or {}).get(name)
        if alias is None:
            return ()
        return (alias,) if isinstance(alias, str) else tuple(alias)

    def nodes_for(
        self, approach: Approach | str, prepared: _Prepared | None = None
    ) -> tuple[list[QuantizableNode], dict[str, Fp32Reason]]:
        """Quantizable nodes and unsupported reasons for ``approach`` (cached), of the optimized model
        or of a prepared one."""
        approach = Approach(approach)
        if approach is Approach.QAT:
            approach = Approach.STATIC
        prepared = prepared or self._base
        key = (prepared.key, approach)
        if key not in self._nodes:
            model = self.fp32_model if prepared.key is None else ir.serde.deserialize_model(prepared.proto)
            self._nodes[key] = quantizable_nodes(model, approach, name_map=self.name_map)
        return self._nodes[key]

    # -- the prepare stage -------------------------------------------------------------------------

    def _feeds_for(self, sampling_size: int) -> Callable[[], Feeds] | None:
        """Calibration batches as ORT feeds (at most ``sampling_size`` samples; read once, cached)."""
        if self.calib_dataloader is None:
            return None
        loader = self.calib_dataloader

        def feeds() -> Feeds:
            if sampling_size not in self._feeds:
                self._feeds[sampling_size] = feeds_from_batches(
                    loader, self._base.proto, sampling_size, batch_axes=self.batch_axes
                )
            return self._feeds[sampling_size]

        return feeds

    def channel_ranges(self, wanted: Mapping[str, int], sampling_size: int) -> dict[str, Any]:
        """Per-channel ranges (:class:`~lpot_ir.calibration.ChannelRange`) of the optimized model's
        activations, for the prepare stage's recovery rewrites.

        One calibration run per sampling size covers every value any recovery setting reads
        (:func:`~lpot_ir.passes.quantization.recovery.recovery_statistics`), so trying several settings
        costs one run; it is cached on disk with the other calibrations.
        """
        cached = self._channel_stats.setdefault(sampling_size, {})
        missing = {name: axis for name, axis in wanted.items() if name not in cached}
        if missing:
            if self.calib_dataloader is None:
                raise QuantizationError(
                    "An accuracy-recovery rewrite needs per-channel ranges from calibration data, but no "
                    "calib_dataloader was given. Pass calib_dataloader= (Python) or --calib DATA (CLI), or switch "
                    "the recovery setting off."
                )
            request = {**recovery_statistics(self.fp32_model), **missing} if not cached else missing
            result = calibrate(
                self.fp32_model, self.calib_dataloader, tensors=[], channel_axes=request,
                sampling_size=sampling_size, progress=self.progress,
                cache_dir=self.workspace / "calibration" if self.workspace is not None else None,
                batch_axes=self.batch_axes,
            )
            cached.update(result.channels)
        return {name: cached[name] for name in wanted if name in cached}

    def prepared(
        self,
        config: TuningConfig,
        steps: tuple[str, ...] | None = None,
        factors: Mapping[str, Mapping[str, SiteFactors]] | None = None,
    ) -> _Prepared:
        """The FP32 model after the prepare stage for ``config`` (cached per prepared-model key).

        The key is (steps, ``config.recovery``, ``config.calib_sampling_size``): prepare steps read only
        those (the contract in docs/architecture.md). When no step changes the model, the optimized model
        itself is used, so its calibration and quantized weights are shared. ``factors`` (a recipe's)
        replays the recovery rewrites instead of computing them from calibration data.
        """
        steps = pipeline_steps(PREPARE_PIPELINE) if steps is None else steps
        if not steps:
            return self._base
        replay = json.dumps(factors_to_dict(factors), sort_keys=True) if factors is not None else None
        key: tuple[object, ...] = (steps, config.recovery, config.calib_sampling_size, replay)
        if key not in self._prepared:
            model = ir.serde.deserialize_model(self._base.proto)
            nodes, unsupported = self.nodes_for(config.approach)
            size = config.calib_sampling_size
            has_data = self.calib_dataloader is not None
            context = QuantizationContext(
                config, tuple(nodes), unsupported, no_ranges, self._base.weight_cache, self._base.proto,
                self._feeds_for(size),
                channel_ranges=(lambda wanted: self.channel_ranges(wanted, size)) if has_data else None,
                recovery_factors=factors,
            )
            report = prepare_model(model, context, steps=steps)
            recovery = {
                s.result.report.technique: s.result.report
                for s in (report.steps if report is not None else ())
                if isinstance(s.result, RecoveryPassResult) and s.result.report is not None
            }
            if report is not None and report.modified:
                self._prepared[key] = _Prepared(key, to_proto(model), recovery=recovery)
            else:  # the optimized model itself: its calibrations, nodes and quantized weights are shared
                self._prepared[key] = dataclasses.replace(self._base, recovery=recovery) if recovery else self._base
        return self._prepared[key]

    # -- calibration -------------------------------------------------------------------------------

    def calibration_tensors(self, prepared: _Prepared | None = None) -> list[str]:
        """Every activation any static configuration could need a range for."""
        prepared = prepared or self._base
        model = self.fp32_model if prepared.key is None else ir.serde.deserialize_model(prepared.proto)
        graph_nodes = {n.name: n for n in all_nodes(model)}  # subgraphs too: their values are calibrated
        names: dict[str, None] = {}
        nodes, _ = self.nodes_for(Approach.STATIC, prepared)
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

    def calibration(
        self, algorithms: Iterable[CalibAlgorithm], sampling_size: int, prepared: _Prepared | None = None
    ) -> Any:
        """The :class:`~lpot_ir.calibration.CalibrationResult` for these algorithms and size (cached),
        of the optimized model or of a prepared one."""

        prepared = prepared or self._base
        algos = frozenset(CalibAlgorithm(a) for a in algorithms) | {CalibAlgorithm.MINMAX}
        for (key, cached_algos, size), result in self._calibrations.items():
            if key == prepared.key and size == sampling_size and algos <= cached_algos:
                return result
        if self.calib_dataloader is None:
            raise QuantizationError(
                "Static quantization needs calibration data, but no calib_dataloader was given. Pass "
                "calib_dataloader= (Python) or --calib DATA (CLI), or use approach post_training_dynamic_quant."
            )
        cache_dir = self.workspace / "calibration" if self.workspace is not None else None
        ordered: list[CalibAlgorithm] = sorted(algos, key=lambda a: a.value)
        model = self.fp32_model if prepared.key is None else prepared.proto
        result = calibrate(
            model,
            self.calib_dataloader,
            tensors=self.calibration_tensors(prepared),
            algorithms=ordered,
            sampling_size=sampling_size,
            progress=self.progress,
            cache_dir=cache_dir,
            batch_axes=self.batch_axes,
        )
        self._calibrations[(prepared.key, algos, sampling_size)] = result
        return result

    # -- applying a configuration ------------------------------------------------------------------

    def quantize(self, config: TuningConfig | None = None, *, reuse_recovery: bool = False) -> QuantizedModel:
        """Apply ``config`` (this CPU's default when ``None``) and return the quantized model.

        Args:
            config: the configuration.
            reuse_recovery: when ``config`` only keeps more nodes FP32 than a configuration quantized
                before (its *reference*: the same configuration without per-node FP32 fallbacks), reuse
                the decisions the data-driven recovery passes (range search, weight rounding, bias
                correction) took on the reference instead of taking them again: the ranges, schemes,
                roundings and bias changes of the nodes still in INT8. A fallback candidate then costs a
                plain quantization instead of the recovery passes' calibration runs. Its recipe holds what
                was applied, so it still replays bit for bit. The tuning loop uses this; a direct call
                computes everything for ``config`` (the default).
        """
        config = config or default_config(self.approach)
        prepared = self.prepared(config)
        record = PipelineRecord.current(select_pipeline(config))
        range_of: RangeLookup = no_ranges
        notes: Mapping[str, str] = {}
        if config.approach is not Approach.DYNAMIC:
            # learned ranges (QAT) describe the optimized model; a prepare step that rewrites it needs calibration
            fixed = self.fixed_ranges if prepared.key is None else {}
            if fixed:
                range_of = self._fixed_then_calibrated(config, prepared, fixed)
            else:
                result = self.calibration(_algorithms(config), config.calib_sampling_size, prepared)
                notes = result.skipped

                def range_of(name: str, algorithm: CalibAlgorithm) -> TensorRange | None:
                    try:
                        return result.range(name, algorithm)
                    except KeyError:
                        return None

        if not reuse_recovery or not _recovers_from_data(config):
            return self._apply(config, prepared, range_of, record, notes=notes)
        reference_key = _without_fp32_fallbacks(config).key()
        reference = self._recovered.get(reference_key)
        if reference is None or reference_key == config.key():
            quantized = self._apply(config, prepared, range_of, record, notes=notes)
            if reference_key == config.key():
                self._recovered[reference_key] = quantized.recipe
                while len(self._recovered) > _RECOVERED_KEPT:
                    self._recovered.popitem(last=False)
            return quantized
        self._recovered.move_to_end(reference_key)
        ranges = reference.ranges

        def reference_range(name: str, algorithm: CalibAlgorithm) -> TensorRange | None:
            return ranges.get(name) or range_of(name, algorithm)

        return self._apply(config, prepared, reference_range, record, reference.records, partial=True, notes=notes)

    def _fixed_then_calibrated(
        self, config: TuningConfig, prepared: _Prepared, fixed: Mapping[str, TensorRange]
    ) -> RangeLookup:
        """Fixed ranges first; a tensor they miss is calibrated (lazily), or left without range without data."""

        def range_of(name: str, algorithm: CalibAlgorithm) -> TensorRange | None:
            if name in fixed:
                return fixed[name]
            if self.calib_dataloader is None:
                return None  # learned ranges only: the node stays FP32 with reason no_range
            result = self.calibration(_algorithms(config), config.calib_sampling_size, prepared)
            try:
                return result.range(name, algorithm)
            except KeyError:
                return None

        return range_of

    def apply_ranges(
        self,
        config: TuningConfig,
        ranges: Mapping[str, TensorRange],
        pipeline: PipelineRecord | None = None,
        factors: Mapping[str, Mapping[str, SiteFactors]] | None = None,
        records: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> QuantizedModel:
        """Apply ``config`` with given activation ranges (no calibration); used by :func:`apply_recipe`.

        Args:
            config: the configuration.
            ranges: value name -> range (whatever the algorithm).
            pipeline: the steps to run (a recipe's record); the configuration's pipeline when ``None``.
            factors: the recovery rewrites' factors to replay (a recipe's); computed when ``None``
                (SmoothQuant then needs calibration data).
            records: the quantization steps' recorded decisions (a recipe's ``records``): the steps replay
                them instead of reading calibration data.
        """
        record = pipeline or PipelineRecord.current(select_pipeline(config))
        prepared = self.prepared(config, record.prepare, factors)
        return self._apply(config, prepared, lambda name, _algorithm: ranges.get(name), record, dict(records or {}))

    def _apply(
        self,
        config: TuningConfig,
        prepared: _Prepared,
        range_of: RangeLookup,
        record: PipelineRecord,
        replay: Mapping[str, Mapping[str, Any]] | None = None,
        partial: bool = False,
        notes: Mapping[str, str] | None = None,
    ) -> QuantizedModel:
        model = ir.serde.deserialize_model(prepared.proto)
        nodes, unsupported = self.nodes_for(config.approach, prepared)
        context = QuantizationContext(
            config, tuple(nodes), unsupported, range_of, prepared.weight_cache, prepared.proto,
            self._feeds_for(config.calib_sampling_size), replay=replay, replay_partial=partial,
            recovery_options=self.recovery_options, range_notes=dict(notes or {}),
        )
        report = quantize_model(model, context, pipeline=record.steps)
        result, dropped, used = report.annotations, report.dropped, report.used_ranges
        proto = to_proto(model)
        drop_weights(model)
        decisions: dict[str, NodeDecision] = {}
        quantized = set(result.quantized) - set(dropped)
        floats = report.float_dtypes
        for qnode in nodes:
            name = qnode.name
            reason = dropped.get(name) or result.fp32.get(name)
            decisions[name] = NodeDecision(
                name, qnode.op_type, name in quantized, result.configs.get(name),
                None if name in quantized or name in floats else reason, result.notes.get(name, ""), qnode.aliases,
                floats.get(name, DType.FP32),
            )
        op_types = {n.name: n.op_type for n in self.fp32_model.graph.all_nodes()} if unsupported or floats else {}
        for name, reason in unsupported.items():
            if name not in floats:
                decisions[name] = NodeDecision(name, op_types.get(name, ""), False, None, reason, "", self._aliases(name))
        for name in (*floats, *dropped):  # nodes outside the INT8 table that mixed precision decided about
            if name not in decisions or name in floats:
                previous = decisions.get(name)
                decisions[name] = NodeDecision(
                    name, op_types.get(name, ""), False, config.resolve(name, op_types.get(name, ""), self._aliases(name)),
                    None if name in floats else dropped.get(name), previous.note if previous else "",
                    self._aliases(name), floats.get(name, DType.FP32),
                )
        recipe = Recipe(
            self.fp32_digest, config, used, pipeline=record, factors=factors_of(prepared.recovery), records=report.records
        )
        steps = tuple(dataclasses.replace(step, result=None) for step in report.steps.steps) if report.steps else ()
        return QuantizedModel(proto, config, recipe, decisions, steps, dict(prepared.recovery))


_RECOVERED_KEPT = 4
"""How many reference configurations' recovery decisions a :class:`ModelQuantizer` keeps for reuse."""


def _recovers_from_data(config: TuningConfig) -> bool:
    """Whether ``config`` runs a quantization-stage recovery pass that reads calibration data."""
    recovery = config.recovery
    return recovery.range_search or recovery.bias_correction or recovery.weight_rounding is not WeightRounding.NEAREST


def _without_fp32_fallbacks(config: TuningConfig) -> TuningConfig:
    """``config`` without its per-node FP32 fallbacks (the configuration a fallback candidate falls back from)."""
    fallback = OpOverride.from_config(FP32)
    kept = tuple(o for o in config.overrides if not (o.kind is ScopeKind.NODE_NAME and o.override == fallback))
    return dataclasses.replace(config, overrides=kept)


def _algorithms(config: TuningConfig) -> set[CalibAlgorithm]:
    """The calibration algorithms ``config`` reads ranges of (all of them when range search is on)."""
    if config.recovery.range_search:
        return set(CalibAlgorithm)
    algos = {config.global_config.activation.algorithm}
    for scoped in config.overrides:
        act = scoped.override.activation
        if act is not None and act.algorithm is not None:
            algos.add(act.algorithm)
    return algos


def _optimize(model: ir.Model) -> ir.Model:
    """Run the ``fp32-optimize`` pipeline (a failing rule or pass raises :class:`PassError` naming it)."""
    model = run_pipeline(model, "fp32-optimize").model
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
            the frontend; the rest goes to :class:`ModelQuantizer` (``workspace``, ``optimize``, ``progress``,
            ``batch_axes``).

    Returns:
        The :class:`QuantizedModel`; for a framework model, scopes and decisions also know its names.
    """

    approach = config.approach if config is not None else kwargs.pop("approach", Approach.STATIC)
    kwargs.pop("approach", None)
    frontend_options = {k: kwargs.pop(k) for k in ("framework", "params", "inputs", "outputs") if k in kwargs}
    converted = resolve_model(model, calib_dataloader=calib_dataloader, **frontend_options)
    if converted.framework != "onnx":
        model = converted.model
        kwargs.setdefault("name_map", converted.aliases_map)
    quantizer = ModelQuantizer(model, calib_dataloader, approach=approach, **kwargs)
    return quantizer.quantize(config or default_config(approach))


def apply_recipe(fp32_model: Any, recipe: Recipe | str | os.PathLike[str], **kwargs: Any) -> QuantizedModel:
    """Rebuild the quantized model a recipe describes, bit for bit, without calibration data.

    Args:
        fp32_model: the FP32 model the recipe was made from.
        recipe: a :class:`Recipe` or the path of its JSON file.
        **kwargs: passed to :class:`ModelQuantizer` (``name_map``; ``calib_dataloader`` only for a step that
            reads calibration data without recording its decisions in ``Recipe.records``: the quantization
            stage's recovery passes record theirs, so replaying them needs no data).

    Raises:
        QuantizationError: the recipe is malformed, was made from a different model, or ran a step that
            is not registered.
    """
    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    _check_pipeline(recipe.pipeline)
    quantizer = ModelQuantizer(fp32_model, approach=recipe.config.approach, **kwargs)
    if quantizer.fp32_digest != recipe.fp32_model_digest:
        raise QuantizationError(
            "The recipe was made from a different FP32 model: its digest "
            f"{recipe.fp32_model_digest[:16]}... does not match this model's {quantizer.fp32_digest[:16]}.... "
            "Apply the recipe to the exact FP32 model it was created from, or quantize this model again."
        )
    return quantizer.apply_ranges(recipe.config, recipe.ranges, recipe.pipeline, recipe.factors, recipe.records)


def _check_pipeline(record: PipelineRecord | None) -> None:
    """A recipe replays the steps it recorded: each must be registered; warn when the pipeline's version moved."""
    if record is None:
        return
    registered = available_passes()
    missing = [s for s in (*record.prepare, *record.steps) if s not in registered]
    if missing:
        raise QuantizationError(
            f"The recipe's pipeline '{record.name}' ran step(s) {', '.join(repr(s) for s in missing)}, which "
            "are not registered in this process. Import the module that registers them (@register_pass / "
            "@register_rule_set) before applying the recipe."
        )
    if record.name in PIPELINES and pipeline_version(record.name) != record.version:
        logger.warning(
            "The recipe was made by pipeline '%s' version %d; this lpot-ir has version %d, so the replayed model "
            "may differ from the one the recipe was saved with.",
            record.name, record.version, pipeline_version(record.name),
        )
