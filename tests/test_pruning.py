"""LPOT's Pruning API: gradual magnitude pruning of a torch model, one-shot pruning of ONNX models, errors."""

from __future__ import annotations

import copy
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lpot_ir import Pruning
from lpot_ir.errors import ConfigError, EvaluationError
from lpot_ir.pruning.magnitude import PruneSchedule, magnitude_mask

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def _conf(target: float = 0.5, *, start: int = 0, end: int = 2, **extra: object) -> dict:
    wc = {"initial_sparsity": 0.0, "target_sparsity": target, "start_epoch": start, "end_epoch": end, **extra}
    return {"pruning": {"approach": {"weight_compression": wc}}}


class _CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc1 = torch.nn.Linear(8 * 4 * 4, 64)
        self.fc2 = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.max_pool2d(torch.relu(self.conv(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


@pytest.fixture(scope="module")
def digits() -> Iterator[dict]:
    """A CNN trained on sklearn's digits, its data and its accuracy (trained once; one torch thread meanwhile)."""
    from sklearn.datasets import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # much faster than the default on a small shared machine
    torch.manual_seed(0)
    data = load_digits()
    x = torch.tensor(data.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    xs = {"x_train": x[400:], "y_train": y[400:], "x_test": x[:400], "y_test": y[:400]}
    model = _CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        _epoch(model, optimizer, xs)
    yield {**xs, "model": model, "accuracy": _accuracy(model, xs)}
    torch.set_num_threads(threads)


def _epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, d: dict, prune: Pruning | None = None
) -> None:
    model.train()
    order = torch.randperm(len(d["x_train"]))
    for batch_id, start in enumerate(range(0, len(order), 64)):
        index = order[start : start + 64]
        if prune is not None:
            prune.on_batch_begin(batch_id)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(d["x_train"][index]), d["y_train"][index]).backward()
        optimizer.step()
        if prune is not None:
            prune.on_batch_end()


def _accuracy(model: torch.nn.Module, d: dict) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(d["x_test"]).argmax(1) == d["y_test"]).float().mean())


def _train_func(prune: Pruning, d: dict, epochs: int, seen: list[float] | None = None):
    def train(model: torch.nn.Module) -> None:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # momentum would revive zeros
        for epoch in range(epochs):
            prune.on_epoch_begin(epoch)
            _epoch(model, optimizer, d, prune)
            if seen is not None:  # after the last optimizer step and on_batch_end, before on_epoch_end
                seen.append(float(np.mean(model.fc1.weight.detach().numpy() == 0)))
            prune.on_epoch_end()

    return train


def test_gradual_pruning_of_torch_cnn_reaches_target_and_keeps_accuracy(digits: dict) -> None:
    model = copy.deepcopy(digits["model"])
    prune = Pruning(_conf(0.5, start=0, end=2))
    seen: list[float] = []
    prune.model = model
    prune.train_func = _train_func(prune, digits, epochs=4, seen=seen)
    prune.eval_func = lambda m: _accuracy(m, digits)
    pruned = prune.fit()

    assert pruned is model
    # the schedule: 0% at epoch 0, 25% at 1, 50% from epoch 2 on (kept through fine-tuning despite momentum)
    assert seen == pytest.approx([0.0, 0.25, 0.5, 0.5], abs=0.01)
    report = {r.name: r for r in prune.sparsity_report}
    assert set(report) == {"conv.weight", "fc1.weight", "fc2.weight"}  # every Conv/Linear weight, no biases
    for name, row in report.items():
        measured = float(np.mean(dict(model.named_parameters())[name].detach().numpy() == 0))
        assert abs(measured - 0.5) <= 0.01, name
        assert row.sparsity == pytest.approx(measured) and row.target == 0.5
    assert float(np.mean(model.fc1.bias.detach().numpy() == 0)) == 0.0
    assert prune.score == pytest.approx(_accuracy(model, digits))
    assert digits["accuracy"] > 0.9
    assert prune.score >= digits["accuracy"] - 0.04, (prune.score, digits["accuracy"])


def test_pruning_func_alias_pruners_and_per_channel(digits: dict) -> None:
    """LPOT 1.x's ``pruning_func``; two ``!Pruner`` entries with their own names, target and method."""
    yaml_text = """
pruning:
  approach:
    weight_compression:
      target_sparsity: 0.6
      start_epoch: 0
      end_epoch: 0
      pruners:
        - !Pruner
          names: [fc1.weight]
          method: per_channel
        - !Pruner
          names: [conv.weight]
          target_sparsity: 0.25
"""
    model = copy.deepcopy(digits["model"])
    prune = Pruning(yaml_text)
    prune.model = model
    train = _train_func(prune, digits, epochs=1)
    prune.pruning_func = train
    assert prune.train_func is train
    prune.fit()
    fc1 = model.fc1.weight.detach().numpy()
    assert np.allclose(np.mean(fc1 == 0, axis=1), 0.6, atol=0.01)  # every output channel at 60%
    assert abs(float(np.mean(model.conv.weight.detach().numpy() == 0)) - 0.25) <= 0.01
    assert float(np.mean(model.fc2.weight.detach().numpy() == 0)) == 0.0  # not named: untouched
    assert [r.name for r in prune.sparsity_report] == ["fc1.weight", "conv.weight"]


