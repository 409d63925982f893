"""Load, validate and write the YAML configuration.

One generic validator walks the dataclasses of :mod:`lpot_ir.config.schema` by their type hints, so
the schema is written once. Every mistake becomes a :class:`~lpot_ir.errors.ConfigError` that names
the dotted path (``tuning.accuracy_criterion.relatve``), the file and line, and how to fix it: the
closest valid key for an unknown key, the expected type for a wrong type, the choices for a bad value.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import importlib.resources
import logging
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from lpot_ir.config.schema import Config, SectionError
from lpot_ir.errors import ConfigError

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

KeyPath = tuple[str | int, ...]


class _Loader(yaml.SafeLoader):
    """SafeLoader plus LPOT's ``!Pruner`` tag (read as a plain mapping)."""


def _construct_pruner(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)  # type: ignore[no-any-return]
    return {}


_Loader.add_constructor("!Pruner", _construct_pruner)


@dataclass
class _Context:
    source: str | None = None
    lines: dict[KeyPath, int] = dataclasses.field(default_factory=dict)

    def where(self, path: KeyPath) -> str:
        """`` in file.yaml (line 12)`` for messages, as much as is known."""
        line = None
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                break
        parts = []
        if self.source:
            parts.append(f"in {self.source}")
        if line is not None:
            parts.append(f"(line {line})")
        return (" " + " ".join(parts)) if parts else ""


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            text += f".{part}" if text else part
        else:
            text += f"[{part!r}]"
    return text or "the top level"


def _describe(value: Any) -> str:
    kind = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    name = kind.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{name} {shown if len(shown) <= 60 else shown[:57] + '...'}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        inner = _type_name(typing.get_args(tp)[0])
        return f"{inner}, or a list of them" if inner.startswith("one of") else f"{inner} or a list of them"
    if origin is dict:
        return "a mapping"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return f"a mapping (the {tp.__name__} section)"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(m.value for m in tp)
    return {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string"}.get(
        tp, str(tp)
    )


def _wrong_type(value: Any, tp: Any, path: KeyPath, ctx: _Context) -> ConfigError:
    return ConfigError(
        f"Wrong type at {_dotted(path)}{ctx.where(path)}: expected {_type_name(tp)}, got {_describe(value)}. "
        "Fix the value in the configuration."
    )


_INT = re.compile(r"[-+]?\d+")


def _coerce(value: Any, tp: Any, path: KeyPath, ctx: _Context) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:
            return _coerce(value, options[0], path, ctx)
        for option in options:
            try:
                return _coerce(value, option, path, ctx)
            except ConfigError:
                continue
        raise _wrong_type(value, tp, path, ctx)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise _wrong_type(value, tp, path, ctx)
        return _build(tp, value, path, ctx)  # type: ignore[arg-type]
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _coerce_enum(value, tp, path, ctx)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _wrong_type(value, tp, path, ctx)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value.strip())
        raise _wrong_type(value, tp, path, ctx)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return float(text[:-1]) / 100 if text.endswith("%") else float(text)
            except ValueError:
                pass
        raise _wrong_type(value, tp, path, ctx)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _wrong_type(value, tp, path, ctx)
    if origin is tuple:
        element = args[0]
        if value is None:
            items: list[Any] = []
        elif isinstance(value, (list, tuple)):
            items = list(value)
        elif isinstance(value, str) and "," in value:
            items = [part.strip() for part in value.split(",") if part.strip()]
        elif isinstance(value, Mapping):
            raise _wrong_type(value, tp, path, ctx)
        else:
            items = [value]
        return tuple(_coerce(item, element, (*path, i), ctx) for i, item in enumerate(items))
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise _wrong_type(value, tp, path, ctx)
        value_type = args[1]
        return {str(k): _coerce(v, value_type, (*path, str(k)), ctx) for k, v in value.items()}
    raise TypeError(f"lpot_ir.config: unsupported schema type {tp!r} at {_dotted(path)}")  # a schema bug


