"""make_session / make_feed / run_batches on a tiny real model in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from lpot_ir.backends.onnxruntime import (
    InputSpec,
    input_specs,
    make_feed,
    make_session,
    output_names,
    run_batches,
    run_feed,
)
from lpot_ir.errors import DataError, ModelLoadError
from tests.backends.conftest import W

X = np.arange(6, dtype=np.float32).reshape(2, 3)
Y = np.ones((2, 3), dtype=np.float32)


@pytest.fixture(scope="module")
def session(add_matmul_model):
    return make_session(add_matmul_model, intra_op_threads=1)


def test_make_session_from_every_source(add_matmul_model, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(add_matmul_model.SerializeToString())
    sources = [add_matmul_model, add_matmul_model.SerializeToString(), path, str(path),
               ir.serde.deserialize_model(add_matmul_model)]
    for source in sources:
        sess = make_session(source, intra_op_threads=1, inter_op_threads=1, optimization_level="basic")
        (out,) = sess.run(None, {"x": X, "y": Y})
        np.testing.assert_allclose(out, (X + Y) @ W, rtol=1e-6)
    options = sess.get_session_options()
    assert options.intra_op_num_threads == 1 and options.inter_op_num_threads == 1


def test_make_session_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        make_session(tmp_path / "nope.onnx")


def test_input_specs_agree_for_session_model_and_proto(session, add_matmul_model):
    expected = [InputSpec("x", ("N", 3), np.dtype(np.float32)), InputSpec("y", ("N", 3), np.dtype(np.float32))]
    assert input_specs(session) == expected
    assert input_specs(add_matmul_model) == expected
    assert input_specs(ir.serde.deserialize_model(add_matmul_model)) == expected
    assert output_names(session) == ["out"]


def test_make_feed_accepts_tuple_dict_and_casts_floats(session):
    by_tuple = make_feed(session, (X, Y))
    by_list = make_feed(session, [X.tolist(), Y])
    by_dict = make_feed(input_specs(session), {"y": Y, "x": X.astype(np.float64)})
    for feed in (by_tuple, by_list, by_dict):
        assert list(feed) == ["x", "y"]
        assert feed["x"].dtype == np.float32
        np.testing.assert_array_equal(feed["x"], X)


def test_feed_wrong_rank(session):
    with pytest.raises(DataError) as err:
        make_feed(session, (X[0], Y))
    message = str(err.value)
    assert "'x'" in message and "rank 2" in message and "(N, 3)" in message and "rank 1 with shape (3)" in message


def test_feed_wrong_dtype(session):
    with pytest.raises(DataError) as err:
        make_feed(session, {"x": X.astype(np.int32), "y": Y})
    message = str(err.value)
    assert "'x' expects dtype float32 with shape (N, 3)" in message
    assert "gives dtype int32 with shape (2, 3)" in message


def test_feed_missing_input(session):
    with pytest.raises(DataError) as err:
        make_feed(session, {"x": X})
    message = str(err.value)
    assert "no value for model input 'y'" in message and "(N, 3)" in message and "float32" in message


def test_feed_wrong_static_dim(session):
    with pytest.raises(DataError) as err:
        make_feed(session, (X, np.ones((2, 4), np.float32)))
    message = str(err.value)
    assert "'y' expects shape (N, 3)" in message and "gives shape (2, 4)" in message
    assert "axis 1 must be 3, got 4" in message


def test_feed_wrong_structure(session):
    with pytest.raises(DataError, match="single ndarray, but the model has 2 inputs"):
        make_feed(session, X)
    with pytest.raises(DataError, match="tuple of 3 value"):
        make_feed(session, (X, Y, Y))
    with pytest.raises(DataError, match="'z' that the model does not have"):
        make_feed(session, {"x": X, "y": Y, "z": Y})


def test_run_batches_matches_numpy(session):
    batches = [(X, Y), {"x": Y, "y": X}, (X[:1], Y[:1])]
    outputs = run_batches(session, batches)
    assert [o[0].shape for o in outputs] == [(2, 2), (2, 2), (1, 2)]
    for (out,), expected in zip(outputs, [(X + Y) @ W, (X + Y) @ W, (X[:1] + Y[:1]) @ W], strict=True):
        np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_run_feed_turns_ort_failure_into_data_error(session):
    # Both inputs fit the declared shapes (N is free) but N differs between them: Add cannot broadcast 2 vs 3.
    feed = make_feed(session, (X, np.ones((3, 3), np.float32)))
    with pytest.raises(DataError) as err:
        run_feed(session, feed, where="batch 7")
    assert "ONNX Runtime failed on batch 7" in str(err.value) and "'y' (3, 3) float32" in str(err.value)
