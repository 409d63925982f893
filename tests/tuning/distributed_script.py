"""Run by test_executors.py in a subprocess: tune the digits model on 2 local workers (the test kills it).

Usage: python distributed_script.py WORKSPACE SECONDS_PER_EVALUATION
"""

from __future__ import annotations

import sys

from lpot_ir.examples_data import digits_example
from lpot_ir.quantizer import ModelQuantizer
from lpot_ir.tuning import Evaluator, tune
from tests.tuning.distributed_helpers import SlowEvaluation, random_config


def main() -> None:
    workspace, seconds = sys.argv[1], float(sys.argv[2])
    digits = digits_example()
    quantizer = ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))
    tune(random_config(workspace, workers=2), quantizer, Evaluator(eval_func=SlowEvaluation(digits, seconds)), progress=False)


if __name__ == "__main__":
    main()
