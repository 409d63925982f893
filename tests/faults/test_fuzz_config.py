"""Fuzzing the YAML configuration: random and mutated documents, wrong keys, types and enum values at every
depth. A document either loads (and then round-trips, passes the strategy checks or fails them with a
ConfigError, and its dataloader sections build or fail with an LpotError) or fails with one ConfigError
paragraph; through ``lpot`` it is exit 2 with one error line and no output written.

The mutations start from the complete documents of the three templates and the usage example (every schema
field at every depth, from ``Config.to_yaml``)."""

from __future__ import annotations

import copy
import string
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from lpot_ir.commands.quantize import load_tuning_config
from lpot_ir.config import TEMPLATES, create_dataloader, load_config, load_template
from lpot_ir.errors import ConfigError, LpotError
from lpot_ir.ir.quant import TuningConfig
from lpot_ir.tuning.checks import check_tuning_config
from tests.faults.fuzzing import assert_one_paragraph, fuzz_settings, run_cli_expecting_error

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "usage_yaml_only" / "conf.yaml"


def _bases() -> list[dict[str, Any]]:
    configs = [load_template(name) for name in TEMPLATES] + [load_config(EXAMPLE)]
    return [yaml.safe_load(config.to_yaml()) for config in configs]


BASES = _bases()


def _keys(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(k) for k in node] + [k for v in node.values() for k in _keys(v)]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


def _enums(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [e for v in node.values() for e in _enums(v)]
    if isinstance(node, list):
        return [e for v in node for e in _enums(v)]
    return [node] if isinstance(node, str) else []


VOCABULARY = sorted({k for base in BASES for k in _keys(base)})
WORDS = sorted({w for base in BASES for w in _enums(base)} | set(VOCABULARY))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=string.printable, max_size=12),
    st.sampled_from(WORDS),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=6)), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*prefix, key))
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((*prefix, i))
            out += _paths(value, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


def _typo(word: str, position: int, letter: str) -> str:
    word = str(word)
    if not word:
        return letter
    i = position % len(word)
    return word[:i] + word[i + 1:] if len(word) > 3 and position % 2 else word[:i] + letter + word[i:]


def _mutate(doc: Any, path: tuple, kind: str, value: Any, position: int = 1, letter: str = "x") -> Any:
    doc = copy.deepcopy(doc)
    parent = _parent(doc, path)
    last = path[-1]
    if kind == "delete":
        del parent[last]
    elif kind == "rename" and isinstance(parent, dict):
        parent[_typo(last, position, letter)] = parent.pop(last)
    elif kind == "unknown key":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[_typo(str(value), position, letter) if isinstance(value, str) else f"extra_{letter}"] = value
    elif kind == "wrap":
        parent[last] = [parent[last]]
    else:  # "value"
        parent[last] = value
    return doc


def _check_document(doc: Any, *, as_text: bool = True, round_trip: bool = True) -> Any:
    """Load ``doc`` as a mapping and (``as_text``) as YAML text; return the Config, or None when it failed
    cleanly."""
    text = None
    if as_text:
        try:
            text = yaml.safe_dump(doc, allow_unicode=True)
        except yaml.YAMLError:  # not representable as YAML: only the mapping path applies
            pass
    results = []
    for source in ([text] if text is not None and "\n" in text else []) + [doc]:
        try:
            results.append(load_config(source))
        except LpotError as exc:
            assert isinstance(exc, ConfigError), exc
            assert_one_paragraph(exc)
            results.append(None)
    if len(results) == 2:
        assert (results[0] is None) == (results[1] is None), f"text and mapping disagree on {doc!r}"
    config = results[-1]
    if config is None:
        return None
    # what loads, saves and loads back the same (C parser for speed; the loader's own parser is tested above)
    assert not round_trip or load_config(yaml.load(config.to_yaml(), Loader=yaml.CSafeLoader)) == config
    try:
        check_tuning_config(config)
    except LpotError as exc:
        assert_one_paragraph(exc)
    for section in _dataloader_sections(config):
        try:
            create_dataloader(section)
        except LpotError as exc:
            assert_one_paragraph(exc)
    return config


def _dataloader_sections(config: Any) -> list[Any]:
    found = []
    calibration = getattr(config.quantization, "calibration", None)
    if calibration is not None and getattr(calibration, "dataloader", None) is not None:
        found.append(calibration.dataloader)
    for part in ("accuracy", "performance"):
        section = getattr(config.evaluation, part, None)
        if section is not None and getattr(section, "dataloader", None) is not None:
            found.append(section.dataloader)
    return found


@pytest.mark.parametrize("base", [0, 2], ids=["ptq", "pruning"])  # together they hold every section
def test_every_key_at_every_depth_deleted_renamed_or_of_the_wrong_type(base):
    """Deterministic sweep: at every path of the document, delete it, misspell its key, and give it a value of
    each wrong kind (text, number, list, mapping, null)."""
    doc = BASES[base]
    wrong = ["not-a-valid-choice", -3, ["a", 1], {"nested": 1}, None]
    checked = failed = 0
    for path in _paths(doc):
        for kind, value in [("delete", None), ("rename", None), *[("value", w) for w in wrong]]:
            failed += _check_document(_mutate(doc, path, kind, value), as_text=False, round_trip=False) is None
            checked += 1
    assert checked > 300 and failed > checked // 4, (checked, failed)


@fuzz_settings(80)
@given(data=st.data())
def test_mutated_documents_load_or_fail_with_one_paragraph(data):
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 4))):
        paths = _paths(doc)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        kind = data.draw(st.sampled_from(["delete", "rename", "unknown key", "wrap", "value", "value"]))
        doc = _mutate(doc, path, kind, data.draw(values), data.draw(st.integers(0, 20)), data.draw(st.sampled_from("xqz_0")))
    _check_document(doc)


