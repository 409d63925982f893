"""Quantization-aware training in PyTorch: the FP32 optimized graph as a trainable module with fake quantization.

:class:`QatGraphModule` interprets the model that post-training quantization would quantize (the ONNX
export after the ``fp32-optimize`` pipeline: BatchNorm folded into Conv, MatMul + Add fused into Gemm)
with the torch ops of :mod:`lpot_ir.backends.export.torch_lowering`. Its weights and biases are
``nn.Parameter`` s; fake quantization sits exactly where PTQ puts Q/DQ (:class:`~lpot_ir.qat.plan.FakeQuantPlan`):

* :class:`ActivationFakeQuantize`: the tensor's range is an exponential moving average of each training
  batch's min/max (torch's ``MovingAverageMinMaxObserver`` rule), started from the calibration range;
  scale and zero point come from that range by the same arithmetic PTQ uses
  (:func:`~lpot_ir.passes.quantization.qparams.compute_qparams`), and ``torch.fake_quantize_per_tensor_affine``
  rounds and saturates (straight-through gradient inside the range). The range is only updated in
  training mode while the observer is enabled.
* :class:`WeightFakeQuantize`: per-channel (``torch.fake_quantize_per_channel_affine``) or per-tensor, with
  the min/max of the current weights, as PTQ computes them from the final weights.
* biases are rounded to int32 with scale = activation scale x weight scale (straight-through).

Both fake-quantize classes derive from ``torch.ao.quantization.FakeQuantizeBase``, so LPOT-style training
code works: ``model.apply(torch.ao.quantization.disable_observer)`` freezes the activation ranges.

The three classes derive from torch types, so they are defined on first use (:func:`qat_classes`; the
module's attributes ``ActivationFakeQuantize``, ``WeightFakeQuantize``, ``QatGraphModule`` reach them),
and importing this module does not import torch.

After training, :meth:`QatGraphModule.trained_model` is the FP32 model with the trained weights and
:meth:`QatGraphModule.learned_ranges` the activation ranges: quantizing the one with the other gives the
QDQ model whose scales are the learned ones.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from lpot_ir.backends.export.graph import lower_graph
from lpot_ir.backends.export.torch_lowering import bind_graph_inputs, run_torch_node
from lpot_ir.errors import ConversionError
from lpot_ir.ir.quant import QuantSpec, TensorRange
from lpot_ir.passes.quantization.qparams import compute_qparams, numpy_dtype, weight_qparams
from lpot_ir.qat.plan import BiasSite, FakeQuantPlan

__all__ = [  # ActivationFakeQuantize, WeightFakeQuantize, QatGraphModule: through qat_classes() / __getattr__
    "qat_classes",
    "build_qat_module",
    "trainable_initializers",
]

logger = logging.getLogger(__name__)

_DEFAULT_AVERAGING = 0.01
"""EMA constant of the activation ranges (torch's ``MovingAverageMinMaxObserver`` default)."""

_PARAMETER_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Conv": None,
    "ConvTranspose": None,
    "Gemm": None,
    "MatMul": None,
    "BatchNormalization": (1, 2),
    "LayerNormalization": (1, 2),
    "InstanceNormalization": (1, 2),
    "PRelu": (1,),
    "Add": None,
    "Sub": None,
    "Mul": None,
    "Div": None,
}
"""Where a float initializer is a learned parameter (``None``: any input); other constants stay fixed."""


def _dtype_range(spec: QuantSpec) -> tuple[int, int]:
    info = np.iinfo(numpy_dtype(spec.dtype))
    return int(info.min), int(info.max)


def trainable_initializers(model: onnx.ModelProto) -> list[str]:
    """Float initializers that are learned parameters: weights and biases of Conv/Gemm/MatMul, normalization
    scale and shift, and constant operands of Add/Sub/Mul/Div with more than one element."""
    floats = {
        i.name: i
        for i in model.graph.initializer
        if i.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE)
    }
    chosen: dict[str, None] = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in _PARAMETER_INPUTS:
            continue
        allowed = _PARAMETER_INPUTS[node.op_type]
        for index, name in enumerate(node.input):
            if name not in floats or (allowed is not None and index not in allowed):
                continue
            size = int(np.prod(floats[name].dims)) if floats[name].dims else 1
            if node.op_type in ("Add", "Sub", "Mul", "Div") and size <= 1:
                continue
            chosen[name] = None
    return list(chosen)


