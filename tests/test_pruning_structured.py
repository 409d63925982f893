"""Structured pruning through LPOT's Pruning API: filter / channel methods, magnitude and gradient sensitivity,
the built-in loop, one-shot ONNX pruning, the shrunk model, prune-then-quantize stages, errors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from lpot_ir import Pruning
from lpot_ir.errors import ConfigError
from lpot_ir.examples_data import load_digits_splits
from lpot_ir.pruning.stages import weight_sparsity
from tests.conftest import deterministic_torch, train_classifier

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


class _Net(torch.nn.Module):
    """stem -> (residual: a -> depthwise -> project) -> b -> flatten -> fc, on 16x16 digits."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(32, 16, 1), nn.BatchNorm2d(16))
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = x + self.project(self.dw(self.a(x)))
        return self.fc(self.b(x).flatten(1))


@pytest.fixture(scope="module")
def digits() -> dict:
    """The digits splits and a dense model trained on them (one thread, fixed seed; about 3 s)."""
    with deterministic_torch():
        splits = load_digits_splits()
        net = _Net()
        train_classifier(net, splits["train_x"], splits["train_y"])
        yield {"net": net, **splits}  # inside the block: the module's tests run with one thread too


def _copy(net: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(net)


def _accuracy(model: torch.nn.Module, d: dict) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(torch.from_numpy(d["eval_x"])).argmax(1).numpy() == d["eval_y"]).mean())


def _conf(method: str = "filter", prune_type: str = "basic_magnitude", **extra: object) -> dict:
    wc = {"initial_sparsity": 0.0, "target_sparsity": 0.5, "start_epoch": 1, "end_epoch": 2, "method": method,
          "prune_type": prune_type, **extra}  # fmt: skip
    train = {"epoch": 3, "optimizer": {"Adam": {"learning_rate": 0.001}}}
    return {"pruning": {"train": train, "approach": {"weight_compression": wc}}}


