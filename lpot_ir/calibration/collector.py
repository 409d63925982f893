"""One instrumented ONNX Runtime pass over the calibration data, folding each batch into statistics.

:func:`select_tensors` decides which tensors are calibrated: the float activations of the main graph
(graph inputs and node outputs), the float values inside If branches and Loop/Scan bodies that
calibration reaches, and, separately, float initializers (weights, whose range is computed from the
array, without running anything).

:func:`instrument` returns a copy of the model whose graph outputs are the requested node outputs.
:func:`collect` runs ONE session over the data, turns each batch into checked feeds with
:meth:`lpot_ir.backends.onnxruntime.batching.BatchLayout.feeds` (the model's batch axes; every feed goes
through ``make_feed``, the one check that data fits a model), counts samples on the batch axes, slices
the last feed to honour ``sampling_size`` (never below a fixed batch), and folds every output array into a
:class:`TensorStatistics` at once. Only the statistics survive a batch, so peak memory does not grow with
the number of samples. A Relu output whose input is calibrated too is not exposed at all: its statistics
follow exactly from the input's (:meth:`TensorStatistics.after_relu`), which saves a third of the work
on a typical CNN. Values inside control flow cannot be outputs of that run: after it, the same feeds go
through :func:`lpot_ir.calibration.control_flow.collect_nested` (If branches inlined per group of feeds
that take them, Loop/Scan bodies stacked per iteration); only then are the feeds kept in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.batching import BatchLayout
from lpot_ir.backends.onnxruntime.session import make_session, run_feed
from lpot_ir.calibration.control_flow import collect_nested
from lpot_ir.calibration.statistics import DEFAULT_BINS_PER_SIDE, TensorStatistics
from lpot_ir.errors import QuantizationError
from lpot_ir.ir.control_flow import Location, graph_locations
from lpot_ir.ir.model import all_graphs, to_proto

__all__ = ["TensorSelection", "select_tensors", "instrument", "collect"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE})


@dataclass
class TensorSelection:
    """Which tensors one calibration covers.

    Attributes:
        inputs: float graph inputs (their statistics come from the fed arrays).
        outputs: float node outputs of the main graph (made graph outputs of the instrumented copy).
        nested: float values inside If branches and Loop/Scan bodies that calibration reaches -> where they
            live (collected on specialized copies: :mod:`lpot_ir.calibration.control_flow`).
        weights: float initializers (of every graph) -> their arrays (minmax, no run).
        skipped: name -> reason it gets no range.
    """

    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    nested: dict[str, Location] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    """Relu output -> its input, for outputs whose statistics follow exactly from the input's (in graph order)."""

    @property
    def activations(self) -> list[str]:
        return [*self.inputs, *self.outputs]


def _is_float(value: ir.Value) -> bool | None:
    """True/False when the value's element type is known, None when it is not."""
    if value.type is None or value.dtype is None:
        return None
    return value.dtype in _FLOAT_TYPES


def select_tensors(model: ir.Model, tensors: Iterable[str] | None = None) -> TensorSelection:
    """Sort ``tensors`` (default: every float tensor) into inputs, node outputs, weights and skipped.

    Raises:
        QuantizationError: a requested name is not a tensor of the model.
    """
    graph = model.graph
    selection = TensorSelection()
    initializers = {name: value for name, value in graph.initializers.items()}
    graph_inputs = {value.name: value for value in graph.inputs if value.name and value.name not in initializers}
    node_outputs: dict[str, ir.Value] = {}
    for node in graph:
        for value in node.outputs:
            if value.name:
                node_outputs[value.name] = value
    locations = graph_locations(model)
    nested: dict[str, tuple[ir.Value, Location]] = {}
    nested_weights: dict[str, ir.Value] = {}
    for sub in all_graphs(model):
        if sub is graph:
            continue
        location = locations[id(sub)]
        for value in [*sub.inputs, *(v for node in sub for v in node.outputs)]:
            if value.name and value.name not in initializers:
                nested.setdefault(value.name, (value, location))
        for name, value in sub.initializers.items():
            nested_weights.setdefault(name, value)
    initializers.update({k: v for k, v in nested_weights.items() if k not in initializers})

    if tensors is None:
        wanted = [*graph_inputs, *node_outputs, *initializers, *nested]
        explicit = False
    else:
        wanted = list(dict.fromkeys(tensors))
        explicit = True
    unknown = [n for n in wanted if n not in graph_inputs and n not in node_outputs and n not in initializers
               and n not in nested]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise QuantizationError(
            f"Cannot calibrate {len(unknown)} tensor(s) that are not in the model: {shown}. Pass names of graph "
            "inputs, node outputs or initializers of the model being calibrated (after its FP32 optimization)."
        )
    for name in wanted:
        if name in nested and name not in node_outputs and name not in graph_inputs and name not in initializers:
            value, location = nested[name]
            why = location.unreachable()
            if why is not None:
                selection.skipped[name] = why
            elif _is_float(value) is False:
                if explicit:
                    selection.skipped[name] = f"its element type is {value.dtype}, not float"
            else:
                selection.nested[name] = location
            continue
        if name in initializers:
            value = initializers[name]
            array = value.const_value.numpy() if value.const_value is not None else None
            if array is None or array.dtype.kind != "f":
                if explicit:
                    selection.skipped[name] = "it is an initializer without float data"
                continue
            selection.weights[name] = array
            continue
        value = graph_inputs[name] if name in graph_inputs else node_outputs[name]
        is_float = _is_float(value)
        if is_float is False:
            if explicit:
                selection.skipped[name] = f"its element type is {value.dtype}, not float"
            continue
        if name in graph_inputs:
            selection.inputs.append(name)
        else:
            selection.outputs.append(name)  # unknown types are checked on the first batch
    collected = set(selection.activations)
    for node in graph:
        if node.op_type == "Relu" and node.domain in ("", "ai.onnx") and node.inputs and node.inputs[0] is not None:
            source, result = node.inputs[0].name, node.outputs[0].name
            if source in collected and result in collected and result not in selection.derived:
                selection.derived[result] = source
    if selection.skipped:
        logger.info(
            "Calibration skips %d tensor(s), e.g. %r: %s.",
            len(selection.skipped),
            next(iter(selection.skipped)),
            next(iter(selection.skipped.values())),
        )
    return selection


