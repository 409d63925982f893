"""Quantization-aware training: fake quantization sits exactly where PTQ puts Q/DQ and computes what ORT computes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lpot_ir.examples_data import DigitsExample
from lpot_ir.ir.model import to_proto
from lpot_ir.qat import finish_qat, prepare_qat, qat_plan
from lpot_ir.quantizer import ModelQuantizer, default_config

torch = pytest.importorskip("torch")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _quantized_activations(model: onnx.ModelProto) -> set[str]:
    """Values that feed a QuantizeLinear (activations; weights are stored already quantized)."""
    return {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}


@pytest.mark.parametrize("fp32_nodes", [(), ("/pw1/pw1.0/Conv", "/fc/Gemm")])
def test_plan_puts_fake_quant_where_ptq_puts_qdq(quantizer: ModelQuantizer, fp32_nodes: tuple[str, ...]) -> None:
    config = default_config().with_nodes_fp32(list(fp32_nodes))
    plan = qat_plan(quantizer, config)
    ptq = quantizer.quantize(config)
    assert set(plan.activations) == _quantized_activations(ptq.model)
    assert set(plan.quantized) == set(ptq.quantized_nodes)
    weights = {site.node for site in plan.weights}
    assert weights == {n for n in ptq.quantized_nodes if ptq.decisions[n].op_type in ("Conv", "Gemm")}
    for name in fp32_nodes:
        assert name in plan.fp32 and name not in weights
    assert all(site.axis == 0 for site in plan.weights)  # Conv: per output channel; Gemm (transB=1): rows


def test_untrained_module_exports_the_ptq_model(digits: DigitsExample, quantizer: ModelQuantizer) -> None:
    config = default_config()
    module = prepare_qat(quantizer, config).eval()  # no training step: ranges stay the calibration ranges
    trained = finish_qat(module, quantizer)
    again = trained.quantize(config)
    ptq = quantizer.quantize(config)
    x = digits.eval_data
    np.testing.assert_array_equal(_run(again.model, x), _run(ptq.model, x))
    assert again.recipe.ranges == ptq.recipe.ranges


def test_fake_quant_forward_matches_onnx_runtime(digits: DigitsExample, quantizer: ModelQuantizer) -> None:
    config = default_config()
    module = prepare_qat(quantizer, config).eval()
    x = digits.eval_data
    with torch.no_grad():
        simulated = module(torch.from_numpy(x)).numpy()
    int8 = _run(quantizer.quantize(config).model, x)
    fp32 = _run(to_proto(quantizer.fp32_model), x)
    # ORT's integer kernels requantize each op's output, which can round one step differently from float
    # fake quantization; quantization itself moves the logits far more than that.
    assert np.abs(simulated - int8).max() < 0.1 * np.abs(fp32 - int8).max()
    assert np.mean(simulated.argmax(1) == int8.argmax(1)) >= 0.99


def test_observers_follow_training_batches_and_freeze(digits: DigitsExample, quantizer: ModelQuantizer) -> None:
    module = prepare_qat(quantizer, default_config())
    x = torch.from_numpy(digits.eval_data[:50])
    before = module.learned_ranges()
    module.eval()
    with torch.no_grad():
        module(x * 3)
    assert module.learned_ranges() == before  # eval mode never moves a range
    module.train()
    with torch.no_grad():
        module(x * 3)
    moved = module.learned_ranges()
    input_name = module.graph_inputs[0]
    assert moved[input_name].hi == pytest.approx(before[input_name].hi + 0.01 * (3 * float(x.max()) - before[input_name].hi))
    module.apply(torch.ao.quantization.disable_observer)  # LPOT-style training code
    with torch.no_grad():
        module(x * 10)
    assert module.learned_ranges() == moved


def test_weights_are_parameters_and_get_gradients(digits: DigitsExample, quantizer: ModelQuantizer) -> None:
    module = prepare_qat(quantizer, default_config())
    names = module.parameter_names
    fp32_weights = {
        i.name for i in to_proto(quantizer.fp32_model).graph.initializer if len(i.dims) >= 1 and np.prod(i.dims) > 1
    }
    assert set(names) <= fp32_weights and len(names) >= 12  # 6 Conv/Gemm weights and their biases
    loss = torch.nn.functional.cross_entropy(
        module(torch.from_numpy(digits.eval_data[:32])), torch.from_numpy(digits.eval_labels[:32])
    )
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
    assert sum(float(p.grad.abs().sum()) for p in module.parameters()) > 0
