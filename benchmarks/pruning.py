"""Structured pruning benchmark: EfficientNet-Lite0 (pretrained, fine-tuned on Fashion-MNIST), 50% of its channels.

Run from the repository root (about 30 minutes on 2 cores with the control; needs ``dataset-fashion-mnist``)::

    .venv/bin/python benchmarks/pruning.py [--train 4000] [--prune-train 4000] [--sparsity 0.5] [--epochs 6]
        [--prune-epochs 2] [--lr-schedule cosine] [--distillation 0] [--teacher dense] [--start dense]
        [--no-control]

Stages, side by side in one run (see benchmarks/effnet_fashion.py for the model and data):

* ``dense FP32``: the fine-tuned model (``fp32-optimize``: BatchNorm folded);
* ``unstructured``: 50% of every Conv/Gemm weight zeroed one-shot (magnitude): smaller once compressed,
  not faster (dense kernels);
* ``pruned FP32``: ``method: filter`` pruning of every channel group to ``--sparsity``, gradual over the
  first ``--prune-epochs`` epochs of the built-in loop (half the target at epoch 0) and fine-tuned at the
  target sparsity for the remaining epochs, with the ``--lr-schedule`` and, with ``--distillation W``,
  knowledge distillation from the dense model; ``fp32-optimize`` removes the pruned channels;
* ``INT8 (tuned)``: accuracy-driven post-training quantization of the pruned model (relative 1%);
* ``INT8 (every op)``: the pruned model with every supported op in INT8 (this CPU's default configuration).

Accuracy baselines: the dense model the pruning starts from, and a control, the dense model trained the
same epochs by the same built-in loop (same batches, optimizer and schedule, no pruning): the stricter
baseline, because the dense model is fine-tuned one epoch only. Latency: one intra-op thread, batch 1,
interleaved rounds, CPU time of the computing thread (robust to a loaded machine:
``effnet_fashion.cpu_latency``); ratios to the dense model.
Targets (issue 10): pruned >= 1.5x the dense model within 1% accuracy; pruned + INT8 >= 4x.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import effnet_fashion as ef  # noqa: E402

from lpot_ir import Pruning, Quantization  # noqa: E402
from lpot_ir.common import DataLoader  # noqa: E402
from lpot_ir.pruning import format_channel_table  # noqa: E402
from lpot_ir.pruning.stages import compare_stages, format_stages  # noqa: E402


class Pairs:
    def __init__(self, x, y) -> None:  # type: ignore[no-untyped-def]
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):  # type: ignore[no-untyped-def]
        return self.x[i], self.y[i]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ef.add_data_arguments(parser)
    parser.add_argument(
        "--prune-train", type=int, default=None,
        help="training images of the pruning (and control) fine-tuning (default: --train, the dense model's)",
    )
    parser.add_argument("--sparsity", type=float, default=0.5, help="channel sparsity per group (default 0.5)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of pruning + fine-tuning (default 6)")
    parser.add_argument(
        "--prune-epochs", type=int, default=2,
        help="end_epoch: the sparsity grows over these first epochs, then stays (default 2)",
    )
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4)")
    parser.add_argument("--lr-schedule", default="cosine", choices=("cosine", "constant"), help="(default cosine)")
    parser.add_argument(
        "--distillation", type=float, default=0.0, metavar="WEIGHT",
        help="knowledge distillation from the dense model with this weight (default 0: off)",
    )
    parser.add_argument("--temperature", type=float, default=2.0, help="distillation temperature (default 2)")
    parser.add_argument(
        "--teacher", default="dense", choices=("dense", "control"),
        help="the distillation teacher: the model pruning starts from (default) or the control",
    )
    parser.add_argument("--prune-type", default="basic_magnitude", choices=("basic_magnitude", "gradient_sensitivity"))
    parser.add_argument("--rounds", type=int, default=40, help="interleaved timing rounds (default 40)")
    parser.add_argument(
        "--start", default="dense", choices=("dense", "control"),
        help="the model pruning starts from: the dense model fine-tuned one epoch (default), or the control "
        "(trained --epochs more): then the dense stage is the control, a converged baseline",
    )
    parser.add_argument(
        "--no-control", action="store_true",
        help="skip the control: the dense model trained the same epochs without pruning (the stricter baseline)",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    prune_train = max(args.prune_train or args.train, args.train)
    data, net = ef.start_run(args, train_images=prune_train)
    import torch

    dense_accuracy = ef.torch_accuracy(net, data["test_x"], data["test_y"])
    print(f"dense fine-tuned accuracy (torch): {dense_accuracy:.4f} (fine-tuned on {args.train} images)")

    train: dict = {"epoch": args.epochs, "optimizer": {"Adam": {"learning_rate": args.lr}}}
    if args.lr_schedule != "constant":
        train["lr_schedule"] = {"type": args.lr_schedule}

    def loader() -> DataLoader:
        return DataLoader(Pairs(data["train_x"], data["train_y"]), batch_size=32, shuffle=True, seed=1)

    control_accuracy = None
    if not args.no_control:
        import copy

        from lpot_ir.config import load_config
        from lpot_ir.training import train_model

        control = copy.deepcopy(net)
        start = time.perf_counter()
        torch.manual_seed(0)
        train_model(control, load_config({"pruning": {"train": train}}).pruning.train, loader())  # type: ignore[union-attr]
        control_accuracy = ef.torch_accuracy(control, data["test_x"], data["test_y"])
        print(f"control (dense, trained the same {args.epochs} epochs): {control_accuracy:.4f} "
              f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    if args.teacher == "control" and (args.no_control or args.distillation <= 0):
        parser.error("--teacher control needs the control (no --no-control) and --distillation > 0")
    if args.start == "control":
        if args.no_control or args.teacher == "control":
            parser.error("--start control needs the control (no --no-control) and is its own teacher (--teacher dense)")
        net, control_accuracy = control, None  # the control is now the dense model itself
        print("pruning starts from the control: the dense stage below is the control")

    if args.distillation > 0:
        train["distillation"] = {"weight": args.distillation, "temperature": args.temperature}
    end = min(args.prune_epochs, args.epochs - 1)
    conf = {
        "model": {"name": "efficientnet_lite0_fashion"},
        "pruning": {
            "train": train,
            "approach": {"weight_compression": {
                "method": "filter", "prune_type": args.prune_type, "initial_sparsity": args.sparsity / 2,
                "target_sparsity": args.sparsity, "start_epoch": 0, "end_epoch": end, "update_frequency": 1,
            }},
        },
    }  # fmt: skip
    print(f"pruning: {prune_train} images, {args.epochs} epochs (sparsity reached at epoch {end}), {train}")
    torch.manual_seed(0)
    prune = Pruning(conf)
    prune.model = net
    prune.train_dataloader = loader()
    if args.teacher == "control":
        prune.teacher = control
    start = time.perf_counter()
    prune.fit()
    print(f"pruning + fine-tuning: {time.perf_counter() - start:.0f} s")
    print(format_channel_table(prune.channel_report))

    example = data["test_x"][:1]
    dense = prune.dense_model(example)
    unstructured = Pruning({"pruning": {"approach": {"weight_compression": {"target_sparsity": 0.5}}}})
    unstructured.model = dense
    one_shot = unstructured.fit()

    workspace = tempfile.mkdtemp(prefix="lpot_bench_pruning_")
    quantizer = Quantization({
        "model": {"name": "efficientnet_lite0_pruned"},
        "quantization": {"calibration": {"sampling_size": 100}},
        "evaluation": {"accuracy": {"metric": {"topk": 1}}},
        "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"timeout": 0, "max_trials": 30},
                   "workspace": {"path": workspace}},
    })  # fmt: skip
    quantizer.model = prune
    quantizer.calib_dataloader = DataLoader(Pairs(data["train_x"][:100], data["train_y"][:100]), batch_size=10)
    quantizer.eval_dataloader = DataLoader(Pairs(data["test_x"], data["test_y"]), batch_size=250)
    quantizer.metric = "topk"
    quantizer.progress = False
    quantizer.fit()
    outcome = quantizer.outcome
    pruned_fp32 = prune.shrunk_model(example)
    from lpot_ir.quantizer import quantize

    all_int8 = quantize(pruned_fp32, calib_dataloader=quantizer.calib_dataloader).model  # every op, no tuning
    models = {
        "dense FP32": dense, "unstructured 50%": one_shot, "pruned FP32": pruned_fp32,
        "INT8 (tuned)": outcome.model.model, "INT8 (every op)": all_int8,
    }  # fmt: skip
    accuracy = {name: ef.onnx_accuracy(m, data["test_x"], data["test_y"]) for name, m in models.items()}
    timing = ef.cpu_latency(models, example, rounds=args.rounds)
    rows = [
        dataclasses.replace(r, speedup=timing[r.name][1])
        for r in compare_stages(models, example, accuracy=accuracy, measure_speed=False)
    ]
    print()
    print(format_stages(rows))
    by = {r.name: r for r in rows}
    d, p, q = by["dense FP32"], by["pruned FP32"], max(by["INT8 (tuned)"], by["INT8 (every op)"], key=lambda r: r.speedup or 0)
    import gzip

    zipped = {n: len(gzip.compress(m.SerializeToString())) for n, m in models.items()}
    print("gzip-compressed size KiB: " + ", ".join(f"{n} {v / 1024:.0f}" for n, v in zipped.items()))
    print()
    print(f"INT8 tuning: {len(outcome.trials)} trial(s), meets 1%: {outcome.met_goal}, ops left FP32: {len(outcome.model.fp32_nodes)}")
    print(f"target pruned >= 1.5x dense:   {p.speedup:.2f}x  {'met' if p.speedup and p.speedup >= 1.5 else 'MISSED'}")
    pruned_accuracy = p.accuracy or 0.0
    for label, reference in (("the dense model it started from", d.accuracy), ("the control (stricter)", control_accuracy)):
        if reference is None:
            continue
        drop = reference - pruned_accuracy
        print(f"target pruned within 1% acc:   {pruned_accuracy:.4f} vs {reference:.4f}, {drop:+.2%} drop vs {label}  "
              f"{'met' if drop <= 0.01 else 'MISSED'}")  # fmt: skip
    print(f"target pruned + INT8 >= 4x:    {q.speedup:.2f}x  {'met' if q.speedup and q.speedup >= 4.0 else 'MISSED'}")
    print(f"load: {os.getloadavg()[0]:.1f}; wall {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
