"""LPOT usage 1: everything in the YAML (dataloaders, metric, tuning), three lines of code.

Run it from anywhere: ``python examples/usage_yaml_only/run.py [--workdir DIR]``. It copies the
bundled digits model and data (built once and cached by ``lpot_ir.examples_data``) and ``conf.yaml``
into the work folder, then tunes there.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from lpot_ir.examples_data import digits_example

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="lpot_example_yaml_only", help="where to copy the model and data")
    args = parser.parse_args()
    workdir = digits_example().copy_files(args.workdir)
    shutil.copyfile(HERE / "conf.yaml", workdir / "conf.yaml")
    os.chdir(workdir)

    from lpot_ir import Quantization

    quantizer = Quantization("./conf.yaml")
    quantizer.model = "./model.onnx"
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