def instrument(model: ir.Model, output_names: Iterable[str]) -> onnx.ModelProto:
    """A ModelProto of ``model`` whose graph outputs are exactly ``output_names`` (main-graph values).

    Working on the proto (not a cloned IR) keeps the set-up cost to one serialization; the model is not
    modified.
    """
    proto = to_proto(model)
    known = {info.name: info for info in (*proto.graph.value_info, *proto.graph.output)}
    outputs = [known.get(name) or onnx.ValueInfoProto(name=name) for name in output_names]
    copies = []
    for info in outputs:
        copy = onnx.ValueInfoProto()
        copy.CopyFrom(info)
        copies.append(copy)
    del proto.graph.output[:]
    proto.graph.output.extend(copies)
    return proto


def collect(
    model: ir.Model,
    batches: Iterator[Any],
    selection: TensorSelection,
    *,
    histogram: bool,
    sampling_size: int,
    progress: bool = True,
    bins_per_side: int = DEFAULT_BINS_PER_SIDE,
    intra_op_threads: int | None = None,
    channel_axes: Mapping[str, int] | None = None,
    layout: BatchLayout | None = None,
) -> tuple[dict[str, TensorStatistics], int]:
    """Run the instrumented model over ``batches`` and return (statistics per activation, samples seen).

    ``layout`` (default: from the model) says where each input keeps its samples. ``channel_axes``
    (activation name -> axis) also keeps per-channel min/max of those tensors (:attr:`TensorStatistics.channels`).

    Raises:
        DataError: a batch does not fit the model (from ``make_feed``), or ONNX Runtime fails on it.
    """

    axes = dict(channel_axes or {})
    stats = {
        name: TensorStatistics(name, histogram=histogram, bins_per_side=bins_per_side, channel_axis=axes.get(name))
        for name in selection.activations
        if name not in selection.derived or axes.get(name) != axes.get(selection.derived[name])
    }
    outputs = [name for name in selection.outputs if name in stats]
    session = None
    if outputs:
        session = make_session(instrument(model, outputs), intra_op_threads=intra_op_threads)
    layout = layout if layout is not None else BatchLayout(model)
    kept: list[tuple[dict[str, np.ndarray], int]] | None = [] if selection.nested else None
    bar = _progress_bar(sampling_size, progress)
    seen = 0
    runs = 0
    ignored: set[str] = set()
    try:
        for index, batch in enumerate(batches):
            if seen >= sampling_size:
                break
            for feed in layout.feeds(batch, where=f"calibration batch {index}"):
                if seen >= sampling_size:
                    break
                samples = layout.count(feed)
                if samples == 0:
                    continue
                if seen + samples > sampling_size and layout.splittable:
                    samples = sampling_size - seen
                    feed = layout.head(feed, samples)
                for name in selection.inputs:
                    _update(stats[name], feed[name], samples)
                if session is not None:
                    arrays = run_feed(session, feed, where=f"calibration batch {index}")
                    if runs == 0:
                        ignored = _non_float_outputs(outputs, arrays, stats, selection)
                    for name, array in zip(outputs, arrays, strict=True):
                        if name not in ignored:
                            _update(stats[name], array, samples)
                    del arrays
                if kept is not None:
                    kept.append((feed, samples))
                runs += 1
                seen += samples
                if bar is not None:
                    bar.update(samples)
    finally:
        if bar is not None:
            bar.close()
    for result, source in selection.derived.items():  # graph order: a source is ready before its result
        if source in stats and result not in stats:
            stats[result] = stats[source].after_relu(result)
    if kept is not None:
        reasons = collect_nested(
            to_proto(model), kept, selection.nested, stats,
            lambda name: TensorStatistics(name, histogram=histogram, bins_per_side=bins_per_side),
            intra_op_threads=intra_op_threads,
        )
        selection.skipped.update(reasons)
    names = [*selection.activations, *selection.nested]
    return {name: stats[name] for name in names if name in stats}, seen


def _update(stats: TensorStatistics, array: np.ndarray, samples: int) -> None:
    try:
        stats.update(array, samples)
    except ValueError as exc:  # a per-channel axis that does not fit the tensor
        raise QuantizationError(
            f"Cannot collect per-channel statistics: {exc}. Pass a channel axis the tensor has "
            "(calibrate(channel_axes={name: axis}))."
        ) from None


def _non_float_outputs(
    outputs: list[str], arrays: list[Any], stats: dict[str, TensorStatistics], selection: TensorSelection
) -> set[str]:
    """Outputs whose type was unknown before the run and turned out not to be float: forget them."""
    ignored = set()
    for name, array in zip(outputs, arrays, strict=True):
        if not (isinstance(array, np.ndarray) and array.dtype.kind == "f"):
            ignored.add(name)
            stats.pop(name, None)
            selection.outputs.remove(name)
    return ignored


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency (the "tuning" extra)
        logger.debug("tqdm is not installed; calibrating without a progress bar.")
        return None
    return tqdm(total=total, desc="calibrating", unit="sample", leave=False)
