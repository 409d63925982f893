"""The bundled example: a real small CNN trained on real labelled data, built in ~15 s and cached.

The data are scikit-learn's bundled handwritten digits (1797 grey 8x8 images, 10 classes), upsampled
to 16x16. The model is a small CNN with depthwise-separable convolutions (stem conv 1->16, depthwise,
pointwise 16->64, max-pool, depthwise, pointwise 64->128, global average pool, linear), trained for
about 15 s (98.4% top-1 on the 500 held-out digits) and exported to ONNX (opset 17) with
``torch.onnx.export(dynamo=False)``.

The build is bit-for-bit the same on every x86-64 CPU: it runs in a child process whose torch uses
one thread, deterministic algorithms, ATen's portable kernels (``ATEN_CPU_CAPABILITY=default``, not
the AVX2/AVX-512 ones), MKL's CPU-independent code path (``MKL_CBWR=COMPATIBLE``), and neither oneDNN
nor NNPACK (their kernels, and so the sums' rounding, depend on the CPU). Left to pick its fastest
kernels, torch trains a visibly different model on AVX2 and AVX-512 machines. What still varies by CPU
is how ONNX Runtime runs the model (FP32 rounding, INT8 kernels): see ``docs/reproducibility.md``.

One activation channel has a large outlier, as trained networks often have ("massive
activations"): after training, channel 0 of the stem's output is scaled up by ``OUTLIER_SCALE`` and
the depthwise convolution that reads it is scaled down by the same factor. ReLU is positively
homogeneous, so the FP32 model computes exactly the same function, but per-tensor INT8 quantization
of that one tensor now loses the resolution of the 15 other channels. Quantizing every op costs
about a fifth of the accuracy, and keeping either of the two ops around that tensor in FP32 alone does
not help; keeping both in FP32 recovers it, and the remaining INT8 pointwise convolutions make that
model faster than FP32 in ONNX Runtime (how much depends on the CPU). This makes the example a real
test of accuracy-driven tuning rather than a model that INT8 never hurts.

``TRAIN_SEED`` is chosen so that these properties hold with a margin on every CPU: with the 8-bit
weights of VNNI/AMX/ARM CPUs and the 7-bit (``reduce_range``) weights of x86 CPUs without VNNI, the
model with both ops in FP32 loses no held-out digit and changes the top-1 class of none of the 100
calibration samples (the closest keeps its class by 0.111 logits with 8-bit weights, 0.456 with 7-bit;
ten INT8 rounding steps of the classifier's input move a lead by 0.074 logits, see ``rounding_floor`` in
``tests/tuning/helpers.py``), while quantizing every op changes over 20 of them and costs over 100
held-out digits; the outlier tensor's quantization error is hundreds of times any other tensor's.
Most seeds miss one of these (usually a calibration digit that 7-bit or 8-bit weights flip);
``tests/tuning/test_example_model.py`` checks them.

Everything is cached on disk under ``$LPOT_IR_CACHE`` (default ``~/.cache/lpot_ir``) in a folder named
by :data:`VERSION` and the installed torch's major.minor version (:func:`cache_name`; another torch may
train other bits, so upgrading it rebuilds the example), written atomically under a file lock, so
parallel test workers train it once.
scikit-learn and torch are needed only to build the cache.

Example:
    >>> from lpot_ir.examples_data import digits_example
    >>> ex = digits_example()
    >>> ex.accuracy(ex.model_path)  # doctest: +SKIP
    0.984
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import importlib.metadata
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from lpot_ir.data import DataLoader
from lpot_ir.errors import LpotError
from lpot_ir.fileio import atomic_write

__all__ = [
    "VERSION",
    "OUTLIER_SCALE",
    "DigitsExample",
    "digits_example",
    "build_digits_example",
    "PORTABLE_TORCH_ENV",
    "cache_root",
    "cache_name",
    "model_accuracy",
    "load_digits_splits",
    "digits_torch_model",
    "FASHION_MNIST_DIR",
    "load_fashion_mnist",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST (``apt-get install dataset-fashion-mnist``)."""

logger = logging.getLogger(__name__)

VERSION = "digits-dwcnn-v3-portable"
"""Names the cache folder; change it whenever the recipe below changes."""

OUTLIER_SCALE = 120.0
"""How much larger the outlier channel of the stem's output is than it was after training."""

IMAGE_SIZE = 16
TRAIN_SAMPLES = 1197
EVAL_SAMPLES = 500
CALIB_SAMPLES = 100
SEED = 0
"""Shuffles the digits before the train / eval / calibration split."""
TRAIN_SEED = 12
"""Initializes the weights and orders the batches (see the module docstring for why 12)."""
EPOCHS = 12
WIDTH = 64
LEARNING_RATE = 5e-3

