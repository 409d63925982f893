"""The YAML loader: LPOT spellings, defaults, typed objects and the error messages."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from lpot_ir.config import (
    AccuracyCriterion,
    CalibrationSection,
    Config,
    DataLoaderSection,
    Framework,
    FrameworkTarget,
    ModelSection,
    Objective,
    QuantizationSection,
    TensorWise,
    TuningSection,
    framework_target,
    load_config,
    save_config,
    to_plain,
    validate_section,
)
from lpot_ir.data import LastBatch
from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import Approach, CalibAlgorithm, DType, Granularity, QuantFormat, Scheme


def write(tmp_path: Path, text: str, name: str = "conf.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


LPOT_YAML = """
version: 1.0
model:
  name: mobilenet
  framework: onnxrt_qlinearops
  inputs: input_1, input_2
quantization:
  approach: post_training_static_quant
  calibration:
    sampling_size: 50, 100
    dataloader:
      batch_size: 2
      dataset:
        dummy:
          shape: [8, 3, 4, 4]
      transform:
        Rescale:
        Transpose: {perm: [0, 2, 1]}
  model_wise:
    weight:
      granularity: per_channel
      scheme: asym
      dtype: int8
      algorithm: minmax
    activation:
      dtype: uint8, fp32
      algorithm: [minmax, kl]
  op_wise: {
    'conv1': {'activation': {'dtype': ['fp32']}, 'weight': {'dtype': ['fp32']}},
    'layer1.0.conv2': {'activation': {'dtype': ['uint8'], 'scheme': ['sym']}}
  }
evaluation:
  accuracy:
    metric:
      topk: 1
    dataloader:
      batch_size: 4
      dataset:
        dummy: {shape: [8, 3, 4, 4], label: True}
    postprocess:
      transform:
        LabelShift: {label_shift: 1}
  performance:
    warmup: 2
    iteration: 10
    configs:
      cores_per_instance: 2
      num_of_instance: 1
tuning:
  strategy:
    name: mse
    confidence_batches: 2
  accuracy_criterion:
    absolute: 0.02
    higher_is_better: False
  multi_objectives:
    objective: [performance, modelsize]
    weight: [0.8, 0.2]
  exit_policy: {timeout: 30, max_trials: 7}
  random_seed: 9527
  workspace: {path: ./ws, resume: ./ws/history.json}
