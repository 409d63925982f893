"""Language metrics: ``BLEU`` (sacrebleu), ``SquadF1`` / ``SquadEM`` (the SQuAD v1.1 rules) and ``GLUE``
(scikit-learn and scipy)."""

from __future__ import annotations

import collections
import logging
import re
import string
from typing import Any

import numpy as np

from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.metrics.base import BaseMetric, register_metric, single_output

__all__ = ["BLEU", "SquadF1", "SquadEM", "GLUE", "squad_normalize", "squad_f1", "squad_exact_match"]

logger = logging.getLogger(__name__)


def _sentence(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return _sentence(value.item())
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(_sentence(v) for v in value)
    return str(value)


@register_metric("BLEU")
class BLEU(BaseMetric):
    """Corpus BLEU with sacrebleu (``pip install sacrebleu``), 0..100.

    The defaults reproduce LPOT's ``BLEU``: lowercased, the international tokenization (``intl``, LPOT's
    ``bleu_tokenize``), 4-grams, brevity penalty, no smoothing. ``preds`` is one translation per sample
    (a string, or a sequence of tokens joined by spaces); ``labels`` one reference each (or a list of
    references, the same number per sample).
    """

    def __init__(self, tokenize: str = "intl", lowercase: bool = True, smooth_method: str = "none") -> None:
        try:
            from sacrebleu.metrics import BLEU as SacreBLEU
        except ImportError:
            raise ConfigError("BLEU needs sacrebleu, which is not installed: pip install sacrebleu") from None
        try:
            self._bleu = SacreBLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method)
        except (ValueError, KeyError, AssertionError) as exc:
            raise ConfigError(f"BLEU: {exc}") from None
        self.reset()

    def reset(self) -> None:
        self.hypotheses: list[str] = []
        self.references: list[list[str]] = []

    def update(self, preds: Any, labels: Any) -> None:
        hyps = [_sentence(p) for p in (preds if isinstance(preds, (list, tuple, np.ndarray)) and not isinstance(preds, str) else [preds])]
        refs_in = labels if isinstance(labels, (list, tuple, np.ndarray)) and not isinstance(labels, str) else [labels]
        if len(refs_in) != len(hyps):
            raise EvaluationError(f"BLEU: {len(hyps)} translations but {len(refs_in)} references in the batch.")
        for ref in refs_in:
            many = isinstance(ref, (list, tuple)) and ref and all(isinstance(r, (str, bytes)) for r in ref) and len(ref) > 1
            self.references.append([_sentence(r) for r in ref] if many else [_sentence(ref)])
        self.hypotheses.extend(hyps)

    def result(self) -> float:
        if not self.hypotheses:
            return 0.0
        counts = {len(r) for r in self.references}
        if len(counts) != 1:
            raise EvaluationError(f"BLEU: every sample needs the same number of references, got counts {sorted(counts)}.")
        streams = [list(column) for column in zip(*self.references, strict=True)]
        return float(self._bleu.corpus_score(self.hypotheses, streams).score)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lowercase, drop punctuation and the articles a/an/the, squeeze spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_f1(prediction: str, truth: str) -> float:
    """Token-overlap F1 of two answers (after :func:`squad_normalize`)."""
    pred, gold = squad_normalize(prediction).split(), squad_normalize(truth).split()
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, truth: str) -> float:
    """1.0 when the normalized answers are equal."""
    return float(squad_normalize(prediction) == squad_normalize(truth))


class _SquadMetric(BaseMetric):
    """SQuAD v1.1 scoring, 0..100: the best score over each question's gold answers, averaged over questions.

    Accepted per batch:

    * what the ``SquadV1`` postprocess gives: ``preds`` a list of ``(question id, answer, score)`` and
      ``labels`` each one's gold answers; a question answered in several windows keeps its best-scoring answer;
    * LPOT's form: ``preds`` a dict ``{question id: answer}`` and ``labels`` the SQuAD ``data`` list (or the
      whole JSON): every question of it counts, unanswered ones score 0 (the official script's rule);
    * plain lists: ``preds`` answers and ``labels`` a gold answer (or a list of them) each.
    """

    score_fn = staticmethod(squad_f1)

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.best: dict[str, tuple[float, str]] = {}
        self.golds: dict[str, list[str]] = {}
        self.plain: list[float] = []

    def update(self, preds: Any, labels: Any) -> None:
        if isinstance(preds, dict):
            self._update_lpot(preds, labels)
            return
        items = list(preds) if isinstance(preds, (list, tuple, np.ndarray)) else [preds]
        golds = list(labels) if isinstance(labels, (list, tuple, np.ndarray)) else [labels]
        if len(items) != len(golds):
            raise EvaluationError(f"{type(self).__name__}: {len(items)} answers but {len(golds)} labels in the batch.")
        for item, gold in zip(items, golds, strict=True):
            answers = [_sentence(g) for g in gold] if isinstance(gold, (list, tuple)) else [_sentence(gold)]
            if isinstance(item, tuple) and len(item) == 3:
                qid, text, score = str(item[0]), _sentence(item[1]), float(item[2])
                if qid not in self.best or score > self.best[qid][0]:
                    self.best[qid] = (score, text)
                self.golds[qid] = answers
            else:
                self.plain.append(max((self.score_fn(_sentence(item), a) for a in answers), default=0.0))

    def _update_lpot(self, predictions: dict[str, Any], dataset: Any) -> None:
        articles = dataset.get("data", dataset) if isinstance(dataset, dict) else dataset
        try:
            for article in articles:
                for paragraph in article["paragraphs"]:
                    for qa in paragraph["qas"]:
                        self.golds[str(qa["id"])] = [a["text"] for a in qa["answers"]]
        except (TypeError, KeyError) as exc:
            raise EvaluationError(
                f"{type(self).__name__}: with a dict of predictions, labels must be the SQuAD 'data' list ({exc!r})."
            ) from None
        for qid, text in predictions.items():
            self.best[str(qid)] = (0.0, _sentence(text))

    def result(self) -> float:
        scores = list(self.plain)
        for qid, answers in self.golds.items():
            text = self.best.get(qid, (0.0, None))[1]
            scores.append(0.0 if text is None else max((self.score_fn(text, a) for a in answers), default=0.0))
        return 100.0 * float(np.mean(scores)) if scores else 0.0


