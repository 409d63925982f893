"""wrap_for_eval: the user's eval_func gets a model it calls like its own (torch / tf / NDArray)."""

from __future__ import annotations

import numpy as np
import pytest

from lpot_ir.errors import DataError
from lpot_ir.frontends import to_onnx, wrap_for_eval
from lpot_ir.frontends.eval_wrappers import make_inference_session

torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch==2.13.0)")


def test_torch_module_same_outputs_and_structure():
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(6, 4)
            self.cls = torch.nn.Linear(4, 3)

        def forward(self, x):
            h = torch.relu(self.body(x))
            return {"logits": self.cls(h), "features": (h, h.sum(1))}

    torch.manual_seed(0)
    model = TwoHeads().eval()
    x = torch.randn(5, 6)
    converted = to_onnx(model, example_inputs=x)
    for like in (converted, model):
        wrapped = wrap_for_eval(converted.model, "pytorch", like=like)
        assert isinstance(wrapped, torch.nn.Module)
        out = wrapped(x[:2])
        with torch.no_grad():
            ref = model(x[:2])
        assert set(out) == {"logits", "features"} and isinstance(out["features"], tuple)
        torch.testing.assert_close(out["logits"], ref["logits"], atol=1e-4, rtol=0)
        torch.testing.assert_close(out["features"][1], ref["features"][1], atol=1e-4, rtol=0)


def test_torch_module_from_session_factory_and_errors(torch_cnn):
    model, x = torch_cnn
    converted = to_onnx(model, example_inputs=x)
    calls = []

    def factory():
        calls.append(1)
        return make_inference_session(converted.model)

    wrapped = wrap_for_eval(factory, "torch")
    assert not calls  # the session is created on first use
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), model(x), atol=1e-4, rtol=0)
        wrapped(x)
    assert calls == [1]
    with pytest.raises(DataError, match="could not run the candidate model on inputs with shapes"):
        wrapped(torch.zeros(1, 3, 5))


@pytest.mark.tensorflow
@pytest.mark.slow
def test_tf_callable(keras_cnn, tf_modules):
    tf, _ = tf_modules
    model, x = keras_cnn
    converted = to_onnx(model)
    wrapped = wrap_for_eval(converted.model, "keras", like=model)
    out = wrapped(tf.constant(x))
    assert isinstance(out, tf.Tensor)
    np.testing.assert_allclose(out.numpy(), model(x, training=False).numpy(), atol=1e-4)
    out_np = wrap_for_eval(converted.model, "tensorflow")(x)  # arrays work too
    np.testing.assert_allclose(out_np.numpy(), out.numpy(), atol=1e-6)
