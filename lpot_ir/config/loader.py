"""Load, validate and write the YAML configuration.

One generic validator walks the dataclasses of :mod:`lpot_ir.config.schema` by their type hints, so
the schema is written once. Every mistake becomes a :class:`~lpot_ir.errors.ConfigError` that names
the dotted path (``tuning.accuracy_criterion.relatve``), the file and line, and how to fix it: the
closest valid key for an unknown key, the expected type for a wrong type, the choices for a bad value.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lpot_ir.config.coerce import (
    KeyPath,
    LoadContext,
    build_section,
    describe_value,
    to_plain,
    validate_section,
)
from lpot_ir.config.schema import Config
from lpot_ir.errors import ConfigError, paragraph
from lpot_ir.fileio import atomic_write

__all__ = [
    "load_config",
    "validate_section",
    "to_plain",
    "save_config",
    "template_path",
    "load_template",
    "TEMPLATES",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

TEMPLATES = ("ptq", "qat", "pruning")

class _Loader(yaml.SafeLoader):
    """SafeLoader plus LPOT's ``!Pruner`` tag (read as a plain mapping)."""


def _construct_pruner(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)  # type: ignore[no-any-return]
    return {}


_Loader.add_constructor("!Pruner", _construct_pruner)


def _line_index(text: str) -> dict[KeyPath, int]:
    """1-based line of every key and list item in a YAML document, by key path."""
    index: dict[KeyPath, int] = {}

    def walk(node: yaml.Node, path: KeyPath) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                child = (*path, str(key_node.value))
                index[child] = key_node.start_mark.line + 1
                walk(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                child = (*path, i)
                index[child] = item.start_mark.line + 1
                walk(item, child)

    root = yaml.compose(text, Loader=_Loader)
    if root is not None:
        walk(root, ())
    return index


def _parse(text: str, source: str | None) -> tuple[Any, dict[KeyPath, int]]:
    where = f" {source}" if source else ""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        lines = _line_index(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = paragraph(exc.problem or exc.context or "invalid YAML")
        raise ConfigError(
            f"Cannot parse the YAML configuration{where}{at}: {problem}. Check the indentation, the ':' after "
            "each key and the quoting of values."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot parse the YAML configuration{where}: {paragraph(exc)}.") from None
    return data, lines


def load_config(source: str | os.PathLike[str] | Mapping[str, Any] | Config | None = None) -> Config:
    """Load and validate a configuration.

    Args:
        source: a YAML file path; YAML text (a ``str`` containing a newline); a mapping of the same
            structure; a :class:`Config` (returned as is); or ``None`` for all defaults.

    Returns:
        The typed configuration; every field not given has its default.

    Raises:
        ConfigError: the file is missing or not YAML, or the content does not fit the schema.
    """
    if isinstance(source, Config):
        return source
    ctx = LoadContext()
    if source is None:
        data: Any = {}
    elif isinstance(source, Mapping):
        data = source
    elif isinstance(source, str) and "\n" in source:
        data, ctx.lines = _parse(source, None)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        ctx.source = str(path)
        if not path.is_file():
            raise ConfigError(
                f"The configuration file '{path}' does not exist (or is not a file). Check the path, or start from "
                f"a template: {', '.join(str(template_path(t)) for t in TEMPLATES)}."
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Cannot read the configuration file '{path}': {exc}") from None
        data, ctx.lines = _parse(text, ctx.source)
    else:
        raise ConfigError(
            f"A configuration is a YAML file path, YAML text, a dict or a Config; got {type(source).__name__}."
        )
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"The configuration{ctx.where(())} must be a mapping of sections (model, quantization, evaluation, "
            f"tuning, ...), got {describe_value(data)}."
        )
    return build_section(Config, data, (), ctx)


def save_config(config: Config, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML to ``path`` atomically (a temporary file in the same folder, then rename)."""
    return atomic_write(path, config.to_yaml())


def template_path(name: str) -> Path:
    """The path of a shipped template: ``ptq``, ``qat`` or ``pruning``."""
    if name not in TEMPLATES:
        raise ConfigError(f"Unknown template '{name}'; the templates are {', '.join(TEMPLATES)}.")
    return Path(str(importlib.resources.files("lpot_ir.config") / "templates" / f"{name}.yaml"))


def load_template(name: str) -> Config:
    """Load a shipped template (``ptq``, ``qat`` or ``pruning``) as a :class:`Config`."""
    return load_config(template_path(name))
