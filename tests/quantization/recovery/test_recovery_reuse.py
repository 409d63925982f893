"""Fallback candidates reuse the recovery decisions taken on the configuration they fall back from
(``ModelQuantizer.quantize(..., reuse_recovery=True)``, what the tuning loop uses)."""

from __future__ import annotations

import dataclasses

import numpy as np
from recovery_helpers import conv_chain, per_tensor_config

from lpot_ir.ir.quant import RecoveryConfig, WeightRounding
from lpot_ir.quantizer import ModelQuantizer, apply_recipe

RECOVERY = RecoveryConfig(bias_correction=True, range_search=True, weight_rounding=WeightRounding.ADAROUND)


def _quantizer() -> ModelQuantizer:
    rng = np.random.default_rng(0)
    loader = [(rng.normal(0, 1, (8, 3, 8, 8)).astype(np.float32), None) for _ in range(2)]
    return ModelQuantizer(conv_chain(), loader)


def test_a_fallback_candidate_applies_the_references_decisions_for_the_nodes_still_in_int8() -> None:
    quantizer = _quantizer()
    reference_config = dataclasses.replace(per_tensor_config(), recovery=RECOVERY)
    reference = quantizer.quantize(reference_config, reuse_recovery=True)
    ref_records = reference.recipe.records
    assert set(ref_records["bias-correction"]["biases"]) == {"dw", "conv2"}
    rounded = set(ref_records["weight-rounding"]["roundings"])
    assert {"dw", "conv2"} <= rounded

    candidate = quantizer.quantize(reference_config.with_nodes_fp32(["conv2"]), reuse_recovery=True)
    assert not candidate.decisions["conv2"].quantized and candidate.decisions["dw"].quantized
    records = candidate.recipe.records
    # exactly the reference's decisions, for the nodes still in INT8, and nothing about conv2
    assert records["bias-correction"]["biases"] == {"dw": ref_records["bias-correction"]["biases"]["dw"]}
    assert records["weight-rounding"]["roundings"] == {
        name: ref_records["weight-rounding"]["roundings"][name] for name in rounded - {"conv2"}
    }
    for name, value in candidate.recipe.ranges.items():
        assert value == reference.recipe.ranges[name]
    # its recipe holds what was applied: replaying it without data gives the same model, bit for bit
    assert apply_recipe(conv_chain(), candidate.recipe).model.SerializeToString() == candidate.model.SerializeToString()


def test_without_reuse_the_candidate_takes_its_own_decisions() -> None:
    quantizer = _quantizer()
    reference_config = dataclasses.replace(per_tensor_config(), recovery=RECOVERY)
    reference = quantizer.quantize(reference_config, reuse_recovery=True)
    fresh = quantizer.quantize(reference_config.with_nodes_fp32(["dw"]))
    # conv2's bias correction is measured again with dw in FP32: its input shift is a different one
    fresh_biases = fresh.recipe.records.get("bias-correction", {}).get("biases", {})
    assert "dw" not in fresh_biases
    assert fresh_biases.get("conv2") != reference.recipe.records["bias-correction"]["biases"]["conv2"]
