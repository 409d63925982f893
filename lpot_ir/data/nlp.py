"""Language datasets and the SQuAD postprocess: ``GLUE``, ``bert`` and ``SquadV1``.

Tokenization uses Hugging Face's ``tokenizers`` library (``pip install tokenizers``) with files on disk:
``model_name_or_path`` / ``vocab_file`` is a folder holding ``tokenizer.json`` (what ``save_pretrained``
writes) or a BERT ``vocab.txt``, or that file itself. Nothing is downloaded: a hub name that is not a
local folder is an error saying how to save the tokenizer locally.

* ``GLUE``: a GLUE task's ``dev.tsv`` (``train.tsv`` with ``evaluate: false``) tokenized as sentence pairs;
  samples ``({input_ids, attention_mask[, token_type_ids]}, label)`` with int64 arrays.
* ``bert``: either LPOT's PyTorch form (``dataset``: a list of ``(input_ids, attention_mask, token_type_ids,
  label)`` tuples, from Python) or its TensorFlow form (``root``: a TFRecord of SQuAD features written as
  Google's BERT ``run_squad.py`` writes them, ``label_file``: the SQuAD v1.1 JSON).
* ``SquadV1`` (a postprocess): turns a batch of ``start_logits`` / ``end_logits`` into answer texts, rebuilding
  the features of ``label_file`` as Google's BERT does (doc stride, max-context rule, n-best, the
  alignment of word pieces back to the original text). The ``SquadF1`` / ``SquadEM`` metrics read its output.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lpot_ir.data.datasets import register_dataset
from lpot_ir.data.records import parse_example, read_records, record_files
from lpot_ir.data.transforms import register_postprocess
from lpot_ir.errors import ConfigError, DataError

__all__ = [
    "GLUE_TASKS",
    "load_tokenizer",
    "GLUEDataset",
    "BertDataset",
    "SquadFeature",
    "SquadV1",
    "read_squad_questions",
]

logger = logging.getLogger(__name__)


def load_tokenizer(path: str | os.PathLike[str], lowercase: bool = True, who: str = "tokenizer") -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json`` or a BERT ``vocab.txt`` (a file, or a folder holding one)."""
    try:
        from tokenizers import BertWordPieceTokenizer, Tokenizer
    except ImportError:
        raise DataError(f"{who} tokenizes with the 'tokenizers' library, which is not installed: pip install tokenizers") from None
    location = Path(path)
    if location.is_dir():
        for name in ("tokenizer.json", "vocab.txt"):
            if (location / name).is_file():
                location = location / name
                break
    if location.is_file() and location.name.endswith(".json"):
        try:
            return Tokenizer.from_file(str(location))
        except Exception as exc:  # the Rust library raises its own exception type
            raise DataError(f"{who}: '{location}' is not a tokenizers JSON file ({exc}).") from None
    if location.is_file():
        return BertWordPieceTokenizer(str(location), lowercase=lowercase)
    raise DataError(
        f"{who}: '{path}' is neither a tokenizer file nor a folder holding tokenizer.json or vocab.txt. lpot-ir does "
        "not download models: save the tokenizer once with transformers' "
        "AutoTokenizer.from_pretrained(name).save_pretrained(folder) and give that folder."
    )


def _special_id(tokenizer: Any, names: Sequence[str], default: int = 0) -> int:
    for name in names:
        token_id = tokenizer.token_to_id(name)
        if token_id is not None:
            return int(token_id)
    return default


@dataclasses.dataclass(frozen=True)
class _GlueTask:
    file: str
    columns: tuple[int, ...]  # text_a[, text_b]
    label: int
    labels: tuple[str, ...] | None  # None: regression
    header: bool = True


GLUE_TASKS: dict[str, _GlueTask] = {
    "cola": _GlueTask("dev.tsv", (3,), 1, ("0", "1"), header=False),
    "sst-2": _GlueTask("dev.tsv", (0,), 1, ("0", "1")),
    "mrpc": _GlueTask("dev.tsv", (3, 4), 0, ("0", "1")),
    "sts-b": _GlueTask("dev.tsv", (7, 8), -1, None),
    "qqp": _GlueTask("dev.tsv", (3, 4), 5, ("0", "1")),
    "mnli": _GlueTask("dev_matched.tsv", (8, 9), -1, ("contradiction", "entailment", "neutral")),
    "qnli": _GlueTask("dev.tsv", (1, 2), -1, ("entailment", "not_entailment")),
    "rte": _GlueTask("dev.tsv", (1, 2), -1, ("entailment", "not_entailment")),
    "wnli": _GlueTask("dev.tsv", (1, 2), -1, ("0", "1")),
}
"""GLUE tasks: which TSV columns hold the sentences and the label (the GLUE distribution's layout)."""

