"""Knowledge distillation and learning-rate schedules in the pruning training loop (``pruning.train``):
the loss is the hand-computed one, the dense model teaches, the built-in loop applies both, errors."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest

from lpot_ir import Pruning
from lpot_ir.config import load_config
from lpot_ir.errors import ConfigError
from lpot_ir.examples_data import load_digits_splits
from lpot_ir.training import distillation_loss, train_model
from tests.conftest import deterministic_torch, train_classifier

torch = pytest.importorskip("torch")


class _Net(torch.nn.Module):
    """conv -> conv -> linear on 8x8 digits (small enough to train in a second)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.a = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.b(self.a(x)).flatten(1))


@pytest.fixture(scope="module")
def digits() -> dict:
    """8x8 digits and a dense model trained on them (one thread, fixed seed)."""
    with deterministic_torch():
        splits = load_digits_splits()
        pool = torch.nn.functional.avg_pool2d  # 16x16 -> 8x8: a smaller model, same images
        d = {k: (pool(torch.from_numpy(v), 2).numpy() if k.endswith("_x") else v) for k, v in splits.items()}
        net = _Net()
        train_classifier(net, d["train_x"], d["train_y"])
        yield {"net": net, **d}  # inside the block: the module's tests run with one thread too


def _conf(weight: float | None, temperature: float = 4.0, **train: object) -> dict:
    section: dict = {"epoch": 3, "optimizer": {"Adam": {"learning_rate": 0.002}}, **train}
    if weight is not None:
        section["distillation"] = {"weight": weight, "temperature": temperature}
    wc = {"initial_sparsity": 0.5, "target_sparsity": 0.5, "start_epoch": 0, "end_epoch": 0, "method": "filter"}
    return {"pruning": {"train": section, "approach": {"weight_compression": wc}}}


def _batches(d: dict) -> list:
    return [(d["train_x"][i : i + 64], d["train_y"][i : i + 64]) for i in range(0, len(d["train_x"]), 64)]