def _batches(d: dict) -> list:
    return [(d["train_x"][i : i + 64], d["train_y"][i : i + 64]) for i in range(0, len(d["train_x"]), 64)]


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _conv_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return {n.name: inits[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "Gemm")}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["filter", "channel"])
def test_builtin_loop_prunes_half_the_channels_and_the_graph_shrinks(digits: dict, method: str) -> None:
    net = _copy(digits["net"])
    prune = Pruning(_conf(method))
    prune.model = net
    prune.train_dataloader = _batches(digits)
    prune.fit()
    rows = {r.name: r for r in prune.channel_report}
    # groups: stem+project (residual, 16), a (32, through the depthwise conv), b (16, flattened into fc's inputs);
    # fc's output is the graph output
    assert sorted(r.channels for r in rows.values()) == [16, 16, 32]
    assert all(r.pruned == r.channels // 2 for r in rows.values())
    shrunk = prune.shrunk_model()
    assert prune.shrink_report.changes == 8 + 16 + 8
    dense = prune.dense_model()
    weights = {name: int(np.prod(shape)) for name, shape in _conv_shapes(shrunk).items()}
    # stem 8x1x3x3, a 16x8, depthwise 16x1x3x3, project 8x16, b 8x8x3x3, fc 10x(8x8x8) (dense: 14000 in all)
    assert sum(weights.values()) == 72 + 128 + 144 + 128 + 576 + 5120
    assert sum(int(np.prod(shape)) for shape in _conv_shapes(dense).values()) == 14000
    x = digits["eval_x"]
    with torch.no_grad():
        masked = net(torch.from_numpy(x)).numpy()
    # the shrunk graph computes what the masked module computes (float rounding of folded biases only)
    np.testing.assert_allclose(_run(shrunk, x), masked, rtol=1e-4, atol=1e-4)
    # fine-tuning keeps the accuracy: the dense model is at about 0.98 and pruned ones at 0.96-0.98 in our runs
    assert _accuracy(net, digits) >= _accuracy(digits["net"], digits) - 0.04


@pytest.mark.slow
def test_gradient_sensitivity_ranks_by_accumulated_weight_times_gradient(digits: dict) -> None:
    net = _copy(digits["net"])
    prune = Pruning(_conf("filter", "gradient_sensitivity", start_epoch=1, end_epoch=1))
    seen: dict[int, np.ndarray] = {}

    def train(model: torch.nn.Module) -> None:  # the user's own loop, with LPOT's callbacks
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        x, y = torch.from_numpy(digits["train_x"][:384]), torch.from_numpy(digits["train_y"][:384])
        for epoch in range(2):
            if epoch == 1:
                pruner = prune._channel_pruner
                seen.update(pruner.scores)
            prune.on_epoch_begin(epoch)
            for batch_id, start in enumerate(range(0, len(x), 64)):
                prune.on_batch_begin(batch_id)
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(model(x[start : start + 64]), y[start : start + 64]).backward()
                prune.on_post_grad()
                optimizer.step()
                prune.on_batch_end()
            prune.on_epoch_end()

    prune.model = net
    prune.train_func = train
    prune.fit()
    pruner = prune._channel_pruner
    assert seen and all(np.all(score >= 0) and np.any(score > 0) for score in seen.values())
    for group, _schedule in pruner.groups:
        expected = sorted(int(i) for i in np.argsort(seen[group.id], kind="stable")[: group.channels // 2])
        assert pruner.masks[group.id] == expected  # the channels with the smallest |sum(w * grad)|
    assert all(r.pruned == r.channels // 2 for r in prune.channel_report)


def test_onnx_one_shot_filter_pruning_returns_the_shrunk_model(digits: dict, tmp_path: Path) -> None:
    from lpot_ir.frontends import resolve_model

    proto = resolve_model(digits["net"], calib_dataloader=[(digits["eval_x"][:4], None)]).model
    prune = Pruning({"pruning": {"approach": {"weight_compression": {"target_sparsity": 0.25, "method": "filter"}}}})
    prune.model = proto
    shrunk = prune.fit()
    assert sorted(r.pruned for r in prune.channel_report) == [4, 4, 8]
    before, after = _conv_shapes(proto), _conv_shapes(shrunk)
    assert after["/stem/stem.0/Conv"][0] == 12 and after["/b/b.0/Conv"][0] == 12
    assert after["/fc/Gemm"] == (10, 12 * 8 * 8) and before["/fc/Gemm"] == (10, 16 * 8 * 8)
    onnx.checker.check_model(shrunk, full_check=True)
    total, zeros = weight_sparsity(shrunk)
    assert zeros < 0.01 * total  # the zero channels are gone, not stored


def test_errors_name_the_fix(digits: dict) -> None:
    with pytest.raises(ConfigError, match="gradient_sensitivity ranks whole channels"):
        Pruning(_conf("per_tensor", "gradient_sensitivity"))
    with pytest.raises(ConfigError, match="method is 'filters'; use one of"):
        Pruning(_conf("filters"))
    prune = Pruning(_conf(names=["fc.weight"]))
    prune.model = _copy(digits["net"])
    prune.train_dataloader = _batches(digits)[:2]
    with pytest.raises(ConfigError, match="channels of 'fc.weight' cannot be pruned.*reach the graph output"):
        prune.fit()
    prune = Pruning(_conf(names=["stem.0.weigth"]))
    prune.model = _copy(digits["net"])
    prune.train_dataloader = _batches(digits)[:2]
    with pytest.raises(ConfigError, match="The closest is 'stem.0.weight'"):
        prune.fit()
    from lpot_ir.frontends import resolve_model

    prune = Pruning(_conf("filter", "gradient_sensitivity"))
    prune.model = resolve_model(digits["net"], calib_dataloader=[(digits["eval_x"][:4], None)]).model
    with pytest.raises(ConfigError, match="gradients, which need training"):
        prune.fit()


@pytest.mark.slow
def test_structured_example_prunes_shrinks_and_quantizes(tmp_path: Path) -> None:
    """Fashion-MNIST when Debian's dataset-fashion-mnist is installed, the digits otherwise (both real data)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pruning" / "structured.py"), "--data", "auto", "--train-samples", "1200",
         "--width", "16", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    total = re.search(r"^total\s+(\d+)\s+(\d+)\s+([\d.]+)%", out, re.M)
    assert total is not None and int(total[2]) * 2 == int(total[1])
    dense = float(re.search(r"^dense accuracy\s+([\d.]+)", out, re.M)[1])  # type: ignore[index]
    pruned = float(re.search(r"^pruned accuracy\s+([\d.]+)", out, re.M)[1])  # type: ignore[index]
    # digits: about 0.97 dense, 0.99 pruned; Fashion-MNIST (1200 images): about 0.77 and 0.78 in our runs. The pruned
    # model trains four more epochs, which outweighs losing half the channels; 5 points of margin (50 images)
    assert pruned >= dense - 0.05
    stages = {m[0]: m for m in re.findall(r"^(dense FP32|pruned FP32|INT8)\s+(\d+)\s+([\d.]+)%\s+([\d.]+)", out, re.M)}
    assert set(stages) == {"dense FP32", "pruned FP32", "INT8"}
    # half of the channels of every group: about a quarter of the weights remain (no timing is asserted)
    assert int(stages["pruned FP32"][1]) < 0.35 * int(stages["dense FP32"][1])
    # int8 weights take a quarter of the bytes; scales, zero points and the graph add a fixed overhead
    assert float(stages["INT8"][3]) < 0.75 * float(stages["pruned FP32"][3])
    assert "Compression stages" in (tmp_path / "lpot_workspace" / "report.txt").read_text()
