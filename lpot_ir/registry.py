"""The one duplicate-name policy of every registry (passes, rule sets, pipelines, strategies, metrics,
datasets, transforms, postprocesses).

A name is registered once. Registering it again raises :class:`DuplicateNameError` unless it is the same
definition again (the same or an equal object, or the same module and qualified name: a module imported
twice) or the caller passes ``replace=True``.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, TypeVar

from lpot_ir.errors import ConfigError

__all__ = ["DuplicateNameError", "add_to_registry"]

Name = TypeVar("Name", bound=str)  # a str, or a str enum (the annotators' op categories)


class DuplicateNameError(ConfigError, ValueError):
    """A name that is already registered to something else (pass ``replace=True`` to replace it)."""


def _origin(obj: Any) -> tuple[str, str] | None:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return (module, qualname) if module and qualname else None


def add_to_registry(registry: MutableMapping[Name, Any], name: Name, obj: Any, *, kind: str, replace: bool = False) -> None:
    """Register ``obj`` as ``name`` in ``registry`` under the one duplicate-name policy.

    Args:
        registry: the registry (name -> object).
        name: the name users write.
        obj: the class, factory or value.
        kind: what is registered, for the message (``"pass"``, ``"metric"``, ...).
        replace: replace a different object of that name.

    Raises:
        DuplicateNameError: the name is taken by another definition and ``replace`` is false.
    """
    if not name:
        raise ConfigError(f"A {kind} needs a non-empty name.")
    existing = registry.get(name)
    if existing is not None and existing is not obj and existing != obj and not replace:
        if _origin(existing) is None or _origin(existing) != _origin(obj):
            where = ".".join(_origin(existing) or ("", repr(existing))).strip(".")
            raise DuplicateNameError(
                f"A {kind} named {str(name)!r} is already registered ({where}). Pick another name, or pass "
                "replace=True to replace it."
            )
    registry[name] = obj
