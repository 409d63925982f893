"""Quantization-aware training of a PyTorch CNN whose post-training INT8 model loses accuracy.

The model is the bundled digits CNN (lpot_ir.examples_data.digits_torch_model): one channel of its stem's
output is 120x larger than the others, as trained networks often have, so per-tensor INT8 activations lose
the other channels' resolution and post-training quantization of every op loses about a fifth of the
accuracy. ``conf.yaml``
asks for quantization-aware training: lpot-ir fake-quantizes the model where post-training quantization
puts its Q/DQ pairs, fine-tunes it with the built-in loop (two epochs of Adam), and quantizes the trained
weights with the learned ranges; accuracy-driven tuning then checks the result like any candidate.

``python examples/qat/run.py`` (about half a minute)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from lpot_ir import Quantization, quantize
from lpot_ir.common import DataLoader
from lpot_ir.examples_data import digits_torch_model, load_digits_splits, model_accuracy

HERE = Path(__file__).resolve().parent


class Pairs:
    """(image, label) samples from two arrays."""

    def __init__(self, x, y) -> None:  # type: ignore[no-untyped-def]
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.x[i], self.y[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="lpot_example_qat", help="where the workspace goes")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    splits = load_digits_splits()
    net = digits_torch_model()  # a torch.nn.Module (trained once, in a few seconds, and cached)
    eval_x, eval_y = splits["eval_x"], splits["eval_y"]
    calib = DataLoader(Pairs(splits["calib_x"], splits["calib_y"]), batch_size=10)

    ptq = quantize(net, calib_dataloader=calib)  # post-training INT8, every op, for comparison
    with torch.no_grad():
        fp32_accuracy = float((net(torch.from_numpy(eval_x)).argmax(1).numpy() == eval_y).mean())
    ptq_accuracy = model_accuracy(ptq.model, eval_x, eval_y)

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    quantizer = Quantization(str(HERE / "conf.yaml"))
    quantizer.model = net
    quantizer.train_dataloader = DataLoader(
        Pairs(splits["train_x"], splits["train_y"]), batch_size=32, shuffle=True, seed=1978
    )
    quantizer.calib_dataloader = calib
    quantizer.eval_dataloader = DataLoader(Pairs(eval_x, eval_y), batch_size=100)
    quantizer.metric = "topk"
    qat = quantizer.fit()
    outcome = quantizer.outcome
    qat_accuracy = model_accuracy(qat.model, eval_x, eval_y)

    print(f"FP32 accuracy                    {fp32_accuracy:.4f}")
    print(f"post-training INT8 (every op)    {ptq_accuracy:.4f}  ({fp32_accuracy - ptq_accuracy:+.2%} lost)")
    print(f"quantization-aware training INT8 {qat_accuracy:.4f}  ({fp32_accuracy - qat_accuracy:+.2%} lost)")
    print(f"ops left FP32 by tuning          {len(qat.fp32_nodes)}; meets the 2% criterion: {outcome.met_goal}")
    print(f"INT8 speedup vs FP32             {outcome.speedup:.2f}x" if outcome.speedup else "")
    print(f"report                           {outcome.files['report']}")


if __name__ == "__main__":
    main()
