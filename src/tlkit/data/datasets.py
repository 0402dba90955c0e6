"""torch Datasets over a split: each item is (input, target), inputs decoded only when asked for."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from tlkit.backbones.base import ImagePreprocessing, Preprocessing, TextPreprocessing
from tlkit.data.answers import DOC_STRIDE, WindowDataset
from tlkit.data.collate import load_tokenizer
from tlkit.data.transforms import ImageTransform
from tlkit.data.types import LabelledData, Task, TextPair
from tlkit.errors import UserError


def targets_tensor(targets: np.ndarray, task: Task) -> torch.Tensor:
    """Targets in the dtype each task's loss takes: class indices (long) for single-label,
    multi-hot floats for multi-label (BCE), floats for regression."""
    if task == "single_label":
        return torch.as_tensor(targets, dtype=torch.long)
    return torch.as_tensor(targets, dtype=torch.float32)


class ImageDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Images decoded and transformed per item, so a folder of thousands costs nothing up front."""

    def __init__(self, data: LabelledData, transform: ImageTransform) -> None:
        if data.modality != "image":
            raise ValueError(f"ImageDataset needs image data, got {data.modality}")
        self.inputs = data.inputs
        self.targets = targets_tensor(data.targets, data.task)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.inputs[index]), self.targets[index]  # type: ignore[arg-type]


class TextDataset(Dataset[tuple[str | TextPair, torch.Tensor]]):
    """Raw strings or sentence pairs; tokenizing happens per batch in the collate, where padding
    can be per batch."""

    def __init__(self, data: LabelledData) -> None:
        if data.modality != "text":
            raise ValueError(f"TextDataset needs text data, got {data.modality}")
        self.inputs: list[str | TextPair] = [
            (str(t[0]), str(t[1])) if isinstance(t, tuple) else str(t) for t in data.inputs]
        self.targets = targets_tensor(data.targets, data.task)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[str | TextPair, torch.Tensor]:
        return self.inputs[index], self.targets[index]


class TokenDataset(Dataset[tuple[list[str], torch.Tensor]]):
    """Sentences as word lists with each word's tag index; the collate tokenizes them into
    sub-words and lays out one row per word (``tlkit.token_rows``)."""

    def __init__(self, data: LabelledData) -> None:
        self.inputs: list[list[str]] = [[str(w) for w in words]  # type: ignore[union-attr]
                                        for words in data.inputs]
        self.targets = [torch.as_tensor(np.asarray(t, dtype=np.int64)) for t in data.targets]

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[list[str], torch.Tensor]:
        return self.inputs[index], self.targets[index]


def build_dataset(data: LabelledData, prep: Preprocessing, augment: str = "none", *,
                  doc_stride: int = DOC_STRIDE
                  ) -> ImageDataset | TextDataset | TokenDataset | WindowDataset:
    """The Dataset for ``data`` as a backbone with preprocessing ``prep`` (already resolved with
    the config's overrides) reads it; question answering's windows share ``doc_stride``
    tokens."""
    if data.modality != prep.kind:
        raise UserError(
            f"data set {data.name!r} holds {data.modality} but the backbone takes {prep.kind}s; "
            f"choose a {data.modality} backbone (transfer_config.source_model) or a {prep.kind} data set."
        )
    if isinstance(prep, ImagePreprocessing):
        return ImageDataset(data, ImageTransform(prep, augment))
    if data.task == "token_classification":
        return TokenDataset(data)
    if data.task == "question_answering":
        assert isinstance(prep, TextPreprocessing)
        return WindowDataset(data, load_tokenizer(prep.tokenizer), prep.max_length, doc_stride)
    return TextDataset(data)
