"""The suite's metrics: each scores a model's outputs on every eval feed against the feed's references.

This module imports only numpy: ``evaluate.py`` (and through it every peer's venv) loads it as a
sibling file. A metric is a function ``metric(outputs, references, **params) -> float`` where

* ``outputs`` is a list (one entry per eval feed) of ``{output name: array}``,
* ``references`` is the matching list of ``{reference key: array}`` (``eval.npz``'s
  ``<i:04d>/__ref__/<key>`` entries),
* ``params`` are ``task.json``'s ``metric_params``.

:data:`METRICS` maps the names ``task.json`` uses to the functions. Every metric here is "higher is
better" and lies in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "top1_accuracy",
    "ctc_greedy_decode",
    "ctc_exact_match",
    "ctc_char_accuracy",
    "edit_distance",
    "mean_cosine",
    "pair_retrieval_top1",
    "pair_retrieval_mrr",
    "vad_frame_f1",
    "binary_f1",
    "metric_function",
]

Outputs = Sequence[Mapping[str, np.ndarray]]
References = Sequence[Mapping[str, np.ndarray]]


def _output(outputs: Mapping[str, np.ndarray], output: str | None) -> np.ndarray:
    """The named output, or the first one when ``output`` is ``None``."""
    if output is None:
        return np.asarray(next(iter(outputs.values())))
    return np.asarray(outputs[output])


def top1_accuracy(outputs: Outputs, references: References, *, output: str | None = None) -> float:
    """Share of samples whose arg-max over the last axis equals ``__ref__/label``."""
    correct = total = 0
    for out, ref in zip(outputs, references, strict=True):
        logits = _output(out, output)
        predicted = logits.reshape(-1, logits.shape[-1]).argmax(axis=-1)
        labels = np.asarray(ref["label"]).reshape(-1)
        correct += int((predicted == labels).sum())
        total += labels.size
    return correct / max(total, 1)


def ctc_greedy_decode(probs: np.ndarray, characters: Sequence[str], blank: int = 0) -> list[str]:
    """Greedy CTC decoding as PP-OCR's ``CTCLabelDecode`` does it: arg-max per time step, merge
    repeats, drop the blank (index ``blank``).

    Args:
        probs: (batch, time, classes) scores.
        characters: class index -> character (index ``blank`` is the blank).
    """
    texts = []
    for best in np.asarray(probs).argmax(axis=-1):
        keep = np.ones(len(best), dtype=bool)
        keep[1:] = best[1:] != best[:-1]
        keep &= best != blank
        texts.append("".join(characters[i] for i in best[keep]))
    return texts


def _decoded_pairs(
    outputs: Outputs, references: References, characters: Sequence[str], output: str | None, blank: int
) -> list[tuple[str, str]]:
    pairs = []
    for out, ref in zip(outputs, references, strict=True):
        decoded = [d.strip() for d in ctc_greedy_decode(_output(out, output), characters, blank)]
        targets = [str(t).strip() for t in np.asarray(ref["text"]).reshape(-1)]
        pairs.extend(zip(decoded, targets, strict=True))
    return pairs


def ctc_exact_match(
    outputs: Outputs,
    references: References,
    *,
    characters: Sequence[str],
    output: str | None = None,
    blank: int = 0,
) -> float:
    """Share of text lines whose greedy CTC decoding equals ``__ref__/text`` exactly (both stripped of
    leading and trailing spaces: a line crop's margins decode as spaces)."""
    pairs = _decoded_pairs(outputs, references, characters, output, blank)
    return sum(d == t for d, t in pairs) / max(len(pairs), 1)


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions cost 1)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def ctc_char_accuracy(
    outputs: Outputs,
    references: References,
    *,
    characters: Sequence[str],
    output: str | None = None,
    blank: int = 0,
) -> float:
    """1 - character error rate: 1 - (summed edit distances) / (summed target lengths), floored at 0
    (texts stripped as in :func:`ctc_exact_match`)."""
    pairs = _decoded_pairs(outputs, references, characters, output, blank)
    errors = sum(edit_distance(d, t) for d, t in pairs)
    length = sum(len(t) for _, t in pairs)
    return max(0.0, 1.0 - errors / max(length, 1))


