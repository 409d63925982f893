"""Fuzzing calibration dataloaders of the Python API: what a user's loader yields (arrays of other dtypes and
shapes, tuples in input order, dicts by name with wrong or extra names, ``(inputs, labels)`` pairs, None,
strings, nested lists, nothing at all) given to :class:`~lpot_ir.quantizer.ModelQuantizer` directly or
through ``common.DataLoader`` over samples. Every outcome is a quantized model that ONNX Runtime runs, or
one LpotError paragraph."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from lpot_ir.common import DataLoader
from lpot_ir.errors import DataError, LpotError
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.quantizer import ModelQuantizer
from tests.faults.fuzzing import assert_one_paragraph, fuzz_settings
from tests.faults.test_fuzz_calibration import GOOD, MODELS, arrays


@st.composite
def inputs(draw: Any, model: str) -> Any:
    """One loader item's inputs: mostly near the real feed, in every form a loader may use."""
    good = GOOD[model]
    form = draw(st.sampled_from(["dict", "dict", "tuple", "array", "other"]))
    if form == "dict":
        out = {}
        for name, array in good.items():
            if draw(st.integers(0, 7)):
                out[draw(st.sampled_from([name, name, name, "x1"]))] = draw(arrays(array))
        return out
    if form == "tuple":
        values = [draw(arrays(a)) for a in good.values()][: draw(st.integers(0, len(good) + 1))]
        return tuple(values) if draw(st.booleans()) else values
    if form == "array":
        return draw(arrays(next(iter(good.values()))))
    return draw(st.sampled_from([None, "data.npy", 3, 2.5, [[1.0, 2.0], [3.0]], {"x": None}, {}, b"\x00"]))


@st.composite
def loaders(draw: Any, model: str) -> Any:
    """A calibration loader: a list of items (inputs, or (inputs, label) pairs), a one-shot generator, or
    ``common.DataLoader`` over per-sample items."""
    kind = draw(st.sampled_from(["list", "list", "generator", "common"]))
    labelled = draw(st.booleans())
    items = [draw(inputs(model)) for _ in range(draw(st.integers(0, 3)))]
    if kind == "common":
        samples = [draw(arrays(GOOD[model][next(iter(GOOD[model]))][0])) for _ in range(draw(st.integers(0, 4)))]
        if draw(st.booleans()):
            samples = items
        try:
            return DataLoader([(s, 0) if labelled else s for s in samples], batch_size=draw(st.integers(1, 3)))
        except LpotError as exc:
            assert_one_paragraph(exc)
            return None
    items = [(item, np.zeros(1)) if labelled else item for item in items]
    return iter(items) if kind == "generator" else items


@fuzz_settings(60)
@given(data=st.data())
def test_calibration_dataloaders_quantize_or_fail_with_one_paragraph(data):
    model = data.draw(st.sampled_from(sorted(MODELS)))
    loader = data.draw(loaders(model))
    if loader is None:
        return
    try:
        config = TuningConfig(calib_sampling_size=data.draw(st.sampled_from([1, 4])))
        quantized = ModelQuantizer(MODELS[model], loader).quantize(config)
    except LpotError as exc:
        assert_one_paragraph(exc)
        event(f"refused: {type(exc).__name__}")
        return
    event("quantized")
    proto = quantized.model
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, GOOD[model] if model != "fixed-batch" else {"x": GOOD[model]["x"][:2]})


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        ([{"x": np.ones(3)}, np.ones((3, 3))], r"keys \['x'\] \(as the first one\), got a ndarray of shape \(3, 3\)"),
        ([(np.ones(3), np.ones(2), np.ones(1)), (np.ones(3),)], r"tuple of 3 arrays \(as the first one\), got a tuple"),
        ([({"x": [[1.0, 2.0], [3.0]]}, 0)], r"sample 0 of the batch, a list \(\[\[1.0, 2.0\], \[3.0\]\]\), is not an array"),
        ([np.ones(2, np.float32), np.arange(2).astype("datetime64[s]")], r"dtypes \['datetime64\[s\]', 'float32'\]"),
    ],
    ids=["dict-then-array", "tuples-of-two-lengths", "ragged-list", "no-common-dtype"],
)
def test_samples_that_do_not_batch_are_one_paragraph(samples, message):
    """Cases the fuzzing found: numpy's multi-line array repr, a ragged list and float32 beside datetime64
    were an internal error or a many-line message."""
    with pytest.raises(DataError, match=message) as caught:
        list(DataLoader(samples, batch_size=len(samples)))
    assert_one_paragraph(caught.value)
