"""Tuning strategies: the tuning space, the strategy base class and registry, and six strategies.

Importing this package registers ``basic`` (the default), ``mse``, ``bayesian``, ``tpe``,
``exhaustive`` and ``random``. A strategy of your own subclasses :class:`TuneStrategy` and registers
with :func:`register_strategy` (see ``docs/strategies/writing_your_own.md``).
"""

from __future__ import annotations

from lpot_ir.strategies.base import (
    STRATEGIES,
    StrategyContext,
    TrialResult,
    TuneStrategy,
    TuningSpace,
    get_strategy,
    register_strategy,
)
from lpot_ir.strategies.basic import BasicStrategy
from lpot_ir.strategies.bayesian import BayesianStrategy
from lpot_ir.strategies.exhaustive import ExhaustiveStrategy
from lpot_ir.strategies.mse import MseStrategy
from lpot_ir.strategies.random import RandomStrategy
from lpot_ir.strategies.space import model_wise_combinations
from lpot_ir.strategies.tpe import TpeStrategy

__all__ = [
    "STRATEGIES",
    "StrategyContext",
    "TrialResult",
    "TuneStrategy",
    "TuningSpace",
    "get_strategy",
    "register_strategy",
    "model_wise_combinations",
    "BasicStrategy",
    "BayesianStrategy",
    "ExhaustiveStrategy",
    "MseStrategy",
    "RandomStrategy",
    "TpeStrategy",
]