def _onnx_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 1, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(size=(16, 144)).astype(np.float32), "gemm_w"),
        numpy_helper.from_array(rng.normal(size=(16,)).astype(np.float32), "gemm_b"),
        numpy_helper.from_array(rng.normal(size=(16, 10)).astype(np.float32), "matmul_w"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "gemm_w", "gemm_b"], ["g"], transB=1),
        helper.make_node("MatMul", ["g", "matmul_w"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_onnx_model_is_pruned_one_shot_and_still_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    original = _onnx_model()
    path = tmp_path / "tiny.onnx"
    onnx.save(original, path)
    x = np.random.default_rng(1).normal(size=(3, 1, 6, 6)).astype(np.float32)
    scores: list[onnx.ModelProto] = []

    prune = Pruning(_conf(0.7))
    prune.model = str(path)
    prune.eval_func = lambda m: scores.append(m) or 0.5
    with caplog.at_level(logging.INFO, logger="lpot_ir.pruning"):
        pruned = prune.fit()
    # unstructured sparsity says what it buys on ONNX Runtime CPU: size once compressed, not time
    assert any("smaller once compressed, not faster" in r.getMessage() for r in caplog.records)

    assert isinstance(pruned, onnx.ModelProto) and scores == [pruned] and prune.score == 0.5
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    for name in ("conv_w", "gemm_w", "matmul_w"):
        assert abs(float(np.mean(weights[name] == 0)) - 0.7) <= 0.01, name
    before = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    for name in ("conv_b", "gemm_b"):
        np.testing.assert_array_equal(weights[name], before[name])
    kept = weights["gemm_w"] != 0  # the largest magnitudes are kept, unchanged
    assert np.abs(before["gemm_w"][kept]).min() >= np.abs(before["gemm_w"][~kept]).max()
    np.testing.assert_array_equal(weights["gemm_w"][kept], before["gemm_w"][kept])
    assert [r.name for r in prune.sparsity_report] == ["conv_w", "gemm_w", "matmul_w"]
    assert pruned.opset_import[0].version == 13  # the user's opset is kept
    onnx.checker.check_model(pruned, full_check=True)
    y_dense, y_pruned = _run(original, x), _run(pruned, x)
    assert y_pruned.shape == (3, 10) and np.isfinite(y_pruned).all()
    assert not np.allclose(y_dense, y_pruned)
    assert numpy_helper.to_array(original.graph.initializer[2]).all()  # the input model is not modified


def test_onnx_names_select_initializers_and_per_channel_follows_gemm_layout() -> None:
    conf = _conf(0.5)
    conf["pruning"]["approach"]["weight_compression"]["pruners"] = [
        {"names": ["gemm_w"], "method": "per_channel"},
        {"names": ["matmul_w"], "method": "per_channel", "target_sparsity": 0.25},
    ]
    prune = Pruning(conf)
    prune.model = _onnx_model()
    pruned = prune.fit()
    weights = {t.name: numpy_helper.to_array(t) for t in pruned.graph.initializer}
    assert np.allclose(np.mean(weights["gemm_w"] == 0, axis=1), 0.5)  # transB=1: rows are output channels
    assert np.allclose(np.mean(weights["matmul_w"] == 0, axis=0), 0.25)  # MatMul [K, N]: columns
    assert not (weights["conv_w"] == 0).any()


def test_onnx_weights_computed_by_nodes_are_folded_and_pruned() -> None:
    w = numpy_helper.from_array(np.arange(1, 41, dtype=np.float32).reshape(4, 10) - 20, "w")
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=w), helper.make_node("MatMul", ["x", "w"], ["y"])],
        "computed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    prune = Pruning(_conf(0.5))
    prune.model = model
    pruned = {t.name: numpy_helper.to_array(t) for t in prune.fit().graph.initializer}
    assert [name for name, a in pruned.items() if float(np.mean(a == 0)) == 0.5] == ["w"]