@register_metric("SquadF1")
class SquadF1(_SquadMetric):
    """SQuAD v1.1 F1 (0..100); see :class:`_SquadMetric` for the inputs."""


@register_metric("SquadEM")
class SquadEM(_SquadMetric):
    """SQuAD v1.1 exact match (0..100), the official script's other number; same inputs as ``SquadF1``."""

    score_fn = staticmethod(squad_exact_match)


_GLUE_KEYS = {"cola": "mcc", "sst-2": "acc", "mrpc": "acc", "sts-b": "corr", "qqp": "acc", "mnli": "acc",
              "qnli": "acc", "rte": "acc", "wnli": "acc"}  # fmt: skip
_GLUE_RESULTS = ("acc", "f1", "acc_and_f1", "mcc", "pearson", "spearmanr", "corr")


@register_metric("GLUE")
class GLUE(BaseMetric):
    """The GLUE task metrics (scikit-learn, scipy): accuracy, F1, their mean, Matthews correlation,
    Pearson and Spearman correlation and their mean.

    ``result()`` is LPOT's choice per task (``cola``: ``mcc``; ``sts-b``: ``corr``; the others: ``acc``)
    unless ``key`` names another; :attr:`results` holds every value that applies. Predictions are class
    scores ``[N, C]`` (argmax) or, for ``sts-b``, one score per sample.
    """

    def __init__(self, task: str = "mrpc", key: str | None = None) -> None:
        task = task.lower()
        if task not in _GLUE_KEYS:
            raise ConfigError(f"GLUE: task {task!r} is not one of {', '.join(_GLUE_KEYS)}.")
        if key is not None and key not in _GLUE_RESULTS:
            raise ConfigError(f"GLUE: key {key!r} is not one of {', '.join(_GLUE_RESULTS)}.")
        self.task, self.key = task, key or _GLUE_KEYS[task]
        self.reset()

    def reset(self) -> None:
        self.preds: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.results: dict[str, float] = {}

    def update(self, preds: Any, labels: Any) -> None:
        scores = single_output(preds)
        truth = np.asarray(labels).reshape(-1)
        if self.task == "sts-b":
            values = scores.reshape(-1).astype(np.float64)
        elif scores.ndim >= 2 and scores.size == truth.size * scores.shape[-1]:
            values = scores.reshape(truth.size, -1).argmax(axis=1)
        else:
            values = scores.reshape(-1)
        if values.size != truth.size:
            raise EvaluationError(f"GLUE: predictions of shape {scores.shape} do not give one value per label ({truth.size}).")
        self.preds.append(values)
        self.labels.append(truth)

    def result(self) -> float:
        if not self.preds:
            return 0.0
        preds, labels = np.concatenate(self.preds), np.concatenate(self.labels)
        from sklearn import metrics

        if self.task == "sts-b":
            from scipy import stats

            pearson = float(stats.pearsonr(preds, labels.astype(np.float64))[0])
            spearman = float(stats.spearmanr(preds, labels.astype(np.float64))[0])
            self.results = {"pearson": pearson, "spearmanr": spearman, "corr": (pearson + spearman) / 2}
        else:
            labels = labels.astype(np.int64)
            preds = preds.astype(np.int64)
            acc = float(metrics.accuracy_score(labels, preds))
            self.results = {"acc": acc, "mcc": float(metrics.matthews_corrcoef(labels, preds))}
            if self.task in ("mrpc", "qqp"):
                f1 = float(metrics.f1_score(labels, preds))
                self.results.update(f1=f1, acc_and_f1=(acc + f1) / 2)
        if self.key not in self.results:
            raise EvaluationError(f"GLUE: {self.key!r} is not computed for task {self.task}; it gives {sorted(self.results)}.")
        return self.results[self.key]

