"""quantization.recipes: Neural Compressor's smooth_quant keys and lpot-ir's cross_layer_equalization,
validated like every section and mapped to TuningConfig.recovery."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lpot_ir.commands.quantize import load_tuning_config
from lpot_ir.config import load_config
from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import RecoveryConfig
from lpot_ir.tuning.space import build_space


def _write(tmp_path: Path, recipes: str) -> Path:
    path = tmp_path / "conf.yaml"
    path.write_text("model: {name: m, framework: onnxrt_qdq}\nquantization:\n  recipes:\n"
                    + textwrap.indent(textwrap.dedent(recipes), "    "))
    return path


def test_recipes_become_the_recovery_of_the_tuning_config(tmp_path: Path) -> None:
    path = _write(tmp_path, """\
        smooth_quant: true
        smooth_quant_args: {alpha: [0.8, 0.6]}
        cross_layer_equalization: true
        """)
    config = load_config(path)
    assert config.quantization.recipes.smooth_quant_args.alpha == (0.8, 0.6)
    expected = RecoveryConfig(equalization=True, smoothquant_alpha=0.8)
    assert load_tuning_config(path).recovery == expected
    assert build_space(config, []).space.base.recovery == expected
    assert load_config(_write(tmp_path, "smooth_quant: false\n")).quantization.recipes.recovery() == RecoveryConfig()


@pytest.mark.parametrize(
    ("recipes", "message"),
    [
        ("smoth_quant: true\n", "Did you mean 'smooth_quant'"),
        ("fast_bias_correction: true\n", "Valid keys here"),
        ("smooth_quant_args: {alpha: 1.5}\n", "alpha must be one or more numbers in [0, 1]"),
        ("smooth_quant_args: {alpha: auto}\n", "alpha"),
    ],
)
def test_bad_recipes_are_config_errors(tmp_path: Path, recipes: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(_write(tmp_path, recipes))
