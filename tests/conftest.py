"""Shared fixtures: the ONNX model-zoo graphs that ship inside the onnx package, the bundled digits example."""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from lpot_ir.examples_data import DigitsExample, digits_example
from lpot_ir.quantizer import ModelQuantizer

ZOO_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_MODELS = sorted(ZOO_DIR.glob("light_*.onnx"))


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """Folder of opset-9 zoo graphs whose weights are computed by ConstantOfShape nodes."""
    if not ZOO_MODELS:
        pytest.fail(f"the onnx package no longer ships {ZOO_DIR}; pick another offline corpus")
    return ZOO_DIR


@pytest.fixture(scope="session")
def digits() -> DigitsExample:
    """The bundled digits example (built once, cached)."""
    return digits_example()


@pytest.fixture(scope="session")
def quantizer(digits: DigitsExample) -> ModelQuantizer:
    """A quantizer of the digits example, calibrated on batches of 10."""
    return ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))


@pytest.fixture(autouse=True)
def _order_independent_rng(request: pytest.FixtureRequest) -> None:
    """Restart the test module's shared ``RNG`` (a numpy Generator) from a seed named by the test itself.

    Under ``pytest -n 2`` each worker runs a different subset of the tests, in an order that changes from
    run to run; a module-level generator would give a test different data each time. Reseeded here, the
    data a test draws depends only on the test (module-scoped fixtures use their own generators).
    """
    rng = getattr(request.module, "RNG", None)
    if isinstance(rng, np.random.Generator):
        seed = zlib.crc32(request.node.nodeid.encode())
        rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state


def train_classifier(net: object, x: np.ndarray, y: np.ndarray, *, epochs: int = 3, lr: float = 3e-3) -> None:
    """Train a torch classifier in place with Adam and cross-entropy, batches of 64 in order (deterministic
    with a fixed torch seed and one thread), and leave it in eval mode."""
    import torch

    assert isinstance(net, torch.nn.Module)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        net.train()
        for start in range(0, len(inputs), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(inputs[start : start + 64]), labels[start : start + 64]).backward()
            optimizer.step()
    net.eval()


@contextlib.contextmanager
def deterministic_torch(seed: int = 0) -> Iterator[None]:
    """One torch thread and a fixed seed inside the block (torch's thread count restored after it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

