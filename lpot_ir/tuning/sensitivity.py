"""Per-node quantization sensitivity: ``StrategyContext.op_sensitivity`` of the tuning loop.

For a candidate configuration, :class:`SensitivityMeter` measures how much error each quantized node
brings in, without a trial (no accuracy evaluation):

1. The candidate is quantized (cheap: calibration is cached; in Q/DQ form even when the target format
   is QOperator, which is a lowering of the same numerics) and run with the FP32 model on up to
   ``max_samples`` calibration samples; the ``top_k`` samples whose final outputs disagree most
   (normalized squared difference) are kept.
2. One instrumented run of the INT8 model and one of the FP32 model on those samples expose every
   intermediate float tensor.
3. Each QuantizeLinear -> DequantizeLinear pair's error is the per-channel normalized squared error
   ``mean_c(mse_c / var_c)`` between its dequantized output and its float input (for weights and
   biases, the FP32 model's constant). A pair's error is charged to the node that produced the
   tensor (and, through a fused Relu/Clip, to the node before it) and to every node that reads the
   dequantized value: both ends of a badly quantized tensor show up.
4. A node's score is the largest error charged to it, plus ``output_share`` x the error it adds: how
   much further its output drifts from the FP32 model's than its inputs already did (amplification).

Per-channel normalization matters: a tensor with one outlier channel quantized per tensor keeps its
overall error small while every other channel is destroyed; the per-channel mean sees it.

The same run also reports the error *per quantized tensor* (:meth:`SensitivityMeter.measure`): each
:class:`TensorError` names the nodes that make that tensor quantized (its quantized producer and its
quantized readers; see ``InsertQDQPass``: a tensor is quantized if either side asks). Reverting only
one of them leaves the tensor quantized, so strategies revert such a set together.

Nodes inside ``If`` branches are measured too: the chosen samples are grouped by the branches they take
and both models are specialized to each group first
(:func:`~lpot_ir.backends.onnxruntime.specialize.specialize` inlines the branches taken), so the branches'
tensors are main-graph tensors of the instrumented copies. Nodes of Loop/Scan bodies get no score.

The label-free accuracy proxy lives in :mod:`lpot_ir.tuning.proxy`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir

from lpot_ir.backends.onnxruntime.batching import BatchLayout
from lpot_ir.backends.onnxruntime.profiling import instrumented_model
from lpot_ir.backends.onnxruntime.session import make_session
from lpot_ir.backends.onnxruntime.specialize import specialize
from lpot_ir.ir.quant import QuantFormat, TuningConfig

__all__ = ["SensitivityMeter", "SensitivityReport", "TensorError", "normalized_error"]

logger = logging.getLogger(__name__)

_FUSED = ("Relu", "Clip")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class TensorError:
    """The quantization error of one quantized tensor and the nodes that make it quantized.

    Attributes:
        tensor: the FP32 tensor's name (an activation, or a weight/bias constant).
        nodes: the quantized nodes that cause the tensor to be quantized: its producer (when quantized)
            and every quantized reader; reverting all of them makes the tensor FP32.
        error: the per-channel normalized squared error of ``DQ(Q(x))`` against ``x``.
    """

    tensor: str
    nodes: tuple[str, ...]
    error: float


@dataclass(frozen=True)
class SensitivityReport:
    """What one instrumented run measured: per-node scores and per-tensor errors (largest first)."""

    nodes: dict[str, float]
    tensors: tuple[TensorError, ...]


def _model_and_quantized(result: Any) -> tuple[onnx.ModelProto, set[str] | None]:
    """``(model, names of quantized nodes)`` from a ``QuantizedModel`` or a bare ``ModelProto`` (then ``None``)."""
    if isinstance(result, onnx.ModelProto):
        return result, None
    decisions = getattr(result, "decisions", None) or {}
    return result.model, {name for name, d in decisions.items() if getattr(d, "quantized", False)}


def normalized_error(actual: np.ndarray, reference: np.ndarray, axis: int | None = None) -> float:
    """Mean over channels (``axis``) of ``mse_c / var_c`` between ``actual`` and ``reference``.

    ``axis=None`` picks the channel axis of an activation: 1 for rank 2, 4 and 5 ([N, C, ...]), the last
    axis for rank 3 ([batch, tokens, features]); rank 0/1 tensors are one channel.
    """
    a = np.asarray(actual, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if a.shape != r.shape or a.size == 0:
        return 0.0
    if axis is None:
        axis = -1 if r.ndim == 3 else (1 if r.ndim >= 2 else None)
    if axis is None or r.ndim < 2:
        var = float(r.var())
        mse = float(np.mean((a - r) ** 2))
        return mse / (var + 1e-12) if var > 0 else (0.0 if mse == 0 else 1.0)
    axis = axis % r.ndim
    moved_a = np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1)
    moved_r = np.moveaxis(r, axis, 0).reshape(r.shape[axis], -1)
    mse = np.mean((moved_a - moved_r) ** 2, axis=1)
    var = moved_r.var(axis=1)
    eps = 1e-6 * float(var.mean()) + 1e-12
    return float(np.mean(mse / (var + eps)))


class ErrorStatistics:
    """:func:`normalized_error` of two tensors accumulated over samples, one sample at a time.

    ``update(actual, reference)`` for each sample (the same tensor of two models); :meth:`error` then
    equals ``normalized_error`` of the samples concatenated on their batch axis, without keeping them.
    Samples whose shapes disagree, or whose rank or channel count differs from the first, are skipped.
    """

    __slots__ = ("_axis", "_channels", "_count", "_d2", "_r", "_r2")

    def __init__(self) -> None:
        self._axis: int | None = -2  # unknown until the first sample
        self._channels = 0
        self._count = 0
        self._d2: np.ndarray | None = None
        self._r: np.ndarray | None = None
        self._r2: np.ndarray | None = None

    def update(self, actual: np.ndarray, reference: np.ndarray, axis: int | None = None) -> None:
        a = np.asarray(actual, dtype=np.float64)
        r = np.asarray(reference, dtype=np.float64)
        if a.shape != r.shape or a.size == 0:
            return
        if axis is None:
            axis = -1 if r.ndim == 3 else (1 if r.ndim >= 2 else None)
        if axis is not None:
            axis %= r.ndim
        channels = 1 if axis is None else r.shape[axis]
        if self._axis == -2:
            self._axis, self._channels = axis, channels
        elif (axis, channels) != (self._axis, self._channels):
            return
        if axis is None:
            d, ref = (a - r).reshape(1, -1), r.reshape(1, -1)
        else:
            d = np.moveaxis(a - r, axis, 0).reshape(channels, -1)
            ref = np.moveaxis(r, axis, 0).reshape(channels, -1)
        parts = ((d * d).sum(axis=1), ref.sum(axis=1), (ref * ref).sum(axis=1))
        if self._d2 is None:
            self._d2, self._r, self._r2 = parts
        else:
            self._d2, self._r, self._r2 = self._d2 + parts[0], self._r + parts[1], self._r2 + parts[2]  # type: ignore[operator]
        self._count += ref.shape[1]

    def error(self) -> float | None:
        """The accumulated normalized error (``None`` before any sample)."""
        if self._d2 is None or self._count == 0:
            return None
        n = float(self._count)
        mse = self._d2 / n
        var = np.maximum(self._r2 / n - (self._r / n) ** 2, 0.0)  # type: ignore[operator]
        if self._axis is None:
            v, m = float(var[0]), float(mse[0])
            return m / (v + 1e-12) if v > 0 else (0.0 if m == 0 else 1.0)
        eps = 1e-6 * float(var.mean()) + 1e-12
        return float(np.mean(mse / (var + eps)))


class SensitivityMeter:
    """Implements ``op_sensitivity(config) -> {node name: score}`` for the tuning loop.

    Args:
        fp32_model: the FP32 model the quantizer starts from (its node names are the INT8 model's).
        quantize: ``config -> QuantizedModel`` (or a bare ``onnx.ModelProto``) of the INT8 candidate;
            with a ``QuantizedModel`` its ``decisions`` tell which readers of a tensor are quantized.
        feeds: input batches (``{input name: array}``) to choose samples from.
        max_samples: how many samples to compare FP32 and INT8 on.
        top_k: how many of the most disagreeing samples the instrumented runs use.
        output_share: weight of a node's output error against FP32 in its score.
        batch_axes: ``{input name: batch axis or None}`` where the model's dimension names do not tell.

    Attributes:
        calls: instrumented measurements made (repeated configurations are answered from a cache).
    """

    def __init__(
        self,
        fp32_model: onnx.ModelProto,
        quantize: Callable[[TuningConfig], Any],
        feeds: Sequence[Mapping[str, np.ndarray]],
        *,
        max_samples: int = 64,
        top_k: int = 8,
        output_share: float = 0.02,
        batch_axes: Mapping[str, int | None] | None = None,
    ) -> None:
        self.fp32_model = fp32_model
        self.quantize = quantize
        self.top_k = int(top_k)
        self.output_share = float(output_share)
        self.layout = _layout(fp32_model, batch_axes)
        self.units = _sample_units(feeds, max_samples, self.layout)
        self._fp32_outputs: list[list[np.ndarray]] | None = None
        # the instrumented FP32 model and its graph per set of inlined If branches (() : the model itself)
        self._fp32_instrumented: dict[tuple[tuple[str, str], ...], tuple[onnx.ModelProto, ir.Graph]] = {}
        self._fp32_graph = ir.serde.deserialize_model(fp32_model).graph
        self._has_if = any(node.op_type == "If" for node in fp32_model.graph.node)
        self._cache: OrderedDict[str, SensitivityReport] = OrderedDict()
        self.calls = 0

    def __call__(self, config: TuningConfig) -> dict[str, float]:
        return dict(self.measure(config).nodes)

    def is_cached(self, config: TuningConfig) -> bool:
        """Whether measuring ``config`` again is free (answered from the cache)."""
        return config.key() in self._cache or not self.units

    def measure(self, config: TuningConfig) -> SensitivityReport:
        """Per-node scores and per-tensor errors of ``config`` (one instrumented run, cached by key)."""
        if not self.units:
            return SensitivityReport({}, ())
        key = config.key()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        self.calls += 1
        # QOperator is a lowering of the same Q/DQ numerics; measure on the Q/DQ form, whose float
        # tensors can be compared with the FP32 model's
        int8, quantized = _model_and_quantized(self.quantize(dataclasses.replace(config, format=QuantFormat.QDQ)))
        chosen = self._disagreeing_units(int8)
        reports = [
            self._measure_group(int8_group, fp32_group, [chosen[i] for i in members], quantized)
            for int8_group, fp32_group, members in self._groups(int8, chosen)
        ]
        report = _merged(reports)
        self._cache[key] = report
        if len(self._cache) > 16:
            self._cache.popitem(last=False)
        return report

    def _groups(
        self, int8: onnx.ModelProto, chosen: Sequence[Mapping[str, np.ndarray]]
    ) -> list[tuple[onnx.ModelProto, tuple[tuple[str, str], ...], tuple[int, ...]]]:
        """``(INT8 model, key of the FP32 copy, members of chosen)`` per group of samples taking the same branches.

        Without an ``If`` there is one group: both models as they are. With them, both models are specialized
        to the samples (the INT8 model keeps the FP32 model's If nodes and their names).
        """
        if not self._has_if or not chosen:
            return [(int8, (), tuple(range(len(chosen))))]
        groups = []
        for fp32_group in specialize(self.fp32_model, chosen):
            key = fp32_group.taken
            if key not in self._fp32_instrumented:  # as many as the paths the samples take: few
                fp32_instrumented, _, fp32_ir = instrumented_model(fp32_group.model)
                self._fp32_instrumented[key] = (fp32_instrumented, fp32_ir.graph)
            members = fp32_group.members
            # one INT8 group per FP32 group, unless a quantized If condition goes the other way on a sample
            for int8_group in specialize(int8, [chosen[i] for i in members]):
                groups.append((int8_group.model, key, tuple(members[i] for i in int8_group.members)))
        return groups

    def _measure_group(
        self,
        int8: onnx.ModelProto,
        fp32_key: tuple[tuple[str, str], ...],
        units: Sequence[Mapping[str, np.ndarray]],
        quantized: set[str] | None,
    ) -> SensitivityReport:
        """Steps 2-4 on samples that take the same If branches (``int8`` and the FP32 copy ``fp32_key`` specialized to them)."""
        int8_instrumented, _, int8_ir = instrumented_model(int8)
        if fp32_key not in self._fp32_instrumented:  # () : the model without If, or before any specialization
            fp32_instrumented, _, fp32_ir = instrumented_model(self.fp32_model)
            self._fp32_instrumented[fp32_key] = (fp32_instrumented, fp32_ir.graph)
        fp32_instrumented, fp32_graph = self._fp32_instrumented[fp32_key]
        pairs = self._pairs(int8_ir, fp32_graph)
        stats = {key: ErrorStatistics() for key in pairs}
        int8_session = make_session(int8_instrumented, intra_op_threads=1)
        fp32_session = make_session(fp32_instrumented, intra_op_threads=1)
        int8_names = [o.name for o in int8_session.get_outputs()]
        fp32_names = [o.name for o in fp32_session.get_outputs()]
        for unit in units:  # one sample at a time: memory is one run's tensors, not top_k runs'
            int8_values = dict(zip(int8_names, int8_session.run(None, dict(unit)), strict=True))
            fp32_values = dict(zip(fp32_names, fp32_session.run(None, dict(unit)), strict=True))
            for pair, (actual, in_fp32, reference) in pairs.items():
                a = int8_values.get(actual)
                r = (fp32_values if in_fp32 else int8_values).get(reference)
                if a is not None and r is not None:
                    stats[pair].update(a, r)
            del int8_values, fp32_values
        errors = {pair: stat.error() for pair, stat in stats.items()}
        return self._scores(int8_ir, errors, quantized, fp32_graph)

    # -- step 1: the samples where FP32 and INT8 disagree most ------------------------------------

    def _disagreeing_units(self, int8: onnx.ModelProto) -> list[dict[str, np.ndarray]]:
        """The ``top_k`` samples whose final outputs differ most between FP32 and INT8, in their order."""
        if self._fp32_outputs is None:
            self._fp32_outputs = _run_units(make_session(self.fp32_model, intra_op_threads=1), self.units, self.layout)
        outputs = _run_units(make_session(int8, intra_op_threads=1), self.units, self.layout)
        scores = [
            sum(normalized_error(o, r, axis=None) for o, r in zip(out, reference, strict=True))
            for out, reference in zip(outputs, self._fp32_outputs, strict=True)
        ]
        order = sorted(range(len(self.units)), key=lambda i: (-scores[i], i))[: max(1, self.top_k)]
        return [self.units[i] for i in sorted(order)]

    def _pairs(self, int8: ir.Model, fp32_graph: ir.Graph) -> dict[tuple[str, str], tuple[str, bool, str]]:
        """What the instrumented runs compare: key -> (INT8 value, reference in the FP32 run?, reference value).

        ``("qdq", x)``: the dequantized copy of activation ``x`` against ``x`` itself (same run);
        ``("drift", v)``: value ``v`` of the INT8 model against the FP32 model's ``v``.
        """
        pairs: dict[tuple[str, str], tuple[str, bool, str]] = {}
        for node in int8.graph:
            out = node.outputs[0]
            if node.op_type != "DequantizeLinear" or not out.name or node.inputs[0] is None:
                continue
            producer = node.inputs[0].producer()
            if producer is not None and producer.op_type == "QuantizeLinear" and producer.inputs[0] is not None:
                x = producer.inputs[0].name
                if x:
                    pairs[("qdq", out.name)] = (out.name, False, x)
        for node in fp32_graph:
            for value in (*node.inputs, *node.outputs):
                if value is not None and value.name and value.const_value is None:
                    pairs.setdefault(("drift", value.name), (value.name, True, value.name))
        return pairs

    # -- steps 3 and 4 ----------------------------------------------------------------------------

    def _scores(
        self,
        int8: ir.Model | onnx.ModelProto,
        errors: Mapping[tuple[str, str], float | None],
        quantized: set[str] | None = None,
        fp32_graph: ir.Graph | None = None,
    ) -> SensitivityReport:
        graph = (int8 if isinstance(int8, ir.Model) else ir.serde.deserialize_model(int8)).graph
        fp32_graph = fp32_graph if fp32_graph is not None else self._fp32_graph
        fp32_nodes = {n.name: n for n in fp32_graph}
        charged: dict[str, float] = {}
        tensors: dict[str, TensorError] = {}

        def charge(node: ir.Node | None, error: float) -> None:
            if node is None or not node.name or node.op_type in _QDQ:
                return
            charged[node.name] = max(charged.get(node.name, 0.0), error)

        def is_quantized(node: ir.Node | None) -> bool:
            if node is None or not node.name or node.op_type in _QDQ:
                return False
            return quantized is None or node.name in quantized

        def record(name: str, members: Iterable[ir.Node | None], error: float) -> None:
            nodes: tuple[str, ...] = tuple(dict.fromkeys(n.name or "" for n in members if n is not None and is_quantized(n)))
            if not nodes:
                return
            known = tensors.get(name)
            if known is not None:
                nodes = tuple(dict.fromkeys(known.nodes + nodes))
                error = max(error, known.error)
            tensors[name] = TensorError(name, nodes, error if math.isfinite(error) else 1e9)

        for node in graph:
            out = node.outputs[0]
            if node.op_type != "DequantizeLinear" or not out.name:
                continue
            source = node.inputs[0]
            producer = source.producer() if source is not None else None
            consumers = list(out.consumers())
            if producer is not None and producer.op_type == "QuantizeLinear":
                x = producer.inputs[0]
                measured = errors.get(("qdq", out.name))
                if x is None or measured is None:
                    continue
                error = measured
                origin = x.producer()  # type: ignore[union-attr]
                charge(origin, error)
                if origin is not None and origin.op_type in _FUSED and origin.inputs and origin.inputs[0] is not None:
                    charge(origin.inputs[0].producer(), error)
                record(x.name or "", [origin, *consumers], error)  # type: ignore[union-attr]
            else:  # a constant (weight or bias) stored quantized: compare with the FP32 constant
                dequantized = _dequantized_constant(node)
                if dequantized is None:
                    continue
                axis = node.attributes.get_int("axis", 0) if dequantized.ndim > 1 else None
                error = 0.0
                for consumer in consumers:
                    reference = _fp32_constant(fp32_nodes.get(consumer.name or ""), consumer, out)
                    if reference is not None and reference.shape == dequantized.shape:
                        error = max(error, normalized_error(dequantized, reference, axis=axis))
                record(out.name or "", consumers, error)
            for consumer in consumers:
                charge(consumer, error)

        drift: dict[str, float] = {}

        def drift_of(value: ir.Value | None) -> float:
            name = value.name if value is not None else None
            if not name:
                return 0.0
            if name not in drift:
                drift[name] = errors.get(("drift", name)) or 0.0
            return drift[name]

        scores: dict[str, float] = {}
        for node in fp32_graph:
            name = node.name or ""
            output_error = max((drift_of(v) for v in node.outputs), default=0.0)
            input_error = max((drift_of(v) for v in node.inputs), default=0.0)
            added = max(0.0, output_error - input_error)
            score = charged.get(name, 0.0) + self.output_share * added
            if name and (name in charged or added > 0):
                scores[name] = score if math.isfinite(score) else 1e9
        ranked = sorted(tensors.values(), key=lambda t: (-t.error, t.tensor))
        return SensitivityReport(scores, tuple(ranked))


def _merged(reports: Sequence[SensitivityReport]) -> SensitivityReport:
    """One report from those of groups of samples: each node's and tensor's largest error over the groups."""
    if len(reports) == 1:
        return reports[0]
    nodes: dict[str, float] = {}
    tensors: dict[str, TensorError] = {}
    for report in reports:
        for name, score in report.nodes.items():
            nodes[name] = max(nodes.get(name, score), score)
        for tensor in report.tensors:
            known = tensors.get(tensor.tensor)
            if known is None:
                tensors[tensor.tensor] = tensor
            else:
                members = tuple(dict.fromkeys(known.nodes + tensor.nodes))
                tensors[tensor.tensor] = TensorError(tensor.tensor, members, max(known.error, tensor.error))
    ranked = sorted(tensors.values(), key=lambda t: (-t.error, t.tensor))
    return SensitivityReport(nodes, tuple(ranked))


def _dequantized_constant(node: ir.Node) -> np.ndarray | None:
    """``DequantizeLinear(x, scale, zero_point)`` of a constant ``x``, computed in numpy (``None`` if not constant)."""
    values = [v.const_value.numpy() if v is not None and v.const_value is not None else None for v in node.inputs]
    if len(values) < 2 or values[0] is None or values[1] is None:
        return None
    x = np.asarray(values[0], dtype=np.float64)
    scale = np.asarray(values[1], dtype=np.float64)
    zero_point = values[2] if len(values) > 2 else None
    zero = np.asarray(zero_point, dtype=np.float64) if zero_point is not None else np.float64(0.0)
    if scale.ndim == 1 and scale.size > 1 and x.ndim > 1:
        axis = node.attributes.get_int("axis", 1) % x.ndim
        shape = [1] * x.ndim
        shape[axis] = scale.size
        scale, zero = scale.reshape(shape), np.broadcast_to(zero, scale.shape).reshape(shape)
    return ((x - zero) * scale).astype(np.float32)


def _fp32_constant(fp32_node: ir.Node | None, int8_node: ir.Node, value: ir.Value) -> np.ndarray | None:
    """The FP32 constant the INT8 node reads at the input where it now reads ``value``."""
    if fp32_node is None:
        return None
    for index, given in enumerate(int8_node.inputs):
        if given is value and index < len(fp32_node.inputs):
            original = fp32_node.inputs[index]
            if original is not None and original.const_value is not None:
                return np.asarray(original.const_value.numpy(), dtype=np.float32)
    return None


def _layout(model: onnx.ModelProto, batch_axes: Mapping[str, int | None] | None) -> BatchLayout:

    return BatchLayout(model, batch_axes)


def _sample_units(
    feeds: Iterable[Mapping[str, np.ndarray]], max_samples: int, layout: BatchLayout
) -> list[dict[str, np.ndarray]]:
    """Feeds split into single samples on their batch axes (whole feeds when the batch is fixed)."""
    units: list[dict[str, np.ndarray]] = []
    for feed in feeds:
        for unit in layout.split({k: np.asarray(v) for k, v in feed.items()}):
            units.append(unit)
            if len(units) >= max_samples:
                return units
    return units


def _run_units(session: Any, units: Sequence[Mapping[str, np.ndarray]], layout: BatchLayout) -> list[list[np.ndarray]]:
    """Each unit's outputs; single-sample units run as one batch when every output splits back per sample."""
    if len(units) > 1 and all(layout.count(u) == 1 for u in units):
        joined = layout.group(units)
        batched = None
        if len(joined) == 1:
            try:
                batched = session.run(None, joined[0])
            except Exception:  # a model that does not take the batch after all: run one by one
                batched = None
        if batched is not None and all(np.ndim(o) >= 1 and np.shape(o)[0] == len(units) for o in batched):
            return [[o[i : i + 1] for o in batched] for i in range(len(units))]
    return [session.run(None, dict(u)) for u in units]


