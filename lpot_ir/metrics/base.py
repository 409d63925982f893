"""The metric protocol and registry.

A metric accumulates over batches: ``update(preds, labels)`` per batch, ``result()`` at the end,
``reset()`` before the next evaluation. ``higher_is_better`` tells the tuning loop which way is
better (False for losses and errors). :data:`METRICS` maps YAML names (LPOT's spelling, e.g.
``topk``) to classes and is filled by :func:`register_metric`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from lpot_ir.data.transforms import Registry, build_from_registry
from lpot_ir.errors import ConfigError
from lpot_ir.registry import add_to_registry

__all__ = ["BaseMetric", "METRICS", "register_metric", "create_metric", "single_output"]

logger = logging.getLogger(__name__)

METRICS: Registry = Registry()


def register_metric(name: str, *, replace: bool = False) -> Callable[[type], type]:
    """Class decorator: make a metric available under ``name`` in YAML (``metric: {name: params}``).

    Raises:
        DuplicateNameError: ``name`` is taken (see :mod:`lpot_ir.registry`; ``replace=True`` replaces).
    """

    def decorate(cls: type) -> type:
        add_to_registry(METRICS, name, cls, kind="metric", replace=replace)
        return cls

    return decorate


class BaseMetric(ABC):
    """A metric accumulated over batches."""

    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def update(self, preds: Any, labels: Any) -> None:
        """Accumulate one batch of predictions and labels."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything accumulated."""

    @abstractmethod
    def result(self) -> float:
        """The metric over everything accumulated since the last reset."""


def single_output(preds: Any) -> np.ndarray:
    """The model's output as one array: a list/tuple holding one output is unwrapped."""
    if isinstance(preds, (list, tuple)) and len(preds) == 1:
        preds = preds[0]
    return np.asarray(preds)


def create_metric(spec: Mapping[str, Any]) -> BaseMetric:
    """Build a metric from its YAML form, a mapping with one key: ``{"topk": 1}``, ``{"mAP": {"iou_thrs": 0.5}}``.

    Raises:
        ConfigError: not one key, unknown metric name (with the closest), or unknown parameter.
    """
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            f"A metric is a mapping with exactly one key, the metric's name (e.g. {{topk: 1}}); got {spec!r}. "
            f"Built-in metrics: {', '.join(sorted(METRICS))}."
        )
    ((name, params),) = spec.items()
    return build_from_registry(METRICS, "metric", name, params)