@fuzz_settings(60)
@given(doc=st.dictionaries(st.sampled_from(VOCABULARY + ["unknown"]), values, max_size=5))
def test_random_documents_load_or_fail_with_one_paragraph(doc):
    _check_document(doc)


@fuzz_settings(60)
@given(text=st.text(alphabet=string.printable + "\u00e9\u2603\t", max_size=200))
def test_random_text_loads_or_fails_with_one_paragraph(text):
    try:
        load_config(text + "\n")
    except LpotError as exc:
        assert_one_paragraph(exc)


@fuzz_settings(60)
@given(doc=st.dictionaries(st.sampled_from(sorted(TuningConfig().to_dict()) + ["unknown"]), values, max_size=4))
def test_tuning_config_documents_load_or_fail_with_one_paragraph(doc, tmp_path_factory):
    """The compile-style TuningConfig YAML (``lpot quantize -c``) has its own schema."""
    path = tmp_path_factory.mktemp("tc") / "tc.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        config = load_tuning_config(path)
    except LpotError as exc:
        assert_one_paragraph(exc)
    else:
        assert TuningConfig.from_json(config.to_json()) == config


def _tiny_model(path: Path) -> Path:
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], [weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@fuzz_settings(25)
@given(data=st.data())
def test_bad_documents_through_the_cli_exit_2_and_write_nothing(data, tmp_path_factory, capsys):
    folder = tmp_path_factory.mktemp("cli")
    model = _tiny_model(folder / "tiny.onnx")
    np.save(folder / "calib.npy", np.ones((4, 8), np.float32))
    doc = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    path = data.draw(st.sampled_from(_paths(doc)))
    kind = data.draw(st.sampled_from(["rename", "value", "unknown key"]))
    bad = _mutate(doc, path, kind, data.draw(st.sampled_from(["not-a-valid-choice", -3, ["a"], {"nested": 1}])))
    conf = folder / "conf.yaml"
    conf.write_text(yaml.safe_dump(bad))
    try:
        load_config(conf)
    except ConfigError:
        pass
    else:
        return  # still a valid document: covered by the properties above
    out = folder / "int8.onnx"
    run_cli_expecting_error(capsys, ["quantize", model, "-c", conf, "-o", out, "--calib", folder / "calib.npy"],
                            outputs=[out])
    run_cli_expecting_error(capsys, ["tune", conf, "-m", model, "-w", folder / "ws", "--no-progress"],
                            outputs=[folder / "ws" / "best_model.onnx"])
