"""Shared fixtures: the ONNX model-zoo graphs that ship inside the onnx package."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

ZOO_DIR = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
ZOO_MODELS = sorted(ZOO_DIR.glob("light_*.onnx"))


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """Folder of opset-9 zoo graphs whose weights are computed by ConstantOfShape nodes."""
    if not ZOO_MODELS:
        pytest.fail(f"the onnx package no longer ships {ZOO_DIR}; pick another offline corpus")
    return ZOO_DIR
