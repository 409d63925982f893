"""A model over protobuf's 2 GB limit goes through load, optimize, quantize, tune and save.

The model is built on disk in the test (benchmarks/big_model.py: 9 linear layers of 8192 x 8192, 2.25 GiB
of FP32 weights in an external data file, written one layer at a time). Its peak memory is measured by
``benchmarks/big_model.py`` (docs/benchmarks.md), not here: a pytest worker's peak resident memory is
that of every test it ran.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest

from lpot_ir import Quantization, common
from lpot_ir.ir.model import PROTOBUF_LIMIT, load_model, save_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from big_model import agreement, build_big_model, calibration_batches  # noqa: E402

pytestmark = pytest.mark.slow


def _run(source: str | bytes, feed: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(source, providers=["CPUExecutionProvider"]).run(None, {"input": feed})[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, emptied afterwards: pytest keeps the last runs' folders, 5.5 GB each here."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_model_over_2gb_quantizes_tunes_and_saves(workdir: Path) -> None:
    tmp_path = workdir
    spec = build_big_model(tmp_path / "model", gib=2.05, width=8192)
    assert spec.weight_bytes > PROTOBUF_LIMIT
    probe = calibration_batches(spec.width, batches=1, batch_size=8, seed=5)[0]
    reference = _run(str(spec.path), probe)

    loaded = load_model(spec.path)
    consts = [v.const_value for v in loaded.graph.initializers.values()]
    assert all(isinstance(c, ir.ExternalTensor) for c in consts)  # 2.25 GiB not read on load
    fp32_copy = save_model(loaded, tmp_path / "fp32" / "copy.onnx")  # over the limit: external data by itself
    assert [p.suffix for p in sorted(fp32_copy.parent.iterdir())] == [".onnx", ".data"]
    np.testing.assert_allclose(_run(str(fp32_copy), probe), reference, rtol=1e-5, atol=1e-5)
    del loaded

    given: list[str] = []

    def eval_func(model: object) -> float:
        given.append(type(model).__name__)
        source = model if isinstance(model, str) else model.SerializeToString()  # type: ignore[attr-defined]
        return agreement(_run(source, probe), reference)

    quantizer = Quantization({
        "model": {"name": "big_mlp"},
        "quantization": {"calibration": {"sampling_size": 8}},
        "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"timeout": 0, "max_trials": 2},
                   "workspace": {"path": str(tmp_path / "ws")}},
    })  # fmt: skip
    quantizer.model = str(spec.path)
    rows = [(row, None) for batch in calibration_batches(spec.width) for row in batch]
    quantizer.calib_dataloader = common.DataLoader(rows, batch_size=4)
    quantizer.eval_func = eval_func
    quantizer.fit()
    outcome = quantizer.outcome

    # the FP32 baseline (2.25 GiB) reached eval_func as a path, every INT8 candidate as a ModelProto
    assert given[0] == "str" and set(given[1:]) == {"ModelProto"}
    assert outcome.met_goal and outcome.best is not None
    best = outcome.files["model"]
    assert best.stat().st_size < PROTOBUF_LIMIT  # INT8 weights: a quarter of the size, one file
    onnx.checker.check_model(str(best), full_check=True)
    saved = onnx.load(str(best))
    assert any(n.op_type == "QuantizeLinear" for n in saved.graph.node)
    # the metric is cosine agreement with FP32; the relative criterion (1%) bounds it from below
    assert agreement(_run(str(best), probe), reference) >= 0.99 * outcome.baseline_accuracy
