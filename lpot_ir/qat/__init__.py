"""Quantization-aware training (QAT): train with fake quantization where post-training quantization puts Q/DQ.

* :func:`plan_fake_quant` / :func:`qat_plan`: where a :class:`~lpot_ir.ir.quant.TuningConfig` quantizes,
  from the same annotators as PTQ (plain data, no torch).
* :func:`prepare_qat`: the FP32 optimized graph as a trainable ``torch.nn.Module`` with torch's
  fake-quantize ops at those places (:mod:`lpot_ir.qat.torch_qat`).
* :func:`finish_qat`: a :class:`~lpot_ir.quantizer.ModelQuantizer` of the trained model whose activation
  ranges are the learned ones, to quantize, tune and save like any PTQ model.

``Quantization`` with ``approach: quant_aware_training`` runs all of it (see docs/qat.md).
"""

from __future__ import annotations

from lpot_ir.qat.plan import (
    ActivationSite,
    BiasSite,
    ConstantSite,
    FakeQuantPlan,
    WeightSite,
    plan_fake_quant,
)
from lpot_ir.qat.workflow import finish_qat, prepare_qat, qat_plan

__all__ = [
    "ActivationSite",
    "BiasSite",
    "ConstantSite",
    "FakeQuantPlan",
    "WeightSite",
    "plan_fake_quant",
    "qat_plan",
    "prepare_qat",
    "finish_qat",
]