@functools.cache
def qat_classes() -> tuple[type, type, type]:
    """(ActivationFakeQuantize, WeightFakeQuantize, QatGraphModule), defined on first use so that importing
    this module does not import torch."""
    import torch

    class ActivationFakeQuantize(torch.ao.quantization.FakeQuantizeBase):
        """Fake quantization of one activation tensor with an EMA-observed range.

        Args:
            spec: the tensor's quantization spec (dtype, scheme, reduce_range).
            initial: the starting range (the calibration range); ``None``: the first training batch's.
            averaging_constant: weight of each new batch in the moving average.
        """

        min_val: torch.Tensor
        max_val: torch.Tensor

        def __init__(
            self, spec: QuantSpec, initial: TensorRange | None = None, averaging_constant: float = _DEFAULT_AVERAGING
        ) -> None:
            super().__init__()
            self.spec = spec
            self.averaging_constant = float(averaging_constant)
            self.quant_min, self.quant_max = _dtype_range(spec)
            lo, hi = (initial.lo, initial.hi) if initial is not None else (math.inf, -math.inf)
            self.register_buffer("min_val", torch.tensor(float(lo), dtype=torch.float32))
            self.register_buffer("max_val", torch.tensor(float(hi), dtype=torch.float32))
            self.last_scale: torch.Tensor | None = None

        @property
        def initialized(self) -> bool:
            """Whether a range has been set (from calibration or a training batch)."""
            return bool(self.min_val.item() <= self.max_val.item())

        def observe(self, x: torch.Tensor) -> None:
            """Move the range towards ``x``'s min/max (or take it, the first time)."""
            data = x.detach()
            if data.numel() == 0:
                return
            lo, hi = torch.aminmax(data.float())
            if not self.initialized:
                self.min_val.copy_(lo)
                self.max_val.copy_(hi)
                return
            c = self.averaging_constant
            self.min_val.copy_(self.min_val + c * (lo - self.min_val))
            self.max_val.copy_(self.max_val + c * (hi - self.max_val))

        def qparams(self) -> tuple[float, int]:
            """Scale and zero point of the current range (PTQ's arithmetic)."""
            params = compute_qparams(float(self.min_val.item()), float(self.max_val.item()), self.spec)
            return float(params.scale), int(params.zero_point)

        def calculate_qparams(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            scale, zero_point = self.qparams()
            return torch.tensor([scale], dtype=torch.float32), torch.tensor([zero_point], dtype=torch.int32)

        def range(self) -> TensorRange | None:
            """The learned range, or ``None`` when no data was seen."""
            if not self.initialized:
                return None
            return TensorRange(float(self.min_val.item()), float(self.max_val.item()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.training and int(self.observer_enabled[0]) == 1:
                self.observe(x)
            return self.quantize_with(x, self)

        def quantize_with(self, x: torch.Tensor, source: ActivationFakeQuantize) -> torch.Tensor:
            """Fake-quantize ``x`` with ``source``'s scale and zero point (itself, or a shared source)."""
            if int(self.fake_quant_enabled[0]) != 1 or not source.initialized:
                return x
            scale, zero_point = source.qparams()
            self.last_scale = torch.tensor(scale, dtype=torch.float32)
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, self.quant_min, self.quant_max)

        def extra_repr(self) -> str:
            return (
                f"{self.spec.dtype.value} {self.spec.scheme.value}, range=[{self.min_val.item():.4g}, "
                f"{self.max_val.item():.4g}], averaging_constant={self.averaging_constant}"
            )


    class WeightFakeQuantize(torch.ao.quantization.FakeQuantizeBase):
        """Fake quantization of a weight with the min/max of its current values, per channel along ``axis``.

        The scale always follows the weights (as PTQ computes it from the final weights); disabling the
        observer has no effect on weights.
        """

        def __init__(self, spec: QuantSpec, axis: int | None) -> None:
            super().__init__()
            self.spec = spec
            self.axis = axis
            self.quant_min, self.quant_max = _dtype_range(spec)
            self.last_scale: torch.Tensor | None = None

        def calculate_qparams(self, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
            if self.last_scale is None:
                raise RuntimeError("WeightFakeQuantize has not seen its weight yet")
            return self.last_scale, torch.zeros_like(self.last_scale, dtype=torch.int32)

        def forward(self, w: torch.Tensor) -> torch.Tensor:
            params = weight_qparams(w.detach().cpu().numpy(), self.spec, self.axis)
            scale = torch.from_numpy(np.ascontiguousarray(params.scale, dtype=np.float32))
            self.last_scale = scale
            if int(self.fake_quant_enabled[0]) != 1:
                return w
            if params.axis is not None and scale.ndim == 1:
                zero_point = torch.from_numpy(params.zero_point.astype(np.int32))
                return torch.fake_quantize_per_channel_affine(
                    w, scale, zero_point, params.axis, self.quant_min, self.quant_max
                )
            return torch.fake_quantize_per_tensor_affine(
                w, float(scale), int(params.zero_point), self.quant_min, self.quant_max
            )

        def extra_repr(self) -> str:
            where = f"per channel (axis {self.axis})" if self.axis is not None else "per tensor"
            return f"{self.spec.dtype.value} {self.spec.scheme.value} {where}"


    def _round_bias(bias: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """``bias`` rounded to int32 steps of ``scale`` (straight-through gradient), as PTQ stores it."""
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        steps = torch.round(bias.detach().double() / scale.double())
        info = torch.iinfo(torch.int32)
        quantized = (torch.clamp(steps, info.min, info.max) * scale.double()).to(bias.dtype)
        return bias + (quantized - bias).detach()


    class QatGraphModule(torch.nn.Module):
        """The FP32 optimized ONNX graph as a trainable torch module, fake-quantized as ``plan`` says.

        Args:
            model: the FP32 optimized model (``ModelQuantizer.fp32_model`` as a ModelProto).
            plan: where to fake-quantize (:func:`~lpot_ir.qat.plan.plan_fake_quant` on the same model).
            initial_ranges: value name -> starting range (calibration); missing ones start from the first batch.
            averaging_constant: EMA constant of the activation ranges.
            name_map: ONNX node name -> framework name, used in module reprs and reports.

        Raises:
            ConversionError: the graph has an op the torch lowering does not run.
        """

        def __init__(
            self,
            model: onnx.ModelProto,
            plan: FakeQuantPlan,
            initial_ranges: Mapping[str, TensorRange] | None = None,
            *,
            averaging_constant: float = _DEFAULT_AVERAGING,
        ) -> None:
            super().__init__()
            try:
                graph = lower_graph(model)
            except ConversionError as exc:
                raise ConversionError(
                    f"Quantization-aware training runs the model's ONNX graph in PyTorch, and it cannot: {exc}"
                ) from None
            self._fp32 = model
            self.plan = plan
            self.graph_inputs = [name for name, _, _ in graph.inputs]
            self.graph_outputs = list(graph.outputs)
            self.nodes = list(graph.nodes)
            trainable = set(trainable_initializers(model))
            self.weights = torch.nn.ParameterList()
            self._constants: dict[str, tuple[str, int]] = {}  # onnx name -> ("param" | "buffer", index)
            self._parameter_names: list[str] = []
            n_buffers = 0
            for name, array in graph.constants.items():
                tensor = torch.from_numpy(np.array(array, copy=True))
                if name in trainable:
                    self._constants[name] = ("param", len(self.weights))
                    self.weights.append(torch.nn.Parameter(tensor))
                    self._parameter_names.append(name)
                else:
                    self.register_buffer(f"c{n_buffers}", tensor)
                    self._constants[name] = ("buffer", n_buffers)
                    n_buffers += 1
            ranges = dict(initial_ranges or {})
            self.activation_quantizers = torch.nn.ModuleList()
            self._activation_index: dict[str, int] = {}
            for value_name, site in plan.activations.items():
                spec = site.spec
                if spec is None:
                    source = plan.activations.get(site.shared_with or "")
                    spec = source.spec if source is not None else None
                if spec is None:
                    continue
                self._activation_index[value_name] = len(self.activation_quantizers)
                self.activation_quantizers.append(
                    ActivationFakeQuantize(spec, ranges.get(value_name), averaging_constant)
                )
            self.weight_quantizers = torch.nn.ModuleList()
            self._weight_index: dict[tuple[str, int], int] = {}
            for wsite in plan.weights:
                self._weight_index[(wsite.node, wsite.input)] = len(self.weight_quantizers)
                self.weight_quantizers.append(WeightFakeQuantize(wsite.spec, wsite.axis))
            for csite in plan.constants:
                self._weight_index[(csite.node, csite.input)] = len(self.weight_quantizers)
                self.weight_quantizers.append(WeightFakeQuantize(csite.spec, None))
            self._bias: dict[str, list[BiasSite]] = {}
            for bsite in plan.biases:
                self._bias.setdefault(bsite.node, []).append(bsite)
            self._consumer = plan.consumer_sites()
            self._producer = {v for v, s in plan.activations.items() if s.at_producer and v in self._activation_index}

        # -- the parts -------------------------------------------------------------------------------

        @property
        def parameter_names(self) -> list[str]:
            """The ONNX initializer name of each entry of :attr:`weights`."""
            return list(self._parameter_names)

        def activation_quantizer(self, value: str) -> ActivationFakeQuantize | None:
            """The fake quantizer of an activation value (``None``: not quantized)."""
            index = self._activation_index.get(value)
            return None if index is None else self.activation_quantizers[index]  # type: ignore[return-value]

        def _constant(self, name: str) -> torch.Tensor:
            kind, index = self._constants[name]
            return self.weights[index] if kind == "param" else getattr(self, f"c{index}")

        def _fake_quant_activation(self, value: str, x: torch.Tensor) -> torch.Tensor:
            fq = self.activation_quantizer(value)
            if fq is None:
                return x
            site = self.plan.activations[value]
            if site.shared_with is not None:
                source = self.activation_quantizer(site.shared_with)
                return fq.quantize_with(x, source) if source is not None else x
            return fq(x)

        # -- running ---------------------------------------------------------------------------------

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            env: dict[str, Any] = {name: self._constant(name) for name in self._constants}
            bind_graph_inputs(env, self.graph_inputs, args, kwargs)
            consumed: dict[str, torch.Tensor] = {}  # consumer-side fake quantization, once per forward
            for node in self.nodes:
                ins: list[Any] = []
                for index, name in enumerate(node.inputs):
                    if not name:
                        ins.append(None)
                        continue
                    x = env[name]
                    key = (node.name, index)
                    if key in self._weight_index:
                        x = self.weight_quantizers[self._weight_index[key]](x)
                    elif key in self._consumer:
                        if name not in consumed:
                            consumed[name] = self._fake_quant_activation(name, x)
                        x = consumed[name]
                    ins.append(x)
                for bsite in self._bias.get(node.name, ()):
                    if ins[bsite.input] is not None:
                        ins[bsite.input] = self._quantized_bias(node.name, bsite.activation, ins[bsite.input])
                for name, value in zip(node.outputs, run_torch_node(node, ins), strict=False):
                    if name:
                        env[name] = self._fake_quant_activation(name, value) if name in self._producer else value
            result = [env[o] for o in self.graph_outputs]
            return result[0] if len(result) == 1 else tuple(result)

        def _quantized_bias(self, node: str, activation: str, bias: torch.Tensor) -> torch.Tensor:
            fq = self.activation_quantizer(activation)
            wq_index = self._weight_index.get((node, 1))
            if fq is None or wq_index is None or fq.last_scale is None:
                return bias
            wq = self.weight_quantizers[wq_index]
            w_scale = wq.last_scale if isinstance(wq, WeightFakeQuantize) else None
            if w_scale is None:
                return bias
            scale = (fq.last_scale * w_scale).to(torch.float32)
            return _round_bias(bias, scale)

        # -- results ---------------------------------------------------------------------------------

        def learned_ranges(self) -> dict[str, TensorRange]:
            """Value name -> the learned range of every fake-quantized activation that saw data."""
            out: dict[str, TensorRange] = {}
            for value, index in self._activation_index.items():
                site = self.plan.activations[value]
                if site.shared_with is not None:
                    continue
                fq = self.activation_quantizers[index]
                rng = fq.range()  # type: ignore[operator]
                if rng is not None:
                    out[value] = rng
            return out

        def trained_model(self) -> onnx.ModelProto:
            """The FP32 model with the trained weights (the model to quantize with :meth:`learned_ranges`)."""
            proto = onnx.ModelProto()
            proto.CopyFrom(self._fp32)
            trained = {
                name: self.weights[i].detach().cpu().numpy()
                for name, (kind, i) in self._constants.items()
                if kind == "param"
            }
            for init in proto.graph.initializer:
                if init.name in trained:
                    dtype = numpy_helper.to_array(init).dtype
                    init.CopyFrom(numpy_helper.from_array(trained[init.name].astype(dtype), name=init.name))
            return proto

    return ActivationFakeQuantize, WeightFakeQuantize, QatGraphModule


def build_qat_module(
    model: onnx.ModelProto,
    plan: FakeQuantPlan,
    initial_ranges: Mapping[str, TensorRange] | None = None,
    *,
    averaging_constant: float = _DEFAULT_AVERAGING,
) -> Any:
    """A :class:`QatGraphModule` (see its docstring)."""
    return qat_classes()[2](model, plan, initial_ranges, averaging_constant=averaging_constant)


_LAZY = ("ActivationFakeQuantize", "WeightFakeQuantize", "QatGraphModule")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return qat_classes()[_LAZY.index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
