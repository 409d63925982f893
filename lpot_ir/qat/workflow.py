"""Quantization-aware training, start to end: prepare a trainable fake-quantized module, train it, and get a
:class:`~lpot_ir.quantizer.ModelQuantizer` whose activation ranges are the learned ones.

::

    quantizer = ModelQuantizer(onnx_model, calib_dataloader, name_map=...)   # PTQ's analysis, once
    module = prepare_qat(quantizer, config)           # torch.nn.Module, fake-quantized where PTQ quantizes
    train(module)                                      # any torch training loop
    trained = finish_qat(module, quantizer)            # ModelQuantizer of the trained FP32 model
    qmodel = trained.quantize(config)                  # QDQ model with the learned scales, recipe, decisions

``trained`` is a normal ``ModelQuantizer``: tuning can try other configurations on it (fallback,
recovery); tensors whose ranges training did not learn are calibrated on the trained model.
torch is imported only when these functions run.
"""

from __future__ import annotations

import logging
from typing import Any

from lpot_ir.ir.model import from_proto, to_proto
from lpot_ir.ir.quant import Approach, CalibAlgorithm, TensorRange, TuningConfig
from lpot_ir.qat.plan import FakeQuantPlan, plan_fake_quant
from lpot_ir.qat.torch_qat import build_qat_module
from lpot_ir.quantizer import ModelQuantizer, default_config

__all__ = ["prepare_qat", "finish_qat", "qat_plan"]

logger = logging.getLogger(__name__)


def qat_plan(quantizer: Any, config: TuningConfig) -> FakeQuantPlan:
    """Where ``config`` puts fake quantization in ``quantizer``'s FP32 optimized model."""
    model = from_proto(to_proto(quantizer.fp32_model))
    nodes, unsupported = quantizer.nodes_for(config.approach)
    return plan_fake_quant(model, config, nodes, unsupported)


def _initial_ranges(quantizer: Any, plan: FakeQuantPlan) -> dict[str, TensorRange]:
    if quantizer.calib_dataloader is None:
        logger.info("QAT: no calibration data; activation ranges start from the first training batch")
        return {}
    specs = {v: s.spec for v, s in plan.activations.items() if s.spec is not None}
    algorithms = {spec.algorithm for spec in specs.values()} or {CalibAlgorithm.MINMAX}
    result = quantizer.calibration(algorithms, plan.config.calib_sampling_size)
    ranges: dict[str, TensorRange] = {}
    for value, spec in specs.items():
        try:
            ranges[value] = result.range(value, spec.algorithm)
        except KeyError:
            continue
    return ranges


def prepare_qat(quantizer: Any, config: TuningConfig | None = None, *, averaging_constant: float = 0.01) -> Any:
    """A trainable ``torch.nn.Module`` of ``quantizer``'s FP32 model, fake-quantized as ``config`` quantizes.

    Args:
        quantizer: the :class:`~lpot_ir.quantizer.ModelQuantizer` of the FP32 model (its calibration data,
            if any, gives the starting activation ranges).
        config: the configuration to simulate (default: this CPU's default, approach QAT).
        averaging_constant: EMA constant of the activation ranges.

    Returns:
        A :class:`~lpot_ir.qat.torch_qat.QatGraphModule` in training mode.

    Raises:
        ConversionError: the graph has an op the torch lowering does not run.
    """
    config = config or default_config(Approach.QAT)
    plan = qat_plan(quantizer, config)
    ranges = _initial_ranges(quantizer, plan)
    module = build_qat_module(to_proto(quantizer.fp32_model), plan, ranges, averaging_constant=averaging_constant)
    logger.info(
        "QAT: %d activation, %d weight and %d bias fake quantizer(s) at the Q/DQ places of %d quantized node(s)",
        len(module.activation_quantizers), len(plan.weights), len(plan.biases), len(plan.quantized),
    )
    return module.train()


def finish_qat(module: Any, quantizer: Any) -> Any:
    """The :class:`~lpot_ir.quantizer.ModelQuantizer` of the trained FP32 model, with the learned ranges fixed.

    Args:
        module: the trained :class:`~lpot_ir.qat.torch_qat.QatGraphModule`.
        quantizer: the FP32 model's quantizer (its calibration data, workspace and name map carry over).
    """
    module.eval()
    return ModelQuantizer(
        module.trained_model(),
        quantizer.calib_dataloader,
        approach=Approach.STATIC,
        workspace=quantizer.workspace,
        name_map=quantizer.name_map,
        optimize=False,
        progress=quantizer.progress,
        batch_axes=quantizer.batch_axes,
        recovery_options=quantizer.recovery_options,
        fixed_ranges=module.learned_ranges(),
    )
