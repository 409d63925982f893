"""Fixtures for the frontend tests: tiny real models of each framework, built in the test session."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent


def _torch():
    return pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")


@pytest.fixture(scope="session")
def torch_cnn():
    """A small ResNet-style CNN (module paths like layer1.0.conv1) and an example batch."""
    torch = _torch()
    nn = torch.nn

    class BasicBlock(nn.Module):
        def __init__(self, ch: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(ch)
            self.relu = nn.ReLU()
            self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(ch)

        def forward(self, x):
            return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)

    class TinyResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
            self.bn1 = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(2)
            self.layer1 = nn.Sequential(BasicBlock(8), BasicBlock(8))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 5)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.avgpool(self.layer1(x))
            return self.fc(torch.flatten(x, 1))

    torch.manual_seed(0)
    model = TinyResNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics so folding is exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.from_numpy(np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32))
    return model, x


@pytest.fixture(scope="session")
def torch_encoder():
    """A two-layer transformer encoder (batch first) and an example batch."""
    torch = _torch()
    torch.manual_seed(1)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 5, 16)).astype(np.float32))
    return model, x


@pytest.fixture(scope="session")
def tf_modules():
    """(tensorflow, keras), importing TensorFlow quietly, or skip."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip(
        "tensorflow",
        reason="TensorFlow is not installed (pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0)",
    )
    pytest.importorskip("tf2onnx", reason="tf2onnx is not installed (pip install tf2onnx==1.17.0)")
    import keras

    return tf, keras


@pytest.fixture(scope="session")
def keras_cnn(tf_modules):
    """A small Keras functional CNN (NHWC) and an example batch."""
    _, keras = tf_modules
    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3), name="image")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, name="logits")(x)
    model = keras.Model(inp, out, name="tiny_cnn")
    x = np.random.default_rng(2).random((4, 12, 12, 3), dtype=np.float32)
    return model, x


@pytest.fixture(scope="session")
def frozen_pb(keras_cnn, tf_modules, tmp_path_factory):
    """The Keras CNN frozen into a GraphDef .pb (Placeholder 'image', output found automatically)."""
    tf, _ = tf_modules
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    model, _ = keras_cnn
    fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(
        tf.TensorSpec([None, 12, 12, 3], tf.float32, name="image")
    )
    graph_def = convert_variables_to_constants_v2(fn).graph.as_graph_def()
    folder = tmp_path_factory.mktemp("frozen")
    tf.io.write_graph(graph_def, str(folder), "model.pb", as_text=False)
    return folder / "model.pb"


@pytest.fixture(scope="session")
def mxnet_env():
    """The isolated MXNet environment (built once per session; CI builds it too)."""
    from lpot_ir.errors import ConversionError
    from lpot_ir.frontends.mxnet import ensure_mxnet_env

    try:
        return ensure_mxnet_env()
    except ConversionError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"isolated MXNet environment unavailable: {exc}")


@pytest.fixture(scope="session")
def mxnet_model(mxnet_env, tmp_path_factory):
    """A Gluon CNN exported to net-symbol.json + net-0000.params, with an input batch and MXNet's own output."""
    folder = tmp_path_factory.mktemp("mxnet")
    proc = subprocess.run(
        [str(mxnet_env), "-I", str(HERE / "mxnet_build_model.py"), str(folder)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder / "net-symbol.json", np.load(folder / "x.npy"), np.load(folder / "y.npy")
