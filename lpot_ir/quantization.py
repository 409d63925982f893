"""LPOT's ``Quantization`` API: accuracy-driven INT8 quantization configured by YAML and Python objects.

The three LPOT usages all work::

    # 1. everything in the YAML (dataloaders, metric), three lines of code
    quantizer = Quantization("conf.yaml")
    quantizer.model = "model.onnx"
    q_model = quantizer.fit()

    # 2. dataloaders in code, a built-in metric
    quantizer.calib_dataloader = common.DataLoader(calib_dataset, batch_size=10)
    quantizer.eval_dataloader = common.DataLoader(eval_dataset, batch_size=100)
    quantizer.metric = "topk"          # or {"topk": 1}, or common.Metric(MyMetric)

    # 3. a calibration dataloader and your own evaluation function
    quantizer.calib_dataloader = common.DataLoader(calib_dataset, batch_size=10)
    quantizer.eval_func = my_eval      # receives an onnx.ModelProto, returns the accuracy

and LPOT 1.0's call style: ``quantizer(model, q_dataloader=..., eval_dataloader=..., eval_func=...)``.

For an ONNX model, ``eval_func`` receives an ``onnx.ModelProto``, as LPOT and Intel Neural Compressor
pass it. For a PyTorch / TensorFlow / MXNet model (converted to ONNX by :mod:`lpot_ir.frontends`),
it receives a framework-native object running the candidate in ONNX Runtime (an ``nn.Module`` for
PyTorch), so evaluation code written for the framework model works unchanged.

``fit()`` returns the best :class:`~lpot_ir.quantizer.QuantizedModel` (``.model`` is the
``onnx.ModelProto``, ``.save(path)`` writes it with its recipe); it never returns ``None``: if no
configuration meets the accuracy criterion, the most accurate one is returned with a warning.
Details of the run (trials, report files) are in :attr:`Quantization.outcome`.

With ``approach: quant_aware_training`` the model is first trained with fake quantization where PTQ puts
Q/DQ (``q_func``, or the built-in loop from ``quantization.train``); tuning then starts from the trained
weights and the learned activation ranges (see docs/qat.md and :mod:`lpot_ir.qat`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import onnx

from lpot_ir.calibration import load_calibration_files
from lpot_ir.config import create_dataloader, load_config
from lpot_ir.config.coerce import validate_section
from lpot_ir.config.schema import DistributedSection, framework_target
from lpot_ir.data import create_postprocess
from lpot_ir.errors import ConfigError, LpotError
from lpot_ir.fileio import atomic_write
from lpot_ir.frontends import detect_framework, first_batch_inputs, resolve_model, unwrap_model, wrap_for_eval
from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import Approach
from lpot_ir.pruning import Pruning
from lpot_ir.pruning.stages import compare_stages, format_stages
from lpot_ir.qat import finish_qat, prepare_qat
from lpot_ir.quantizer import ModelQuantizer
from lpot_ir.training import train_model
from lpot_ir.tuning import Evaluator, tune
from lpot_ir.tuning.checks import check_tuning_config
from lpot_ir.tuning.space import build_space

__all__ = ["Quantization"]

logger = logging.getLogger(__name__)

_ONNX_SUFFIXES = (".onnx",)


class Quantization:
    """Accuracy-driven post-training quantization, LPOT style.

    Args:
        conf_fname_or_obj: a YAML file path, YAML text, a dict, or a :class:`~lpot_ir.config.Config`
            (``None``: all defaults).

    Raises:
        ConfigError: the configuration does not fit the schema.
    """

    def __init__(self, conf_fname_or_obj: Any = None) -> None:
        self.conf = load_config(conf_fname_or_obj)
        self._model: Any = None
        self._calib_dataloader: Iterable[Any] | None = None
        self._eval_dataloader: Iterable[Any] | None = None
        self._metric: Any = None
        self._postprocess: Callable[[Any, Any], tuple[Any, Any]] | None = None
        self._eval_func: Callable[[Any], Any] | None = None
        self._q_func: Callable[[Any], Any] | None = None
        self._train_dataloader: Iterable[Any] | None = None
        self._pruning: Any = None
        self.qat_model: Any = None
        self.stages: list[Any] = []
        self.outcome: Any = None
        self.progress = True

    # -- LPOT's properties -----------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The FP32 model: a path (``.onnx``, or a framework model file/folder), ``onnx.ModelProto``,
        ``onnx_ir.Model``, bytes, or a framework object (``torch.nn.Module``, ``keras.Model``, ...)."""
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._pruning = value if isinstance(value, Pruning) else None  # prune, then quantize: report the stages
        self._model = unwrap_model(value)  # LPOT's common.Model wrapper, a QuantizedModel, or a Pruning

    @property
    def calib_dataloader(self) -> Iterable[Any] | None:
        """Calibration batches, ``(inputs, labels)`` or bare inputs (default: the YAML's calibration dataloader)."""
        return self._calib_dataloader

    @calib_dataloader.setter
    def calib_dataloader(self, value: Iterable[Any] | None) -> None:
        _check_iterable(value, "calib_dataloader")
        self._calib_dataloader = value

    @property
    def eval_dataloader(self) -> Iterable[Any] | None:
        """Evaluation batches of ``(inputs, labels)`` (default: the YAML's evaluation dataloader)."""
        return self._eval_dataloader

    @eval_dataloader.setter
    def eval_dataloader(self, value: Iterable[Any] | None) -> None:
        _check_iterable(value, "eval_dataloader")
        self._eval_dataloader = value

    @property
    def metric(self) -> Any:
        """A built-in metric name (``"topk"``), YAML spec (``{"topk": 1}``), ``common.Metric`` or metric object."""
        return self._metric

    @metric.setter
    def metric(self, value: Any) -> None:
        self._metric = value

    @property
    def postprocess(self) -> Callable[[Any, Any], tuple[Any, Any]] | None:
        """``(preds, labels) -> (preds, labels)`` before the metric (or a YAML ``transform`` mapping)."""
        return self._postprocess

    @postprocess.setter
    def postprocess(self, value: Any) -> None:
        if isinstance(value, dict):
            value = create_postprocess(value.get("transform", value))
        elif value is not None and not callable(value):
            raise ConfigError(
                f"postprocess must be callable (preds, labels) -> (preds, labels) or a transform mapping, got "
                f"{type(value).__name__}."
            )
        self._postprocess = value

    @property
    def eval_func(self) -> Callable[[Any], Any] | None:
        """``f(model) -> accuracy``; for ONNX models the model is an ``onnx.ModelProto``."""
        return self._eval_func

    @eval_func.setter
    def eval_func(self, value: Callable[[Any], Any] | None) -> None:
        if value is not None and not callable(value):
            raise ConfigError(f"eval_func must be callable (model -> accuracy), got {type(value).__name__}.")
        self._eval_func = value

    @property
    def q_func(self) -> Callable[[Any], Any] | None:
        """``q_func(model)``: your training loop for quantization-aware training. ``model`` is the fake-quantized
        ``torch.nn.Module`` lpot-ir builds (see docs/qat.md); train it in place."""
        return self._q_func

    @q_func.setter
    def q_func(self, value: Callable[[Any], Any] | None) -> None:
        if value is not None and not callable(value):
            raise ConfigError(f"q_func must be callable (model -> None), got {type(value).__name__}.")
        self._q_func = value

    @property
    def train_dataloader(self) -> Iterable[Any] | None:
        """Training batches ``(inputs, labels)`` for the built-in QAT loop (default: ``quantization.train.dataloader``)."""
        return self._train_dataloader

    @train_dataloader.setter
    def train_dataloader(self, value: Iterable[Any] | None) -> None:
        _check_iterable(value, "train_dataloader")
        self._train_dataloader = value

    # -- where evaluations run ---------------------------------------------------------------------

    def evaluate_on(
        self,
        workers: int | None = None,
        *,
        distributed: Mapping[str, Any] | DistributedSection | None = None,
        threads_per_worker: int = 1,
    ) -> None:
        """Choose where evaluations run: the YAML's ``tuning.workers``, ``tuning.distributed`` and
        ``tuning.threads_per_worker`` (see docs/distributed.md).

        ``evaluate_on()`` evaluates in this process (the default); ``evaluate_on(4)`` in 4 local worker
        processes; ``evaluate_on(distributed={"backend": "ray", "address": "auto"})`` on a Ray cluster.

        Raises:
            ConfigError: a value the YAML would reject.
        """
        section = distributed
        if section is not None and not isinstance(section, DistributedSection):
            section = validate_section(DistributedSection, dict(section), path="tuning.distributed")
        tuning = dataclasses.replace(
            self.conf.tuning, workers=workers, threads_per_worker=threads_per_worker, distributed=section
        )
        self.conf = dataclasses.replace(self.conf, tuning=tuning)

    # -- running ---------------------------------------------------------------------------------

    def __call__(
        self,
        model: Any = None,
        q_dataloader: Iterable[Any] | None = None,
        q_func: Callable[[Any], Any] | None = None,
        eval_dataloader: Iterable[Any] | None = None,
        eval_func: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Run tuning; LPOT 1.0's call style (arguments given here override the properties)."""
        if model is not None:
            self.model = model
        if q_dataloader is not None:
            self.calib_dataloader = q_dataloader
        if q_func is not None:
            self.q_func = q_func
        if eval_dataloader is not None:
            self.eval_dataloader = eval_dataloader
        if eval_func is not None:
            self.eval_func = eval_func
        return self.fit()

    def fit(self) -> Any:
        """Tune and return the best quantized model (a ``QuantizedModel``; never ``None``).

        Raises:
            ConfigError: no model, quantization-aware training with neither ``q_func`` nor training data
                (or without torch), or a configuration the run cannot use.
            EvaluationError: the evaluation raised on the FP32 model.
        """

        conf = self.conf
        if self._model is None:
            raise ConfigError(
                "Quantization has no model. Set quantizer.model = 'model.onnx' (or an onnx.ModelProto, or a "
                "framework model object) before calling fit(), or pass it: quantizer(model, ...)."
            )
        check_tuning_config(conf)  # before any conversion, calibration or evaluation runs a model
        calib = self._calib_dataloader
        if calib is None and conf.quantization.calibration.dataloader is not None:
            calib = create_dataloader(conf.quantization.calibration.dataloader, framework=self._data_framework())
        approach = conf.quantization.approach
        assert approach is not None  # Config resolves it on construction
        target = framework_target(conf.model.framework)
        source_framework = target.source if target is not None else None
        if approach is Approach.QAT:
            self._check_qat()
            if calib is None:
                calib = self._training_dataloader()  # example inputs for the export, starting ranges
        model, name_map, framework, original = self._convert(source_framework, calib)
        evaluator = self._evaluator(framework, original)
        quantizer = ModelQuantizer(
            model,
            calib,
            approach=Approach.STATIC if approach is Approach.QAT else approach,
            workspace=conf.tuning.workspace.path,
            name_map=name_map,
            batch_axes=dict(conf.model.batch_axes) or None,
            recovery_options=conf.quantization.recipes.recovery_options(),
        )
        if self._calib_dataloader is None and conf.quantization.calibration.dataloader is not None:
            files = _calibration_files(conf.quantization.calibration.dataloader, quantizer)
            if files is not None:
                quantizer.calib_dataloader = files
        original_proto = model if isinstance(model, onnx.ModelProto) else to_proto(quantizer.fp32_model)
        if approach is Approach.QAT:
            quantizer = self._train_qat(quantizer)
            conf = _qat_strategy(conf)
        self.outcome = tune(conf, quantizer, evaluator, original_model=original_proto, progress=self.progress)
        if self._pruning is not None:
            self._report_stages(quantizer, evaluator, calib)
        return self.outcome.model

    def _report_stages(self, quantizer: Any, evaluator: Any, calib: Iterable[Any] | None) -> None:
        """Dense FP32, pruned FP32 and INT8 side by side (sparsity, size, speed, accuracy), appended to the report."""
        outcome = self.outcome
        example = first_batch_inputs(calib)
        try:
            dense = self._pruning.dense_model(example)
        except LpotError as exc:
            logger.warning("no compression-stage report: %s", exc)
            return
        models = {"dense FP32": dense, "pruned FP32": to_proto(quantizer.fp32_model), "INT8": outcome.model.model}
        dense_accuracy = None
        if evaluator is not None and outcome.baseline_accuracy is not None:
            try:
                dense_accuracy = float(evaluator(dense))
            except Exception as exc:  # the report must not lose the tuned model
                logger.warning("could not evaluate the dense model: %s", exc)
        accuracy = {
            "dense FP32": dense_accuracy,
            "pruned FP32": outcome.baseline_accuracy,
            "INT8": outcome.best.accuracy if outcome.best is not None else None,
        }
        self.stages = compare_stages(models, accuracy=accuracy)
        table = format_stages(self.stages)
        logger.info("compression stages:\n%s", table)
        report = outcome.files.get("report")
        if report is not None:
            text = report.read_text() + "\nCompression stages (speedup vs the dense FP32 model, 1 thread)\n" + "-" * 62 + "\n"
            atomic_write(report, text + table + "\n")

    def _data_framework(self) -> str | None:
        """The framework whose transform flavours the YAML dataloaders use: ``model.framework``, else the
        model's detected framework (``None``: the ONNX Runtime flavours)."""
        if self.conf.model.framework is not None:
            return str(self.conf.model.framework)
        try:
            return detect_framework(self._model)
        except LpotError:
            return None

    def _convert(self, framework: str | None, calib: Iterable[Any] | None) -> tuple[Any, Any, str, Any]:
        """(model for the quantizer, name map, source framework, the user's original model)."""

        conf = self.conf
        converted = resolve_model(
            self._model,
            framework=framework,
            calib_dataloader=calib,
            inputs=list(conf.model.inputs) or None,
            outputs=list(conf.model.outputs) or None,
            params=conf.model.params,
        )
        return converted.model, converted.aliases_map, converted.framework, self._model

    def _check_qat(self) -> None:
        conf = self.conf
        train = conf.quantization.train
        has_data = self._train_dataloader is not None or (train is not None and train.dataloader is not None)
        if self._q_func is None and not has_data:
            raise ConfigError(
                "quantization.approach is quant_aware_training, which needs a training loop: set quantizer.q_func = "
                "train(model) (your loop), or give the built-in loop its data with quantization.train.dataloader in "
                "the YAML or quantizer.train_dataloader in Python. Or use post_training_static_quant."
            )
        try:
            import torch  # noqa: F401  # optional framework: QAT trains with it
        except ImportError:
            raise ConfigError(
                "Quantization-aware training trains with PyTorch's fake-quantize ops, but torch is not installed. "
                "Install it (pip install 'lpot-ir[torch]'), or use post_training_static_quant."
            ) from None

    def _training_dataloader(self) -> Iterable[Any] | None:
        train = self.conf.quantization.train
        if self._train_dataloader is not None:
            return self._train_dataloader
        if train is not None and train.dataloader is not None:
            return create_dataloader(train.dataloader, framework=self._data_framework())
        return None

    def _train_qat(self, fp32_quantizer: Any) -> Any:
        """Train the fake-quantized model (q_func or the built-in loop); return the trained model's quantizer."""
        conf = self.conf
        build = build_space(conf, fp32_quantizer.nodes, fp32_quantizer.fp32_model)
        config = build.space.model_wise_configs()[0]  # the configuration the first trial quantizes with
        module = prepare_qat(fp32_quantizer, config)
        if self._q_func is not None:
            logger.info("quant_aware_training: running q_func on the fake-quantized model (%s)", type(module).__name__)
            self._q_func(module)
        else:
            train_model(module, conf.quantization.train, self._training_dataloader(), where="quantization.train")
        self.qat_model = module
        if not module.learned_ranges() and fp32_quantizer.calib_dataloader is None:
            raise ConfigError(
                "Quantization-aware training learned no activation range: without calibration data the ranges come "
                "from the training batches, and the model never ran in training mode. Make q_func call model(x) "
                "after model.train(), or give calib_dataloader."
            )
        return finish_qat(module, fp32_quantizer)

    def _evaluator(self, framework: str, original: Any) -> Any:
        conf = self.conf
        accuracy = conf.evaluation.accuracy
        eval_func = self._eval_func
        if eval_func is not None:
            if framework != "onnx":
                user_func = eval_func

                def eval_func(proto: onnx.ModelProto) -> Any:
                    return user_func(wrap_for_eval(proto, framework, like=original))

                eval_func.__qualname__ = getattr(user_func, "__qualname__", "eval_func")
                eval_func.__module__ = getattr(user_func, "__module__", __name__)
            return Evaluator(eval_func=eval_func)
        dataloader = self._eval_dataloader
        if dataloader is None and accuracy is not None and accuracy.dataloader is not None:
            dataloader = create_dataloader(accuracy.dataloader, framework=self._data_framework())
        metric = self._metric
        if metric is None and accuracy is not None and accuracy.metric is not None:
            metric = dict(accuracy.metric)
        postprocess = self._postprocess
        if postprocess is None and accuracy is not None and accuracy.postprocess is not None:
            postprocess = create_postprocess(accuracy.postprocess.transform)
        if dataloader is None and metric is None:
            return None  # LPOT: no evaluation at all -> quantize without accuracy tuning
        if dataloader is None or metric is None:
            missing = "an evaluation dataloader" if dataloader is None else "a metric"
            raise ConfigError(
                f"Evaluation needs both a dataloader and a metric, but {missing} is missing. Set "
                "quantizer.eval_dataloader / quantizer.metric (or evaluation.accuracy.dataloader / .metric in the "
                "YAML), or give quantizer.eval_func instead."
            )
        iteration = accuracy.iteration if accuracy is not None else -1
        return Evaluator(dataloader=dataloader, metric=metric, postprocess=postprocess, iteration=iteration)


def _qat_strategy(conf: Any) -> Any:
    """The configuration with the basic strategy's accuracy proxy and speed regions off, unless the user set them.

    Both judge a candidate against the FP32 model it was quantized from, and after quantization-aware
    training that is the trained one, which was trained to be good *quantized*, not in FP32:

    * the proxy predicts accuracy from how far INT8 outputs are from that FP32 model's, so it would judge
      the trained configuration by the wrong reference and skip it;
    * speed regions revert, before any evaluation, the groups whose INT8 kernels profile slower, assuming
      FP32 costs no accuracy. With QAT weights it does: on the QAT example (``examples/qat``) the regions
      of a loaded machine reverted 10 of 14 ops, and accuracy fell from 0.980 (the trained configuration)
      to 0.838.

    Without them, the first trial is the configuration training simulated.
    """
    strategy = conf.tuning.strategy
    if strategy.name != "basic":
        return conf
    off = {name: False for name in ("proxy", "speed") if name not in strategy.options}
    if not off:
        return conf
    options = {**strategy.options, **off}
    tuning = dataclasses.replace(conf.tuning, strategy=dataclasses.replace(strategy, options=options))
    return dataclasses.replace(conf, tuning=tuning)


def _calibration_files(section: Any, quantizer: Any) -> Any:
    """A YAML calibration dataloader that is plain numpy files, read like ``--calib`` (the model's batch axes).

    ``dataset: {numpy: {path: calib.npz}}`` without transforms or shuffling holds model inputs as they are;
    :func:`~lpot_ir.calibration.load_calibration_files` reads them with the rules of the command line's
    ``--calib`` (a state input batched on axis 1, a scalar sample rate, a fixed batch size) rather than
    indexing samples on axis 0. Any other dataloader is used as configured (``None`` here).
    """
    dataset = dict(section.dataset)
    if list(dataset) != ["numpy"] or section.transform or section.shuffle:
        return None
    params = dataset["numpy"] or {}
    if not isinstance(params, dict) or set(params) - {"path", "labels", "label_key"} or "path" not in params:
        return None

    return load_calibration_files(
        params["path"], quantizer.fp32_model, batch_size=section.batch_size, batch_axes=quantizer.batch_axes
    )


def _check_iterable(value: Any, name: str) -> None:
    if value is not None and not hasattr(value, "__iter__"):
        raise ConfigError(
            f"{name} must be an iterable of batches (e.g. lpot_ir.common.DataLoader), got {type(value).__name__}."
        )
