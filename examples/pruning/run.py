"""LPOT's Pruning API: gradual magnitude pruning of a small MLP while it fine-tunes on the digits.

The model (64 -> 128 -> 64 -> 10) is trained on scikit-learn's bundled handwritten digits, then pruned
by ``conf.yaml``: 50% of the hidden layers' weights and 30% of the classifier's, reached at epoch 2
and kept while fine-tuning to epoch 3. The training loop calls LPOT's callbacks.

``python examples/pruning/run.py``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from sklearn.datasets import load_digits

from lpot_ir import Pruning
from lpot_ir.pruning import format_sparsity_table

HERE = Path(__file__).resolve().parent


def make_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits scaled to [0, 1]: 1297 training and 500 test samples (fixed split)."""
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[500:], y[500:], x[:500], y[:500]


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(64, 128)
        self.fc2 = torch.nn.Linear(128, 64)
        self.fc3 = torch.nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs while pruning (default 4)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = make_data()

    def run_epoch(
        model: torch.nn.Module, optimizer: torch.optim.Optimizer, prune: Pruning | None = None
    ) -> None:
        model.train()
        order = torch.randperm(len(x_train))
        for batch_id, start in enumerate(range(0, len(x_train), 32)):
            index = order[start : start + 32]
            if prune is not None:
                prune.on_batch_begin(batch_id)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            if prune is not None:
                prune.on_batch_end()

    def evaluate(model: torch.nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return float((model(x_test).argmax(1) == y_test).float().mean())

    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(10):
        run_epoch(model, optimizer)
    dense_accuracy = evaluate(model)

    prune = Pruning(str(HERE / "conf.yaml"))

    def train(model: torch.nn.Module) -> None:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for epoch in range(args.epochs):
            prune.on_epoch_begin(epoch)
            run_epoch(model, optimizer, prune)
            prune.on_epoch_end()

    prune.model = model
    prune.train_func = train
    prune.eval_func = evaluate
    pruned = prune.fit()

    print(format_sparsity_table(prune.sparsity_report))
    print(f"dense accuracy:  {dense_accuracy:.4f}")
    print(f"pruned accuracy: {prune.score:.4f}")
    zeros = sum(int((p == 0).sum()) for n, p in pruned.named_parameters() if n.endswith("weight"))
    total = sum(p.numel() for n, p in pruned.named_parameters() if n.endswith("weight"))
    print(f"zero weights:    {zeros} of {total} ({zeros / total:.1%})")


if __name__ == "__main__":
    main()
