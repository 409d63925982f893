"""TFRecord datasets (ImageRecord, TFRecordDataset, COCORecord, bert's TFRecord form) on records written
here with TensorFlow, in the layouts the TensorFlow models' tools write."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lpot_ir.config import create_dataloader
from lpot_ir.data import DataLoader, create_dataset
from lpot_ir.errors import DataError
from lpot_ir.metrics import create_metric

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def tf():
    pytest.importorskip("tensorflow", reason="TFRecord datasets read with TensorFlow (pip install tensorflow-cpu)")
    from lpot_ir.data.records import tensorflow

    return tensorflow()


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _feature(tf, value):
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
    if isinstance(value, list) and value and isinstance(value[0], float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=value))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=value if isinstance(value, list) else [value]))


def _write(tf, path: Path, examples: list[dict]) -> None:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in examples:
            example = tf.train.Example(features=tf.train.Features(feature={k: _feature(tf, v) for k, v in features.items()}))
            writer.write(example.SerializeToString())


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.ascontiguousarray(img[::8, ::8]) for img in load_sample_images().images]


def test_image_record_and_raw_records(tf, tmp_path: Path, photos: list[np.ndarray]) -> None:
    encoded = [_jpeg(p) for p in photos]
    _write(tf, tmp_path / "validation-00000-of-00002", [{"image/encoded": encoded[0], "image/class/label": 65}])
    _write(tf, tmp_path / "validation-00001-of-00002", [{"image/encoded": encoded[1], "image/class/label": 971}])
    (tmp_path / "README").write_text("not a record")
    records = create_dataset({"ImageRecord": {"root": str(tmp_path)}})
    assert len(records) == 2
    samples = list(records)
    assert [label for _, label in samples] == [65, 971]
    np.testing.assert_array_equal(samples[1][0], np.asarray(Image.open(io.BytesIO(encoded[1])).convert("RGB")))
    loader = create_dataloader(
        {"dataset": {"ImageRecord": {"root": str(tmp_path)}}, "transform": {"ParseDecodeImagenet": {}, "BilinearImagenet": {"height": 16, "width": 16}}, "batch_size": 2}
    )
    images, labels = next(iter(loader))
    assert images.shape == (2, 16, 16, 3) and labels.tolist() == [65, 971]
    raw = create_dataloader(
        {"dataset": {"TFRecordDataset": {"root": str(tmp_path / "validation-*")}}, "transform": {"ParseDecodeImagenet": {}}, "batch_size": 1}
    )
    assert [int(label[0]) for _, label in raw] == [65, 971]  # raw records parsed by the transform
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no TFRecord files match .*\*-\*-of-\*"):
        create_dataset({"ImageRecord": {"root": str(tmp_path / "empty")}})
    with pytest.raises(DataError, match="no TFRecord files match"):
        create_dataset({"TFRecordDataset": {"root": str(tmp_path / "train-*")}})


def test_coco_record_feeds_the_coco_metrics(tf, tmp_path: Path, photos: list[np.ndarray]) -> None:
    boxes = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]]  # (ymin, xmin, ymax, xmax), normalized
    _write(
        tf,
        tmp_path / "coco_val.record",
        [
            {
                "image/encoded": _jpeg(photos[0]),
                "image/source_id": b"139",
                "image/object/bbox/ymin": [b[0] for b in boxes],
                "image/object/bbox/xmin": [b[1] for b in boxes],
                "image/object/bbox/ymax": [b[2] for b in boxes],
                "image/object/bbox/xmax": [b[3] for b in boxes],
                "image/object/class/text": [b"person", b"dog"],
                "image/object/class/label": [1, 18],
            }
        ],
    )
    ((image, label),) = list(create_dataset({"COCORecord": {"root": str(tmp_path / "coco_val.record")}}))
    assert image.shape == photos[0].shape
    np.testing.assert_allclose(label[0], boxes, rtol=1e-6)
    assert label[1].tolist() == ["person", "dog"] and label[2].tolist() == [1, 18] and label[3] == "139"
    metric = create_metric({"COCOmAP": {}})
    detections = (np.array([boxes], np.float32), np.array([[0.9, 0.8]]), np.array([[1, 18]]))
    metric.update(detections, [label])
    assert metric.result() == pytest.approx(1.0)  # perfect boxes: AP 1 at every IoU threshold


@pytest.mark.slow
def test_bert_tfrecord_features_through_squad(tf, tmp_path: Path) -> None:
    """LPOT's TensorFlow BERT path: features in a TFRecord (run_squad.py's layout) -> bert -> SquadV1 -> SquadF1."""
    pytest.importorskip("tokenizers")
    import json

    from test_catalogue_nlp import CONTEXT, WORDS, _logits_for

    from lpot_ir.data.nlp import SquadV1

    (tmp_path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    squad = tmp_path / "dev-v1.1.json"
    squad.write_text(json.dumps({"version": "1.1", "data": [{"paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "q-won", "question": "Which team won Super Bowl 50?", "answers": [{"text": "Denver Broncos"}]},
        {"id": "q-lost", "question": "Who lost?", "answers": [{"text": "Carolina Panthers"}]},
    ]}]}]}))
    squad_v1 = SquadV1(squad, tmp_path / "vocab.txt", max_seq_length=24, doc_stride=8, max_query_length=10)
    _write(
        tf,
        tmp_path / "eval.tf_record",
        [
            {"unique_ids": f.unique_id, "input_ids": f.input_ids.tolist(), "input_mask": f.input_mask.tolist(), "segment_ids": f.segment_ids.tolist()}
            for f in squad_v1.features
        ],
    )
    dataset = create_dataset({"bert": {"root": str(tmp_path / "eval.tf_record"), "label_file": str(squad), "task": "squad"}})
    assert len(dataset) == len(squad_v1.features)
    by_id = {f.unique_id: f for f in squad_v1.features}
    f1 = create_metric({"SquadF1": None})
    target = {"q-won": ("denver", "##s"), "q-lost": ("carolina", "panthers")}
    for inputs, unique_ids in DataLoader(dataset, batch_size=3):
        assert sorted(inputs) == ["input_ids", "input_mask", "segment_ids"] and inputs["input_ids"].shape[1] == 24
        features = [by_id[int(u)] for u in unique_ids]
        assert all(np.array_equal(i, f.input_ids) for i, f in zip(inputs["input_ids"], features, strict=True))
        logits = [_logits_for(f, *target[squad_v1.questions[f.question].qid]) for f in features]
        answers, golds = squad_v1([np.stack([s for s, _ in logits]), np.stack([e for _, e in logits])], unique_ids)
        f1.update(answers, golds)
    assert f1.result() == pytest.approx(100.0)
