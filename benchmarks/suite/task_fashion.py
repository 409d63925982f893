"""A small CNN trained here on Fashion-MNIST (Debian ``dataset-fashion-mnist``), with the real test labels.

* Data: ``/usr/share/datasets/fashion-mnist/*-idx*-ubyte.gz`` (Zalando's Fashion-MNIST, 28x28 grey
  clothing images, 10 classes), pixels / 255.
* Model: Conv(1->16, 3x3) ReLU MaxPool, Conv(16->32, 3x3) ReLU MaxPool, Flatten, Linear(1568->10);
  trained when the folder is built: 1 epoch of Adam (lr 2e-3, batch 128) on the 60000 training images,
  torch seed 0, one thread (about 20 s of CPU). Exported with
  ``torch.onnx.export(dynamo=False, opset 17)``, dynamic batch; every tool gets that ONNX model (ONNX
  frontend).
* Eval: the 10000 test images with their labels, 50 feeds of 200. Calibration: 100 training images
  (the first 100 of a fixed permutation, seed 1), 10 feeds of 10. Latency: one feed (200 images).
* Metric: top-1 accuracy against the real labels.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from tasks import package_versions, write_task_folder

__all__ = ["build", "read_idx", "DATA_DIR"]

DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
EVAL_BATCH, CALIB_SAMPLES, CALIB_BATCH = 200, 100, 10


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _load(split: str) -> tuple[np.ndarray, np.ndarray]:
    if not DATA_DIR.exists():
        raise ModuleNotFoundError(f"{DATA_DIR} is missing: apt-get install dataset-fashion-mnist")
    images = read_idx(DATA_DIR / f"{split}-images-idx3-ubyte.gz").astype(np.float32)[:, None] / 255.0
    labels = read_idx(DATA_DIR / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def _train(x: np.ndarray, y: np.ndarray) -> object:
    import torch
    from torch import nn

    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(0)
    try:
        for _epoch in range(1):
            order = torch.randperm(len(xs), generator=generator)
            for start in range(0, len(xs), 128):
                idx = order[start : start + 128]
                optimizer.zero_grad()
                nn.functional.cross_entropy(model(xs[idx]), ys[idx]).backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def build(folder: Path) -> None:
    import torch

    train_x, train_y = _load("train")
    test_x, test_y = _load("t10k")
    model = _train(train_x, train_y)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "export.onnx"
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.zeros(1, 1, 28, 28),), str(onnx_path), input_names=["image"], output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
        )  # fmt: skip
    eval_feeds = [{"image": test_x[i : i + EVAL_BATCH]} for i in range(0, len(test_x), EVAL_BATCH)]
    refs = [{"label": test_y[i : i + EVAL_BATCH]} for i in range(0, len(test_y), EVAL_BATCH)]
    pick = np.random.default_rng(1).permutation(len(train_x))[:CALIB_SAMPLES]
    calib = [{"image": train_x[pick[i : i + CALIB_BATCH]]} for i in range(0, CALIB_SAMPLES, CALIB_BATCH)]
    task = {
        "name": "fashion_cnn",
        "description": "a small CNN trained at build time on Fashion-MNIST (Debian dataset-fashion-mnist); "
        "top-1 accuracy on the 10000 test images with their real labels",
        "source": {
            "model": "trained by benchmarks/suite/task_fashion.py (1 epoch, seed 0)",
            "data": str(DATA_DIR) + " (Debian dataset-fashion-mnist)",
            "packages": package_versions(["torch"]),
        },
        "metric": "top1_accuracy",
        "metric_params": {"output": "logits"},
        "higher_is_better": True,
        "approach": "static",
        "inputs": [["image", ["batch", 1, 28, 28], "float32"]],
        "outputs": [["logits", ["batch", 10], "float32"]],
        "frontend": "onnx",
        "latency_feed": 0,
    }
    write_task_folder(folder, task, onnx_path, calib, eval_feeds, refs)
    onnx_path.unlink()
