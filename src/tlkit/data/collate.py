"""Batching: stack image tensors; tokenize texts per batch, padded to the batch's longest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tlkit.backbones.base import ImagePreprocessing, Preprocessing, TextPreprocessing
from tlkit.data.types import is_pair
from tlkit.errors import UserError

# What the loop, evaluation and the activation cache call to batch examples: [(input, target)] ->
# (inputs, targets). ImageCollate and TextCollate are the two kinds.
Collate = Callable[[list[Any]], tuple[Any, torch.Tensor]]

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
        if texts and isinstance(texts[0], dict):  # question answering's windows, tokenized
            return _windows(self.tokenizer, texts, targets)
        encoded = tokenize(self.tokenizer, list(texts), self.max_length, padding="longest",
                           return_tensors="pt")
        if texts and isinstance(texts[0], list):  # sentences of words: one row per word
            return _word_rows(encoded, texts, targets)
        return dict(encoded), torch.stack(targets)


def _word_rows(encoded: Any, sentences: Sequence[list[str]], tags: Sequence[torch.Tensor]
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Token classification: the inputs gain ``word_positions``, each word's first sub-word as
    an index into the flattened (batch x sequence) positions (-1 for a word the truncation cut
    off or the tokenizer dropped), and the targets are one row per word (``tlkit.token_rows``:
    tag, kept, sentence start)."""
    length = encoded["input_ids"].shape[1]
    positions: list[int] = []
    rows: list[tuple[int, int, int]] = []
    for b, (words, sentence_tags) in enumerate(zip(sentences, tags, strict=True)):
        first: dict[int, int] = {}
        for t, word in enumerate(encoded.word_ids(b)):
            if word is not None and word not in first:
                first[word] = t
        for i, tag in enumerate(sentence_tags.tolist()):
            at = first.get(i)
            positions.append(-1 if at is None else b * length + at)
            rows.append((int(tag), int(at is not None), int(i == 0)))
    out = dict(encoded)
    out["word_positions"] = torch.tensor(positions, dtype=torch.long)
    return out, torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


def _windows(tokenizer: Any, windows: Sequence[dict[str, torch.Tensor]],
             targets: Sequence[torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Question answering: windows already tokenized (``tlkit.data.answers``), stacked and cut
    to the batch's longest (right padding only: a start / end target counts from the left);
    the targets are (start, end) token rows."""
    out = {k: torch.stack([w[k] for w in windows]).long() for k in windows[0]}
    if getattr(tokenizer, "padding_side", "right") == "right":
        longest = int(out["attention_mask"].sum(dim=1).max())
        out = {k: v[:, :max(longest, 1)] for k, v in out.items()}
    return out, torch.stack(list(targets))


def tokenize(tokenizer: Any, texts: Sequence[Any], max_length: int, **kwargs: Any) -> Any:
    """The tokenizer over texts, over sentence pairs as pairs (segment ids where the model
    has them; truncation takes from the longer text first), or over sentences given as word
    lists (``is_split_into_words``), cut to ``max_length`` tokens."""
    if texts and isinstance(texts[0], list):
        if not getattr(tokenizer, "is_fast", False):
            raise UserError("token classification needs a fast tokenizer (it maps sub-words "
                            "back to words); use a backbone whose folder has tokenizer.json")
        return tokenizer([list(t) for t in texts], is_split_into_words=True, truncation=True,
                         max_length=max_length, **kwargs)
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