def _pooled(out: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], output: str | None, pooling: str) -> np.ndarray:
    """Sentence embeddings (batch, dim): the output itself, or its attention-masked token mean."""
    hidden = _output(out, output).astype(np.float64)
    if pooling == "none":
        return hidden.reshape(hidden.shape[0], -1)
    if pooling != "mean":
        raise ValueError(f"unknown pooling {pooling!r}: use 'mean' or 'none'")
    mask = np.asarray(ref["attention_mask"], dtype=np.float64)[..., None]
    return (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def mean_cosine(
    outputs: Outputs, references: References, *, output: str | None = None, pooling: str = "mean"
) -> float:
    """Mean cosine similarity of each sentence embedding to the FP32 one in ``__ref__/embedding``."""
    cosines = []
    for out, ref in zip(outputs, references, strict=True):
        emb = _unit(_pooled(out, ref, output, pooling))
        target = _unit(np.asarray(ref["embedding"], dtype=np.float64))
        cosines.append((emb * target).sum(axis=-1))
    return float(np.concatenate(cosines).mean())


def _retrieval_ranks(outputs: Outputs, references: References, output: str | None, pooling: str) -> np.ndarray:
    """1-based rank of each query's partner among all other sentences of the eval set (by cosine)."""
    embeddings, partners = [], []
    for out, ref in zip(outputs, references, strict=True):
        embeddings.append(_unit(_pooled(out, ref, output, pooling)))
        partners.append(np.asarray(ref["pair"]).reshape(-1))
    emb = np.concatenate(embeddings)
    pair = np.concatenate(partners)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    queries = np.flatnonzero(pair >= 0)
    target = sims[queries, pair[queries]]
    return 1 + (sims[queries] > target[:, None]).sum(axis=1)


def pair_retrieval_top1(
    outputs: Outputs, references: References, *, output: str | None = None, pooling: str = "mean"
) -> float:
    """Paraphrase retrieval: each sentence's nearest other sentence (cosine of pooled embeddings, over
    the whole eval set) must be its partner ``__ref__/pair`` (the partner's global index in eval order;
    -1 for a sentence that is never a query). Returns the share of queries whose top-1 is the partner."""
    ranks = _retrieval_ranks(outputs, references, output, pooling)
    return float((ranks == 1).mean()) if ranks.size else 0.0


def pair_retrieval_mrr(
    outputs: Outputs, references: References, *, output: str | None = None, pooling: str = "mean"
) -> float:
    """Mean reciprocal rank of each query's partner (see :func:`pair_retrieval_top1`)."""
    ranks = _retrieval_ranks(outputs, references, output, pooling)
    return float((1.0 / ranks).mean()) if ranks.size else 0.0


def vad_frame_f1(
    outputs: Outputs, references: References, *, output: str | None = None, threshold: float = 0.5
) -> float:
    """F1 of speech frames: a frame is speech when the model's probability is >= ``threshold``; the truth
    is ``__ref__/speech`` (0/1 per frame, same shape as the output)."""
    tp = fp = fn = 0
    for out, ref in zip(outputs, references, strict=True):
        predicted = _output(out, output).reshape(-1) >= threshold
        truth = np.asarray(ref["speech"]).reshape(-1).astype(bool)
        tp += int((predicted & truth).sum())
        fp += int((predicted & ~truth).sum())
        fn += int((~predicted & truth).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1)


def binary_f1(
    outputs: Outputs, references: References, *, output: str | None = None, threshold: float = 0.5
) -> float:
    """F1 of the pixels where the output is >= ``threshold`` against the 0/1 map ``__ref__/mask``
    (pooled over all pixels of all samples)."""
    tp = fp = fn = 0
    for out, ref in zip(outputs, references, strict=True):
        predicted = _output(out, output) >= threshold
        truth = np.asarray(ref["mask"]).astype(bool).reshape(predicted.shape)
        tp += int((predicted & truth).sum())
        fp += int((predicted & ~truth).sum())
        fn += int((~predicted & truth).sum())
    return 2 * tp / max(2 * tp + fp + fn, 1)


METRICS: dict[str, Callable[..., float]] = {
    "top1_accuracy": top1_accuracy,
    "ctc_exact_match": ctc_exact_match,
    "ctc_char_accuracy": ctc_char_accuracy,
    "mean_cosine": mean_cosine,
    "pair_retrieval_top1": pair_retrieval_top1,
    "pair_retrieval_mrr": pair_retrieval_mrr,
    "vad_frame_f1": vad_frame_f1,
    "binary_f1": binary_f1,
}
"""Metric name (``task.json``'s ``"metric"``) -> function."""


def metric_function(name: str) -> Callable[..., Any]:
    """The metric called ``name``; ``KeyError`` naming the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; the suite's metrics are: {', '.join(METRICS)}") from None
