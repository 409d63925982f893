"""Built-in datasets, transforms and the DataLoader (built from a YAML section by :func:`lpot_ir.config.create_dataloader`)."""

from __future__ import annotations

from lpot_ir.data.dataloader import DataLoader, LastBatch, collate
from lpot_ir.data.datasets import (
    DATASETS,
    DummyDataset,
    ImageFolder,
    NumpyDataset,
    TransformedDataset,
    create_dataset,
    register_dataset,
)
from lpot_ir.data.transforms import (
    POSTPROCESSES,
    TRANSFORMS,
    Cast,
    CenterCrop,
    Compose,
    LabelShift,
    Normalize,
    RandomCrop,
    Rescale,
    Reshape,
    Resize,
    ToArray,
    Transpose,
    create_postprocess,
    create_transform,
    register_postprocess,
    register_transform,
)

__all__ = [
    "DATASETS",
    "POSTPROCESSES",
    "TRANSFORMS",
    "Cast",
    "CenterCrop",
    "Compose",
    "DataLoader",
    "DummyDataset",
    "ImageFolder",
    "LabelShift",
    "LastBatch",
    "Normalize",
    "NumpyDataset",
    "RandomCrop",
    "Rescale",
    "Reshape",
    "Resize",
    "ToArray",
    "TransformedDataset",
    "Transpose",
    "collate",
    "create_dataset",
    "create_postprocess",
    "create_transform",
    "register_dataset",
    "register_postprocess",
    "register_transform",
]
