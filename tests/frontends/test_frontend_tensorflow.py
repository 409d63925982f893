"""TensorFlow / Keras frontend: SavedModel, frozen .pb, .keras/.h5 and keras.Model -> ONNX with TF names."""

from __future__ import annotations

import numpy as np
import pytest
from frontend_helpers import ort_run

from lpot_ir.errors import ConversionError
from lpot_ir.frontends import detect_framework, to_onnx

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]


def _check_outputs(converted, x, expected):
    out = ort_run(converted.model, {converted.input_names[0]: x})[0]
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_keras_model_and_files(keras_cnn, tmp_path):
    model, x = keras_cnn
    expected = model(x, training=False).numpy()
    model.save(tmp_path / "m.keras")
    model.save(tmp_path / "m.h5")
    for source in (model, tmp_path / "m.keras", tmp_path / "m.h5"):
        assert detect_framework(source) == "keras"
        converted = to_onnx(source)
        assert converted.framework == "keras"
        assert converted.input_names == ("image",)
        assert {"conv1", "conv2", "logits"} <= set(converted.name_map.values())
        assert converted.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
        _check_outputs(converted, x[:3], expected[:3])


def test_saved_model_folder(keras_cnn, tmp_path):
    model, x = keras_cnn
    model.export(str(tmp_path / "sm"), verbose=False)
    converted = to_onnx(str(tmp_path / "sm"))
    assert converted.framework == "tensorflow"
    conv = [n.name for n in converted.model.graph.node if n.op_type == "Conv"]
    assert len(conv) == 2
    assert all(converted.name_map[c].endswith("/convolution") for c in conv)  # the TensorFlow op names
    assert any("/conv1" in converted.name_map[c] for c in conv)
    _check_outputs(converted, x, model(x, training=False).numpy())


def test_frozen_pb_finds_inputs_and_outputs(keras_cnn, frozen_pb):
    model, x = keras_cnn
    converted = to_onnx(frozen_pb)
    assert converted.input_names == ("image",)
    assert converted.output_names == ("Identity",)
    assert any("Placeholders" in n for n in converted.notes)
    _check_outputs(converted, x, model(x, training=False).numpy())
    explicit = to_onnx(frozen_pb, inputs=["image:0"], outputs=["Identity"])
    _check_outputs(explicit, x, model(x, training=False).numpy())
    with pytest.raises(ConversionError, match=r"\['nope'\].*not in the frozen graph"):
        to_onnx(frozen_pb, outputs=["nope"])


def test_tf_function(tf_modules):
    tf, _ = tf_modules
    w = tf.constant(np.random.default_rng(0).random((6, 3), dtype=np.float32))

    @tf.function
    def fn(x):
        return tf.nn.relu(tf.matmul(x, w))

    x = np.random.default_rng(1).random((2, 6), dtype=np.float32)
    converted = to_onnx(fn, framework="tensorflow", example_inputs=x)
    _check_outputs(converted, x, fn(x).numpy())


def test_unsupported_tf_op_is_named(tf_modules, tmp_path):
    tf, _ = tf_modules

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def fn(x):
        return tf.math.igamma(x, x + 1.0)

    with pytest.raises(ConversionError, match="Igamma"):
        to_onnx(fn, framework="tensorflow")
