"""docs/configuration.md names every schema field (the built-in components are in docs/catalogue.md,
checked by tests/test_catalogue_doc.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lpot_ir.config import schema

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_field_is_documented() -> None:
    text = DOC.read_text()
    missing = []
    for name in schema.__all__:
        cls = getattr(schema, name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or cls is schema.FrameworkTarget:
            continue
        for f in dataclasses.fields(cls):
            if f.name != getattr(cls, "_extra_field", None) and f"`{f.name}`" not in text:
                missing.append(f"{name}.{f.name}")
    missing += [f"framework {m.value}" for m in schema.Framework if f"`{m.value}`" not in text]
    assert not missing, f"docs/configuration.md does not mention: {missing}"
