"""LPOT's metrics by name, on real data (scikit-learn's digits, a photo) against scikit-learn / scipy /
hand-computed values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.metrics import METRICS, create_metric


@pytest.fixture(scope="module")
def digits_model():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    data = load_digits()
    x, y = data.data / 16.0, data.target
    model = LogisticRegression(max_iter=300).fit(x[:1000], y[:1000])
    return model, x[1000:], y[1000:]


def _batches(*arrays: np.ndarray, size: int = 128):
    for start in range(0, len(arrays[0]), size):
        yield tuple(a[start : start + size] for a in arrays)


def test_topk_and_loss_match_scikit_learn(digits_model) -> None:
    from sklearn.metrics import log_loss, top_k_accuracy_score

    model, x, y = digits_model
    scores = model.decision_function(x)
    for k in (1, 3):
        metric = create_metric({"topk": k})
        for s, t in _batches(scores, y):
            metric.update([s], t)
        assert metric.result() == pytest.approx(top_k_accuracy_score(y, scores, k=k, labels=range(10)))
    probabilities = model.predict_proba(x)
    per_sample = -np.log(probabilities[np.arange(len(y)), y])  # what a model with a loss output gives
    loss = create_metric({"Loss": None})
    for p, t in _batches(per_sample, y):
        loss.update(p, t)
    assert loss.result() == pytest.approx(log_loss(y, probabilities, labels=range(10)))
    assert not loss.higher_is_better


def test_regression_errors_match_scikit_learn(digits_model) -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    model, x, _ = digits_model
    truth = x[:, 20]  # predict one pixel of the digits from the others
    from sklearn.linear_model import Ridge

    predicted = Ridge().fit(np.delete(x, 20, axis=1), truth).predict(np.delete(x, 20, axis=1))
    expected = {"MAE": mean_absolute_error(truth, predicted), "MSE": mean_squared_error(truth, predicted)}
    expected["RMSE"] = np.sqrt(expected["MSE"])
    for name, value in expected.items():
        metric = create_metric({name: {"compare_label": True}})
        for p, t in _batches(predicted, truth, size=100):
            metric.update([p], t)
        assert metric.result() == pytest.approx(value) and not metric.higher_is_better


def _one(box):
    return np.asarray([box], dtype=np.float32)


def test_coco_map_thresholds_and_voc_map() -> None:
    gt = (_one([0, 0, 10, 10]), np.array(["dog"]), np.array([18]), "img-1")  # LPOT's COCO label
    detection = (np.array([[[0, 0, 10, 6.3]]]), np.array([[0.9]]), np.array([[18]]))  # IoU 63 / 100
    coco = create_metric({"COCOmAP": {}})
    coco.update(detection, [gt])
    # a true positive at IoU thresholds 0.50, 0.55, 0.60 (3 of the 10 from 0.50 to 0.95), AP 1 at each
    assert coco.result() == pytest.approx(0.3)
    voc = create_metric({"VOCmAP": {"iou_thrs": 0.9}})  # LPOT fixes VOC's 0.5: the given value is ignored
    voc.update(detection, [gt])
    assert voc.result() == pytest.approx(1.0)
    # VOC AP on two images: class 1 has ground truth A (image 1) and B (image 2); detections by score:
    # 0.9 hits A (TP), 0.8 misses (FP), 0.7 hits B (TP) -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1:
    # the envelope's area is 1/2 * 1 + 1/2 * 2/3 = 5/6
    voc = create_metric({"VOCmAP": None})
    preds = (
        np.array([[[0, 0, 10, 10], [50, 50, 60, 60]], [[0, 0, 10, 10], [0, 0, 1, 1]]], dtype=np.float32),
        np.array([[0.9, 0.8], [0.7, 0.1]]),
        np.array([[1, 1], [1, 2]]),
    )
    labels = [(_one([0, 0, 10, 10]), np.array([1])), (_one([0, 0, 10, 10]), np.array([1]))]
    voc.update(preds, labels)
    # class 2 has no ground truth, so only class 1 counts
    assert voc.result() == pytest.approx(5 / 6)


def test_map_reads_names_through_a_label_map(tmp_path: Path) -> None:
    label_map = tmp_path / "label_map.yaml"
    label_map.write_text("cat: 7\ndog: 8\n")
    metric = create_metric({"mAP": {"anno_path": str(label_map)}})
    batched = ([_one([0, 0, 1, 1])[0:1]], [np.array([b"dog"])], [np.array([])], [b"img"])  # LPOT's batched labels
    metric.update((np.array([[[0, 0, 1, 1]]]), np.array([[0.5]]), np.array([[8]])), batched)
    assert metric.result() == pytest.approx(1.0)
    with pytest.raises(EvaluationError, match="label map"):
        metric.update((np.array([[[0, 0, 1, 1]]]), np.array([[0.5]]), np.array([[8]])), ([_one([0, 0, 1, 1])], [np.array(["bird"])], [np.array([])], ["x"]))


def test_bleu_hand_computed() -> None:
    bleu = create_metric({"BLEU": None})
    bleu.update(["The cat sat on the mat today ."], ["the cat sat on the mat today !"])
    # lowercased, 8 tokens each: 1-grams 7/8, 2-grams 6/7, 3-grams 5/6, 4-grams 4/5, no brevity penalty
    expected = 100 * (7 / 8 * 6 / 7 * 5 / 6 * 4 / 5) ** 0.25
    assert bleu.result() == pytest.approx(expected, rel=1e-6)
    bleu.reset()
    bleu.update([["a", "b", "c", "d"]], [["x y z w", "a b c d"]])  # token lists; two references each
    assert bleu.result() == pytest.approx(100.0)
    bleu.reset()
    bleu.update(["a b"], ["a c"])  # no 2-gram match and no smoothing: 0, as LPOT
    assert bleu.result() == 0.0


def test_glue_task_metrics() -> None:
    truth = np.array([1, 1, 0, 0, 1, 0, 1, 1])
    predicted = np.array([1, 0, 0, 1, 1, 0, 1, 1])
    scores = np.eye(2)[predicted] * 3.0 - 1.0  # logits whose argmax is `predicted`
    tp, tn, fp, fn = 4, 2, 1, 1
    mrpc = create_metric({"GLUE": {"task": "mrpc"}})
    mrpc.update([scores[:5]], truth[:5])
    mrpc.update([scores[5:]], truth[5:])
    assert mrpc.result() == pytest.approx(6 / 8)  # LPOT reports accuracy for MRPC
    f1 = 2 * tp / (2 * tp + fp + fn)
    assert mrpc.results["f1"] == pytest.approx(f1) and mrpc.results["acc_and_f1"] == pytest.approx((6 / 8 + f1) / 2)
    cola = create_metric({"GLUE": {"task": "cola"}})
    cola.update([scores], truth)
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert cola.result() == pytest.approx(mcc)
    stsb = create_metric({"GLUE": {"task": "sts-b"}})
    gold = np.array([0.0, 1.0, 2.5, 3.0, 5.0])
    stsb.update([gold**2], gold)  # monotone but not linear
    pearson = np.corrcoef(gold**2, gold)[0, 1]
    assert stsb.result() == pytest.approx((1.0 + pearson) / 2)
    assert stsb.results["spearmanr"] == pytest.approx(1.0) and stsb.results["pearson"] == pytest.approx(pearson)
    with pytest.raises(ConfigError, match="task"):
        create_metric({"GLUE": {"task": "squad"}})


def test_miou_matches_scikit_learn_on_a_photo() -> None:
    from sklearn.datasets import load_sample_image
    from sklearn.metrics import jaccard_score

    gray = load_sample_image("china.jpg").mean(axis=2)[::4, ::4]
    truth = np.digitize(gray, [80, 160]).astype(np.int64)  # three intensity classes as ground truth
    predicted = np.digitize(gray, [90, 150]).astype(np.int64)  # a slightly different segmentation
    truth[:3] = 255  # VOC's "ignore" border
    metric = create_metric({"mIOU": {"num_classes": 3}})
    metric.update(predicted[None], truth[None])
    keep = truth != 255
    assert metric.result() == pytest.approx(jaccard_score(truth[keep], predicted[keep], average="macro"))
    scores = np.eye(3)[predicted].transpose(2, 0, 1)[None]  # NCHW class scores are argmax-ed
    again = create_metric({"mIOU": {"num_classes": 3}})
    again.update([scores], truth[None])
    assert again.result() == pytest.approx(metric.result())


def test_every_lpot_metric_name_is_registered() -> None:
    lpot = {"topk", "Accuracy", "Loss", "MAE", "RMSE", "MSE", "F1", "mAP", "COCOmAP", "VOCmAP", "BLEU", "SquadF1", "GLUE", "mIOU"}
    assert lpot <= set(METRICS)
