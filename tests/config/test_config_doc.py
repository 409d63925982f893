"""docs/configuration.md names every schema field and every built-in component."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lpot_ir.config import schema
from lpot_ir.data import DATASETS, POSTPROCESSES, TRANSFORMS
from lpot_ir.metrics import METRICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_field_and_component_is_documented() -> None:
    text = DOC.read_text()
    missing = []
    for name in schema.__all__:
        cls = getattr(schema, name)
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)) or cls is schema.FrameworkTarget:
            continue
        for f in dataclasses.fields(cls):
            if f.name != getattr(cls, "_extra_field", None) and f"`{f.name}`" not in text:
                missing.append(f"{name}.{f.name}")
    for registry in (DATASETS, TRANSFORMS, POSTPROCESSES, METRICS):
        missing += [f"component {n}" for n in registry if f"`{n}`" not in text]
    missing += [f"framework {m.value}" for m in schema.Framework if f"`{m.value}`" not in text]
    assert not missing, f"docs/configuration.md does not mention: {missing}"
