"""Run by test_resume.py in a subprocess: tune the digits model; optionally die hard during a trial.

Usage: python resume_script.py WORKSPACE KILL_AT_CALL RESUME(0/1) [STRATEGY_OPTIONS_JSON]
Prints one JSON line: trial keys, evaluation calls made by this process, replayed trials, best key.
"""

from __future__ import annotations

import json
import os
import sys

from lpot_ir.examples_data import digits_example
from lpot_ir.quantizer import ModelQuantizer
from lpot_ir.tuning import Evaluator, tune
from tests.tuning.helpers import PLAIN, make_config


def main() -> None:
    workspace, kill_at, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
    options = json.loads(sys.argv[4]) if len(sys.argv) > 4 else PLAIN
    digits = digits_example()
    calls = {"n": 0}

    def eval_func(model):
        calls["n"] += 1
        if calls["n"] == kill_at:
            os._exit(3)  # killed in the middle of a trial: no cleanup, no finally blocks
        return digits.eval_func(model)

    config = make_config(  # timeout > 0: basic searches on after the first success, so a kill can land in the middle
        workspace, "basic", timeout=3600, max_trials=30, resume=workspace if resume else None,
        strategy_options=options,
    )
    quantizer = ModelQuantizer(digits.model_path, digits.calib_dataloader(batch_size=10))
    outcome = tune(config, quantizer, Evaluator(eval_func=eval_func), progress=False)
    print(json.dumps({
        "keys": [t.config.key() for t in outcome.trials],
        "calls": calls["n"],
        "replayed": outcome.replayed,
        "evaluated": outcome.evaluated,
        "best": outcome.best.config.key(),
        "model_sha": __import__("hashlib").sha256(outcome.model.model.SerializeToString()).hexdigest(),
    }))


if __name__ == "__main__":
    main()
