"""TensorFlow / Keras end to end: train a tiny Keras CNN, quantize it, export the INT8 model as a SavedModel.

Run: .venv/bin/python examples/frameworks/tensorflow_keras_cnn.py
(needs: pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0)

What it shows (docs/frameworks/tensorflow.md):
* ``quantizer.model`` takes the ``keras.Model`` (or a SavedModel folder, a frozen ``.pb``, a ``.keras``
  file); ``lpot summarize`` lists a frozen graph's inputs and outputs.
* ``eval_func`` is ordinary Keras evaluation code: it receives a callable taking and returning tf tensors.
* reports and ``op_wise`` use Keras layer names (``conv1``) or, for SavedModels and ``.pb`` files,
  TensorFlow op names.
* ``export_to_tensorflow`` writes the INT8 model as a SavedModel that runs with TensorFlow alone.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from lpot_ir import Quantization  # noqa: E402
from lpot_ir.frontends import export_to_tensorflow, summarize, to_onnx  # noqa: E402


def quadrant_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random NHWC images whose label is the brightest quadrant (0-3)."""
    x = rng.random((n, 16, 16, 3), dtype=np.float32) * 0.5
    y = rng.integers(0, 4, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, r * 8 : (r + 1) * 8, col * 8 : (col + 1) * 8, :] += 0.5
    return x, y


def main() -> None:
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x_train, y_train = quadrant_images(512, rng)
    x_test, y_test = quadrant_images(256, rng)
    inp = keras.Input((16, 16, 3), name="image")
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inp)
    h = keras.layers.MaxPooling2D(name="pool1")(h)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    model = keras.Model(inp, keras.layers.Dense(4, name="logits")(h))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=8, batch_size=32, verbose=0)

    def eval_func(m) -> float:
        """Plain Keras-style evaluation: tf tensors in, tf tensors out."""
        logits = m(tf.constant(x_test))
        return float((tf.argmax(logits, 1).numpy() == y_test).mean())

    converted = to_onnx(model)
    print("conversion:", *converted.notes, sep="\n  ")
    print("framework names:", sorted(set(converted.name_map.values()) & {"conv1", "conv2", "logits"}))

    quantizer = Quantization(
        {
            "model": {"name": "quadrants", "framework": "tensorflow"},
            "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"max_trials": 10}},
        }
    )
    quantizer.model = model
    quantizer.calib_dataloader = [(x_train[i : i + 32], y_train[i : i + 32]) for i in range(0, 128, 32)]
    quantizer.eval_func = eval_func
    q_model = quantizer.fit()

    with tempfile.TemporaryDirectory() as tmp:
        path = export_to_tensorflow(q_model.model, os.path.join(tmp, "int8_savedmodel"))
        print(summarize(path).to_text())
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        int8_acc = float((tf.argmax(serve(image=tf.constant(x_test))["output_0"], 1).numpy() == y_test).mean())
    print(f"FP32 accuracy {eval_func(model):.3f}, INT8 SavedModel (TensorFlow only) {int8_acc:.3f}")


if __name__ == "__main__":
    main()
