"""Batching: stack image tensors; tokenize texts per batch, padded to the batch's longest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tlkit.backbones.base import ImagePreprocessing, Preprocessing, TextPreprocessing
from tlkit.data.types import is_pair
from tlkit.errors import UserError

# Tokenizers without a known limit report a huge sentinel (int(1e30)); only smaller ones are real.
_NO_LIMIT = 1_000_000


class ImageCollate:
    """[(image 3xHxW, target)] -> (images Bx3xHxW, targets)."""

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = zip(*batch, strict=True)
        return torch.stack(images), torch.stack(targets)


class TextCollate:
    """[(text or (text, text_pair), target)] -> ({"input_ids", "attention_mask", ...}, targets).

    Pads to the longest text of the batch, not to max_length: short texts then cost short
    batches (with per-batch padding a fine-tuning batch of snippets is mostly real tokens).
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and limit < _NO_LIMIT and max_length > limit:
            raise UserError(
                f"data.max_length {max_length} exceeds the {limit} tokens this backbone's tokenizer "
                f"allows; set data.max_length to at most {limit}."
            )
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, batch: list[tuple[Any, torch.Tensor]]
                 ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        texts, targets = zip(*batch, strict=True)
        encoded = tokenize(self.tokenizer, list(texts), self.max_length, padding="longest",
                           return_tensors="pt")
        return dict(encoded), torch.stack(targets)


def tokenize(tokenizer: Any, texts: Sequence[Any], max_length: int, **kwargs: Any) -> Any:
    """The tokenizer over texts, or over sentence pairs as pairs (segment ids where the model
    has them; truncation takes from the longer text first), cut to ``max_length`` tokens."""
    if texts and is_pair(texts[0]):
        return tokenizer([t[0] for t in texts], [t[1] for t in texts], truncation=True,
                         max_length=max_length, **kwargs)
    return tokenizer([str(t) for t in texts], truncation=True, max_length=max_length, **kwargs)


def load_tokenizer(folder: str) -> Any:
    """The tokenizer saved in ``folder`` (offline: it never reaches for a hub)."""
    from transformers import AutoTokenizer

    if not folder or not Path(folder).is_dir():
        raise UserError(
            f"tokenizer folder {folder!r} does not exist; reinstall the backbone's package "
            "or point the backbone at a folder holding its tokenizer files."
        )
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise UserError(
            f"cannot load a tokenizer from {folder} ({error}); check the folder's tokenizer files."
        ) from error


def build_collate(prep: Preprocessing) -> ImageCollate | TextCollate:
    """The collate for a backbone's (resolved) preprocessing; loads the tokenizer for text."""
    if isinstance(prep, ImagePreprocessing):
        return ImageCollate()
    assert isinstance(prep, TextPreprocessing)
    return TextCollate(load_tokenizer(prep.tokenizer), prep.max_length)
