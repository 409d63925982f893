"""Built-in datasets, transforms and the DataLoader, created from LPOT's YAML form or from Python."""

from __future__ import annotations

from lpot_ir.data.dataloader import DataLoader, LastBatch, collate, create_dataloader
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
    "create_dataloader",
    "create_dataset",
    "create_postprocess",
    "create_transform",
    "register_dataset",
    "register_postprocess",
    "register_transform",
]