def _coerce_enum(value: Any, tp: type[enum.Enum], path: KeyPath, ctx: _Context) -> enum.Enum:
    if isinstance(value, tp):
        return value
    if isinstance(value, str):
        for candidate in (value, value.strip(), value.strip().lower()):
            try:
                return tp(candidate)
            except ValueError:
                continue
        choices = [str(m.value) for m in tp]
        close = difflib.get_close_matches(value.strip().lower(), choices, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(
            f"Invalid value {value!r} at {_dotted(path)}{ctx.where(path)}: choose one of {', '.join(choices)}.{hint}"
        )
    raise _wrong_type(value, tp, path, ctx)


def _build(cls: type[T], data: Mapping[Any, Any], path: KeyPath, ctx: _Context) -> T:
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    names = [f.name for f in fields]
    extra_field: str | None = getattr(cls, "_extra_field", None)
    kwargs: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key)
        if extra_field is not None and name == extra_field and isinstance(value, Mapping):
            extras.update({str(k): v for k, v in value.items()})
        elif name in names and name != extra_field:
            kwargs[name] = _coerce(value, hints[name], (*path, name), ctx)
        elif extra_field is not None:
            extras[name] = value
        else:
            valid = [n for n in names if n != extra_field]
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"Unknown key '{name}' at {_dotted((*path, name))}{ctx.where((*path, name))}.{hint} "
                f"Valid keys here: {', '.join(valid)}."
            )
    if extra_field is not None:
        kwargs[extra_field] = extras
    for f in fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise ConfigError(
                f"Missing key '{f.name}' at {_dotted((*path, f.name))}{ctx.where(path)}: {_dotted(path)} needs it "
                f"({_type_name(hints[f.name])})."
            )
    try:
        return cls(**kwargs)
    except SectionError as exc:
        raise ConfigError(f"Invalid {_dotted(path)}{ctx.where(path)}: {exc.detail}") from None
    except ConfigError as exc:
        raise ConfigError(f"Invalid {_dotted(path)}{ctx.where(path)}: {exc}") from None


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints(cls)``, computed once per class."""
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def coerce_fields(section: Any) -> None:
    """Coerce a schema dataclass's field values in place, as the loader would (used by ``__post_init__``).

    Raises:
        ConfigError: a value of the wrong type, e.g. ``TensorWise(dtype="int4")``.
    """
    hints = _hints(type(section))
    ctx = _Context()
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        coerced = _coerce(value, hints[f.name], (type(section).__name__, f.name), ctx)
        if coerced is not value:
            object.__setattr__(section, f.name, coerced)


def validate_section(cls: type[T], data: Any, *, path: str = "", source: str | None = None) -> T:
    """Validate plain data against one schema dataclass and build it.

    Args:
        cls: a dataclass of :mod:`lpot_ir.config.schema` (e.g. ``DataLoaderSection``).
        data: a mapping (or already an instance of ``cls``, returned as is).
        path: the dotted path of the section, for messages.
        source: a file name, for messages.

    Raises:
        ConfigError: the data does not fit the schema.
    """
    key_path: KeyPath = tuple(p for p in path.split(".") if p) if path else ()
    return _coerce(data, cls, key_path, _Context(source))  # type: ignore[no-any-return]


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
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            f"Cannot parse the YAML configuration{where}{at}: {problem}. Check the indentation, the ':' after "
            "each key and the quoting of values."
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"Cannot parse the YAML configuration{where}: {exc}") from None
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
    ctx = _Context()
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
            f"tuning, ...), got {_describe(data)}."
        )
    return _build(Config, data, (), ctx)


def to_plain(obj: Any) -> Any:
    """Turn a schema object into YAML/JSON data (enums -> values, tuples -> lists; ``None`` defaults omitted)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        extra_field = getattr(type(obj), "_extra_field", None)
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.name == extra_field:
                out.update(to_plain(value))
            elif value is None and f.default is None:
                continue
            else:
                out[f.name] = to_plain(value)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "item") and callable(obj.item) and not isinstance(obj, (str, bytes)):
        return obj.item()  # numpy scalars
    return obj


def save_config(config: Config, path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as YAML to ``path`` atomically (a temporary file in the same folder, then rename)."""
    from lpot_ir.fileio import atomic_write

    return atomic_write(path, config.to_yaml())


def template_path(name: str) -> Path:
    """The path of a shipped template: ``ptq``, ``qat`` or ``pruning``."""
    if name not in TEMPLATES:
        raise ConfigError(f"Unknown template '{name}'; the templates are {', '.join(TEMPLATES)}.")
    return Path(str(importlib.resources.files("lpot_ir.config") / "templates" / f"{name}.yaml"))


def load_template(name: str) -> Config:
    """Load a shipped template (``ptq``, ``qat`` or ``pruning``) as a :class:`Config`."""
    return load_config(template_path(name))
