"""quantization.recipes (bias_correction, weight_rounding, range_search, recovery_args) in the YAML."""

from __future__ import annotations

import pytest

from lpot_ir.commands.quantize import tuning_config_from_lpot
from lpot_ir.config import load_config
from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import RecoveryConfig, RecoveryOptions, WeightRounding

YAML = """
quantization:
  recipes:
    bias_correction: true
    weight_rounding: adaround
    range_search: true
    recovery_args: {samples: 16, adaround_seconds: 5}
"""


def test_recipes_set_the_recovery_switches_and_budgets():
    config = load_config(YAML)
    recipes = config.quantization.recipes
    assert recipes.recovery() == RecoveryConfig(
        bias_correction=True, weight_rounding=WeightRounding.ADAROUND, range_search=True
    )
    assert recipes.recovery_options() == RecoveryOptions(samples=16, adaround_seconds=5.0)
    assert tuning_config_from_lpot(config).recovery == recipes.recovery()
    assert load_config(config.to_yaml()) == config
    assert load_config({}).quantization.recipes.recovery() == RecoveryConfig()  # all off by default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("quantization: {recipes: {weight_rounding: adaroud}}\n", "Did you mean 'adaround'"),
        ("quantization: {recipes: {fast_bias_correction: true}}\n", "Did you mean 'bias_correction'"),
        ("quantization: {recipes: {recovery_args: {samples: 0}}}\n", "samples must be at least 1"),
    ],
)
def test_bad_recipes_are_one_paragraph_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(text)