_SEGMENT_MODELS = ("bert", "mobilebert", "xlnet", "albert")


def _pad(values: Sequence[int], length: int, pad: int) -> np.ndarray:
    return np.asarray(list(values) + [pad] * (length - len(values)), dtype=np.int64)


@register_dataset("GLUE")
class GLUEDataset:
    """A GLUE task's dev (or train) split, tokenized for a BERT-style model.

    Args:
        data_dir: the task's folder (``dev.tsv``; MNLI: ``dev_matched.tsv``).
        model_name_or_path: a local folder (or file) with the tokenizer (see the module docstring).
        max_seq_length: pairs are truncated to this many tokens and, unless ``dynamic_length``, padded to it.
        do_lower_case: lowercase before WordPiece (``vocab.txt`` tokenizers).
        task: ``mrpc``, ``qqp``, ``qnli``, ``rte``, ``sts-b``, ``cola``, ``mnli``, ``wnli`` or ``sst-2``.
        model_type: ``bert`` and ``mobilebert`` get ``token_type_ids``; ``distilbert`` and ``roberta`` do not.
        dynamic_length: no padding (each sample its own length; batch_size 1).
        evaluate: the dev split (``False``: ``train.tsv``).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        model_name_or_path: str | os.PathLike[str],
        max_seq_length: int = 128,
        do_lower_case: bool = True,
        task: str = "mrpc",
        model_type: str = "bert",
        dynamic_length: bool = False,
        evaluate: bool = True,
    ) -> None:
        task, model_type = task.lower(), model_type.lower()
        if task not in GLUE_TASKS:
            raise ConfigError(f"GLUE: task {task!r} is not one of {', '.join(GLUE_TASKS)}.")
        if model_type not in ("bert", "mobilebert", "distilbert", "roberta", "xlnet", "albert"):
            raise ConfigError(f"GLUE: model_type {model_type!r} is not bert, mobilebert, distilbert or roberta.")
        if max_seq_length < 4:
            raise ConfigError(f"GLUE: max_seq_length must be at least 4, got {max_seq_length}.")
        spec = GLUE_TASKS[task]
        path = Path(data_dir) / (spec.file if evaluate else "train.tsv")
        if not path.is_file():
            raise DataError(
                f"GLUE: '{path}' does not exist; data_dir must hold the {task} task's TSV files (the GLUE distribution "
                "from https://gluebenchmark.com). lpot-ir does not download them."
            )
        tokenizer = load_tokenizer(model_name_or_path, do_lower_case, "GLUE")
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_seq_length)
        self.pad_id = _special_id(tokenizer, ("[PAD]", "<pad>"))
        self.task, self.model_type = task, model_type
        self.max_seq_length = int(max_seq_length)
        self.dynamic_length = bool(dynamic_length)
        self.label_names = spec.labels
        rows = _read_tsv(path)[1 if spec.header else 0 :]
        self.samples: list[tuple[dict[str, np.ndarray], Any]] = []
        for number, row in enumerate(rows, 2 if spec.header else 1):
            if len(row) <= max(*spec.columns, spec.label if spec.label >= 0 else 0):
                raise DataError(f"GLUE: line {number} of '{path}' has {len(row)} columns, too few for task {task}.")
            texts = [row[c] for c in spec.columns]
            encoding = tokenizer.encode(*texts)
            self.samples.append((self._inputs(encoding), self._label(row[spec.label], path, number)))
        if not self.samples:
            raise DataError(f"GLUE: '{path}' holds no examples.")

    def _inputs(self, encoding: Any) -> dict[str, np.ndarray]:
        length = len(encoding.ids) if self.dynamic_length else self.max_seq_length
        inputs = {
            "input_ids": _pad(encoding.ids, length, self.pad_id),
            "attention_mask": _pad(encoding.attention_mask, length, 0),
        }
        if self.model_type in _SEGMENT_MODELS:
            inputs["token_type_ids"] = _pad(encoding.type_ids, length, 0)
        return inputs

    def _label(self, text: str, path: Path, number: int) -> Any:
        if self.label_names is None:
            return np.float32(float(text))
        if text not in self.label_names:
            raise DataError(f"GLUE: line {number} of '{path}' has label {text!r}, not one of {self.label_names}.")
        return self.label_names.index(text)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], Any]:
        return self.samples[index]


def _read_tsv(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.reader(handle, delimiter="\t", quotechar=None))


@register_dataset("bert")
class BertDataset:
    """LPOT's ``bert`` dataset, in either of its two forms.

    PyTorch form (Python only): ``dataset`` is a sequence of ``(input_ids, attention_mask, token_type_ids,
    label[, ...])`` tuples (a ``TensorDataset`` of Hugging Face features); ``task: classifier`` gives
    ``({input_ids, attention_mask[, token_type_ids]}, label)``, ``task: squad`` gives the same inputs with
    ``sample[3]`` (the example index) as the label.

    TensorFlow form: ``root`` is a TFRecord of SQuAD features (``unique_ids``, ``input_ids``, ``input_mask``,
    ``segment_ids``) and ``label_file`` the SQuAD v1.1 JSON; samples are ``({input_ids, input_mask,
    segment_ids}, unique_id)``, ready for the ``SquadV1`` postprocess.
    """

    def __init__(
        self,
        dataset: Sequence[Any] | None = None,
        task: str = "classifier",
        model_type: str = "bert",
        root: str | os.PathLike[str] | None = None,
        label_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if (dataset is None) == (root is None):
            raise ConfigError(
                "bert: give either dataset (a list of feature tuples, from Python) or root (a TFRecord of SQuAD "
                "features) with label_file."
            )
        if task not in ("classifier", "squad"):
            raise ConfigError(f"bert: task must be 'classifier' or 'squad', got {task!r}.")
        self.task, self.model_type = task, model_type.lower()
        self.samples: list[tuple[Any, Any]]
        if dataset is not None:
            self.samples = [self._torch_form(item) for item in dataset]
            return
        if label_file is None or root is None:
            raise ConfigError("bert: the TFRecord form needs root (the features) and label_file, the SQuAD v1.1 JSON.")
        self.questions = read_squad_questions(Path(label_file), "bert")
        self.samples = []
        for record in read_records(record_files(root, None, "bert")):
            features = parse_example(record)
            missing = [k for k in ("unique_ids", "input_ids", "input_mask", "segment_ids") if k not in features]
            if missing:
                raise DataError(f"bert: a record of '{root}' lacks the SQuAD feature(s) {missing} (run_squad.py's format).")
            inputs = {k: features[k].astype(np.int64) for k in ("input_ids", "input_mask", "segment_ids")}
            self.samples.append((inputs, int(features["unique_ids"][0])))

    def _torch_form(self, item: Sequence[Any]) -> tuple[Any, Any]:
        values = [np.asarray(v.numpy() if hasattr(v, "numpy") else v) for v in item]
        if len(values) < 4:
            raise DataError(f"bert: a sample has {len(values)} parts; expected (input_ids, attention_mask, token_type_ids, label).")
        inputs = {"input_ids": values[0], "attention_mask": values[1]}
        if self.model_type in ("bert", "xlnet"):
            inputs["token_type_ids"] = values[2]
        return inputs, values[3]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        return self.samples[index]


# --------------------------------------------------------------------------------------------- SQuAD


@dataclasses.dataclass(frozen=True)
class _SquadQuestion:
    qid: str
    question: str
    words: tuple[str, ...]  # the context split on whitespace
    answers: tuple[str, ...]


def read_squad_questions(path: Path, who: str) -> list[_SquadQuestion]:
    """The questions of a SQuAD v1.1 JSON file with their contexts split into words and their answers."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{who}: cannot read the SQuAD file '{path}' ({exc}).") from None
    if not isinstance(data, dict) or "data" not in data:
        raise DataError(f"{who}: '{path}' is not a SQuAD JSON file (no 'data' list).")
    if str(data.get("version", "1.1")) != "1.1":
        raise DataError(f"{who}: '{path}' is SQuAD version {data.get('version')}; only v1.1 is supported.")
    questions = []
    for article in data["data"]:
        for paragraph in article.get("paragraphs", []):
            words = tuple(paragraph["context"].split())
            for qa in paragraph.get("qas", []):
                answers = tuple(a["text"] for a in qa.get("answers", []))
                questions.append(_SquadQuestion(str(qa["id"]), qa["question"], words, answers))
    if not questions:
        raise DataError(f"{who}: '{path}' holds no questions.")
    return questions


