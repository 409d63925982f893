"""Built-in datasets, transforms and the DataLoader (built from a YAML section by :func:`lpot_ir.config.create_dataloader`).

Every LPOT name is in :data:`DATASETS`, :data:`TRANSFORMS` (framework flavours in
:data:`TRANSFORM_FLAVOURS`) or :data:`POSTPROCESSES`; docs/catalogue.md lists them all.
"""

from __future__ import annotations

from lpot_ir.data import coco, image_transforms, imagenet_transforms, nlp, records, vision_datasets
from lpot_ir.data.dataloader import DataLoader, LastBatch, collate
from lpot_ir.data.datasets import (
    DATASETS,
    DummyDataset,
    DummyDatasetV2,
    ImageFolder,
    NumpyDataset,
    TransformedDataset,
    TransformedIterableDataset,
    create_dataset,
    register_dataset,
)
from lpot_ir.data.transforms import (
    FLAVOURS,
    POSTPROCESSES,
    TRANSFORM_FLAVOURS,
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
    SampleTransform,
    ToArray,
    Transpose,
    create_postprocess,
    create_transform,
    register_postprocess,
    register_transform,
    transform_flavour,
)

__all__ = [
    "DATASETS",
    "FLAVOURS",
    "POSTPROCESSES",
    "TRANSFORMS",
    "TRANSFORM_FLAVOURS",
    "Cast",
    "CenterCrop",
    "Compose",
    "DataLoader",
    "DummyDataset",
    "DummyDatasetV2",
    "ImageFolder",
    "LabelShift",
    "LastBatch",
    "Normalize",
    "NumpyDataset",
    "RandomCrop",
    "Rescale",
    "Reshape",
    "Resize",
    "SampleTransform",
    "ToArray",
    "TransformedDataset",
    "TransformedIterableDataset",
    "Transpose",
    "coco",
    "collate",
    "create_dataset",
    "create_postprocess",
    "create_transform",
    "image_transforms",
    "imagenet_transforms",
    "nlp",
    "records",
    "register_dataset",
    "register_postprocess",
    "register_transform",
    "transform_flavour",
    "vision_datasets",
]