def test_old_zoo_model_with_constantofshape_weights_prunes(zoo_dir: Path) -> None:
    prune = Pruning(_conf(0.5))
    prune.model = str(zoo_dir / "light_squeezenet.onnx")
    pruned = prune.fit()
    assert len(prune.sparsity_report) == 26  # every Conv weight of SqueezeNet 1.0
    assert all(abs(layer.sparsity - 0.5) < 0.01 for layer in prune.sparsity_report)
    session = ort.InferenceSession(pruned.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    assert np.isfinite(session.run(None, {session.get_inputs()[0].name: x})[0]).all()


def test_magnitude_mask_and_schedule() -> None:
    w = np.array([[0.1, -3.0, 0.2, 4.0], [-0.05, 1.0, -2.0, 0.3]], dtype=np.float32)
    assert magnitude_mask(w, 0.5).tolist() == [[False, True, False, True], [False, True, True, False]]
    assert magnitude_mask(w, 0.25, method="per_channel").sum(axis=1).tolist() == [3, 3]
    schedule = PruneSchedule((), 0.1, 0.9, start_epoch=2, end_epoch=6, update_frequency=2)
    assert [schedule.sparsity_at(e) for e in range(8)] == pytest.approx([0, 0, 0.1, 0.1, 0.5, 0.5, 0.9, 0.9])


def test_errors(digits: dict) -> None:
    with pytest.raises(ConfigError, match="no pruning section"):
        Pruning({"model": {"name": "m"}})
    with pytest.raises(ConfigError, match=r"target_sparsity.*\[0, 1\)"):
        Pruning(_conf(1.0))
    with pytest.raises(ConfigError, match="prune_type is 'pattern_lock'"):
        Pruning(_conf(0.5, prune_type="pattern_lock"))
    with pytest.raises(ConfigError, match=r"pruners\[0\]: initial_sparsity 0.5 is above target_sparsity 0.3"):
        Pruning(_conf(0.5, initial_sparsity=0.5, pruners=[{"target_sparsity": 0.3}]))
    overlapping = Pruning(_conf(0.5, pruners=[{"names": ["fc1.weight"]}, {}]))
    overlapping.model = copy.deepcopy(digits["model"])
    with pytest.raises(ConfigError, match="'fc1.weight' is claimed by pruner 0 and pruner 1"):
        overlapping.on_epoch_begin(0)

    prune = Pruning(_conf(0.5, names=["fc1.weights"]))
    prune.model = copy.deepcopy(digits["model"])
    prune.train_func = lambda model: None
    with pytest.raises(ConfigError, match="no parameter of that name. The closest parameter is 'fc1.weight'"):
        prune.fit()

    prune = Pruning(_conf(0.5, names=["gemm_W"]))
    prune.model = _onnx_model()
    with pytest.raises(ConfigError, match="closest initializer is 'gemm_w'"):
        prune.fit()

    prune = Pruning(_conf(0.5))
    prune.model = copy.deepcopy(digits["model"])
    with pytest.raises(ConfigError, match="happens while it trains: set prune.train_func.*or give the built-in loop its data"):
        prune.fit()
    prune.train_func = lambda model: None
    with pytest.raises(ConfigError, match="without calling prune.on_epoch_begin"):
        prune.fit()

    prune = Pruning(_conf(0.5))
    prune.model = _onnx_model()
    prune.train_func = lambda model: None
    with pytest.raises(ConfigError, match="cannot be trained"):
        prune.fit()
    prune.train_func = None
    prune.eval_func = lambda model: 1 / 0
    with pytest.raises(EvaluationError, match="ZeroDivisionError"):
        prune.fit()
    with pytest.raises(ConfigError, match="training callback for a torch.nn.Module"):
        prune.on_epoch_begin(0)


@pytest.mark.slow
def test_example_runs() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pruning" / "run.py"), "--epochs", "3"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert lines["fc1.weight"][3] == "50.00%" and lines["fc3.weight"][3] == "30.00%"
    pruned = float(result.stdout.split("pruned accuracy:")[1].split()[0])
    dense = float(result.stdout.split("dense accuracy:")[1].split()[0])
    assert pruned >= dense - 0.05


def test_torch_per_channel_follows_conv_transpose_layout() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 6, 3), torch.nn.Conv2d(6, 2, 1))
    prune = Pruning(_conf(0.5, end=0, pruners=[{"method": "per_channel"}]))
    prune.model = model
    prune.train_func = lambda m: (prune.on_epoch_begin(0), prune.on_epoch_end())
    prune()
    transposed = model[0].weight.detach().numpy()  # (in, out, kh, kw): output channels are axis 1
    assert np.mean(transposed == 0, axis=(0, 2, 3)).tolist() == [0.5] * 6
    assert np.mean(model[1].weight.detach().numpy() == 0, axis=(1, 2, 3)).tolist() == [0.5, 0.5]
