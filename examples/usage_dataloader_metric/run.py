"""LPOT usage 2: dataloaders built in Python, a built-in metric named in code.

``python examples/usage_dataloader_metric/run.py [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from lpot_ir import Quantization, common
from lpot_ir.examples_data import digits_example

HERE = Path(__file__).resolve().parent


class Digits:
    """A dataset of (image, label) pairs: anything with __getitem__ and __len__ works."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[index], self.labels[index]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="lpot_example_dataloader_metric", help="where the workspace goes")
    args = parser.parse_args()
    example = digits_example()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)

    calib = Digits(example.calib_data, np.load(example.calib_labels_path))
    evaluation = Digits(example.eval_data, example.eval_labels)

    quantizer = Quantization(str(HERE / "conf.yaml"))
    quantizer.model = str(example.model_path)
    quantizer.calib_dataloader = common.DataLoader(calib, batch_size=10)
    quantizer.eval_dataloader = common.DataLoader(evaluation, batch_size=100)
    quantizer.metric = {"topk": 1}  # a built-in metric; common.Metric(MyMetric) works too
    q_model = quantizer.fit()

    outcome = quantizer.outcome
    print(f"FP32 accuracy: {outcome.baseline_accuracy:.4f}")
    print(f"INT8 accuracy: {outcome.best.accuracy:.4f}")
    print(f"relative loss: {outcome.relative_loss:.2%}")
    print(f"meets the criterion: {outcome.met_goal}")
    print(f"trials: {len(outcome.trials)}")
    print(f"quantized nodes: {len(q_model.quantized_nodes)}")
    print(f"best model: {outcome.files['model'].resolve()}")


if __name__ == "__main__":
    main()
