"""Where quantization-aware training fake-quantizes: the Q/DQ positions of post-training quantization.

:func:`plan_fake_quant` annotates the FP32 optimized model for a :class:`~lpot_ir.ir.quant.TuningConfig`
with the same annotators that post-training quantization uses (:func:`lpot_ir.passes.quantization.annotate`),
and reads the annotations the way :class:`~lpot_ir.passes.quantization.InsertQDQPass` does:

* an activation the producer asked to quantize is fake-quantized once, where it is produced, and every
  consumer reads the fake-quantized value; one that only consumers asked for is fake-quantized for
  those consumers only (the others read it in FP32), exactly where PTQ puts its Q/DQ pair;
* an output with a :class:`~lpot_ir.ir.quant.SharedQuantSpec` (data movement: MaxPool, Reshape ...)
  reuses its source's scale and zero point;
* a weight is fake-quantized per channel along the capability table's channel axis (or per tensor);
* a bias (:class:`~lpot_ir.ir.quant.DerivedBiasSpec`) is rounded to int32 with scale = activation scale
  x weight scale; a constant operand of Add/Mul/Concat is quantized with its own range.

Nodes the annotators leave FP32 get no fake quantization at all. The plan is plain data (no torch):
:mod:`lpot_ir.qat.torch_qat` turns it into a trainable module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import onnx_ir as ir

from lpot_ir.backends.onnxruntime.capabilities import CAPABILITIES, QuantizableNode, constant_value
from lpot_ir.ir.quant import (
    ANNOTATION_KEY,
    DerivedBiasSpec,
    Fp32Reason,
    Granularity,
    QuantAnnotation,
    QuantSpec,
    SharedQuantSpec,
    TuningConfig,
)
from lpot_ir.passes.quantization.annotate import annotate
from lpot_ir.passes.quantization.insert_qdq import weight_axis

__all__ = ["ActivationSite", "WeightSite", "BiasSite", "ConstantSite", "FakeQuantPlan", "plan_fake_quant"]


@dataclass(frozen=True)
class ActivationSite:
    """One activation tensor that PTQ quantizes (one Q/DQ pair).

    Attributes:
        value: the ONNX value name.
        spec: how it is quantized; ``None`` when it shares ``shared_with``'s parameters.
        shared_with: for a :class:`SharedQuantSpec` output, the value whose scale it reuses.
        at_producer: every consumer reads the quantized value (the producer asked for it).
        consumers: ``(node name, input index)`` pairs that read it quantized when not ``at_producer``.
        nodes: the annotated nodes that asked for it (for reports).
    """

    value: str
    spec: QuantSpec | None
    shared_with: str | None = None
    at_producer: bool = False
    consumers: tuple[tuple[str, int], ...] = ()
    nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class WeightSite:
    """A constant weight of a quantized node, quantized from its own values (min/max)."""

    node: str
    input: int
    value: str
    spec: QuantSpec
    axis: int | None


@dataclass(frozen=True)
class BiasSite:
    """An int32 bias: scale = the scale of ``activation`` x the scale of the node's weight (input 1)."""

    node: str
    input: int
    value: str
    activation: str


@dataclass(frozen=True)
class ConstantSite:
    """A constant operand of Add/Mul/Concat, stored quantized with the range of its own values."""

    node: str
    input: int
    value: str
    spec: QuantSpec


@dataclass
class FakeQuantPlan:
    """Every fake-quantization site of one configuration, in graph order.

    Attributes:
        config: the configuration planned.
        activations: value name -> its site.
        weights: weight sites.
        biases: int32 bias sites.
        constants: constant operand sites.
        quantized: the annotated nodes.
        fp32: node name -> why it stays FP32 (no fake quantization there).
    """

    config: TuningConfig
    activations: dict[str, ActivationSite] = field(default_factory=dict)
    weights: list[WeightSite] = field(default_factory=list)
    biases: list[BiasSite] = field(default_factory=list)
    constants: list[ConstantSite] = field(default_factory=list)
    quantized: list[str] = field(default_factory=list)
    fp32: dict[str, Fp32Reason] = field(default_factory=dict)

    def consumer_sites(self) -> dict[tuple[str, int], str]:
        """``(node, input index)`` -> the activation value fake-quantized for that consumer only."""
        out: dict[tuple[str, int], str] = {}
        for site in self.activations.values():
            if not site.at_producer:
                for key in site.consumers:
                    out[key] = site.value
        return out


def plan_fake_quant(
    model: ir.Model,
    config: TuningConfig,
    nodes: Sequence[QuantizableNode],
    unsupported: Mapping[str, Fp32Reason] | None = None,
) -> FakeQuantPlan:
    """Annotate ``model`` (in place: pass a copy) for ``config`` and list where to fake-quantize.

    Args:
        model: the FP32 optimized model (``ModelQuantizer.fp32_model``'s copy).
        config: the configuration training simulates.
        nodes: the quantizable nodes (``ModelQuantizer.nodes``).
        unsupported: covered nodes that cannot be quantized.
    """
    result = annotate(model, config, nodes, unsupported)
    plan = FakeQuantPlan(config, quantized=list(result.quantized), fp32=dict(result.fp32))
    requests: dict[str, list[tuple[str, int]]] = {}
    askers: dict[str, list[str]] = {}
    specs: dict[str, ActivationSite] = {}
    for node in model.graph:
        annotation = node.meta.get(ANNOTATION_KEY)
        if not isinstance(annotation, QuantAnnotation) or annotation.dynamic:
            continue
        name = node.name or ""
        cap = CAPABILITIES.get(node.op_type)
        weight_inputs = cap.weight_inputs if cap is not None else ()
        for index, spec in annotation.inputs:
            value = node.inputs[index] if index < len(node.inputs) else None
            if value is None or not value.name:
                continue
            const = constant_value(value)
            if isinstance(spec, DerivedBiasSpec):
                plan.biases.append(BiasSite(name, index, value.name, spec.activation_value))
                continue
            if not isinstance(spec, QuantSpec):
                continue
            if const is not None:
                if index in weight_inputs:
                    rank = len(const.shape)
                    axis = weight_axis(node, rank) if spec.granularity is Granularity.PER_CHANNEL else None
                    plan.weights.append(WeightSite(name, index, value.name, spec, axis))
                else:
                    plan.constants.append(ConstantSite(name, index, value.name, spec))
                continue
            requests.setdefault(value.name, []).append((name, index))
            askers.setdefault(value.name, []).append(name)
            if value.name not in specs:
                specs[value.name] = ActivationSite(value.name, spec)
        for index, spec in annotation.outputs:
            value = node.outputs[index] if index < len(node.outputs) else None
            if value is None or not value.name:
                continue
            askers.setdefault(value.name, []).append(name)
            if isinstance(spec, SharedQuantSpec):
                if spec.value_name in specs:
                    specs[value.name] = ActivationSite(value.name, None, spec.value_name, at_producer=True)
            elif isinstance(spec, QuantSpec):
                specs[value.name] = ActivationSite(value.name, spec, at_producer=True)
    for value_name, site in specs.items():
        consumers = () if site.at_producer else tuple(dict.fromkeys(requests.get(value_name, ())))
        plan.activations[value_name] = ActivationSite(
            site.value, site.spec, site.shared_with, site.at_producer, consumers,
            tuple(dict.fromkeys(askers.get(value_name, ()))),
        )
    return plan
