"""Data: sources (packaged sets, folders, tables), splits, transforms, datasets and collates.

The names below load on first use, so that ``tlkit datasets`` (which needs only the packaged
sets' metadata) does not pay for importing torch, pandas and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tlkit.data.collate import ImageCollate, TextCollate, build_collate, load_tokenizer
    from tlkit.data.datasets import ImageDataset, TextDataset, build_dataset, targets_tensor
    from tlkit.data.packaged import PackagedInfo, list_packaged
    from tlkit.data.sources import has_test_split, load_source, num_outputs, resolve_source
    from tlkit.data.splits import Splits, make_splits
    from tlkit.data.transforms import ImageTransform, resolve_preprocessing
    from tlkit.data.types import DataSettings, LabelledData, Modality, Task, num_outputs_of

_HOMES = {
    "ImageCollate": "collate",
    "TextCollate": "collate",
    "build_collate": "collate",
    "load_tokenizer": "collate",
    "ImageDataset": "datasets",
    "TextDataset": "datasets",
    "build_dataset": "datasets",
    "targets_tensor": "datasets",
    "PackagedInfo": "packaged",
    "list_packaged": "packaged",
    "has_test_split": "sources",
    "load_source": "sources",
    "num_outputs": "sources",
    "resolve_source": "sources",
    "Splits": "splits",
    "make_splits": "splits",
    "ImageTransform": "transforms",
    "resolve_preprocessing": "transforms",
    "DataSettings": "types",
    "LabelledData": "types",
    "Modality": "types",
    "Task": "types",
    "num_outputs_of": "types",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'tlkit.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"tlkit.data.{_HOMES[name]}"), name)