def _copy(net: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(net)


def _kd_numpy(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray, weight: float, t: float) -> float:
    """(1 - w) * cross-entropy + w * T^2 * mean over the batch of KL(softmax(teacher/T) || softmax(student/T))."""

    def log_softmax(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    ce = -log_softmax(student)[np.arange(len(labels)), labels].mean()
    p_log, q_log = log_softmax(teacher / t), log_softmax(student / t)
    kl = (np.exp(p_log) * (p_log - q_log)).sum(axis=1).mean()
    return float((1 - weight) * ce + weight * t * t * kl)


def _kl_to(teacher: torch.nn.Module, student: torch.nn.Module, x: np.ndarray) -> float:
    with torch.no_grad():
        p = torch.log_softmax(teacher(torch.from_numpy(x)), 1)
        q = torch.log_softmax(student(torch.from_numpy(x)), 1)
    return float((p.exp() * (p - q)).sum(1).mean())


def test_loss_is_the_hand_computed_kd_loss_and_the_teacher_is_the_dense_model(digits: dict) -> None:
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(16, 10)) * 3, rng.normal(size=(16, 10)) * 3
    labels = rng.integers(0, 10, 16)
    loss = distillation_loss(
        torch.from_numpy(student), torch.from_numpy(teacher), torch.from_numpy(labels), torch.nn.CrossEntropyLoss(),
        weight=0.7, temperature=4.0,
    )  # fmt: skip
    assert float(loss) == pytest.approx(_kd_numpy(student, teacher, labels, 0.7, 4.0), rel=1e-9)

    # your own loop: prune.distillation_loss uses the YAML's weight and temperature and the dense model as teacher
    net = _copy(digits["net"])
    prune = Pruning(_conf(0.7))
    prune.model = net
    x, y = digits["train_x"][:64], digits["train_y"][:64]
    prune.example_inputs = x
    prune.on_epoch_begin(0)  # prunes half the channels; the teacher was copied before
    assert prune.teacher is not None and not any(p.requires_grad for p in prune.teacher.parameters())
    with torch.no_grad():
        dense_out = digits["net"](torch.from_numpy(x)).numpy()
        pruned_out = net(torch.from_numpy(x))
        np.testing.assert_array_equal(prune.teacher(torch.from_numpy(x)).numpy(), dense_out)
    assert not np.allclose(pruned_out.numpy(), dense_out, atol=1e-3)  # the student really is pruned
    loss = prune.distillation_loss(pruned_out, y, x)
    expected = _kd_numpy(pruned_out.numpy(), dense_out, y, 0.7, 4.0)
    assert float(loss) == pytest.approx(expected, rel=1e-5)  # float32 logits against a float64 reference

    # a teacher you set replaces the dense copy (and survives setting the model)
    other = _Net().eval()
    prune = Pruning(_conf(0.7))
    prune.teacher = other
    prune.model = _copy(digits["net"])
    prune.example_inputs = x
    prune.on_epoch_begin(0)
    assert prune.teacher is other
    with torch.no_grad():
        out = prune.model(torch.from_numpy(x))
        expected = _kd_numpy(out.numpy(), other(torch.from_numpy(x)).numpy(), y, 0.7, 4.0)
    assert float(prune.distillation_loss(out, y, x)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_builtin_loop_distils_the_pruned_model_toward_the_dense_one(digits: dict) -> None:
    """Same pruning, seed and batches; only the loss differs. With weight 1 (distillation only) the pruned
    model ends much closer to the dense model's output distribution than with the task loss alone."""
    kl = {}
    for weight in (None, 1.0):
        torch.manual_seed(0)
        net = _copy(digits["net"])
        prune = Pruning(_conf(weight, temperature=2.0))
        prune.model = net
        prune.train_dataloader = _batches(digits)
        prune.fit()
        assert all(r.pruned == r.channels // 2 for r in prune.channel_report)
        kl[weight] = _kl_to(digits["net"], net, digits["eval_x"])
    # measured (one thread, seed 0): about 0.05 with the task loss, 0.003 with distillation; the factor 4 leaves
    # a wide margin on either side
    assert kl[1.0] < kl[None] / 4, kl


def test_learning_rate_schedules_are_applied_per_epoch(digits: dict, caplog: pytest.LogCaptureFixture) -> None:
    batches = _batches(digits)[:2]
    rates = {}
    for schedule in ({"type": "cosine", "min_learning_rate": 0.0002}, {"type": "step", "step_epochs": 2, "gamma": 0.5}):
        conf = load_config({"pruning": {"train": {"epoch": 4, "optimizer": {"SGD": {"learning_rate": 0.002}},
                                                  "lr_schedule": schedule}}})  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="lpot_ir.training"):
            train_model(_copy(digits["net"]), conf.pruning.train, batches)
        found = [float(m) for m in re.findall(r"learning rate ([0-9.e-]+)", caplog.text)]
        rates[schedule["type"]] = found
    # the rate of each epoch's last batch (2 batches per epoch, 8 in all): cosine at progress 1/8, 3/8, 5/8, 7/8
    cosine = [0.0002 + 0.0018 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in (1, 3, 5, 7)]
    assert rates["cosine"] == pytest.approx(cosine, rel=1e-2)  # the log prints 3 significant digits
    assert rates["step"] == pytest.approx([0.002, 0.002, 0.001, 0.001])


def test_distillation_errors(digits: dict) -> None:
    with pytest.raises(ConfigError, match=r"pruning\.train\.distillation\.wieght\. Did you mean 'weight'\?"):
        load_config({"pruning": {"train": {"distillation": {"wieght": 0.5}}}})
    with pytest.raises(ConfigError, match=r"weight must be in \[0, 1\]"):
        load_config({"pruning": {"train": {"distillation": {"weight": 1.5}}}})
    with pytest.raises(ConfigError, match="temperature must be a positive number"):
        load_config({"pruning": {"train": {"distillation": {"temperature": 0}}}})
    with pytest.raises(ConfigError, match=r"Unknown key 'lr_shedule'.*Did you mean 'lr_schedule'"):
        load_config({"pruning": {"train": {"lr_shedule": {"type": "cosine"}}}})
    # QAT's loop has no teacher: the key is refused there, not ignored
    conf = load_config({"quantization": {"approach": "quant_aware_training",
                                         "train": {"distillation": {"weight": 0.5}}}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"quantization\.train\.distillation needs a teacher"):
        train_model(_copy(digits["net"]), conf.quantization.train, _batches(digits)[:1], where="quantization.train")
    prune = Pruning(_conf(None))
    prune.model = _copy(digits["net"])
    with pytest.raises(ConfigError, match="needs pruning.train.distillation"):
        prune.distillation_loss(torch.zeros(1, 10), torch.zeros(1), digits["train_x"][:1])
    with pytest.raises(ConfigError, match="used by knowledge distillation only"):
        prune.teacher = _copy(digits["net"])
    with pytest.raises(ConfigError, match="must be a torch.nn.Module"):
        Pruning(_conf(0.5)).teacher = "model.onnx"
