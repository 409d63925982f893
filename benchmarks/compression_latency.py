"""Latency of EfficientNet-Lite0 (Fashion-MNIST, 64x64) dense / pruned, FP32 / INT8, in CPU time: robust to a loaded machine.

Run from the repository root (a few minutes; needs ``dataset-fashion-mnist``)::

    .venv/bin/python benchmarks/compression_latency.py [--rounds 40] [--iterations 5] [--resolution 64]

benchmarks/pruning.py and benchmarks/qat.py time their stages in wall-clock time (``compare_latency``).
On a shared machine with several runnable processes per core a run is often preempted, and wall-clock
ratios then swing by 2-5x between rounds. With one intra-op thread ONNX Runtime computes in the calling
thread, so that thread's CPU time (``time.thread_time_ns``) counts the model's work only. Each round
times ``--iterations`` runs of every model, in an order rotated each round; the table gives each model's
median CPU milliseconds per run and the median of per-round ratios to the dense FP32 model
(``effnet_fashion.cpu_latency``, which benchmarks/pruning.py and benchmarks/qat.py use too).

The models (speed depends only on shapes, so no training is needed here):

* ``dense FP32``: the fine-tuned model of benchmarks/effnet_fashion.py after ``fp32-optimize``;
* ``dense INT8 per channel`` / ``per tensor``: post-training INT8 of every supported op (100 images);
* ``pruned FP32``: ``method: filter`` 50% of every channel group, one-shot on the ONNX model (magnitude),
  shrunk by ``shrink-pruned-channels``: the shapes benchmarks/pruning.py's trained model has;
* ``pruned INT8``: that model with every supported op in INT8.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import effnet_fashion as ef  # noqa: E402
import numpy as np  # noqa: E402

from lpot_ir import Pruning  # noqa: E402
from lpot_ir.frontends import resolve_model  # noqa: E402
from lpot_ir.ir import load_model, to_proto  # noqa: E402
from lpot_ir.ir.quant import Granularity  # noqa: E402
from lpot_ir.passes import run_pipeline  # noqa: E402
from lpot_ir.quantizer import ModelQuantizer, default_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    parser.add_argument("--iterations", type=int, default=5, help="runs per model per round (default 5)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="channel sparsity per group (default 0.5)")
    parser.add_argument(
        "--resolution", type=int, default=ef.RESOLUTION,
        help=f"input height and width (default {ef.RESOLUTION}, the fine-tuning resolution; EfficientNet-Lite0's own is "
             "224): the images are resized bilinearly, the weights are the same",
    )  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print(f"load: {os.getloadavg()[0]:.1f} (1-minute average)")
    data = ef.load_data(4000, 10)
    net = ef.fine_tuned(data)
    if args.resolution != ef.RESOLUTION:  # the network is convolutional up to a global pool: any size runs
        for split in ("train_x", "test_x"):
            resized = torch.nn.functional.interpolate(
                torch.from_numpy(data[split][:100]), size=(args.resolution, args.resolution), mode="bilinear"
            )
            data[split] = resized.numpy()
    print(f"input: {args.resolution}x{args.resolution}")
    calib = [(data["train_x"][i : i + 10], None) for i in range(0, 100, 10)]
    exported = resolve_model(net, calib_dataloader=calib).model
    dense = to_proto(run_pipeline(load_model(exported), "fp32-optimize").model)
    config = default_config()
    weight = dataclasses.replace(config.global_config.weight, granularity=Granularity.PER_TENSOR)
    per_tensor = dataclasses.replace(config, global_config=dataclasses.replace(config.global_config, weight=weight))
    dense_quantizer = ModelQuantizer(dense, calib)
    prune = Pruning({"pruning": {"approach": {"weight_compression": {"method": "filter", "target_sparsity": args.sparsity}}}})
    prune.model = exported
    pruned = prune.fit()
    models = {
        "dense FP32": dense,
        "dense INT8 per channel": dense_quantizer.quantize(config).model,
        "dense INT8 per tensor": dense_quantizer.quantize(per_tensor).model,
        "pruned FP32": pruned,
        "pruned INT8": ModelQuantizer(pruned, calib).quantize(config).model,
    }
    weights = {n: sum(int(np.prod(t.dims)) for t in m.graph.initializer) for n, m in models.items()}  # every stored element
    timing = ef.cpu_latency(models, data["test_x"][:1], args.rounds, args.iterations)
    print(f"{args.rounds} interleaved rounds x {args.iterations} runs, 1 intra-op thread, CPU time of the calling thread")
    print(f"{'model':<24} {'weights':>9} {'CPU ms':>8} {'speedup':>8}")
    for name, (ms, ratio) in timing.items():
        print(f"{name:<24} {weights[name]:>9} {ms:>8.3f} {ratio:>7.2f}x")
    print(f"load: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