@dataclasses.dataclass(frozen=True)
class SquadFeature:
    """One window of one question's context, as Google's BERT ``run_squad.py`` builds it."""

    unique_id: int
    question: int  # index into SquadV1.questions
    tokens: tuple[str, ...]
    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    token_to_word: dict[int, int]  # token position -> index of the context word
    max_context: dict[int, bool]  # token position -> this window is its best context


def _max_context(spans: Sequence[tuple[int, int]], index: int, position: int) -> bool:
    """Whether window ``index`` gives token ``position`` the most context (run_squad's rule)."""
    best_score, best = None, None
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if not start <= position <= end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best = score, i
    return best == index


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")


def _final_text(pieces_text: str, original: str, lowercase: bool) -> str:
    """Project the predicted word-piece text back onto the original words (``get_final_text``): the
    answer keeps the original's case and punctuation, trimmed to what the pieces cover."""

    def squeeze(text: str) -> tuple[str, list[int]]:
        chars, index = [], []
        for i, c in enumerate(text):
            if c != " ":
                chars.append(c)
                index.append(i)
        return "".join(chars), index

    normalized = _strip_accents(original.lower()) if lowercase else original
    start = normalized.find(pieces_text)
    if start < 0:
        return original
    if len(normalized) != len(original):  # accent stripping changed lengths: no reliable projection
        return original
    end = start + len(pieces_text) - 1
    squeezed_norm, norm_index = squeeze(normalized)
    squeezed_orig, orig_index = squeeze(original)
    if len(squeezed_norm) != len(squeezed_orig):
        return original
    inverse = {n: k for k, n in enumerate(norm_index)}
    if start not in inverse or end not in inverse:
        return original
    return original[orig_index[inverse[start]] : orig_index[inverse[end]] + 1]


