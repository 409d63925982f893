"""LPOT usage 3: a calibration dataloader and your own evaluation function.

The evaluation function receives each candidate as an ``onnx.ModelProto`` (as LPOT and Intel Neural
Compressor pass ONNX models) and returns its accuracy; one written for them works unchanged.

``python examples/usage_eval_func/run.py [--workdir DIR]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from lpot_ir import Quantization, common
from lpot_ir.examples_data import digits_example

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="lpot_example_eval_func", help="where the workspace goes")
    args = parser.parse_args()
    example = digits_example()
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    images, labels = example.eval_data, example.eval_labels

    def eval_func(model: onnx.ModelProto) -> float:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: images})[0]
        return float(np.mean(np.argmax(logits, axis=1) == labels))

    calib = [(example.calib_data[i], None) for i in range(len(example.calib_data))]

    quantizer = Quantization(str(HERE / "conf.yaml"))
    quantizer.model = str(example.model_path)
    quantizer.calib_dataloader = common.DataLoader(calib, batch_size=10)
    quantizer.eval_func = eval_func
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
