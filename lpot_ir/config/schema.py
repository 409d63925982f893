"""The YAML configuration as typed data: one frozen dataclass per section, enums for fixed values.

The dataclasses *are* the schema: :mod:`lpot_ir.config.loader` walks their type hints to validate a
YAML document, and :meth:`Config.to_dict` walks them back. Users can also build a configuration in
Python::

    Config(
        model=ModelSection(name="resnet", framework="onnxrt_qlinearops"),
        tuning=TuningSection(accuracy_criterion=AccuracyCriterion(relative=0.02)),
    )

Field values follow LPOT's YAML: a field typed ``tuple[X, ...]`` accepts one value, a list, or a
comma-separated string (``dtype: int8, fp32``), and always holds a tuple. Cross-field rules (e.g.
``relative`` or ``absolute``, not both) are checked in ``__post_init__`` and raise
:class:`~lpot_ir.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml

from lpot_ir.config.coerce import SectionError, coerce_fields, to_plain
from lpot_ir.data.dataloader import LastBatch
from lpot_ir.data.datasets import DATASETS
from lpot_ir.data.transforms import POSTPROCESSES, TRANSFORMS, check_params
from lpot_ir.ir.quant import (
    Approach,
    CalibAlgorithm,
    DType,
    Granularity,
    QuantFormat,
    RecoveryConfig,
    RecoveryOptions,
    Scheme,
    WeightRounding,
)
from lpot_ir.metrics.base import METRICS

__all__ = [
    "SectionError",
    "Framework",
    "FrameworkTarget",
    "framework_target",
    "Device",
    "Objective",
    "ModelSection",
    "DataLoaderSection",
    "PostprocessSection",
    "CalibrationSection",
    "SmoothQuantArgs",
    "RecipesSection",
    "RecoveryArgs",
    "TensorWise",
    "ModelWise",
    "OpWiseEntry",
    "Distillation",
    "LrSchedule",
    "LrScheduleType",
    "TrainSection",
    "QuantizationSection",
    "MixedPrecisionSection",
    "InstanceConfigs",
    "AccuracySection",
    "PerformanceSection",
    "EvaluationSection",
    "StrategySection",
    "AccuracyCriterion",
    "MultiObjectives",
    "ExitPolicy",
    "DistributedBackend",
    "DistributedSection",
    "WorkspaceSection",
    "TuningSection",
    "Pruner",
    "WeightCompression",
    "PruningApproach",
    "PruningSection",
    "Config",
    "SUPPORTED_VERSION",
    "DEFAULT_WORKSPACE",
]

SUPPORTED_VERSION = 1.0
DEFAULT_WORKSPACE = "./lpot_workspace"


class Framework(str, enum.Enum):
    """``model.framework``: LPOT's framework names (``onnx`` is lpot-ir's plain ONNX model).

    LPOT 1.x's other spellings ``onnxrt_qlinear``, ``onnxrt_integer``, ``onnxrt_qdqops`` and ``onnxrt``
    (= ``onnx``) are accepted as aliases and stored under the canonical name.
    """

    ONNX = "onnx"
    ONNXRT_QLINEAROPS = "onnxrt_qlinearops"
    ONNXRT_INTEGEROPS = "onnxrt_integerops"
    ONNXRT_QDQ = "onnxrt_qdq"
    PYTORCH = "pytorch"
    TENSORFLOW = "tensorflow"
    MXNET = "mxnet"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def _missing_(cls, value: object) -> Framework | None:
        aliases = {
            "onnxrt_qlinear": cls.ONNXRT_QLINEAROPS,
            "onnxrt_integer": cls.ONNXRT_INTEGEROPS,
            "onnxrt_qdqops": cls.ONNXRT_QDQ,
            "onnxrt": cls.ONNX,
        }
        return aliases.get(str(value).lower()) if isinstance(value, str) else None


@dataclass(frozen=True)
class FrameworkTarget:
    """What an LPOT framework name means for lpot-ir.

    Attributes:
        source: the model's framework: ``onnx``, ``pytorch``, ``tensorflow`` or ``mxnet``.
        format: the quantized format the name implies (None: the configuration decides, default QDQ).
        approach: the approach the name implies (None: the configuration decides, default static).
    """

    source: str
    format: QuantFormat | None = None
    approach: Approach | None = None


def framework_target(framework: Framework | str | None) -> FrameworkTarget | None:
    """Map an LPOT framework name to (source framework, implied format, implied approach).

    ``onnxrt_qlinearops`` -> ONNX with QOperator ops (QLinearConv, ...); ``onnxrt_qdq`` -> ONNX with
    QuantizeLinear/DequantizeLinear pairs; ``onnxrt_integerops`` -> ONNX, dynamic quantization
    (MatMulInteger/ConvInteger, QOperator format); ``pytorch``/``tensorflow``/``mxnet``/``onnx`` -> that
    framework, nothing implied. ``None`` (auto-detect from the model) returns ``None``.
    """
    if framework is None:
        return None
    framework = Framework(framework)
    if framework is Framework.ONNXRT_QLINEAROPS:
        return FrameworkTarget("onnx", QuantFormat.QOPERATOR, None)
    if framework is Framework.ONNXRT_QDQ:
        return FrameworkTarget("onnx", QuantFormat.QDQ, None)
    if framework is Framework.ONNXRT_INTEGEROPS:
        return FrameworkTarget("onnx", QuantFormat.QOPERATOR, Approach.DYNAMIC)
    return FrameworkTarget(framework.value)


class Device(str, enum.Enum):
    """``device``: where the model runs (lpot-ir runs ONNX Runtime's CPU provider)."""

    CPU = "cpu"
    GPU = "gpu"

    def __str__(self) -> str:
        return self.value


class Objective(str, enum.Enum):
    """``tuning.objective``: what to optimize once the accuracy criterion holds."""

    PERFORMANCE = "performance"
    MODELSIZE = "modelsize"
    FOOTPRINT = "footprint"

    def __str__(self) -> str:
        return self.value


def _invalid(owner: object, message: str) -> None:
    raise SectionError(type(owner).__name__, message)


class _Section:
    """Base of every section: on construction, field values are coerced as the YAML loader does
    (``TensorWise(dtype="int8")`` holds ``(DType.INT8,)``; a dict for a section becomes the section),
    then :meth:`_check` applies the section's cross-field rules."""

    def __post_init__(self) -> None:
        coerce_fields(self)
        self._check()

    def _check(self) -> None:
        """Cross-field rules of the section (raise :class:`SectionError` through ``_invalid``)."""


@dataclass(frozen=True)
class ModelSection(_Section):
    """``model``: which model this configuration is for.

    Attributes:
        name: a name for reports and the workspace.
        framework: LPOT's framework name; ``None`` = detected from the model.
        inputs: input names (needed for some TensorFlow graphs).
        outputs: output names (needed for some TensorFlow graphs).
        params: MXNet: the ``.params`` file (default: ``<prefix>-0000.params`` beside the symbol file).
        batch_axes: ``{input name: axis}`` (``null``: not batched) for inputs whose batch axis the model's
            dimension names do not tell (see :class:`~lpot_ir.backends.onnxruntime.batching.BatchLayout`).
    """

    name: str = "default_model_name"
    framework: Framework | None = None
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    params: str | None = None
    batch_axes: dict[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class DataLoaderSection(_Section):
    """A ``dataloader``: a dataset, transforms applied to each sample's input, and batching.

    Attributes:
        dataset: ``{name: parameters}`` with one built-in or registered dataset (e.g. ``{dummy: {shape: [8, 3, 32, 32]}}``).
        transform: ``{name: parameters, ...}`` applied in the order written.
        batch_size: samples per batch.
        last_batch: ``keep``, ``discard`` or ``rollover`` for a short last batch.
        shuffle: random sample order (from ``seed``).
        seed: random seed of ``shuffle``.
    """

    dataset: dict[str, Any]
    transform: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 1
    last_batch: LastBatch = LastBatch.KEEP
    shuffle: bool = False
    seed: int | None = None

    def _check(self) -> None:
        if self.batch_size < 1:
            _invalid(self, f"batch_size must be at least 1, got {self.batch_size}.")
        if len(self.dataset) != 1:
            _invalid(
                self,
                f"dataset must have exactly one key, the dataset's name (e.g. {{ImageFolder: {{root: ./images}}}}); "
                f"got {sorted(self.dataset) or 'none'}. Built-in datasets: {', '.join(sorted(DATASETS))}.",
            )
        _check_registry(self, DATASETS, "dataset", self.dataset)
        _check_registry(self, TRANSFORMS, "transform", self.transform)


def _check_registry(owner: object, registry: dict[str, type], kind: str, spec: dict[str, Any]) -> None:
    for name, params in spec.items():
        if name not in registry:
            close = difflib.get_close_matches(str(name), list(registry), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            _invalid(owner, f"unknown {kind} '{name}'.{hint} Available: {', '.join(sorted(registry))}.")
        check_params(registry[name], kind, name, params)


@dataclass(frozen=True)
class PostprocessSection(_Section):
    """``postprocess``: ``transform: {name: parameters}`` applied to (predictions, labels) before the metric."""

    transform: dict[str, Any] = field(default_factory=dict)

    def _check(self) -> None:
        _check_registry(self, POSTPROCESSES, "postprocess", self.transform)


@dataclass(frozen=True)
class CalibrationSection(_Section):
    """``quantization.calibration``.

    Attributes:
        sampling_size: how many samples to calibrate with; several values are tuned over.
        dataloader: the calibration data (or pass ``calib_dataloader`` in Python).
    """

    sampling_size: tuple[int, ...] = (100,)
    dataloader: DataLoaderSection | None = None

    def _check(self) -> None:
        if not self.sampling_size or any(s < 1 for s in self.sampling_size):
            _invalid(
                self, f"sampling_size must be one or more positive integers, got {list(self.sampling_size)}."
            )


@dataclass(frozen=True)
class RecoveryArgs(_Section):
    """``quantization.recipes.recovery_args``: how much work bias correction, AdaRound and range search may do
    (:class:`~lpot_ir.ir.quant.RecoveryOptions`; the same for every configuration tuning tries).

    Attributes:
        samples: calibration samples they read (the first ones).
        adaround_iterations: AdaRound's Adam steps per layer.
        adaround_seconds: AdaRound's total work budget, in seconds of a reference core (deterministic).
        adaround_layer_seconds: the budget of one layer, same unit.
        range_search_margin: keep the configured range unless another lowers the error by this fraction.
    """

    samples: int = 32
    adaround_iterations: int = 300
    adaround_seconds: float = 30.0
    adaround_layer_seconds: float = 3.0
    range_search_margin: float = 0.02

    def _check(self) -> None:
        try:
            self.options()
        except ValueError as exc:
            _invalid(self, f"{exc}.")

    def options(self) -> RecoveryOptions:
        """The :class:`RecoveryOptions` these arguments set (the others keep their defaults)."""
        return RecoveryOptions(**dataclasses.asdict(self))


@dataclass(frozen=True)
class SmoothQuantArgs(_Section):
    """``quantization.recipes.smooth_quant_args`` (Neural Compressor's key).

    Attributes:
        alpha: SmoothQuant's migration strength(s) in [0, 1]. The first value is used by ``lpot quantize``
            and as tuning's starting point; tuning may try the others. The default starts at 0.7, not the
            paper's 0.5: on MiniLM 0.5 made INT8 worse and 0.7-0.8 three times better (docs/quantization.md).
    """

    alpha: tuple[float, ...] = (0.7, 0.5, 0.8)

    def _check(self) -> None:
        if not self.alpha or any(not 0.0 <= a <= 1.0 for a in self.alpha):
            _invalid(self, f"alpha must be one or more numbers in [0, 1], got {list(self.alpha)}.")


@dataclass(frozen=True)
class RecipesSection(_Section):
    """``quantization.recipes``: accuracy recovery that keeps ops in INT8 (Neural Compressor's key).

    Attributes:
        smooth_quant: SmoothQuant for MatMul/Gemm inputs (an FP32 rewrite before calibration).
        smooth_quant_args: its settings (``alpha``).
        cross_layer_equalization: cross-layer equalization of Conv pairs (an lpot-ir key; an FP32 rewrite
            before calibration).
        bias_correction: fold each quantized layer's mean output shift (measured on calibration data) into
            its bias (Neural Compressor's ``fast_bias_correction``, done layer by layer).
        weight_rounding: ``nearest``, ``mse`` (per-channel clipping) or ``adaround`` (learned rounding).
        range_search: choose each activation's calibration algorithm and scheme by the error it causes.
        recovery_args: how much work bias correction, AdaRound and range search may do.
    """

    smooth_quant: bool = False
    smooth_quant_args: SmoothQuantArgs = field(default_factory=SmoothQuantArgs)
    cross_layer_equalization: bool = False
    # the quantization-stage passes (they read calibration data and record their decisions in the recipe)
    bias_correction: bool = False
    weight_rounding: WeightRounding = WeightRounding.NEAREST
    range_search: bool = False
    recovery_args: RecoveryArgs = field(default_factory=RecoveryArgs)

    def recovery(self) -> RecoveryConfig:
        """The :class:`RecoveryConfig` these recipes start from (the first ``alpha``)."""
        return RecoveryConfig(
            equalization=self.cross_layer_equalization,
            smoothquant_alpha=self.smooth_quant_args.alpha[0] if self.smooth_quant else None,
            bias_correction=self.bias_correction,
            weight_rounding=self.weight_rounding,
            range_search=self.range_search,
        )

    def recovery_options(self) -> RecoveryOptions:
        """The work budgets of the data-driven recovery passes (``ModelQuantizer(recovery_options=...)``)."""
        return self.recovery_args.options()


@dataclass(frozen=True)
class TensorWise(_Section):
    """Allowed quantization settings of one tensor kind (weight or activation).

    Each field is a tuple of allowed values; an empty tuple means "every value the backend supports".
    ``dtype: fp32`` (alone) keeps the tensor, hence the node, in FP32.
    """

    dtype: tuple[DType, ...] = ()
    scheme: tuple[Scheme, ...] = ()
    granularity: tuple[Granularity, ...] = ()
    algorithm: tuple[CalibAlgorithm, ...] = ()

    @property
    def fp32_only(self) -> bool:
        """True when ``dtype`` allows only fp32."""
        return bool(self.dtype) and all(d is DType.FP32 for d in self.dtype)


@dataclass(frozen=True)
class ModelWise(_Section):
    """``quantization.model_wise``: constraints for every node (the global tuning space)."""

    weight: TensorWise = field(default_factory=TensorWise)
    activation: TensorWise = field(default_factory=TensorWise)


@dataclass(frozen=True)
class OpWiseEntry(_Section):
    """One ``quantization.op_wise`` (or ``optype_wise``) entry: constraints for one node (or op type)."""

    weight: TensorWise = field(default_factory=TensorWise)
    activation: TensorWise = field(default_factory=TensorWise)

    @property
    def fp32(self) -> bool:
        """True when the entry keeps the node in FP32 (activation dtype fp32 only)."""
        return self.activation.fp32_only


@dataclass(frozen=True)
class Distillation(_Section):
    """``pruning.train.distillation``: knowledge distillation from the dense model (the teacher).

    The loss becomes ``(1 - weight) * task loss + weight * temperature**2 * KL(teacher || student)``, both
    sides' logits divided by ``temperature`` (Hinton et al.); the teacher is a frozen copy of the model taken
    before pruning starts.

    Attributes:
        weight: the distillation term's share of the loss, in [0, 1] (1: distillation only).
        temperature: softens both distributions (> 0; 1: none).
    """

    weight: float = 0.5
    temperature: float = 2.0

    def _check(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            _invalid(self, f"weight must be in [0, 1] (the distillation term's share of the loss), got {self.weight}.")
        if not (self.temperature > 0.0 and math.isfinite(self.temperature)):
            _invalid(self, f"temperature must be a positive number (1: no softening), got {self.temperature}.")


class LrScheduleType(str, enum.Enum):
    """``train.lr_schedule.type``: how the learning rate decays over the training epochs."""

    CONSTANT = "constant"
    COSINE = "cosine"
    STEP = "step"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LrSchedule(_Section):
    """``train.lr_schedule``: how the learning rate decays from the optimizer's ``learning_rate``.

    Attributes:
        type: ``cosine`` (half a cosine from the optimizer's rate down to ``min_learning_rate`` at the end of
            the last epoch, updated every batch), ``step`` (multiplied by ``gamma`` every ``step_epochs``) or
            ``constant``.
        min_learning_rate: cosine: the rate at the end of training.
        step_epochs: step: epochs between decays.
        gamma: step: the factor of each decay.
    """

    type: LrScheduleType = LrScheduleType.COSINE
    min_learning_rate: float = 0.0
    step_epochs: int = 1
    gamma: float = 0.1

    def _check(self) -> None:
        if self.min_learning_rate < 0.0:
            _invalid(self, f"min_learning_rate must be >= 0, got {self.min_learning_rate}.")
        if self.step_epochs < 1:
            _invalid(self, f"step_epochs must be at least 1, got {self.step_epochs}.")
        if not 0.0 < self.gamma <= 1.0:
            _invalid(self, f"gamma must be in (0, 1], got {self.gamma}.")


@dataclass(frozen=True)
class TrainSection(_Section):
    """``quantization.train`` (QAT) or ``pruning.train``: the training loop the built-in trainer runs.

    Attributes:
        epoch: epochs to train (when ``end_epoch`` is not given).
        start_epoch: first epoch.
        end_epoch: last epoch (exclusive); ``None`` = ``start_epoch + epoch``.
        iteration: batches per epoch; ``None`` = the whole dataloader.
        frequency: pruning/update frequency in epochs.
        dataloader: the training data.
        criterion: ``{name: parameters}``, e.g. ``{CrossEntropyLoss: {reduction: mean}}``.
        optimizer: ``{name: parameters}``, e.g. ``{SGD: {learning_rate: 0.1}}``.
        lr_schedule: the learning rate per epoch; ``None`` = the optimizer's, constant.
        distillation: knowledge distillation from the dense model (``pruning.train`` only).
    """

    epoch: int = 1
    start_epoch: int = 0
    end_epoch: int | None = None
    iteration: int | None = None
    frequency: int | None = None
    dataloader: DataLoaderSection | None = None
    criterion: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    lr_schedule: LrSchedule | None = None
    distillation: Distillation | None = None

    def _check(self) -> None:
        if self.end_epoch is not None and self.end_epoch < self.start_epoch:
            _invalid(self, f"end_epoch ({self.end_epoch}) is before start_epoch ({self.start_epoch}).")


@dataclass(frozen=True)
class QuantizationSection(_Section):
    """``quantization``.

    Attributes:
        approach: static, dynamic or quantization-aware training. ``None`` = implied by
            ``model.framework`` (``onnxrt_integerops`` -> dynamic), else static; :class:`Config` resolves it.
        format: ``qdq`` or ``qoperator`` (an lpot-ir field). ``None`` = implied by ``model.framework``
            (``onnxrt_qlinearops`` -> qoperator), else qdq; :class:`Config` resolves it.
        calibration: sampling sizes and calibration data.
        recipes: accuracy recovery that keeps ops in INT8 (``TuningConfig.recovery``).
        model_wise: constraints for every node.
        op_wise: constraints per node name (framework names allowed).
        optype_wise: constraints per op type (e.g. ``Conv``).
        train: the QAT training loop.
    """

    approach: Approach | None = None
    format: QuantFormat | None = None
    calibration: CalibrationSection = field(default_factory=CalibrationSection)
    recipes: RecipesSection = field(default_factory=RecipesSection)
    model_wise: ModelWise = field(default_factory=ModelWise)
    op_wise: dict[str, OpWiseEntry] = field(default_factory=dict)
    optype_wise: dict[str, OpWiseEntry] = field(default_factory=dict)
    train: TrainSection | None = None


@dataclass(frozen=True)
class MixedPrecisionSection(_Section):
    """``mixed_precision`` (Neural Compressor's name) or ``graph_optimization`` (LPOT 1.x's): the float types
    nodes may run in. ``precisions: [bf16, fp32]`` without INT8 in ``quantization.model_wise`` is mixed precision
    alone (every node bf16 where the declared rule and the backend allow, FP32 fallback by tuning); with INT8
    there, the 16-bit types are a fallback between INT8 and FP32 (see docs/mixed_precision.md).

    Attributes:
        precisions: ``fp32``, ``bf16``, ``fp16`` (value or list).
    """

    precisions: tuple[DType, ...] = ()

    def _check(self) -> None:
        wrong = [str(d) for d in self.precisions if not d.is_float]
        if wrong:
            _invalid(
                self,
                f"precisions lists {wrong}; it takes fp32, bf16 and fp16 (INT8 types go in quantization.model_wise).",
            )

    @property
    def low_precision(self) -> tuple[DType, ...]:
        """The 16-bit types it lists."""
        return tuple(d for d in self.precisions if d.is_low_precision)


@dataclass(frozen=True)
class InstanceConfigs(_Section):
    """``configs`` of an evaluation: how many instances and cores (LPOT's multi-instance benchmark).

    Attributes:
        cores_per_instance: cores (intra-op threads) per instance; ``None`` = all physical cores / instances.
        num_of_instance: how many instances run side by side.
        inter_num_of_threads: inter-op threads.
        intra_num_of_threads: intra-op threads (overrides ``cores_per_instance`` for the session).
        kmp_blocktime: accepted for LPOT compatibility (OpenMP block time, ms).
    """

    cores_per_instance: int | None = None
    num_of_instance: int = 1
    inter_num_of_threads: int | None = None
    intra_num_of_threads: int | None = None
    kmp_blocktime: int | None = None

    def _check(self) -> None:
        if self.num_of_instance < 1:
            _invalid(self, f"num_of_instance must be at least 1, got {self.num_of_instance}.")
        if self.cores_per_instance is not None and self.cores_per_instance < 1:
            _invalid(self, f"cores_per_instance must be at least 1, got {self.cores_per_instance}.")


@dataclass(frozen=True)
class AccuracySection(_Section):
    """``evaluation.accuracy``: how accuracy is measured when no ``eval_func`` is given.

    Attributes:
        metric: ``{name: parameters}`` of one metric, e.g. ``{topk: 1}``.
        dataloader: the evaluation data.
        postprocess: transforms applied to (predictions, labels) before the metric.
        configs: instances and cores used while evaluating.
        iteration: batches to evaluate; -1 = all.
    """

    metric: dict[str, Any] | None = None
    dataloader: DataLoaderSection | None = None
    postprocess: PostprocessSection | None = None
    configs: InstanceConfigs | None = None
    iteration: int = -1

    def _check(self) -> None:
        if self.metric is not None:
            if len(self.metric) != 1:
                _invalid(
                    self,
                    f"metric must have exactly one key, the metric's name (e.g. {{topk: 1}}); got {sorted(self.metric) or 'none'}. "
                    f"Built-in metrics: {', '.join(sorted(METRICS))}.",
                )
            _check_registry(self, METRICS, "metric", self.metric)


@dataclass(frozen=True)
class PerformanceSection(_Section):
    """``evaluation.performance``: the benchmark.

    Attributes:
        warmup: batches run before timing.
        iteration: timed batches; -1 = the whole dataloader.
        configs: instances and cores.
        dataloader: the benchmark data.
        postprocess: accepted for LPOT compatibility (not used by timing).
    """

    warmup: int = 5
    iteration: int = -1
    configs: InstanceConfigs = field(default_factory=InstanceConfigs)
    dataloader: DataLoaderSection | None = None
    postprocess: PostprocessSection | None = None

    def _check(self) -> None:
        if self.warmup < 0:
            _invalid(self, f"warmup must be 0 or more, got {self.warmup}.")


@dataclass(frozen=True)
class EvaluationSection(_Section):
    """``evaluation``: accuracy and performance measurement."""

    accuracy: AccuracySection | None = None
    performance: PerformanceSection | None = None


@dataclass(frozen=True)
class StrategySection(_Section):
    """``tuning.strategy``: ``name`` plus strategy-specific options written beside it (LPOT style).

    Attributes:
        name: basic, mse, bayesian, tpe, exhaustive, random (or a registered strategy).
        options: every other key of the section, passed to the strategy as keyword arguments.
    """

    _extra_field: ClassVar[str] = "options"

    name: str = "basic"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AccuracyCriterion(_Section):
    """``tuning.accuracy_criterion``: how much accuracy the quantized model may lose.

    Give ``relative`` (a fraction of the baseline, 0.01 = 1%) or ``absolute`` (in the metric's units),
    not both; with neither, ``relative: 0.01``. A negative value demands an improvement over the
    baseline (LPOT's tests use ``relative: -0.01`` to make tuning explore). ``higher_is_better`` says
    which way the accuracy goes (False for a loss).
    """

    relative: float | None = None
    absolute: float | None = None
    higher_is_better: bool = True

    def _check(self) -> None:
        if self.relative is not None and self.absolute is not None:
            _invalid(self, "give either relative or absolute, not both.")
        if self.relative is None and self.absolute is None:
            object.__setattr__(self, "relative", 0.01)
        tolerance = self.relative if self.relative is not None else self.absolute
        if tolerance is None or not math.isfinite(tolerance):
            _invalid(self, f"the allowed accuracy loss must be a finite number, got {tolerance}.")

    @property
    def tolerance(self) -> float:
        """The allowed loss: ``relative`` or ``absolute``, whichever is set."""
        return float(self.relative if self.relative is not None else self.absolute)  # type: ignore[arg-type]

    def threshold(self, baseline: float) -> float:
        """The worst accuracy that still meets the criterion, given the FP32 ``baseline``."""
        if self.relative is not None:
            margin = abs(baseline) * self.relative
        else:
            margin = self.tolerance
        return baseline - margin if self.higher_is_better else baseline + margin

    def is_met(self, baseline: float, accuracy: float) -> bool:
        """Whether ``accuracy`` is within the criterion of ``baseline``."""
        limit = self.threshold(baseline)
        return accuracy >= limit if self.higher_is_better else accuracy <= limit


@dataclass(frozen=True)
class MultiObjectives(_Section):
    """``tuning.multi_objectives`` (LPOT's form): several objectives and their weights.

    Attributes:
        objective: the objectives.
        weight: one weight per objective; ``None`` = equal weights.
    """

    objective: tuple[Objective, ...] = (Objective.PERFORMANCE,)
    weight: tuple[float, ...] | None = None

    def _check(self) -> None:
        if not self.objective:
            _invalid(self, "objective must name at least one objective.")
        if self.weight is not None and len(self.weight) != len(self.objective):
            _invalid(
                self,
                f"{len(self.weight)} weights for {len(self.objective)} objectives; give one weight per objective.",
            )
        if self.weight is not None and (any(w < 0 for w in self.weight) or sum(self.weight) <= 0):
            _invalid(self, f"weights must be >= 0 with a positive sum, got {list(self.weight)}.")


@dataclass(frozen=True)
class ExitPolicy(_Section):
    """``tuning.exit_policy``: when tuning stops.

    Attributes:
        timeout: seconds; 0 = stop at the first configuration that meets the accuracy criterion.
        max_trials: the most configurations to evaluate.
        performance_only: skip accuracy evaluation; quantize everything quantizable (LPOT's option).
        eval_timeout: seconds one accuracy evaluation may take (0 = no limit); a trial whose evaluation
            runs longer is recorded as failed and tuning goes on.
    """

    timeout: int = 0
    max_trials: int = 100
    performance_only: bool = False
    eval_timeout: float = 0.0

    def _check(self) -> None:
        if self.timeout < 0:
            _invalid(self, f"timeout must be 0 or more seconds, got {self.timeout}.")
        if not 0 <= self.eval_timeout < math.inf:
            _invalid(self, f"eval_timeout must be 0 (no limit) or a finite number of seconds, got {self.eval_timeout}.")
        if self.max_trials < 1:
            _invalid(self, f"max_trials must be at least 1, got {self.max_trials}.")


class DistributedBackend(str, enum.Enum):
    """``tuning.distributed.backend``: the engine that runs evaluations on a cluster."""

    RAY = "ray"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class DistributedSection(_Section):
    """``tuning.distributed``: evaluate candidates on a cluster (see docs/distributed.md).

    Attributes:
        backend: the engine (``ray``).
        address: ``auto`` (the Ray cluster started with ``ray start`` on this machine), ``host:port`` (the
            head node's address), or null (start a Ray instance on this machine for the run).
    """

    backend: DistributedBackend = DistributedBackend.RAY
    address: str | None = None

    def _check(self) -> None:
        address = self.address
        if address is None or address == "auto":
            return
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            _invalid(
                self,
                f"address must be 'auto', 'host:port' (the Ray head node's address, e.g. '10.0.0.5:6379') or null "
                f"(start Ray on this machine for the run), got {address!r}.",
            )


@dataclass(frozen=True)
class WorkspaceSection(_Section):
    """``tuning.workspace``.

    Attributes:
        path: the folder for the tuning history, caches and the best model.
        resume: a tuning history (snapshot) file to resume from.
    """

    path: str = DEFAULT_WORKSPACE
    resume: str | None = None


@dataclass(frozen=True)
class TuningSection(_Section):
    """``tuning``.

    Attributes:
        strategy: the search strategy and its options.
        accuracy_criterion: the allowed accuracy loss.
        objective: one objective, or a list (equal weights unless ``objective_weight`` is given).
        objective_weight: weights for a list ``objective`` (lpot-ir's list form).
        multi_objectives: LPOT's form for several objectives; when given it is used instead of ``objective``.
        exit_policy: when to stop.
        random_seed: seed of every random choice in tuning.
        tensorboard: dump tensor statistics for inspection.
        workspace: where history and models go.
        workers: evaluations that run at once (``None``: 1, or with ``distributed`` every CPU of the
            cluster divided by ``threads_per_worker``). 1 without ``distributed`` evaluates in the tuning
            process; more starts local worker processes.
        threads_per_worker: ONNX Runtime intra-op threads of each worker's evaluation (Ray: CPUs it reserves).
        distributed: run evaluations on a cluster (Ray).
    """

    strategy: StrategySection = field(default_factory=StrategySection)
    accuracy_criterion: AccuracyCriterion = field(default_factory=AccuracyCriterion)
    objective: tuple[Objective, ...] = (Objective.PERFORMANCE,)
    objective_weight: tuple[float, ...] | None = None
    multi_objectives: MultiObjectives | None = None
    exit_policy: ExitPolicy = field(default_factory=ExitPolicy)
    random_seed: int = 1978
    tensorboard: bool = False
    workspace: WorkspaceSection = field(default_factory=WorkspaceSection)
    workers: int | None = None
    threads_per_worker: int = 1
    distributed: DistributedSection | None = None

    def _check(self) -> None:
        MultiObjectives(self.objective, self.objective_weight)  # same checks for the list form
        if self.workers is not None and self.workers < 1:
            _invalid(self, f"workers must be at least 1, got {self.workers}.")
        if self.threads_per_worker < 1:
            _invalid(self, f"threads_per_worker must be at least 1, got {self.threads_per_worker}.")
        if self.multi_objectives is not None and self.objective_weight is not None:
            _invalid(self, "give objective_weight or multi_objectives, not both.")

    @property
    def objectives(self) -> tuple[tuple[Objective, float], ...]:
        """The effective objectives with weights normalized to sum to 1 (from either form)."""
        if self.multi_objectives is not None:
            names, weights = self.multi_objectives.objective, self.multi_objectives.weight
        else:
            names, weights = self.objective, self.objective_weight
        if weights is None:
            weights = tuple(1.0 for _ in names)
        total = float(sum(weights))
        return tuple((n, float(w) / total) for n, w in zip(names, weights, strict=True))


@dataclass(frozen=True)
class Pruner(_Section):
    """One entry of ``pruning.approach.weight_compression.pruners`` (LPOT's ``!Pruner`` tag is accepted).

    Fields left ``None`` take the enclosing ``weight_compression`` values.

    Attributes:
        names: weight tensors (parameter names) this pruner prunes; empty = all prunable weights.
        prune_type: ``basic_magnitude`` or ``gradient_sensitivity``; ``None`` = weight_compression's.
        method: ``per_tensor`` / ``per_channel`` (unstructured) or ``filter`` / ``channel`` (structured);
            ``None`` = weight_compression's.
    """

    initial_sparsity: float | None = None
    target_sparsity: float | None = None
    start_epoch: int | None = None
    end_epoch: int | None = None
    update_frequency: float | None = None
    prune_type: str | None = None
    method: str | None = None
    names: tuple[str, ...] = ()

    def _check(self) -> None:
        _check_sparsity(self, self.initial_sparsity, self.target_sparsity, self.start_epoch, self.end_epoch)


def _check_sparsity(
    owner: object, initial: float | None, target: float | None, start: int | None, end: int | None
) -> None:
    for label, value in (("initial_sparsity", initial), ("target_sparsity", target)):
        if value is not None and not 0.0 <= value < 1.0:
            _invalid(owner, f"{label} must be in [0, 1), got {value}.")
    if initial is not None and target is not None and initial > target:
        _invalid(owner, f"initial_sparsity ({initial}) is above target_sparsity ({target}).")
    if start is not None and end is not None and start > end:
        _invalid(owner, f"start_epoch ({start}) is after end_epoch ({end}).")


@dataclass(frozen=True)
class WeightCompression(_Section):
    """``pruning.approach.weight_compression``: magnitude pruning on a schedule.

    Attributes:
        initial_sparsity: sparsity at ``start_epoch``.
        target_sparsity: sparsity reached at ``end_epoch``.
        start_epoch: first pruning epoch.
        end_epoch: last pruning epoch.
        update_frequency: epochs between sparsity updates.
        prune_type: the pruning criterion: ``basic_magnitude`` or ``gradient_sensitivity``.
        method: what is pruned: single weights (``per_tensor``, ``per_channel``) or whole channels
            (``filter``: output channels; ``channel``: input channels).
        names: weights to prune (empty = every Conv/Gemm/MatMul weight).
        pruners: finer-grained pruners, each with its own names and schedule.
    """

    initial_sparsity: float = 0.0
    target_sparsity: float = 0.97
    start_epoch: int = 0
    end_epoch: int = 4
    update_frequency: float = 1.0
    prune_type: str = "basic_magnitude"
    method: str = "per_tensor"
    names: tuple[str, ...] = ()
    pruners: tuple[Pruner, ...] = ()

    def _check(self) -> None:
        _check_sparsity(self, self.initial_sparsity, self.target_sparsity, self.start_epoch, self.end_epoch)


@dataclass(frozen=True)
class PruningApproach(_Section):
    """``pruning.approach``."""

    weight_compression: WeightCompression = field(default_factory=WeightCompression)


@dataclass(frozen=True)
class PruningSection(_Section):
    """``pruning``: the training loop and the pruning approach."""

    train: TrainSection | None = None
    approach: PruningApproach = field(default_factory=PruningApproach)


@dataclass(frozen=True)
class Config(_Section):
    """The whole configuration (the YAML file's top level).

    On construction the quantization approach and format are resolved from ``model.framework``
    (``onnxrt_integerops`` -> dynamic, ``onnxrt_qlinearops`` -> qoperator, ``onnxrt_qdq`` -> qdq),
    so ``config.quantization.approach`` and ``.format`` are never ``None``; a contradiction (e.g.
    ``onnxrt_integerops`` with a static approach) is a :class:`~lpot_ir.errors.ConfigError`.
    """

    version: float = SUPPORTED_VERSION
    model: ModelSection = field(default_factory=ModelSection)
    device: Device = Device.CPU
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    tuning: TuningSection = field(default_factory=TuningSection)
    pruning: PruningSection | None = None
    mixed_precision: MixedPrecisionSection | None = None
    graph_optimization: MixedPrecisionSection | None = None

    def _check(self) -> None:
        if self.version != SUPPORTED_VERSION:
            _invalid(self, f"version {self.version} is not supported; use version: {SUPPORTED_VERSION}.")
        if self.mixed_precision is not None and self.graph_optimization is not None:
            _invalid(
                self,
                "both mixed_precision and graph_optimization are given; they are one section under two names "
                "(Neural Compressor's and LPOT 1.x's): keep one.",
            )
        quant = self.quantization
        target = framework_target(self.model.framework)
        approach, fmt = quant.approach, quant.format
        if target is not None and target.approach is not None:
            if approach is not None and approach is not target.approach:
                _invalid(
                    self,
                    f"model.framework '{self.model.framework}' means {target.approach.value} but "
                    f"quantization.approach is {approach.value}; remove one of them or make them agree.",
                )
            approach = target.approach
        if target is not None and target.format is not None:
            if fmt is not None and fmt is not target.format:
                _invalid(
                    self,
                    f"model.framework '{self.model.framework}' means format {target.format.value} but "
                    f"quantization.format is {fmt.value}; remove one of them or make them agree.",
                )
            fmt = target.format
        approach = approach or Approach.STATIC
        fmt = fmt or QuantFormat.QDQ
        if approach is not quant.approach or fmt is not quant.format:
            object.__setattr__(
                self, "quantization", dataclasses.replace(quant, approach=approach, format=fmt)
            )

    @property
    def precisions(self) -> MixedPrecisionSection | None:
        """The ``mixed_precision`` section, under either of its names."""
        return self.mixed_precision if self.mixed_precision is not None else self.graph_optimization

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data (YAML/JSON types); ``load_config(c.to_dict()) == c``."""
        return to_plain(self)

    def to_yaml(self) -> str:
        """The configuration as YAML text; ``load_config(c.to_yaml()) == c``."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
