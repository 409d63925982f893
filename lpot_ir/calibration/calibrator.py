""":func:`calibrate`: ranges of a model's tensors from one instrumented run over the calibration data.

The flow: pick the tensors (:func:`~lpot_ir.calibration.collector.select_tensors`), look the request
up in the on-disk cache (model digest, data fingerprint, sampling size, algorithms, options), otherwise
run the model once over at most ``sampling_size`` samples collecting running min/max (and a histogram
when kl, percentile or mse is requested), then turn the statistics into ranges with each algorithm.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.batching import BatchAxes, BatchLayout
from lpot_ir.calibration import cache as calib_cache
from lpot_ir.calibration.algorithms import (
    DEFAULT_PERCENTILE,
    HISTOGRAM_ALGORITHMS,
    compute_range,
    weight_range,
)
from lpot_ir.calibration.collector import collect, select_tensors
from lpot_ir.calibration.result import CalibrationResult, ChannelRange
from lpot_ir.calibration.statistics import DEFAULT_BINS_PER_SIDE
from lpot_ir.errors import ConfigError, DataError, QuantizationError
from lpot_ir.ir.model import from_proto, infer_shapes, model_digest
from lpot_ir.ir.quant import CalibAlgorithm

__all__ = ["calibrate"]

logger = logging.getLogger(__name__)


def _as_ir(model: ir.Model | onnx.ModelProto) -> ir.Model:
    if isinstance(model, ir.Model):
        return model
    if isinstance(model, onnx.ModelProto):
        return from_proto(infer_shapes(model))
    raise TypeError(f"calibrate() takes an onnx_ir.Model or an onnx.ModelProto, not {type(model).__name__}")


def _loader_length(dataloader: Any) -> int | None:
    try:
        return len(dataloader)
    except TypeError:
        return None


def calibrate(
    model: ir.Model | onnx.ModelProto,
    dataloader: Iterable[Any],
    *,
    tensors: Iterable[str] | None = None,
    algorithms: Iterable[CalibAlgorithm | str] = (CalibAlgorithm.MINMAX,),
    sampling_size: int = 100,
    progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    percentile: float = DEFAULT_PERCENTILE,
    intra_op_threads: int | None = None,
    channel_axes: Mapping[str, int] | None = None,
    batch_axes: BatchAxes | None = None,
) -> CalibrationResult:
    """Calibrate ``model``'s tensors over at most ``sampling_size`` samples of ``dataloader``.

    Args:
        model: the (FP32-optimized) model to calibrate; it is not modified.
        dataloader: any iterable of batches, ``(inputs, labels)`` or bare inputs; inputs are an array, a
            tuple/list in model-input order, or a dict by input name, in the model's layout (one feed) or
            stacking feeds on a new first axis. Samples are counted on each input's batch axis (see
            :class:`~lpot_ir.backends.onnxruntime.batching.BatchLayout`).
        tensors: names to calibrate; ``None`` means every float activation (graph inputs and node
            outputs, inside If branches and Loop/Scan bodies too) and every float initializer. A value
            inside a branch no calibration feed took (or otherwise out of reach, see
            :mod:`lpot_ir.calibration.control_flow`) gets no range and is listed with the reason in
            :attr:`CalibrationResult.skipped`.
        algorithms: the range algorithms to compute (all from the same single pass).
        sampling_size: how many samples (not batches) to run; the last batch is sliced. A model with a fixed
            batch size is never fed less: the size is rounded up to whole batches, with a warning. A loader
            with fewer samples is used whole, with a warning.
        progress: show a tqdm progress bar over samples (description "calibrating").
        cache_dir: folder of the on-disk cache; a hit returns without running the model.
        percentile: the percentile of the ``percentile`` algorithm.
        intra_op_threads: ONNX Runtime threads inside one op (``None``: all cores).
        channel_axes: activation name -> channel axis: also collect the per-channel min/max of these
            tensors (:meth:`CalibrationResult.channel_range`), e.g. ``{"ln_out": -1}`` for the input
            channels of a MatMul. Names are calibrated even when ``tensors`` does not list them.
        batch_axes: ``{input name: axis or None}`` where the model's dimension names do not tell which
            axis holds the batch (a :class:`~lpot_ir.calibration.NumpyBatches` loader brings its own).

    Returns:
        The :class:`CalibrationResult`.

    Raises:
        DataError: the loader yields nothing, or a batch does not fit the model's inputs.
        ConfigError: ``sampling_size`` or ``percentile`` is out of range.
        QuantizationError: a requested tensor is not in the model.
    """
    if int(sampling_size) < 1:
        raise ConfigError(
            f"Calibration sampling_size is {sampling_size}; it must be a positive number of samples "
            "(quantization.calibration.sampling_size in the YAML, e.g. 100)."
        )
    if not 50.0 < float(percentile) <= 100.0:
        raise ConfigError(f"Calibration percentile is {percentile}; it must be in (50, 100], e.g. 99.999.")
    sampling_size = int(sampling_size)
    algos = tuple(dict.fromkeys(CalibAlgorithm(a) for a in algorithms))
    axes = {str(name): int(axis) for name, axis in sorted((channel_axes or {}).items())}
    tensor_list = list(dict.fromkeys([*tensors, *axes])) if tensors is not None else None
    ir_model = _as_ir(model)
    layout = getattr(dataloader, "layout", None)
    if not isinstance(layout, BatchLayout) or batch_axes is not None:
        layout = BatchLayout(ir_model, batch_axes)
    rounded = layout.round_up(sampling_size)
    if rounded != sampling_size:
        logger.warning(
            "The model's batch is fixed at %d samples; calibration sampling_size %d is rounded up to %d (whole "
            "batches).", layout.fixed, sampling_size, rounded,
        )
        sampling_size = rounded
    selection = select_tensors(ir_model, tensor_list)
    not_activations = sorted(set(axes) - set(selection.activations))
    if not_activations:
        raise QuantizationError(
            f"Per-channel statistics were asked for {not_activations[:5]}, which are not float activations of "
            "the model's main graph (initializers, non-float values and values inside If/Loop bodies have none)."
        )
    options: dict[str, Any] = {"bins_per_side": DEFAULT_BINS_PER_SIDE}
    if CalibAlgorithm.PERCENTILE in algos:
        options["percentile"] = float(percentile)
    if axes:  # part of the cache key; omitted when empty so plain calibrations keep their keys
        options["channel_axes"] = axes
    weights = {name: weight_range(array) for name, array in selection.weights.items()}

    if not (selection.activations or selection.nested) or not algos:
        return CalibrationResult(
            num_samples=0, activations={a: {} for a in algos}, weights=weights,
            skipped=selection.skipped, options=options,
        )

    iterator = iter(dataloader)
    try:
        first = next(iterator)
    except StopIteration:
        raise DataError(
            "The calibration dataloader yielded no batches. Pass a dataloader (or --calib data) with at least "
            "one sample; static quantization needs calibration data."
        ) from None

    key = None
    if cache_dir is not None:
        fingerprint = calib_cache.data_fingerprint(first, _loader_length(dataloader))
        key = calib_cache.cache_key(
            model_digest(ir_model), fingerprint, sampling_size, [a.value for a in algos], tensor_list, options
        )
        entry = calib_cache.load_entry(cache_dir, key)
        if entry is not None:
            try:
                cached = CalibrationResult.from_dict(entry["result"])
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("Ignoring a malformed calibration cache entry (%s); calibrating again.", exc)
            else:
                logger.info("Calibration cache hit (%s); not running the model.", calib_cache.cache_path(cache_dir, key))
                return cached

    stats, seen = collect(
        ir_model,
        itertools.chain([first], iterator),
        selection,
        histogram=any(a in HISTOGRAM_ALGORITHMS for a in algos),
        sampling_size=sampling_size,
        progress=progress,
        intra_op_threads=intra_op_threads,
        channel_axes=axes,
        layout=layout,
    )
    if seen == 0:
        raise DataError(
            "The calibration dataloader yielded only empty batches (first axis of length 0). Pass data with "
            "at least one sample."
        )
    if seen < sampling_size:
        logger.warning(
            "The calibration data holds %d sample(s), fewer than sampling_size=%d; calibrated on all of them.",
            seen,
            sampling_size,
        )
    activations = {
        algorithm: {name: compute_range(s, algorithm, percentile=percentile) for name, s in stats.items()}
        for algorithm in algos
    }
    channels = {}
    for name in axes:
        collected = stats[name].channels if name in stats else None
        if collected is not None and collected.lo is not None and collected.hi is not None:
            channels[name] = ChannelRange.from_arrays(collected.axis, collected.lo, collected.hi)
    result = CalibrationResult(
        num_samples=seen, activations=activations, weights=weights, skipped=selection.skipped, options=options,
        channels=channels,
    )
    if cache_dir is not None and key is not None:
        try:
            calib_cache.store_entry(cache_dir, key, {"result": result.to_dict()})
        except OSError as exc:
            logger.warning("Could not write the calibration cache under %s (%s).", cache_dir, exc)
    return result