_TORCH_WEIGHTS = "torch_weights.pt"
"""The trained module's state dict (with the outlier), written beside the model; not needed by the ONNX example."""

_FILES = ("model.onnx", "eval_data.npy", "eval_labels.npy", "calib_data.npy", "calib_labels.npy", "info.json")


def cache_name() -> str:
    """The example's cache folder name: :data:`VERSION` and torch's major.minor (``...-torch2.13``).

    torch's kernels and defaults change between releases, so another torch may train a different model from
    the same recipe; naming the folder by it makes a torch upgrade rebuild the example instead of reusing one
    it would not build. Read from the package metadata (importing torch takes seconds); ``torch-none`` without
    torch (building then fails with a message saying what to install).
    """
    try:
        release = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return f"{VERSION}-torch-none"
    major_minor = ".".join(release.split("+")[0].split(".")[:2])
    return f"{VERSION}-torch{major_minor}"


def cache_root() -> Path:
    """The cache folder: ``$LPOT_IR_CACHE`` or ``~/.cache/lpot_ir``."""
    env = os.environ.get("LPOT_IR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "lpot_ir"


@dataclass(frozen=True)
class DigitsExample:
    """The cached example: paths to the model and data, and helpers to use them.

    Attributes:
        folder: the cache folder holding every file.
        model_path: the FP32 ONNX model (input ``input`` [N, 1, 16, 16] float32, output ``logits`` [N, 10]).
        eval_data_path: evaluation images, ``.npy`` [500, 1, 16, 16] float32.
        eval_labels_path: evaluation labels, ``.npy`` [500] int64.
        calib_data_path: calibration images, ``.npy`` [100, 1, 16, 16] float32 (no overlap with eval).
        calib_labels_path: calibration labels (the ``numpy`` dataset needs none; kept for completeness).
        info: how the model was built (FP32 accuracy, training time, versions).
    """

    folder: Path
    model_path: Path
    eval_data_path: Path
    eval_labels_path: Path
    calib_data_path: Path
    calib_labels_path: Path
    info: dict[str, Any]

    @property
    def eval_data(self) -> np.ndarray:
        return np.load(self.eval_data_path)

    @property
    def eval_labels(self) -> np.ndarray:
        return np.load(self.eval_labels_path)

    @property
    def calib_data(self) -> np.ndarray:
        return np.load(self.calib_data_path)

    def eval_dataloader(self, batch_size: int = 100) -> Any:
        """An ``lpot_ir`` DataLoader of (image, label) over the evaluation split."""

        return DataLoader(_Pairs(self.eval_data, self.eval_labels), batch_size=batch_size)

    def calib_dataloader(self, batch_size: int = 10) -> Any:
        """An ``lpot_ir`` DataLoader of (image, label) over the calibration split."""

        return DataLoader(_Pairs(self.calib_data, np.load(self.calib_labels_path)), batch_size=batch_size)

    def accuracy(self, model: Any) -> float:
        """Top-1 accuracy of ``model`` (a path, bytes or ``onnx.ModelProto``) on the evaluation split."""
        return model_accuracy(model, self.eval_data, self.eval_labels)

    def eval_func(self, model: Any) -> float:
        """An LPOT-style evaluation function: receives an ``onnx.ModelProto``, returns top-1 accuracy."""
        return self.accuracy(model)

    def copy_files(self, folder: str | os.PathLike[str]) -> Path:
        """Copy the model and the ``.npy`` files into ``folder`` (created) and return it.

        The examples do this so that their YAML can name the files with relative paths.
        """

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name in _FILES:
            if name.endswith((".onnx", ".npy")):
                shutil.copyfile(self.folder / name, folder / name)
        return folder


class _Pairs:
    """A dataset of (input, label) pairs from two arrays."""

    def __init__(self, inputs: np.ndarray, labels: np.ndarray) -> None:
        self.inputs = inputs
        self.labels = labels

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs[index], self.labels[index]


def model_accuracy(model: Any, inputs: np.ndarray, labels: np.ndarray, batch_size: int = 250) -> float:
    """Top-1 accuracy of an ONNX classifier run with ONNX Runtime (one intra-op thread).

    Args:
        model: a path, serialized bytes or an ``onnx.ModelProto``.
        inputs: images [N, ...] for the model's single input.
        labels: class indices [N].
        batch_size: samples per run.
    """

    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = str(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(inputs), batch_size):
        logits = session.run(None, {name: inputs[start : start + batch_size]})[0]
        correct += int((np.argmax(logits, axis=1) == labels[start : start + batch_size]).sum())
    return correct / len(inputs)


def digits_example(cache_dir: str | os.PathLike[str] | None = None) -> DigitsExample:
    """The bundled example, built on first use (about 15 s) and cached.

    Args:
        cache_dir: the cache root (default :func:`cache_root`); the example lives in ``<root>/<cache_name()>``.

    Returns:
        The :class:`DigitsExample` with every file present.
    """
    folder = Path(cache_dir) if cache_dir is not None else cache_root()
    folder = folder / cache_name()
    if not _complete(folder):
        folder.mkdir(parents=True, exist_ok=True)
        with _locked(folder / ".lock"):
            if not _complete(folder):
                build_digits_example(folder)
    return _describe(folder)


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _FILES)


