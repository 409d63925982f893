"""tuning.workers / threads_per_worker / distributed and exit_policy.eval_timeout, in YAML and in the API."""

from __future__ import annotations

import pytest

from lpot_ir.config import DistributedBackend, load_config
from lpot_ir.errors import ConfigError
from lpot_ir.quantization import Quantization
from lpot_ir.tuning.executors import ships_evaluation, where_evaluations_run


def test_defaults_evaluate_in_the_tuning_process():
    tuning = load_config({}).tuning
    assert tuning.workers is None and tuning.distributed is None and tuning.threads_per_worker == 1
    assert tuning.exit_policy.eval_timeout == 0
    assert not ships_evaluation(tuning)
    assert not ships_evaluation(load_config({"tuning": {"workers": 1}}).tuning)


def test_yaml_chooses_local_workers_or_ray():
    text = """
tuning:
  workers: 3
  threads_per_worker: 2
  exit_policy: {eval_timeout: 90}
  distributed: {backend: ray, address: "10.0.0.5:6379"}
"""
    tuning = load_config(text).tuning
    assert tuning.workers == 3 and tuning.threads_per_worker == 2 and tuning.exit_policy.eval_timeout == 90
    assert tuning.distributed.backend is DistributedBackend.RAY and tuning.distributed.address == "10.0.0.5:6379"
    assert ships_evaluation(tuning) and where_evaluations_run(tuning) == "tuning.distributed.backend: ray"
    local = load_config({"tuning": {"workers": 2}}).tuning
    assert ships_evaluation(local) and where_evaluations_run(local) == "tuning.workers: 2"


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ({"workers": 0}, "workers must be at least 1"),
        ({"threads_per_worker": 0}, "threads_per_worker must be at least 1"),
        ({"exit_policy": {"eval_timeout": -1}}, "eval_timeout must be 0"),
        ({"distributed": {"backend": "dask"}}, "choose one of ray"),
        ({"distributed": {"address": "head-node"}}, "address must be 'auto', 'host:port'"),
        ({"distributed": {"address": "head:99999"}}, "address must be 'auto', 'host:port'"),
    ],
)
def test_bad_settings_are_one_paragraph_errors(tuning, message):
    with pytest.raises(ConfigError, match=message):
        load_config({"tuning": tuning})


def test_quantization_api_chooses_where_evaluations_run():
    quantizer = Quantization({"tuning": {"random_seed": 7}})
    quantizer.evaluate_on(4, threads_per_worker=2)
    tuning = quantizer.conf.tuning
    assert (tuning.workers, tuning.threads_per_worker, tuning.distributed, tuning.random_seed) == (4, 2, None, 7)
    quantizer.evaluate_on(distributed={"backend": "ray", "address": "auto"})
    assert quantizer.conf.tuning.distributed.address == "auto" and quantizer.conf.tuning.workers is None
    quantizer.evaluate_on()
    assert not ships_evaluation(quantizer.conf.tuning)
    with pytest.raises(ConfigError, match="address must be"):
        quantizer.evaluate_on(distributed={"address": "nowhere"})
