"""PyTorch end to end: train a tiny CNN, quantize it with accuracy-driven tuning, export it back to PyTorch.

Run: .venv/bin/python examples/frameworks/pytorch_cnn.py   (about 10 s on a laptop CPU)

What it shows (docs/frameworks/pytorch.md):
* ``quantizer.model`` takes the ``nn.Module`` itself; the calibration dataloader's first batch is the
  example input for the ONNX export.
* ``eval_func`` is ordinary PyTorch evaluation code: it receives an ``nn.Module`` (running the INT8
  candidate in ONNX Runtime) and calls it with torch tensors.
* reports and ``op_wise`` use module paths such as ``features.0``.
* ``export_to_pytorch`` turns the INT8 Q/DQ model into an ``nn.Module`` that needs no ONNX Runtime.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lpot_ir import Quantization
from lpot_ir.frontends import export_to_pytorch, to_onnx


def quadrant_images(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random images whose label is the brightest quadrant (0-3)."""
    x = rng.random((n, 3, 16, 16), dtype=np.float32) * 0.5
    y = rng.integers(0, 4, n)
    for i, c in enumerate(y):
        r, col = divmod(int(c), 2)
        x[i, :, r * 8 : (r + 1) * 8, col * 8 : (col + 1) * 8] += 0.5
    return x, y


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def main() -> None:
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    x_train, y_train = quadrant_images(512, rng)
    x_test, y_test = quadrant_images(256, rng)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(8):
        for i in range(0, len(x_train), 32):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(torch.from_numpy(x_train[i : i + 32])), torch.from_numpy(y_train[i : i + 32]))
            loss.backward()
            opt.step()
    model.eval()

    def eval_func(m: nn.Module) -> float:
        """Plain PyTorch evaluation: works on the FP32 model and on every INT8 candidate."""
        with torch.no_grad():
            logits = m(torch.from_numpy(x_test))
        return float((logits.argmax(1).numpy() == y_test).mean())

    converted = to_onnx(model, example_inputs=torch.from_numpy(x_test[:1]))
    print("conversion:", *converted.notes, sep="\n  ")
    print("ONNX node -> module:", {k: v for k, v in converted.name_map.items() if "Conv" in k or "Gemm" in k})

    quantizer = Quantization(
        {
            "model": {"name": "quadrants", "framework": "pytorch"},
            "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"max_trials": 10}},
        }
    )
    quantizer.model = model
    quantizer.calib_dataloader = [(x_train[i : i + 32], y_train[i : i + 32]) for i in range(0, 128, 32)]
    quantizer.eval_func = eval_func
    q_model = quantizer.fit()

    int8 = export_to_pytorch(q_model.model)  # a torch.nn.Module, no ONNX Runtime needed
    print(f"FP32 accuracy {eval_func(model):.3f}, INT8 (exported back to PyTorch) {eval_func(int8):.3f}")


if __name__ == "__main__":
    main()
