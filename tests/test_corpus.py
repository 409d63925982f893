"""A representative subset of the real-graph corpus (``benchmarks/corpus.py`` runs all of it).

Each case is quantized as a user would (``lpot quantize MODEL -o OUT --calib inputs.npz`` with the inputs
of one real FP32 run) and must give a model that passes ``onnx.checker`` (full check), runs in ONNX
Runtime and stays close to FP32 (``corpus.output_is_close``). The ``onnx`` package's graphs always run;
silero-vad and PP-OCR cases skip when their packages (``pip install silero-vad rapidocr-onnxruntime``)
are not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lpot_corpus", REPO / "benchmarks" / "corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


corpus = _corpus()

SUBSET = {
    "onnx-zoo": ["squeezenet"],  # batch fixed at 1, weights computed by ConstantOfShape nodes, opset 9
    "pytorch-converted": ["Conv2d_groups", "Linear", "PReLU_2d_multiparam", "BatchNorm2d_eval", "Embedding"],
    "pytorch-operator": ["operator_addmm", "operator_sqrt"],  # three inputs; NaN where FP32 has NaN
    # If subgraphs and a scalar sr, named state [2, batch, 128], fp16 body, fixed batch 1 (not the frame
    # sequence model, which full INT8 does not keep close: see docs/benchmarks.md)
    "silero-vad": ["silero_vad", "silero_vad_16k_op15", "silero_vad_half", "silero_vad_openvino_16k"],
    "pp-ocr": ["ch_ppocr_mobile_v2.0_cls_infer"],  # x [-1, 3, ?, ?]
}
PACKAGES = {"silero-vad": "silero_vad", "pp-ocr": "rapidocr_onnxruntime"}


@pytest.mark.slow
@pytest.mark.parametrize("family,name", [(f, n) for f, names in SUBSET.items() for n in names])
def test_real_graph_with_its_own_inputs_gives_a_close_int8_model(family: str, name: str, tmp_path: Path) -> None:
    if family in PACKAGES:
        pytest.importorskip(PACKAGES[family], reason=f"{family} cases need pip install {family}")
    (case,) = [c for c in corpus.cases((family,)) if c.name == name]
    data, feed, reference = corpus.prepare(case, tmp_path)
    outcome = corpus.run_lpot(case, data, feed, reference, tmp_path)
    assert outcome.ok, f"{family}/{name}: {outcome.stage}: {outcome.detail}"


def test_closeness_is_measured_in_the_outputs_own_scale() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    fp32 = rng.standard_normal(1000) * 5 + 100  # offset 100, spread 5: judged by the spread
    assert corpus.closeness(fp32 + rng.standard_normal(1000) * 0.25, fp32) == pytest.approx(0.05, rel=0.1)
    assert corpus.closeness(np.full(4, 2.02), np.full(4, 2.0)) == pytest.approx(0.01)  # constant: by magnitude
    nan = np.array([np.nan, 1.0, 2.0, 3.0])
    assert corpus.closeness(nan, nan) == 0.0 and corpus.closeness(np.array([0.0, 1, 2, 3]), nan) == np.inf
    # probabilities: judged by the decisions they make when the values drift
    sigmoid = np.array([[0.9, 0.1, 0.8, 0.2]])
    assert corpus.output_is_close(sigmoid + 0.015, sigmoid)[0]
    assert not corpus.output_is_close(sigmoid[:, ::-1], sigmoid)[0]
    softmax = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert not corpus.output_is_close(softmax[::-1], softmax)[0]
