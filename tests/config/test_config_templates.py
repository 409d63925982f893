"""The shipped templates load, round-trip, and comment every field."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

import pytest
import yaml

from lpot_ir.config import TEMPLATES, Config, load_config, load_template, template_path
from lpot_ir.config.loader import _line_index, _Loader
from lpot_ir.errors import ConfigError
from lpot_ir.ir.quant import Approach, DType, QuantFormat


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_loads_and_round_trips(name: str) -> None:
    config = load_template(name)
    assert load_config(config.to_yaml()) == config
    assert load_config(config.to_dict()) == config


def _schema_keys(tp: Any, data: Any, path: tuple, found: list[tuple[str, tuple]]) -> None:
    """(Class.field, key path) of every schema field written in ``data`` (free-form dicts are not entered)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            _schema_keys(options[0], data, path, found)
        return
    if dataclasses.is_dataclass(tp) and isinstance(data, dict):
        hints = typing.get_type_hints(tp)
        for key, value in data.items():
            if key in hints:
                found.append((f"{tp.__name__}.{key}", (*path, key)))
                _schema_keys(hints[key], value, (*path, key), found)
        return
    if origin is dict and isinstance(data, dict):
        value_type = typing.get_args(tp)[1]
        for key, value in data.items():
            _schema_keys(value_type, value, (*path, str(key)), found)
    if origin is tuple and isinstance(data, list):
        for i, value in enumerate(data):
            _schema_keys(typing.get_args(tp)[0], value, (*path, i), found)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_field_in_a_template_is_commented(name: str) -> None:
    text = template_path(name).read_text()
    lines = text.splitlines()
    found: list[tuple[str, tuple]] = []
    _schema_keys(Config, yaml.load(text, Loader=_Loader), (), found)
    index = _line_index(text)
    commented: dict[str, bool] = {}
    for field_name, path in found:
        commented[field_name] = commented.get(field_name, False) or "#" in lines[index[path] - 1]
    missing = sorted(f for f, ok in commented.items() if not ok)
    assert not missing, f"{name}.yaml: fields without a comment on any of their lines: {missing}"


def test_templates_together_show_every_field() -> None:
    text = "\n".join(template_path(name).read_text() for name in TEMPLATES)
    classes = [Config]
    seen: set[type] = set()
    absent = []
    while classes:
        cls = classes.pop()
        if cls in seen:
            continue
        seen.add(cls)
        for f in dataclasses.fields(cls):
            if f"{f.name}:" not in text and f.name != getattr(cls, "_extra_field", None):
                absent.append(f"{cls.__name__}.{f.name}")
            for arg in (
                typing.get_type_hints(cls)[f.name],
                *typing.get_args(typing.get_type_hints(cls)[f.name]),
            ):
                for inner in (arg, *typing.get_args(arg)):
                    if dataclasses.is_dataclass(inner):
                        classes.append(inner)
    assert not absent, f"fields no template shows: {absent}"


def test_template_contents() -> None:
    ptq = load_template("ptq")
    assert ptq.quantization.format is QuantFormat.QOPERATOR
    assert ptq.quantization.op_wise["conv1"].fp32
    assert ptq.evaluation.accuracy is not None and ptq.evaluation.accuracy.metric == {"topk": 1}
    qat = load_template("qat")
    assert qat.quantization.approach is Approach.QAT
    assert (
        qat.quantization.train is not None
        and qat.quantization.train.optimizer["SGD"]["learning_rate"] == 0.01
    )
    assert qat.quantization.op_wise["fc"].weight.dtype == (DType.FP32,)
    pruning = load_template("pruning")
    assert pruning.pruning is not None
    assert pruning.pruning.approach.weight_compression.pruners[0].names == ("layer1.0.conv1.weight",)
    with pytest.raises(ConfigError, match="ptq, qat, pruning"):
        template_path("int4")
