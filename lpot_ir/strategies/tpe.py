"""TPE: hyperopt's Tree-structured Parzen Estimator over per-node options, driven pull-style.

Every node is a categorical parameter (its INT8 options and FP32), plus the calibration sampling
size. The loss is ``relative accuracy drop + fp32_penalty x fraction of nodes in FP32``, plus 1 when
the goal is not met (see :meth:`TuneStrategy.loss`), so TPE is pulled towards configurations that
meet the goal with few FP32 ops.

hyperopt's ``fmin`` is push-style (it calls an objective); here it is driven pull-style with
``hyperopt.Trials`` and ``tpe.suggest`` directly: each :meth:`propose` asks TPE for one point and
each :meth:`observe` writes the loss back as a finished hyperopt trial. The model-wise
configurations are evaluated first and fed to TPE as its first observations. When TPE suggests a
point already evaluated, its known loss is recorded again and TPE is asked again (at most
``max_resuggest`` times); then a random unseen point is taken. Seeds come from
``numpy.random.default_rng(seed)``, so the same seed gives the same trials.

With several workers (``batch_size`` > 1) TPE proposes a batch as hyperopt's own parallel ``fmin``
(``max_queue_len``) does: each point of the batch is entered into ``Trials`` as a queued trial before
the next is suggested, and TPE counts queued trials as having infinite loss (hyperopt's rule, a
pessimistic "liar"), so the points of one batch spread out; queued trials also count towards
``n_startup_jobs``. When the results arrive the queued trials are completed with their losses. With one
worker nothing is queued and the trials are those of the sequential search.

Needs hyperopt (``pip install lpot-ir[tuning]``).
"""

from __future__ import annotations

import logging
from types import MappingProxyType
from typing import Any

from lpot_ir.errors import ConfigError
from lpot_ir.strategies.base import (
    BatchSearch,
    Point,
    StrategyContext,
    TrialResult,
    TuneStrategy,
    TuningSpace,
    register_strategy,
)
from lpot_ir.strategies.random import random_points

__all__ = ["TpeStrategy"]

logger = logging.getLogger(__name__)

_SIZE_LABEL = "sampling_size"


def _label(i: int) -> str:
    return f"node_{i:05d}"


