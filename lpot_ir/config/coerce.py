"""Coercing plain data (YAML, dicts) into the schema's dataclasses, and back: the loader's core.

Kept apart from :mod:`lpot_ir.config.loader` (files, YAML, templates) so that the schema can coerce
its own fields in ``__post_init__`` without importing the loader: the schema imports this module, this
module imports nothing of the schema (it reads each dataclass's type hints).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, Union

from lpot_ir.errors import ConfigError

__all__ = [
    "KeyPath",
    "LoadContext",
    "SectionError",
    "build_section",
    "coerce_fields",
    "describe_value",
    "to_plain",
    "validate_section",
]

T = TypeVar("T")

KeyPath = tuple[str | int, ...]


class SectionError(ConfigError):
    """A cross-field rule of one section failed; the loader adds the section's path and line.

    Attributes:
        section: the dataclass name.
        detail: what is wrong and how to fix it.
    """

    def __init__(self, section: str, detail: str) -> None:
        super().__init__(f"{section}: {detail}")
        self.section = section
        self.detail = detail


@dataclass
class LoadContext:
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


def describe_value(value: Any) -> str:
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


def _wrong_type(value: Any, tp: Any, path: KeyPath, ctx: LoadContext) -> ConfigError:
    return ConfigError(
        f"Wrong type at {_dotted(path)}{ctx.where(path)}: expected {_type_name(tp)}, got {describe_value(value)}. "
        "Fix the value in the configuration."
    )


_INT = re.compile(r"[-+]?\d+")


def _coerce(value: Any, tp: Any, path: KeyPath, ctx: LoadContext) -> Any:
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
        return build_section(tp, value, path, ctx)  # type: ignore[arg-type]
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


def _coerce_enum(value: Any, tp: type[enum.Enum], path: KeyPath, ctx: LoadContext) -> enum.Enum:
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


def build_section(cls: type[T], data: Mapping[Any, Any], path: KeyPath, ctx: LoadContext) -> T:
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
    ctx = LoadContext()
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
    return _coerce(data, cls, key_path, LoadContext(source))  # type: ignore[no-any-return]


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