"""


def test_lpot_spellings_become_typed_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LPOT_YAML))
    assert config.model.framework is Framework.ONNXRT_QLINEAROPS
    assert config.model.inputs == ("input_1", "input_2")
    quant = config.quantization
    assert quant.approach is Approach.STATIC
    assert quant.format is QuantFormat.QOPERATOR  # implied by onnxrt_qlinearops
    assert quant.calibration.sampling_size == (50, 100)
    assert quant.calibration.dataloader is not None
    assert quant.calibration.dataloader.transform == {"Rescale": None, "Transpose": {"perm": [0, 2, 1]}}
    assert quant.model_wise.weight == TensorWise(
        dtype=(DType.INT8,),
        scheme=(Scheme.ASYM,),
        granularity=(Granularity.PER_CHANNEL,),
        algorithm=(CalibAlgorithm.MINMAX,),
    )
    assert quant.model_wise.activation.dtype == (DType.UINT8, DType.FP32)
    assert quant.model_wise.activation.algorithm == (CalibAlgorithm.MINMAX, CalibAlgorithm.KL)
    assert quant.model_wise.activation.scheme == ()  # unconstrained
    assert quant.op_wise["conv1"].fp32
    assert not quant.op_wise["layer1.0.conv2"].fp32
    assert quant.op_wise["layer1.0.conv2"].activation.scheme == (Scheme.SYM,)
    accuracy = config.evaluation.accuracy
    assert accuracy is not None and accuracy.metric == {"topk": 1}
    assert accuracy.postprocess is not None and accuracy.postprocess.transform == {
        "LabelShift": {"label_shift": 1}
    }
    assert config.evaluation.performance is not None
    assert config.evaluation.performance.configs.cores_per_instance == 2
    tuning = config.tuning
    assert tuning.strategy.name == "mse" and tuning.strategy.options == {"confidence_batches": 2}
    assert tuning.accuracy_criterion == AccuracyCriterion(absolute=0.02, higher_is_better=False)
    assert tuning.objectives == ((Objective.PERFORMANCE, 0.8), (Objective.MODELSIZE, pytest.approx(0.2)))
    assert (tuning.exit_policy.timeout, tuning.exit_policy.max_trials) == (30, 7)
    assert tuning.random_seed == 9527
    assert tuning.workspace.path == "./ws" and tuning.workspace.resume == "./ws/history.json"


def test_round_trip_through_yaml_and_dict(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, LPOT_YAML))
    assert load_config(config.to_yaml()) == config
    assert load_config(config.to_dict()) == config
    saved = save_config(config, tmp_path / "out" / "saved.yaml")
    assert load_config(saved) == config
    assert [p.name for p in saved.parent.iterdir()] == ["saved.yaml"]  # no temporary file left


def test_every_default() -> None:
    config = load_config({})
    assert config == Config() == load_config(None)
    assert to_plain(config) == {
        "version": 1.0,
        "model": {"name": "default_model_name", "inputs": [], "outputs": [], "batch_axes": {}},
        "device": "cpu",
        "quantization": {
            "approach": "post_training_static_quant",
            "format": "qdq",
            "calibration": {"sampling_size": [100]},
            "recipes": {
                "smooth_quant": False,
                "smooth_quant_args": {"alpha": [0.7, 0.5, 0.8]},
                "cross_layer_equalization": False,
                "bias_correction": False,
                "weight_rounding": "nearest",
                "range_search": False,
                "recovery_args": {
                    "samples": 32,
                    "adaround_iterations": 300,
                    "adaround_seconds": 30.0,
                    "adaround_layer_seconds": 3.0,
                    "range_search_margin": 0.02,
                },
            },
            "model_wise": {
                "weight": {"dtype": [], "scheme": [], "granularity": [], "algorithm": []},
                "activation": {"dtype": [], "scheme": [], "granularity": [], "algorithm": []},
            },
            "op_wise": {},
            "optype_wise": {},
        },
        "evaluation": {},
        "tuning": {
            "strategy": {"name": "basic"},
            "accuracy_criterion": {"relative": 0.01, "higher_is_better": True},
            "objective": ["performance"],
            "exit_policy": {"timeout": 0, "max_trials": 100, "performance_only": False, "eval_timeout": 0.0},
            "random_seed": 1978,
            "tensorboard": False,
            "workspace": {"path": "./lpot_workspace"},
            "threads_per_worker": 1,
        },
    }
    assert config.model.framework is None
    assert config.pruning is None
    assert config.tuning.objectives == ((Objective.PERFORMANCE, 1.0),)
    section = validate_section(DataLoaderSection, {"dataset": {"dummy": {"shape": [2, 3]}}})
    assert (section.batch_size, section.last_batch, section.shuffle, section.seed, section.transform) == (
        1,
        LastBatch.KEEP,
        False,
        None,
        {},
    )


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("onnxrt_qlinearops", FrameworkTarget("onnx", QuantFormat.QOPERATOR, None)),
        ("onnxrt_qlinear", FrameworkTarget("onnx", QuantFormat.QOPERATOR, None)),
        ("onnxrt_qdq", FrameworkTarget("onnx", QuantFormat.QDQ, None)),
        ("onnxrt_integerops", FrameworkTarget("onnx", QuantFormat.QOPERATOR, Approach.DYNAMIC)),
        ("onnxrt_integer", FrameworkTarget("onnx", QuantFormat.QOPERATOR, Approach.DYNAMIC)),
        ("onnx", FrameworkTarget("onnx")),
        ("pytorch", FrameworkTarget("pytorch")),
        ("tensorflow", FrameworkTarget("tensorflow")),
        ("mxnet", FrameworkTarget("mxnet")),
    ],
)
def test_lpot_framework_names(name: str, target: FrameworkTarget) -> None:
    assert framework_target(name) == target
    config = load_config({"model": {"framework": name}})
    assert config.quantization.approach is (target.approach or Approach.STATIC)
    assert config.quantization.format is (target.format or QuantFormat.QDQ)


def test_framework_contradiction_is_an_error() -> None:
    with pytest.raises(
        ConfigError, match=r"onnxrt_integerops.*post_training_dynamic_quant.*post_training_static_quant"
    ):
        load_config(
            {
                "model": {"framework": "onnxrt_integerops"},
                "quantization": {"approach": "post_training_static_quant"},
            }
        )
    with pytest.raises(ConfigError, match="qoperator"):
        Config(
            model=ModelSection(framework=Framework.ONNXRT_QLINEAROPS),
            quantization=QuantizationSection(format=QuantFormat.QDQ),
        )
    assert framework_target(None) is None


def test_unknown_nested_key_names_path_suggestion_file_and_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        tuning:
          accuracy_criterion:
            relatve: 0.01
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "tuning.accuracy_criterion.relatve" in message
    assert "Did you mean 'relative'?" in message
    assert str(path) in message and "(line 3)" in message


def test_unknown_top_level_and_op_wise_keys() -> None:
    with pytest.raises(ConfigError, match=r"'quantisation'.*Did you mean 'quantization'"):
        load_config({"quantisation": {}})
    with pytest.raises(
        ConfigError, match=r"quantization\.op_wise\['layer1\.conv'\]\.activation\.dtpye.*'dtype'"
    ):
        load_config({"quantization": {"op_wise": {"layer1.conv": {"activation": {"dtpye": "fp32"}}}}})


def test_wrong_type_names_expected_type_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "tuning:\n  exit_policy:\n    max_trials: many\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "tuning.exit_policy.max_trials" in message
    assert "expected an integer" in message and "'many'" in message and "(line 3)" in message
    with pytest.raises(ConfigError, match=r"tuning\.tensorboard.*expected a boolean"):
        load_config({"tuning": {"tensorboard": "yes"}})
    with pytest.raises(
        ConfigError, match=r"quantization\.calibration\.sampling_size\[1\].*expected an integer"
    ):
        load_config({"quantization": {"calibration": {"sampling_size": [10, "x"]}}})
    with pytest.raises(ConfigError, match=r"tuning\.strategy.*expected a mapping"):
        load_config({"tuning": {"strategy": "basic"}})


def test_invalid_enum_value_lists_choices() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"quantization": {"approach": "post_training_static"}})
    message = str(info.value)
    assert "quantization.approach" in message
    assert "post_training_static_quant, post_training_dynamic_quant, quant_aware_training" in message
    assert "Did you mean 'post_training_static_quant'?" in message
    with pytest.raises(ConfigError, match=r"model_wise\.weight\.dtype\[1\].*int8, uint8, fp32"):
        load_config({"quantization": {"model_wise": {"weight": {"dtype": ["int8", "int4"]}}}})
    with pytest.raises(ConfigError, match="performance, modelsize, footprint"):
        load_config({"tuning": {"objective": "speed"}})


def test_yaml_parse_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: x\n   framework: onnx\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "line 3" in str(info.value)
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_config(write(tmp_path, "- a\n- b\n", "list.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_cross_field_rules() -> None:
    with pytest.raises(ConfigError, match=r"tuning\.accuracy_criterion.*relative or absolute, not both"):
        load_config({"tuning": {"accuracy_criterion": {"relative": 0.01, "absolute": 0.1}}})
    with pytest.raises(ConfigError, match=r"multi_objectives.*1 weights for 2 objectives"):
        load_config(
            {"tuning": {"multi_objectives": {"objective": ["performance", "modelsize"], "weight": [1.0]}}}
        )
    with pytest.raises(ConfigError, match="version 2.0 is not supported"):
        load_config({"version": 2})
    with pytest.raises(
        ConfigError, match=r"Missing key 'dataset' at evaluation\.accuracy\.dataloader\.dataset"
    ):
        load_config({"evaluation": {"accuracy": {"dataloader": {"batch_size": 2}}}})
    with pytest.raises(ConfigError, match="max_trials must be at least 1"):
        load_config({"tuning": {"exit_policy": {"max_trials": 0}}})


def test_unknown_dataset_transform_metric_names_and_parameters() -> None:
    def dataloader(**kw: object) -> dict:
        return {"evaluation": {"accuracy": {"dataloader": {"dataset": {"dummy": {"shape": [2, 3]}}, **kw}}}}

    with pytest.raises(
        ConfigError, match=r"evaluation\.accuracy\.dataloader.*unknown dataset 'dumy'.*Did you mean 'dummy'"
    ):
        load_config({"evaluation": {"accuracy": {"dataloader": {"dataset": {"dumy": {}}}}}})
    with pytest.raises(ConfigError, match=r"unknown transform 'Resise'.*Did you mean 'Resize'"):
        load_config(dataloader(transform={"Resise": {"size": 2}}))
    with pytest.raises(ConfigError, match=r"transform 'Resize' has no parameter 'sise'.*Did you mean 'size'"):
        load_config(dataloader(transform={"Resize": {"sise": 2}}))
    with pytest.raises(
        ConfigError, match=r"evaluation\.accuracy.*unknown metric 'top_k'.*Did you mean 'topk'"
    ):
        load_config({"evaluation": {"accuracy": {"metric": {"top_k": 1}}}})
    with pytest.raises(ConfigError, match="exactly one key"):
        load_config({"evaluation": {"accuracy": {"metric": {"topk": 1, "Accuracy": None}}}})


def test_percent_and_numeric_strings() -> None:
    config = load_config({"tuning": {"accuracy_criterion": {"relative": "2%"}}})
    assert config.tuning.accuracy_criterion.relative == pytest.approx(0.02)
    config = load_config(
        {"tuning": {"accuracy_criterion": {"absolute": "1e-3"}}}
    )  # YAML 1.1 reads 1e-3 as a string
    assert config.tuning.accuracy_criterion.absolute == pytest.approx(0.001)


def test_objective_list_form_and_pruner_tag(tmp_path: Path) -> None:
    config = load_config({"tuning": {"objective": ["performance", "footprint"], "objective_weight": [3, 1]}})
    assert config.tuning.objectives == ((Objective.PERFORMANCE, 0.75), (Objective.FOOTPRINT, 0.25))
    path = write(
        tmp_path,
        """
        pruning:
          approach:
            weight_compression:
              initial_sparsity: 0.0
              target_sparsity: 0.3
              pruners:
                - !Pruner
                    target_sparsity: 0.9
                    names: ['layer1.0.conv1.weight']
                    start_epoch: 0
                    end_epoch: 2
        """,
    )
    config = load_config(path)
    assert config.pruning is not None
    compression = config.pruning.approach.weight_compression
    assert compression.target_sparsity == 0.3 and compression.end_epoch == 4
    (pruner,) = compression.pruners
    assert (
        pruner.target_sparsity == 0.9
        and pruner.names == ("layer1.0.conv1.weight",)
        and pruner.initial_sparsity is None
    )
    assert load_config(config.to_yaml()) == config
    with pytest.raises(
        ConfigError, match=r"pruning\.approach\.weight_compression.*initial_sparsity \(0.5\) is above"
    ):
        load_config(
            {
                "pruning": {
                    "approach": {"weight_compression": {"initial_sparsity": 0.5, "target_sparsity": 0.2}}
                }
            }
        )


def test_python_objects_are_the_same_configuration() -> None:
    built = Config(
        model=ModelSection(name="m", framework=Framework.ONNXRT_INTEGEROPS),
        quantization=QuantizationSection(calibration=CalibrationSection(sampling_size=(10, 20))),
        tuning=TuningSection(
            accuracy_criterion=AccuracyCriterion(relative=0.02), objective=(Objective.MODELSIZE,)
        ),
    )
    assert built.quantization.approach is Approach.DYNAMIC
    loaded = load_config(
        {
            "model": {"name": "m", "framework": "onnxrt_integerops"},
            "quantization": {"calibration": {"sampling_size": [10, 20]}},
            "tuning": {"accuracy_criterion": {"relative": 0.02}, "objective": "modelsize"},
        }
    )
    assert built == loaded
    assert load_config(built) is built
    assert dataclasses.replace(built.tuning, random_seed=1).random_seed == 1
    with pytest.raises(ConfigError, match="AccuracyCriterion: give either relative or absolute"):
        AccuracyCriterion(relative=0.1, absolute=0.1)


def test_accuracy_criterion_decisions() -> None:
    relative = AccuracyCriterion(relative=0.01)
    assert relative.is_met(0.80, 0.793) and not relative.is_met(0.80, 0.791)
    assert relative.threshold(0.80) == pytest.approx(0.792)
    absolute = AccuracyCriterion(absolute=0.05, higher_is_better=False)  # a loss: may rise by 0.05
    assert absolute.is_met(1.0, 1.04) and not absolute.is_met(1.0, 1.06)
    assert absolute.tolerance == 0.05


def test_real_lpot_test_yaml_loads() -> None:
    """A configuration as LPOT's own ONNX Runtime tests write it."""
    config = load_config(
        textwrap.dedent(
            """
            model:
              name: imagenet
              framework: onnxrt_qdqops
            quantization:
              approach: post_training_static_quant
              calibration:
                sampling_size: 50
              op_wise: {
                'Gather_*': {
                'activation':  {'dtype': ['fp32'], 'scheme':['sym']},
                'weight': {'dtype': ['fp32'], 'scheme':['sym']}
                }
              }
            evaluation:
              accuracy:
                metric:
                  MSE:
                    compare_label: False
            tuning:
              accuracy_criterion:
                relative:  -0.01
                higher_is_better: False
              exit_policy:
                timeout: 0
              random_seed: 9527
              workspace:
                path: ./nc_workspace/recover/
            """
        )
    )
    assert config.model.framework is Framework.ONNXRT_QDQ
    assert config.quantization.op_wise["Gather_*"].fp32
    assert config.tuning.accuracy_criterion.relative == -0.01
    assert config.tuning.accuracy_criterion.is_met(1.0, 0.98) and not config.tuning.accuracy_criterion.is_met(
        1.0, 0.995
    )


def test_python_construction_coerces_like_the_loader() -> None:
    wise = TensorWise(dtype="int8", algorithm="minmax, kl")
    assert wise.dtype == (DType.INT8,) and wise.algorithm == (CalibAlgorithm.MINMAX, CalibAlgorithm.KL)
    quant = QuantizationSection(calibration={"sampling_size": 5}, approach="post_training_dynamic_quant")
    assert quant.calibration == CalibrationSection(sampling_size=(5,)) and quant.approach is Approach.DYNAMIC
    config = Config(model={"framework": "onnxrt_integerops"})
    assert (
        config.model.framework is Framework.ONNXRT_INTEGEROPS
        and config.quantization.approach is Approach.DYNAMIC
    )
    with pytest.raises(ConfigError, match=r"TensorWise\.dtype\[0\].*choose one of int8, uint8, fp32"):
        TensorWise(dtype="int4")
    with pytest.raises(ConfigError, match=r"TuningSection\.exit_policy\.max_trials: expected an integer"):
        TuningSection(exit_policy={"max_trials": 2.5})
