"""LPOT's ``common`` helpers for the Python API: ``DataLoader`` and ``Metric``.

Example::

    from lpot_ir import common

    quantizer.calib_dataloader = common.DataLoader(my_dataset, batch_size=32)
    quantizer.metric = common.Metric(MyMetric, name="my_metric", threshold=0.5)
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from lpot_ir.data.dataloader import DataLoader
from lpot_ir.errors import EvaluationError

__all__ = ["DataLoader", "Metric"]

logger = logging.getLogger(__name__)

_METHODS = ("update", "reset", "result")


class Metric:
    """A user metric, LPOT style: a class with ``update(preds, labels)``, ``reset()`` and ``result()``.

    The tuning loop calls :meth:`create` once per evaluation to get a fresh instance. The class may set
    a ``higher_is_better`` attribute (default True: larger results are better).

    Args:
        metric_cls: the metric class (an instance is accepted too; it is reset before each use).
        name: the name shown in reports (default: the class name).
        **kwargs: passed to ``metric_cls`` when it is instantiated.

    Raises:
        EvaluationError: ``metric_cls`` lacks one of update/reset/result.
    """

    def __init__(self, metric_cls: Any, name: str | None = None, **kwargs: Any) -> None:
        missing = [m for m in _METHODS if not callable(getattr(metric_cls, m, None))]
        label = getattr(metric_cls, "__name__", type(metric_cls).__name__)
        if missing:
            raise EvaluationError(
                f"common.Metric: {label} has no {', '.join(missing)} method; a metric needs "
                "update(preds, labels), reset() and result()."
            )
        if not inspect.isclass(metric_cls) and kwargs:
            raise EvaluationError(
                f"common.Metric: keyword arguments need a metric class, but {label} is an instance."
            )
        self.metric_cls = metric_cls
        self.name = name or label
        self.kwargs = kwargs

    @property
    def higher_is_better(self) -> bool:
        """Whether a larger result is better (the class's ``higher_is_better``, default True)."""
        return bool(getattr(self.metric_cls, "higher_is_better", True))

    def create(self) -> Any:
        """A fresh metric, reset and ready for ``update``.

        Raises:
            EvaluationError: the class cannot be instantiated with the given keyword arguments.
        """
        if not inspect.isclass(self.metric_cls):
            self.metric_cls.reset()
            return self.metric_cls
        try:
            return self.metric_cls(**self.kwargs)
        except Exception as exc:  # a user class may raise anything
            raise EvaluationError(
                f"common.Metric: creating {self.name} with {self.kwargs} raised {type(exc).__name__}: {exc}"
            ) from exc

    def __repr__(self) -> str:
        return f"Metric({self.name})"
