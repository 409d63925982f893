"""Each framework end to end: a model built here -> conversion -> accuracy-driven quantization (the LPOT
``Quantization`` API) with the user's framework-native ``eval_func`` -> INT8 outputs close to FP32."""

from __future__ import annotations

import numpy as np
import pytest
from frontend_helpers import ort_run

from lpot_ir import Quantization
from lpot_ir.frontends import export_to_pytorch, wrap_for_eval

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")

pytestmark = pytest.mark.slow

# speed off: on these toy models a profile measures per-kernel overheads, and whether INT8 pays is not what
# these tests check (the latency model is tested in tests/tuning/test_latency_model.py)
CONF = {
    "tuning": {
        "strategy": {"name": "basic", "speed": False},
        "accuracy_criterion": {"relative": 0.02},
        "exit_policy": {"max_trials": 4},
    }
}


def _quadrants(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images whose label is the brightest quadrant: learnable in a second by a tiny CNN."""
    x = rng.random((n, 3, 16, 16), dtype=np.float32) * 0.5
    y = rng.integers(0, 4, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, :, r * 8 : (r + 1) * 8, col * 8 : (col + 1) * 8] += 0.5
    return x, y


def _quantize(framework: str, model, calib, eval_func):
    q = Quantization({"model": {"name": "e2e", "framework": framework}, **CONF})
    q.model = model
    q.calib_dataloader = calib
    q.eval_func = eval_func
    return q.fit()


def test_pytorch_cnn_end_to_end(torch_cnn):
    rng = np.random.default_rng(0)
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 4),
    )
    x_train, y_train = _quadrants(128, rng)
    x_test, y_test = _quadrants(128, rng)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(10):
        for i in range(0, 128, 32):
            opt.zero_grad()
            nn.functional.cross_entropy(
                model(torch.from_numpy(x_train[i : i + 32])), torch.from_numpy(y_train[i : i + 32])
            ).backward()
            opt.step()
    model.eval()
    seen = []

    def eval_func(m):  # written for the PyTorch model: torch tensors in and out
        seen.append(type(m))
        with torch.no_grad():
            logits = m(torch.from_numpy(x_test))
        assert isinstance(logits, torch.Tensor)
        return float((logits.argmax(1).numpy() == y_test).mean())

    fp32_acc = eval_func(model)
    assert fp32_acc >= 0.9  # 128 of 128 here: a brightness step of 0.5 is learned on any CPU's kernels
    result = _quantize(
        "pytorch", model, [(x_train[i : i + 16], y_train[i : i + 16]) for i in range(0, 64, 16)], eval_func
    )
    assert sum(n.op_type == "QuantizeLinear" for n in result.model.graph.node) >= 3
    assert len(seen) >= 2 and all(issubclass(t, torch.nn.Module) for t in seen)
    # CPU-proof: every test image leads by more than twice the INT8 error bound asserted below (the smallest
    # top-1 lead is 0.58 of max|logit| here), so no CPU's INT8 rounding can flip one (measured: 1.0 and 1.0)
    assert eval_func(wrap_for_eval(result.model, "pytorch", like=model)) >= fp32_acc - 0.02
    with torch.no_grad():
        fp32 = model(torch.from_numpy(x_test)).numpy()
        lowered = export_to_pytorch(result.model)(torch.from_numpy(x_test)).numpy()
    int8 = ort_run(result.model, {result.model.graph.input[0].name: x_test})[0]
    top2 = np.sort(fp32, axis=1)[:, -2:]
    assert np.min(top2[:, 1] - top2[:, 0]) > 2 * 0.1 * np.abs(fp32).max()
    assert np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()  # measured 0.0063 of max|logit| here (AMX CPU)
    # the lowered module replays the same Q/DQ in torch: measured 3e-7 of max|logit|
    assert np.abs(lowered - int8).max() <= 0.02 * np.abs(fp32).max()


def test_pytorch_transformer_encoder_end_to_end(torch_encoder):
    model, x = torch_encoder
    rng = np.random.default_rng(5)
    data = rng.standard_normal((32, 5, 16)).astype(np.float32)
    with torch.no_grad():
        reference = model(torch.from_numpy(data)).numpy()

    def eval_func(m):  # closeness to FP32 as the accuracy (1.0 = identical)
        with torch.no_grad():
            out = m(torch.from_numpy(data)).numpy()
        return float(1.0 - np.abs(out - reference).mean() / np.abs(reference).mean())

    result = _quantize("pytorch", model, [data[i : i + 8] for i in range(0, 32, 8)], eval_func)
    # measured 0.995 (mean error 0.0051 of mean|y|) here (AMX CPU); seeded untrained weights, 10x to spare
    assert eval_func(wrap_for_eval(result.model, "pytorch")) >= 0.95
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)
    int8 = ort_run(result.model, {"src": data})[0]
    assert np.abs(int8 - reference).mean() <= 0.05 * np.abs(reference).mean()


@pytest.mark.tensorflow
def test_keras_end_to_end(keras_cnn, tf_modules):
    tf, _ = tf_modules
    model, _ = keras_cnn
    rng = np.random.default_rng(6)
    pool = rng.random((256, 12, 12, 3), dtype=np.float32)
    # Agreement with FP32 predictions, on the 64 images the untrained model is surest of: its top-2 gaps
    # reach down to 0.2% of its logit range, less than INT8 rounding (7-bit weights flip such samples).
    top2 = np.sort(model(pool, training=False).numpy(), axis=1)[:, -2:]
    data = pool[np.sort(np.argsort(top2[:, 0] - top2[:, 1])[:64])]
    labels = model(data, training=False).numpy().argmax(1)

    outputs = []

    def eval_func(m):  # written for the Keras model: tf tensors in and out
        out = m(tf.constant(data))
        outputs.append(out)
        return float((out.numpy().argmax(1) == labels).mean())

    result = _quantize("tensorflow", model, [data[i : i + 16] for i in range(0, 32, 16)], eval_func)
    assert outputs and all(isinstance(o, tf.Tensor) for o in outputs)
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)
    int8 = ort_run(result.model, {"image": data})[0]
    fp32 = model(data, training=False).numpy()
    # The untrained model's logits are small next to its intermediate ranges, so its largest INT8 error is 8-11%
    # of its largest logit (8- and 7-bit weights): too close to a 10% bound. The RMS error is 2-4% of how much the
    # logits vary; a wrong graph (layout, scale) would make it about as large as that variation.
    assert np.sqrt(np.mean((int8 - fp32) ** 2)) <= 0.25 * np.std(fp32)


@pytest.mark.mxnet
def test_mxnet_end_to_end(mxnet_model):
    symbol, x, y = mxnet_model
    labels = y.argmax(1)

    calls = []

    def eval_func(m):  # written for MXNet: NDArray-style results (asnumpy)
        calls.append(m)
        return float((m(x).asnumpy().argmax(1) == labels).mean())

    result = _quantize("mxnet", str(symbol), [x[i : i + 4] for i in range(0, 8, 4)], eval_func)
    assert len(calls) >= 2  # FP32 baseline and at least one INT8 candidate
    assert any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)
    int8 = ort_run(result.model, {"data": x})[0]
    assert np.abs(int8 - y).max() <= 0.1 * np.abs(y).max()  # measured 0.0062 here (AMX CPU): 16x to spare
