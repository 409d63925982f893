"""GLUE, bert and the SquadV1 postprocess + SquadF1 / SquadEM, on files written in their standard formats
(GLUE TSV, SQuAD v1.1 JSON, a BERT vocab.txt)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lpot_ir.data import DataLoader, create_dataset, create_postprocess
from lpot_ir.errors import DataError
from lpot_ir.metrics import create_metric

pytest.importorskip("tokenizers", reason="the NLP datasets tokenize with the 'tokenizers' library")

WORDS = (
    "[PAD] [UNK] [CLS] [SEP] super bowl 50 was an american football game . the denver bronco ##s defeated "
    "carolina panthers 24 - 10 to earn their third title which team won ? who lost he said it is good not bad"
).split()

CONTEXT = (
    "Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers 24-10 to "
    "earn their third Super Bowl title."
)


@pytest.fixture
def vocab(tmp_path: Path) -> Path:
    folder = tmp_path / "tokenizer"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return folder


@pytest.fixture
def squad(tmp_path: Path) -> Path:
    data = {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {"id": "q-won", "question": "Which team won Super Bowl 50?", "answers": [{"text": "Denver Broncos", "answer_start": 50}]},
                            {"id": "q-lost", "question": "Who lost?", "answers": [{"text": "Carolina Panthers", "answer_start": 78}]},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(data))
    return path


def test_glue_mrpc_tokenized_pairs(tmp_path: Path, vocab: Path) -> None:
    data_dir = tmp_path / "MRPC"
    data_dir.mkdir()
    (data_dir / "dev.tsv").write_text(
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1\t2\tThe Broncos won.\tDenver won!\n"
        "0\t3\t4\tHe said it is good.\tIt is not bad, he said.\n"
    )
    dataset = create_dataset(
        {"GLUE": {"data_dir": str(data_dir), "model_name_or_path": str(vocab), "max_seq_length": 12, "task": "mrpc"}}
    )
    assert len(dataset) == 2
    inputs, label = dataset[0]
    ids = {w: i for i, w in enumerate(WORDS)}
    expected = [ids[w] for w in "[CLS] the bronco ##s won . [SEP] denver won [UNK] [SEP]".split()]  # '!' is not in the vocab
    assert inputs["input_ids"].tolist() == expected + [0]  # padded to 12
    assert inputs["token_type_ids"].tolist() == [0] * 7 + [1] * 4 + [0]
    assert inputs["attention_mask"].tolist() == [1] * 11 + [0] and label == 1
    second, label2 = dataset[1]
    assert int(second["attention_mask"].sum()) == 12 and label2 == 0  # truncated to max_seq_length
    batch, labels = next(iter(DataLoader(dataset, batch_size=2)))
    assert batch["input_ids"].shape == (2, 12) and labels.tolist() == [1, 0]
    distil = create_dataset(
        {"GLUE": {"data_dir": str(data_dir), "model_name_or_path": str(vocab / "vocab.txt"), "model_type": "distilbert", "dynamic_length": True}}
    )
    assert "token_type_ids" not in distil[0][0] and distil[0][0]["input_ids"].shape == (11,)
    with pytest.raises(DataError, match="does not download"):
        create_dataset({"GLUE": {"data_dir": str(data_dir), "model_name_or_path": "bert-base-uncased"}})


def test_bert_pytorch_form() -> None:
    features = [(np.arange(4), np.ones(4), np.zeros(4), np.int64(1)), (np.arange(4) + 1, np.ones(4), np.zeros(4), np.int64(0))]
    dataset = create_dataset({"bert": {"dataset": features, "task": "classifier"}})
    inputs, label = dataset[1]
    assert sorted(inputs) == ["attention_mask", "input_ids", "token_type_ids"] and label == 0
    assert "token_type_ids" not in create_dataset({"bert": {"dataset": features, "model_type": "distilbert"}})[0][0]


def _logits_for(feature, first: str, last: str) -> tuple[np.ndarray, np.ndarray]:
    """Start/end logits that point at the tokens ``first`` .. ``last`` of the context in this window."""
    start, end = np.zeros(len(feature.input_ids)), np.zeros(len(feature.input_ids))
    context = sorted(feature.token_to_word)
    starts = [p for p in context if feature.tokens[p] == first]
    ends = [p for p in context if feature.tokens[p] == last]
    if starts and ends:
        start[starts[0]], end[ends[0]] = 10.0, 10.0
    return start, end


def test_squad_postprocess_and_f1_em(squad: Path, vocab: Path) -> None:
    post = create_postprocess(
        {"SquadV1": {"label_file": str(squad), "vocab_file": str(vocab), "max_seq_length": 24, "doc_stride": 8, "max_query_length": 10}}
    )
    squad_v1 = post.steps[0]
    windows = {}
    for feature in squad_v1.features:
        windows.setdefault(squad_v1.questions[feature.question].qid, []).append(feature)
    assert len(windows["q-won"]) > 1  # the context needs several windows of 24 tokens
    assert all(f.input_ids.shape == (24,) and f.tokens[0] == "[CLS]" for f in squad_v1.features)
    f1, em = create_metric({"SquadF1": None}), create_metric({"SquadEM": None})
    # q-won: exactly "Denver Broncos" (word pieces 'bronco ##s' map back to the original word);
    # q-lost: "defeated the Carolina Panthers" against "Carolina Panthers": P 2/3, R 1, F1 0.8, EM 0
    targets = {"q-won": ("denver", "##s"), "q-lost": ("defeated", "panthers")}
    for qid, features in windows.items():
        ids = np.array([f.unique_id for f in features])
        logits = [_logits_for(f, *targets[qid]) for f in features]
        preds = [np.stack([s for s, _ in logits]), np.stack([e for _, e in logits])]
        answers, golds = post(preds, ids)
        if qid == "q-won":
            assert ("q-won", "Denver Broncos", 20.0) in answers
        f1.update(answers, golds)
        em.update(answers, golds)
    assert f1.result() == pytest.approx((100 + 80) / 2)
    assert em.result() == pytest.approx(50.0)
    with pytest.raises(DataError, match="unique id"):
        post([np.zeros((1, 24)), np.zeros((1, 24))], np.array([7]))


def test_squad_metrics_lpot_and_plain_forms(squad: Path) -> None:
    dataset = json.loads(squad.read_text())["data"]
    f1 = create_metric({"SquadF1": {}})
    f1.update({"q-won": "the Denver Broncos"}, dataset)  # q-lost unanswered: scores 0, as the official script
    assert f1.result() == pytest.approx(50.0)
    em = create_metric({"SquadEM": {}})
    em.update(["Denver Broncos!", "Panthers"], [["Denver Broncos", "Broncos"], "Carolina Panthers"])
    assert em.result() == pytest.approx(50.0)
