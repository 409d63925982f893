"""MXNet end to end: a Gluon CNN exported to symbol + params, quantized with an NDArray-style eval_func.

Run: .venv/bin/python examples/frameworks/mxnet_gluon_cnn.py
The first run creates lpot-ir's isolated MXNet environment (~/.cache/lpot-ir/mxnet-env, about 20 s with
a fast network); later runs reuse it.

What it shows (docs/frameworks/mxnet.md):
* ``quantizer.model`` takes ``quadrants-symbol.json``; ``quadrants-0000.params`` is found beside it.
* MXNet 1.9 cannot be imported next to lpot-ir (it needs numpy<1.24), so the conversion runs in the
  isolated environment, and ``eval_func`` receives a callable that takes NDArrays or numpy arrays and
  returns NDArray-style results (``.asnumpy()``).
* reports and ``op_wise`` use MXNet symbol names (``conv0_fwd``, ``dense0_fwd``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lpot_ir import Quantization
from lpot_ir.frontends import summarize, to_onnx
from lpot_ir.frontends.mxnet import ensure_mxnet_env


def main() -> None:
    python = ensure_mxnet_env()  # creates the isolated environment once
    with tempfile.TemporaryDirectory() as tmp:
        builder = Path(__file__).with_name("mxnet_build_gluon_cnn.py")
        subprocess.run([str(python), "-I", str(builder), tmp], check=True)  # stands in for your own training
        symbol = Path(tmp) / "quadrants-symbol.json"
        x_test, y_test = np.load(Path(tmp) / "test_x.npy"), np.load(Path(tmp) / "test_y.npy")
        print(summarize(symbol).to_text())

        def eval_func(model) -> float:
            """MXNet-style evaluation: call with arrays, read results with .asnumpy()."""
            return float((model(x_test).asnumpy().argmax(1) == y_test).mean())

        converted = to_onnx(symbol, example_inputs=x_test[:1])
        print("conversion:", *converted.notes, sep="\n  ")
        print("framework names:", sorted(set(converted.name_map.values())))

        quantizer = Quantization(
            {
                "model": {"name": "quadrants", "framework": "mxnet"},
                "tuning": {"accuracy_criterion": {"relative": 0.01}, "exit_policy": {"max_trials": 10}},
            }
        )
        quantizer.model = str(symbol)
        quantizer.calib_dataloader = [x_test[i : i + 32] for i in range(0, 128, 32)]
        quantizer.eval_func = eval_func
        q_model = quantizer.fit()
        q_model.save(Path(tmp) / "quadrants-int8.onnx")
        print("INT8 Q/DQ ONNX model written; QuantizeLinear nodes:", sum(n.op_type == "QuantizeLinear" for n in q_model.model.graph.node))


if __name__ == "__main__":
    main()
