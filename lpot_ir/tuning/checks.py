"""Configuration checks that must pass before any model runs (conversion, calibration, the FP32 baseline)."""

from __future__ import annotations

from typing import Any

from lpot_ir.strategies import TuneStrategy, get_strategy

__all__ = ["check_tuning_config"]


def check_tuning_config(config: Any) -> type[TuneStrategy]:
    """Check what the schema cannot: the strategy is registered and takes the options given.

    Args:
        config: the :class:`~lpot_ir.config.Config`.

    Returns:
        The strategy class.

    Raises:
        ConfigError: an unknown strategy name (with the closest registered one) or option.
    """
    strategy = config.tuning.strategy
    strategy_cls = get_strategy(strategy.name)
    strategy_cls.check_options(dict(strategy.options))
    return strategy_cls