@register_strategy("tpe")
class TpeStrategy(TuneStrategy):
    """hyperopt TPE over per-node options.

    Options:
        fp32_penalty: loss added for all nodes in FP32 (proportional to the FP32 fraction). Default 0.1.
        n_startup_jobs: observations before TPE replaces random sampling (hyperopt's). Default 10.
        n_ei_candidates: candidates TPE scores per suggestion. Default 24.
        gamma: fraction of observations TPE counts as "good". Default 0.25.
        warm_start: evaluate the model-wise configurations first. Default true.
        max_resuggest: suggestions of known points before taking a random unseen one. Default 20.
    """

    default_options = MappingProxyType(
        {
            "fp32_penalty": 0.1,
            "n_startup_jobs": 10,
            "n_ei_candidates": 24,
            "gamma": 0.25,
            "warm_start": True,
            "max_resuggest": 20,
        }
    )

    def __init__(
        self, space: TuningSpace, context: StrategyContext, *, seed: int = 1978, **options: Any
    ) -> None:
        super().__init__(space, context, seed=seed, **options)
        try:
            import hyperopt  # noqa: F401
        except ImportError:
            raise ConfigError(
                "The 'tpe' tuning strategy needs hyperopt, which is not installed. Install it with "
                "`pip install lpot-ir[tuning]` (or `pip install hyperopt`), or pick another strategy."
            ) from None

    def search(self) -> BatchSearch:
        from hyperopt import JOB_STATE_DONE, JOB_STATE_NEW, STATUS_OK, Trials, hp, tpe
        from hyperopt.base import Domain

        space = self.space
        labels = [_label(i) for i in range(len(space.choices))]
        hp_space = {
            label: hp.choice(label, list(range(len(c.options))))
            for label, c in zip(labels, space.choices, strict=True)
        }
        hp_space[_SIZE_LABEL] = hp.choice(_SIZE_LABEL, list(range(len(space.sampling_sizes))))
        domain = Domain(lambda _: 0.0, hp_space)
        trials = Trials()
        seen: set[Point] = set()
        total = space.size

        def point_of(doc: dict[str, Any]) -> Point:
            vals = doc["misc"]["vals"]
            return (int(vals[_SIZE_LABEL][0]), tuple(int(vals[label][0]) for label in labels))

        def loss_doc(result: TrialResult) -> dict[str, Any]:
            return {"loss": self.loss(result, float(self.options["fp32_penalty"])), "status": STATUS_OK}

        def enter(point: Point, result: TrialResult | None) -> dict[str, Any]:
            """Enter ``point`` into ``trials``: done with its loss, or queued (``result`` None)."""
            tid = trials.new_trial_ids(1)[0]
            values = {_SIZE_LABEL: point[0], **dict(zip(labels, point[1], strict=True))}
            misc = {
                "tid": tid,
                "cmd": domain.cmd,
                "workdir": domain.workdir,
                "idxs": {k: [tid] for k in values},
                "vals": {k: [v] for k, v in values.items()},
            }
            result_doc = loss_doc(result) if result is not None else domain.new_result()
            doc = trials.new_trial_docs([tid], [None], [result_doc], [misc])[0]
            doc["state"] = JOB_STATE_DONE if result is not None else JOB_STATE_NEW
            trials.insert_trial_docs([doc])
            trials.refresh()
            return doc

        def record(point: Point, result: TrialResult) -> None:
            enter(point, result)

        def complete(doc: dict[str, Any], result: TrialResult) -> None:
            """A queued trial's result arrived (as hyperopt's fmin completes a queued trial)."""
            doc["result"] = loss_doc(result)
            doc["state"] = JOB_STATE_DONE
            trials.refresh()

        point: Point | None
        if self.options["warm_start"]:
            warm = list(dict.fromkeys(space.global_point(g, s) for g, s in space.global_order))
            seen.update(warm)
            results = yield [space.config_for(p) for p in warm]
            for p, r in zip(warm, results, strict=True):
                record(p, r)

        fallback = random_points(space, self.rng)
        while len(seen) < total:
            batch: list[Point] = []
            queued: dict[Point, dict[str, Any]] = {}
            while len(batch) < max(1, self.batch_size) and len(seen) < total:
                point = self._suggest(tpe, domain, trials, seen, point_of, record)
                if point is None:
                    point = next((p for p in fallback if p not in seen), None)
                    if point is None:
                        break
                seen.add(point)
                batch.append(point)
                if self.batch_size > 1:
                    queued[point] = enter(point, None)
            if not batch:
                return
            results = yield [space.config_for(p) for p in batch]
            for p, r in zip(batch, results, strict=True):
                if p in queued:
                    complete(queued[p], r)
                else:
                    record(p, r)

    def _suggest(self, tpe: Any, domain: Any, trials: Any, seen: set[Point], point_of: Any, record: Any) -> Point | None:
        """TPE's next unseen point (asking again after known points, at most ``max_resuggest`` times)."""
        for _ in range(int(self.options["max_resuggest"]) + 1):
            new_ids = trials.new_trial_ids(1)
            docs = tpe.suggest(
                new_ids,
                domain,
                trials,
                int(self.rng.integers(2**31 - 1)),
                n_startup_jobs=int(self.options["n_startup_jobs"]),
                n_EI_candidates=int(self.options["n_ei_candidates"]),
                gamma=float(self.options["gamma"]),
                verbose=False,
            )
            candidate = point_of(docs[0])
            if candidate not in seen:
                return candidate
            known = self.result_of(self.space.config_for(candidate))
            if known is not None:
                record(candidate, known)  # TPE learns it again instead of proposing it again
        return None
