"""Prune whole channels of a residual CNN, shrink the graph, then quantize it: each stage's sparsity, size and speed.

A small residual CNN is trained on Fashion-MNIST (Debian's ``dataset-fashion-mnist``; scikit-learn's digits
when it is absent, or with ``--data digits``). ``structured.yaml`` prunes half of every channel group
(``method: filter``) while the built-in loop fine-tunes it. ``fp32-optimize`` then removes the pruned
channels from the ONNX graph (``shrink-pruned-channels``), and ``Quantization`` tunes the pruned model to
INT8; its report gets a table of the three stages: dense FP32, pruned FP32, INT8.

``python examples/pruning/structured.py [--data digits|fashion] [--train-samples N] [--width W]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lpot_ir import Pruning, Quantization
from lpot_ir.common import DataLoader
from lpot_ir.examples_data import load_digits_splits, load_fashion_mnist
from lpot_ir.pruning import format_channel_table
from lpot_ir.pruning.stages import format_stages

HERE = Path(__file__).resolve().parent


class Pairs:
    """(image, label) samples from two arrays."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x[i], self.y[i]


def conv_bn(c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class ResidualCNN(nn.Module):
    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.stem = conv_bn(1, width)
        self.down1 = conv_bn(width, 2 * width, stride=2)
        self.block_a = conv_bn(2 * width, 2 * width)
        self.block_b = conv_bn(2 * width, 2 * width, relu=False)
        self.down2 = conv_bn(2 * width, 4 * width, stride=2)
        self.fc = nn.Linear(4 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down1(self.stem(x))
        x = torch.relu(x + self.block_b(self.block_a(x)))  # residual: down1 and block_b share channels
        x = self.down2(x)
        return self.fc(x.mean((2, 3)))


def load(data: str, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    if data in ("auto", "fashion"):
        train, test = load_fashion_mnist("train", limit=samples), load_fashion_mnist("test", limit=1000)
        if train is not None and test is not None:
            return train[0], train[1], test[0], test[1], f"Fashion-MNIST ({len(train[0])} train / 1000 test images)"
        if data == "fashion":
            raise SystemExit("Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist, or use --data digits")
    splits = load_digits_splits()
    n = min(samples, len(splits["train_x"]))
    return splits["train_x"][:n], splits["train_y"][:n], splits["eval_x"], splits["eval_y"], "scikit-learn digits (16x16)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("auto", "fashion", "digits"), default="auto")
    parser.add_argument("--train-samples", type=int, default=6000, help="training images (default 6000)")
    parser.add_argument("--width", type=int, default=32, help="channels of the first layer (default 32)")
    parser.add_argument("--workdir", default="lpot_example_structured", help="where the tuning workspace goes")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    x_train, y_train, x_test, y_test, label = load(args.data, args.train_samples)

    def batches(shuffle_seed: int) -> DataLoader:
        return DataLoader(Pairs(x_train, y_train), batch_size=64, shuffle=True, seed=shuffle_seed)

    def accuracy(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())

    net = ResidualCNN(args.width)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    for epoch in range(4):  # the dense model
        net.train()
        for x, y in batches(epoch):
            optimizer.zero_grad()
            nn.functional.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            optimizer.step()
    dense_accuracy = accuracy(net)

    prune = Pruning(str(HERE / "structured.yaml"))
    prune.model = net
    prune.train_dataloader = batches(100)
    prune.eval_func = accuracy
    prune.fit()
    print(f"data: {label}")
    print(format_channel_table(prune.channel_report))
    print(f"dense accuracy  {dense_accuracy:.4f}")
    print(f"pruned accuracy {prune.score:.4f}")

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    quantizer = Quantization(str(HERE / "quantize.yaml"))
    quantizer.model = prune  # the pruned model; fp32-optimize removes its pruned channels
    quantizer.calib_dataloader = DataLoader(Pairs(x_train[:100], y_train[:100]), batch_size=10)
    quantizer.eval_dataloader = DataLoader(Pairs(x_test, y_test), batch_size=250)
    quantizer.metric = "topk"
    quantizer.fit()
    print(format_stages(quantizer.stages))
    print(f"report: {quantizer.outcome.files['report']}")


if __name__ == "__main__":
    main()