def _describe(folder: Path) -> DigitsExample:
    return DigitsExample(
        folder=folder,
        model_path=folder / "model.onnx",
        eval_data_path=folder / "eval_data.npy",
        eval_labels_path=folder / "eval_labels.npy",
        calib_data_path=folder / "calib_data.npy",
        calib_labels_path=folder / "calib_labels.npy",
        info=json.loads((folder / "info.json").read_text()),
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def load_digits_splits() -> dict[str, np.ndarray]:
    """scikit-learn's digits, scaled to [0, 1], upsampled to 16x16, shuffled with a fixed seed and split.

    Returns:
        ``train_x, train_y, eval_x, eval_y, calib_x, calib_y`` (images [N, 1, 16, 16] float32, labels int64).
    """
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    images, labels = images[order], labels[order]
    with torch.no_grad():
        upsampled = torch.nn.functional.interpolate(
            torch.from_numpy(images)[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False
        ).numpy()
    a, b = TRAIN_SAMPLES, TRAIN_SAMPLES + EVAL_SAMPLES
    c = b + CALIB_SAMPLES
    return {
        "train_x": upsampled[:a], "train_y": labels[:a],
        "eval_x": upsampled[a:b], "eval_y": labels[a:b],
        "calib_x": upsampled[b:c], "calib_y": labels[b:c],
    }  # fmt: skip


def _make_net() -> Any:
    import torch
    from torch import nn

    class DepthwiseCNN(nn.Module):
        """stem 3x3 -> dw 3x3 -> pw 1x1 -> maxpool -> dw 3x3 -> pw 1x1 -> global avg pool -> linear."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.dw1 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
            self.pw1 = nn.Sequential(nn.Conv2d(16, WIDTH, 1), nn.BatchNorm2d(WIDTH), nn.ReLU())
            self.pool = nn.MaxPool2d(2)
            self.dw2 = nn.Sequential(nn.Conv2d(WIDTH, WIDTH, 3, padding=1, groups=WIDTH), nn.BatchNorm2d(WIDTH), nn.ReLU())
            self.pw2 = nn.Sequential(nn.Conv2d(WIDTH, 2 * WIDTH, 1), nn.BatchNorm2d(2 * WIDTH), nn.ReLU())
            self.gap = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * WIDTH, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(self.pw1(self.dw1(self.stem(x))))
            x = self.gap(self.pw2(self.dw2(x)))
            return self.fc(torch.flatten(x, 1))

    return DepthwiseCNN()


def digits_torch_model(cache_dir: str | os.PathLike[str] | None = None) -> Any:
    """The example's ``torch.nn.Module`` (trained, with the outlier channel; eval mode), for examples that
    start from a PyTorch model (quantization-aware training).

    Its weights are the ones the portable child process trained for the cached ONNX model
    (``torch_weights.pt`` beside it), so every CPU gets the same module. An older cache folder without
    that file is rebuilt once (about 15 s).
    """
    import torch

    example = digits_example(cache_dir)
    weights = example.folder / _TORCH_WEIGHTS
    if not weights.is_file():
        with _locked(example.folder / ".lock"):
            if not weights.is_file():
                build_digits_example(example.folder)
    net = _make_net()
    net.load_state_dict(torch.load(weights, map_location="cpu"))
    return net.eval()


def _train(splits: dict[str, np.ndarray]) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(TRAIN_SEED)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic and polite on shared machines
    torch.use_deterministic_algorithms(True)
    torch.backends.mkldnn.set_flags(False)  # oneDNN and NNPACK pick kernels (and summation orders) by CPU
    torch.backends.nnpack.set_flags(False)
    try:
        net = _make_net()
        optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
        x = torch.from_numpy(splits["train_x"])
        y = torch.from_numpy(splits["train_y"])
        generator = torch.Generator().manual_seed(TRAIN_SEED)
        net.train()
        for _epoch in range(EPOCHS):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                index = order[start : start + 64]
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(net(x[index]), y[index])
                loss.backward()
                optimizer.step()
        net.eval()
        _add_outlier_channel(net, channel=0, scale=OUTLIER_SCALE)
    finally:
        torch.set_num_threads(threads)
    return net


def _add_outlier_channel(net: Any, channel: int, scale: float) -> None:
    """Scale one channel of the stem's (post-ReLU) output up and the depthwise weights reading it down.

    ReLU(s*z) = s*ReLU(z) for s > 0 and the depthwise conv treats channels separately, so the
    network's function is unchanged; only the range of that one activation tensor grows.
    """
    import torch

    with torch.no_grad():
        bn = net.stem[1]
        bn.weight[channel] *= scale
        bn.bias[channel] *= scale
        net.dw1[0].weight[channel] /= scale


def _export(net: Any, sample: np.ndarray) -> bytes:
    import torch

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            net,
            (torch.from_numpy(sample),),
            buffer,  # type: ignore[arg-type]  # hint says path-only; dynamo=False writes to files too
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
        )
    return buffer.getvalue()


PORTABLE_TORCH_ENV = {
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}
"""The environment of the child process that trains the example: the same bits on every x86-64 CPU.

These are read when torch and MKL start, so they cannot be set in a process that already ran torch."""


def build_digits_example(folder: str | os.PathLike[str]) -> DigitsExample:
    """Train, export and write the example into ``folder`` (each file atomically), in a child process.

    The child runs with :data:`PORTABLE_TORCH_ENV`, so every CPU builds the same model. Takes about 15 s.

    Raises:
        LpotError: the child failed (its last lines of output are in the message).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "lpot_ir.examples_data", str(folder)]
    done = subprocess.run(
        command, env={**os.environ, **PORTABLE_TORCH_ENV}, capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not _complete(folder):
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise LpotError(
            f"Building the bundled digits example in {folder} failed (exit code {done.returncode}). It needs "
            f"torch and scikit-learn (pip install 'lpot-ir[examples]'); run `{' '.join(command)}` to see the "
            f"whole error. Last output:\n{tail}"
        )
    return _describe(folder)


def _build_here(folder: Path) -> None:
    """Train, export and write the example (the child process of :func:`build_digits_example`)."""

    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    splits = load_digits_splits()
    net = _train(splits)
    train_seconds = time.perf_counter() - start
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        model_bytes = _export(net, splits["eval_x"][:1])
    accuracy = model_accuracy(model_bytes, splits["eval_x"], splits["eval_y"])
    info = {
        "version": VERSION,
        "cache_name": cache_name(),
        "fp32_accuracy": accuracy,
        "train_seconds": round(train_seconds, 2),
        "outlier_scale": OUTLIER_SCALE,
        "torch": torch.__version__,
        "samples": {"train": TRAIN_SAMPLES, "eval": EVAL_SAMPLES, "calib": CALIB_SAMPLES},
    }
    atomic_write(folder / "eval_data.npy", _npy_bytes(splits["eval_x"]))
    atomic_write(folder / "eval_labels.npy", _npy_bytes(splits["eval_y"]))
    atomic_write(folder / "calib_data.npy", _npy_bytes(splits["calib_x"]))
    atomic_write(folder / "calib_labels.npy", _npy_bytes(splits["calib_y"]))
    atomic_write(folder / "model.onnx", model_bytes)
    weights = io.BytesIO()
    torch.save(net.state_dict(), weights)
    atomic_write(folder / _TORCH_WEIGHTS, weights.getvalue())
    atomic_write(folder / "info.json", json.dumps(info, indent=2).encode())  # last: marks the folder complete
    logger.info("built the digits example in %.1f s (FP32 accuracy %.4f) in %s", train_seconds, accuracy, folder)


def load_fashion_mnist(split: str = "train", limit: int | None = None, folder: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Fashion-MNIST images [N, 1, 28, 28] float32 in [0, 1] and labels [N] int64, or ``None`` when absent.

    Args:
        split: ``train`` (60000 images) or ``test`` (10000).
        limit: keep the first ``limit`` images.
        folder: where the ``*-idx?-ubyte.gz`` files are (default :data:`FASHION_MNIST_DIR`, from Debian's
            ``dataset-fashion-mnist`` package).
    """
    root = Path(folder) if folder is not None else FASHION_MNIST_DIR
    prefix = "train" if split == "train" else "t10k"
    images_path = root / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not labels_path.is_file():
        return None
    with gzip.open(images_path, "rb") as handle:
        raw = handle.read()
    count, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    n = count if limit is None else min(limit, count)
    images = np.frombuffer(raw, dtype=np.uint8, count=n * rows * cols, offset=16).reshape(n, 1, rows, cols)
    with gzip.open(labels_path, "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, count=n, offset=8)
    return (images.astype(np.float32) / 255.0), labels.astype(np.int64)


if __name__ == "__main__":
    _build_here(Path(sys.argv[1]))
