"""The layer-wise engine of AdaRound and bias correction: quantized layers, visited in topological order.

Both techniques correct a quantized Conv/Gemm/MatMul (a *target*) from its input in the quantized
model, so that every layer is corrected against inputs that already carry the corrections of the layers
before it (Nagel et al.'s empirical bias correction; AdaRound's asymmetric reconstruction).
:class:`LayerwiseWalk` runs the quantized and the FP32 model in lock step with two
:class:`~lpot_ir.passes.quantization.recovery.segments.SegmentRunner`, each up to the target's input and
no further: a whole walk costs about one inference of each model over the samples plus one small ONNX
Runtime session per target, not one inference per layer. The quantized model is cut at the target's
*integer* input (the output of its activation's QuantizeLinear), so ONNX Runtime runs every segment
with its fused integer kernels, as the deployed model does. A correction written with
:meth:`LayerwiseWalk.write` reaches both the model and the runner before the target itself runs.

:func:`find_targets` finds the targets of a Q/DQ model (activation ``DequantizeLinear`` x weight
``DequantizeLinear`` products that :func:`~lpot_ir.passes.quantization.recovery.layers.linear_layer`
can read as matrix products) and their FP32 counterparts.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from threadpoolctl import threadpool_limits

from lpot_ir.backends.onnxruntime.capabilities import OpCategory, constant_value, op_types
from lpot_ir.ir.model import to_proto
from lpot_ir.ir.quant import ANNOTATION_KEY, QuantAnnotation, QuantSpec
from lpot_ir.passes.quantization.qparams import qrange
from lpot_ir.passes.quantization.recovery.layers import LinearLayer, linear_layer
from lpot_ir.passes.quantization.recovery.report import set_constant
from lpot_ir.passes.quantization.recovery.segments import SegmentRunner

__all__ = [
    "Target",
    "LayerwiseWalk",
    "find_targets",
    "first_samples",
    "constant",
    "dq_params",
    "single_threaded_blas",
]

logger = logging.getLogger(__name__)

_TARGET_OPS = op_types(OpCategory.COMPUTE)


def constant(value: ir.Value | None) -> np.ndarray | None:
    """The array behind an initializer or ``Constant`` output, else ``None``."""
    tensor = constant_value(value)
    return None if tensor is None else tensor.numpy()


def _is_dq(node: ir.Node | None) -> bool:
    return node is not None and node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx")


def dq_params(dq: ir.Node) -> tuple[np.ndarray, np.ndarray, int]:
    """(scale, zero point, axis) of a DequantizeLinear with constant parameters."""
    scale = constant(dq.inputs[1])
    if scale is None:
        raise ValueError(f"{dq.name}: non-constant scale")
    zp = constant(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else None
    zp = np.zeros(scale.shape, dtype=np.int32) if zp is None else zp
    return scale.astype(np.float32), zp, dq.attributes.get_int("axis", 1)


def broadcast_channel(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """Per-channel ``values`` shaped to broadcast along ``axis`` of a rank-``rank`` array (scalars as is)."""
    if values.ndim == 0:
        return values
    shape = [1] * rank
    shape[axis % rank] = -1
    return values.reshape(shape)


@dataclass
class Target:
    """One quantized Conv/Gemm/MatMul of the Q/DQ model, and what the layer-wise passes need of it.

    Attributes:
        node: the node in the quantized model.
        fp_node: the node of the same name in the FP32 model.
        layer: the node as a matrix product.
        act_dq: the DequantizeLinear feeding its activation input.
        weight_dq: the DequantizeLinear feeding its weight.
        weight_fp32: the FP32 weight.
        exclusive: the integer weight feeds only this node (AdaRound may change it).
    """

    node: ir.Node
    fp_node: ir.Node
    layer: LinearLayer
    act_dq: ir.Node
    weight_dq: ir.Node
    weight_fp32: np.ndarray
    exclusive: bool

    @property
    def name(self) -> str:
        return self.node.name or ""

    @property
    def weight_value(self) -> ir.Value:
        """The integer weight initializer."""
        value = self.weight_dq.inputs[0]
        assert value is not None
        return value

    def weight_integers(self) -> np.ndarray:
        tensor = self.weight_value.const_value
        assert tensor is not None
        return tensor.numpy()

    def weight_qrange(self) -> tuple[int, int]:
        """The integer range the weight was quantized to: its annotation's spec, else the stored type's."""
        annotation = self.node.meta.get(ANNOTATION_KEY)
        spec = annotation.input_spec(1) if isinstance(annotation, QuantAnnotation) else None
        if isinstance(spec, QuantSpec):
            return qrange(spec.dtype, spec.scheme, spec.reduce_range)
        info = np.iinfo(self.weight_integers().dtype)
        return int(info.min), int(info.max)

    def dequantized_weight(self) -> np.ndarray:
        """The weight the quantized model computes with (float64)."""
        scale, zp, axis = dq_params(self.weight_dq)
        integers = self.weight_integers()
        rank = integers.ndim
        return (integers.astype(np.float64) - broadcast_channel(zp.astype(np.float64), axis, rank)) * broadcast_channel(
            scale.astype(np.float64), axis, rank
        )


def find_targets(model: ir.Model, fp32_model: ir.Model) -> tuple[list[Target], dict[str, str]]:
    """The quantized Conv/Gemm/MatMul of ``model`` in graph (topological) order, and why others were skipped."""
    fp_nodes = {n.name: n for n in fp32_model.graph}
    targets: list[Target] = []
    skipped: dict[str, str] = {}
    for node in model.graph:
        name = node.name or ""
        if node.op_type not in _TARGET_OPS or len(node.inputs) < 2 or ANNOTATION_KEY not in node.meta:
            continue
        fp_node = fp_nodes.get(name)
        x, w = node.inputs[0], node.inputs[1]
        act_dq = x.producer() if x is not None else None
        weight_dq = w.producer() if w is not None else None
        if fp_node is None or not _is_dq(act_dq) or not _is_dq(weight_dq):
            skipped[name] = "not a product of a quantized activation and a quantized constant weight"
            continue
        assert act_dq is not None and weight_dq is not None and w is not None
        q_weight = weight_dq.inputs[0]
        weight = constant(fp_node.inputs[1]) if len(fp_node.inputs) > 1 else None
        if q_weight is None or q_weight.const_value is None or weight is None or constant(act_dq.inputs[1]) is None:
            skipped[name] = "its weight or activation parameters are not constants"
            continue
        layer = linear_layer(node, weight.shape)
        if layer is None:
            skipped[name] = "not a plain matrix product over its input (a ConvTranspose, a batched-weight MatMul)"
            continue
        exclusive = len(q_weight.uses()) == 1 and len(w.uses()) == 1
        targets.append(Target(node, fp_node, layer, act_dq, weight_dq, weight.astype(np.float32), exclusive))
    return targets, skipped


def first_samples(feeds: Sequence[Mapping[str, np.ndarray]], samples: int) -> list[dict[str, np.ndarray]]:
    """The first ``samples`` samples of ``feeds`` (the batch axis is the first axis of the first input)."""
    out: list[dict[str, np.ndarray]] = []
    seen = 0
    for feed in feeds:
        if seen >= samples:
            break
        first = next(iter(feed.values()))
        count = int(first.shape[0]) if first.ndim else 1
        keep = min(count, samples - seen)
        if keep < count:
            feed = {k: (v[:keep] if v.ndim and v.shape[0] == count else v) for k, v in feed.items()}
        out.append(dict(feed))
        seen += keep
    return out


class LayerwiseWalk:
    """The quantized and the FP32 model run in lock step, target by target.

    Args:
        model: the Q/DQ model (corrections are written into it).
        fp32_model: the FP32 model it was quantized from (not modified).
        feeds: calibration batches.
        threads: ONNX Runtime intra-op threads.
        targets: the targets :meth:`inputs` will be asked for, in order: their inputs are kept until the
            last target reading each has been served (several layers may read one activation, and a
            later one may be visited after every node reading it has run).
    """

    def __init__(
        self,
        model: ir.Model,
        fp32_model: onnx.ModelProto,
        feeds: Sequence[Mapping[str, np.ndarray]],
        threads: int | None = None,
        targets: Sequence[Target] = (),
    ) -> None:
        self._pending: Counter[tuple[str, str]] = Counter()
        for target in targets:
            q_name, fp_name = self._names(target)
            self._pending[("q", q_name)] += 1
            self._pending[("fp", fp_name)] += 1
        keep_q = {name for side, name in self._pending if side == "q"}
        keep_fp = {name for side, name in self._pending if side == "fp"}
        self.quantized = SegmentRunner(to_proto(model), feeds, threads=threads, keep=keep_q)
        self.fp32 = SegmentRunner(fp32_model, feeds, threads=threads, keep=keep_fp)

    @staticmethod
    def _names(target: Target) -> tuple[str, str]:
        q_input, x_input = target.act_dq.inputs[0], target.fp_node.inputs[0]
        assert q_input is not None and x_input is not None
        return q_input.name or "", x_input.name or ""

    def _served(self, side: str, name: str, runner: SegmentRunner) -> None:
        key = (side, name)
        if key in self._pending:
            self._pending[key] -= 1
            if self._pending[key] <= 0:
                del self._pending[key]
                runner.release(name)

    @property
    def segments(self) -> int:
        return self.quantized.segments + self.fp32.segments

    def inputs(self, target: Target) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The target's input activation in the quantized model (dequantized) and in the FP32 model."""
        q_name, fp_name = self._names(target)
        integers = self.quantized.run_to([q_name])[0]
        scale, zp, _axis = dq_params(target.act_dq)
        if scale.ndim:
            raise ValueError(f"{target.name}: per-channel activation parameters")
        s = np.float32(scale)
        x_q = [((b.astype(np.int32) - zp.astype(np.int32)).astype(np.float32) * s) for b in integers]
        x_fp = self.fp32.run_to([fp_name])[0]
        self._served("q", q_name, self.quantized)
        self._served("fp", fp_name, self.fp32)
        return x_q, x_fp

    def write(self, value: ir.Value, array: np.ndarray) -> None:
        """Replace initializer ``value`` in the model and in the runner (before its consumers run)."""
        set_constant(value, array)
        self.quantized.set_initializer(value.name or "", array)


class single_threaded_blas:
    """Limit numpy's BLAS to one thread: the products are small (threads cost more than they save, the
    more so on a loaded machine) and results are then reproducible."""

    def __enter__(self) -> None:
        self._limits = threadpool_limits(limits=1, user_api="blas")

    def __exit__(self, *exc: object) -> None:
        self._limits.restore_original_limits()
