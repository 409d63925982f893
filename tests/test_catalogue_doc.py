"""docs/catalogue.md lists exactly the registered datasets, transforms, postprocess steps and metrics, and
every name LPOT's dataset.md / transform.md / metric.md list is registered."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lpot_ir.data import DATASETS, POSTPROCESSES, TRANSFORMS
from lpot_ir.metrics import METRICS

DOC = Path(__file__).resolve().parents[1] / "docs" / "catalogue.md"

# the names LPOT 1.5-1.7's docs/dataset.md, transform.md and metric.md list (union over frameworks)
LPOT_DATASETS = {
    "MNIST", "FashionMNIST", "CIFAR10", "CIFAR100", "ImageRecord", "ImageFolder", "ImagenetRaw", "COCORecord",
    "COCORaw", "COCONpy", "dummy", "dummy_v2", "style_transfer", "TFRecordDataset", "bert", "GLUE",
}  # fmt: skip
LPOT_TRANSFORMS = {
    "Resize", "CenterCrop", "RandomResizedCrop", "Normalize", "RandomCrop", "Compose", "CropResize",
    "RandomHorizontalFlip", "RandomVerticalFlip", "DecodeImage", "EncodeJped", "Transpose", "ResizeWithRatio",
    "CropToBoundingBox", "Cast", "ToArray", "Rescale", "AlignImageChannel", "ParseDecodeImagenet",
    "ResizeCropImagenet", "QuantizedInput", "BilinearImagenet", "ToTensor", "ToPILImage", "Pad", "ColorJitter",
    "ToNDArray",
}  # fmt: skip
LPOT_POSTPROCESS = {"LabelShift", "SquadV1"}  # listed among transform.md's TensorFlow transforms
LPOT_METRICS = {"topk", "Accuracy", "Loss", "MAE", "RMSE", "MSE", "F1", "mAP", "COCOmAP", "VOCmAP", "BLEU", "SquadF1", "GLUE"}


def _documented(section: str) -> set[str]:
    text = DOC.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else None]
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE))


def test_the_catalogue_lists_exactly_the_registered_names() -> None:
    for section, registry in (("Datasets", DATASETS), ("Transforms", TRANSFORMS), ("Postprocess", POSTPROCESSES), ("Metrics", METRICS)):
        documented = _documented(section)
        assert documented == set(registry), (
            f"{section}: registered but not in docs/catalogue.md: {sorted(set(registry) - documented)}; "
            f"documented but not registered: {sorted(documented - set(registry))}"
        )


def test_every_lpot_name_is_registered() -> None:
    assert LPOT_DATASETS <= set(DATASETS)
    assert LPOT_TRANSFORMS <= set(TRANSFORMS)
    assert LPOT_POSTPROCESS <= set(POSTPROCESSES)
    assert LPOT_METRICS | {"mIOU"} <= set(METRICS)
    total = len(LPOT_DATASETS) + len(LPOT_TRANSFORMS) + len(LPOT_POSTPROCESS) + len(LPOT_METRICS)
    assert total == 58 and "all 58 implemented" in DOC.read_text()


def test_lpot_style_accessors() -> None:
    preprocess = TRANSFORMS("pytorch", "preprocess")
    compose = preprocess["Compose"]([preprocess["Resize"](size=4), preprocess["ToTensor"]()])
    image, label = compose((np.zeros((8, 6, 3), np.uint8), 3))  # LPOT's (image, label) samples
    assert image.shape == (3, 5, 4) and label == 3  # torchvision's Resize(4): shorter side 6 -> 4
    shift = TRANSFORMS("tensorflow", "postprocess")["LabelShift"](label_shift=1)
    assert shift((None, np.array([2, 5])))[1].tolist() == [1, 4]
    assert DATASETS("onnxrt_qlinearops")["dummy"] is DATASETS["dummy"]
    assert METRICS("pytorch")["topk"] is METRICS["topk"]
