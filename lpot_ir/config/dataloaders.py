"""A :class:`~lpot_ir.data.DataLoader` from LPOT's YAML ``dataloader`` section.

In the config package, not in :mod:`lpot_ir.data`: it reads the configuration schema, and the schema
itself uses the data vocabulary (``LastBatch``, the dataset and transform registries), so ``data`` must
not import ``config``.
"""

from __future__ import annotations

from typing import Any

from lpot_ir.config.coerce import validate_section
from lpot_ir.config.schema import DataLoaderSection
from lpot_ir.data.dataloader import DataLoader
from lpot_ir.data.datasets import create_dataset
from lpot_ir.data.transforms import create_transform

__all__ = ["create_dataloader"]


def create_dataloader(section: Any, batch_size: int | None = None, framework: Any = None) -> DataLoader:
    """Build a :class:`DataLoader` from a YAML ``dataloader`` section (a dict or a DataLoaderSection).

    Example:
        ``create_dataloader({"batch_size": 2, "dataset": {"dummy": {"shape": [4, 3]}}})``

    Args:
        section: ``{batch_size, last_batch, shuffle, seed, dataset: {name: params}, transform: {name: params}}``.
        batch_size: overrides the section's batch size when given.
        framework: the model's framework (YAML ``model.framework``): picks the transforms' flavours
            (see :func:`lpot_ir.data.create_transform`).

    Raises:
        ConfigError: the section does not fit the schema (unknown key, dataset or transform).
        DataError: the data cannot be read.
    """
    if not isinstance(section, DataLoaderSection):
        section = validate_section(DataLoaderSection, section, path="dataloader")
    transform = create_transform(section.transform, framework) if section.transform else None
    dataset = create_dataset(section.dataset, transform)
    return DataLoader(
        dataset,
        batch_size=batch_size if batch_size is not None else section.batch_size,
        shuffle=section.shuffle,
        last_batch=section.last_batch,
        seed=section.seed,
    )
