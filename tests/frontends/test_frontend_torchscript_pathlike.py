"""``load_torchscript`` takes any ``os.PathLike`` (it used ``str(path)``, which is not the path for every
PathLike object)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lpot_ir.errors import ModelLoadError
from lpot_ir.frontends.pytorch import load_torchscript

torch = pytest.importorskip("torch")


class _Location(os.PathLike):
    """A PathLike whose str() is a description, not the path (os.fspath gives the path)."""

    def __init__(self, path: str) -> None:
        self._path = path

    def __fspath__(self) -> str:
        return self._path

    def __str__(self) -> str:
        return f"<model at {self._path}>"


def test_load_torchscript_uses_fspath(tmp_path):
    torch.manual_seed(0)
    module = torch.jit.script(torch.nn.Linear(3, 2).eval())
    path = tmp_path / "linear.pt"
    module.save(str(path))
    loaded = load_torchscript(_Location(str(path)))
    x = torch.from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_allclose(loaded(x).detach().numpy(), module(x).detach().numpy())


def test_load_torchscript_error_names_the_path(tmp_path):
    bad = tmp_path / "not_a_model.pt"
    bad.write_bytes(b"not a torchscript archive")
    with pytest.raises(ModelLoadError, match="not_a_model.pt"):
        load_torchscript(_Location(str(bad)))