@register_postprocess("SquadV1")
class SquadV1:
    """Answers from SQuAD start/end logits (LPOT's ``SquadV1`` postprocess), for ``SquadF1`` / ``SquadEM``.

    Each batch's predictions are ``[start_logits [B, L], end_logits [B, L]]`` (or ``[unique_ids,
    start_logits, end_logits]``) and its labels the features' unique ids (what ``bert`` gives). Every
    feature's best answer (score: start + end logit among the ``n_best_size`` best of each, at most
    ``max_answer_length`` tokens, in the window that gives its start token the most context) becomes
    ``(question id, answer text, score)``; the labels become each question's gold answers. A metric keeps
    the best-scoring answer per question over all its windows.

    Args:
        label_file: the SQuAD v1.1 JSON (``dev-v1.1.json``).
        vocab_file: the BERT ``vocab.txt`` (or a folder / ``tokenizer.json``).
        n_best_size, max_seq_length, max_query_length, max_answer_length, do_lower_case, doc_stride:
            as Google's BERT ``run_squad.py`` (and LPOT): they must match how the features were made.
    """

    first_unique_id = 1000000000

    def __init__(
        self,
        label_file: str | os.PathLike[str],
        vocab_file: str | os.PathLike[str],
        n_best_size: int = 20,
        max_seq_length: int = 384,
        max_query_length: int = 64,
        max_answer_length: int = 30,
        do_lower_case: bool = True,
        doc_stride: int = 128,
    ) -> None:
        if min(n_best_size, max_query_length, max_answer_length, doc_stride) < 1 or max_seq_length <= max_query_length + 3:
            raise ConfigError(
                "SquadV1: n_best_size, max_query_length, max_answer_length and doc_stride must be positive and "
                f"max_seq_length > max_query_length + 3; got {n_best_size}, {max_query_length}, "
                f"{max_answer_length}, {doc_stride}, {max_seq_length}."
            )
        self.n_best_size, self.max_answer_length = int(n_best_size), int(max_answer_length)
        self.lowercase = bool(do_lower_case)
        self.questions = read_squad_questions(Path(label_file), "SquadV1")
        tokenizer = load_tokenizer(vocab_file, self.lowercase, "SquadV1")
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.features = self._features(tokenizer, int(max_seq_length), int(max_query_length), int(doc_stride))
        self.by_id = {f.unique_id: f for f in self.features}

    def _features(self, tokenizer: Any, max_seq: int, max_query: int, stride: int) -> list[SquadFeature]:
        vocab_id = tokenizer.token_to_id
        unk = _special_id(tokenizer, ("[UNK]",))
        cls_id, sep_id = _special_id(tokenizer, ("[CLS]",)), _special_id(tokenizer, ("[SEP]",))
        pieces_of: dict[tuple[str, ...], list[list[str]]] = {}
        features: list[SquadFeature] = []
        unique_id = self.first_unique_id
        for q_index, question in enumerate(self.questions):
            if question.words not in pieces_of:
                encoded = tokenizer.encode_batch(list(question.words), add_special_tokens=False) if question.words else []
                pieces_of[question.words] = [e.tokens for e in encoded]
            word_pieces = pieces_of[question.words]
            query = tokenizer.encode(question.question, add_special_tokens=False).tokens[:max_query]
            doc: list[str] = []
            doc_word: list[int] = []
            for w, pieces in enumerate(word_pieces):
                doc.extend(pieces)
                doc_word.extend([w] * len(pieces))
            room = max_seq - len(query) - 3
            spans: list[tuple[int, int]] = []
            start = 0
            while start < len(doc) or not spans:
                length = min(len(doc) - start, room)
                spans.append((start, length))
                if start + length >= len(doc):
                    break
                start += min(length, stride)
            for s_index, (start, length) in enumerate(spans):
                tokens = ["[CLS]", *query, "[SEP]"]
                token_to_word, max_context = {}, {}
                for i in range(length):
                    position = len(tokens)
                    token_to_word[position] = doc_word[start + i]
                    max_context[position] = _max_context(spans, s_index, start + i)
                    tokens.append(doc[start + i])
                tokens.append("[SEP]")
                ids = [cls_id if t == "[CLS]" else sep_id if t == "[SEP]" else (vocab_id(t) or unk) for t in tokens]
                segments = [0] * (len(query) + 2) + [1] * (length + 1)
                features.append(
                    SquadFeature(
                        unique_id,
                        q_index,
                        tuple(tokens),
                        _pad(ids, max_seq, 0),
                        _pad([1] * len(ids), max_seq, 0),
                        _pad(segments, max_seq, 0),
                        token_to_word,
                        max_context,
                    )
                )
                unique_id += 1
        return features

    def _answer(self, feature: SquadFeature, start_logits: np.ndarray, end_logits: np.ndarray) -> tuple[str, float]:
        starts = np.argsort(-start_logits, kind="stable")[: self.n_best_size]
        ends = np.argsort(-end_logits, kind="stable")[: self.n_best_size]
        best: tuple[float, int, int] | None = None
        for s in starts.tolist():
            if s not in feature.token_to_word or not feature.max_context.get(s, False):
                continue
            for e in ends.tolist():
                if e not in feature.token_to_word or e < s or e - s + 1 > self.max_answer_length:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if best is None or score > best[0]:
                    best = (score, s, e)
        if best is None:
            return "", -math.inf
        score, s, e = best
        pieces = " ".join(feature.tokens[s : e + 1]).replace(" ##", "").replace("##", "").strip()
        pieces = " ".join(pieces.split())
        words = self.questions[feature.question].words
        original = " ".join(words[feature.token_to_word[s] : feature.token_to_word[e] + 1])
        return _final_text(pieces, original, self.lowercase), score

    def __call__(self, preds: Any, labels: Any) -> tuple[list[tuple[str, str, float]], list[tuple[str, ...]]]:
        outputs = list(preds) if isinstance(preds, (list, tuple)) else [preds]
        if len(outputs) == 3:
            ids = np.asarray(outputs[0]).reshape(-1)
            outputs = outputs[1:]
        elif len(outputs) == 2:
            ids = np.asarray(labels).reshape(-1)
        else:
            raise DataError(
                f"SquadV1: expected the model's outputs [start_logits, end_logits] (or [unique_ids, start_logits, "
                f"end_logits]), got {len(outputs)} output(s)."
            )
        start_logits, end_logits = (np.asarray(o, dtype=np.float64).reshape(len(ids), -1) for o in outputs)
        answers, golds = [], []
        for k, unique_id in enumerate(ids.tolist()):
            feature = self.by_id.get(int(unique_id))
            if feature is None:
                raise DataError(
                    f"SquadV1: feature unique id {unique_id} is not among the {len(self.features)} features built from "
                    "label_file; the dataset and the postprocess must use the same SQuAD file and settings."
                )
            text, score = self._answer(feature, start_logits[k], end_logits[k])
            question = self.questions[feature.question]
            answers.append((question.qid, text, score))
            golds.append(question.answers)
        return answers, golds
