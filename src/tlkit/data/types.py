"""The shapes that flow through the data part: what a source yields and what it is asked for."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np

from tlkit.qa.squad import QAExample

Task: TypeAlias = Literal["single_label", "multi_label", "regression", "token_classification",
                          "question_answering"]
Modality: TypeAlias = Literal["text", "image"]
# An image is a file path (decoded lazily) or a uint8 array, grey HxW or HxWx3.
ImageInput: TypeAlias = Path | np.ndarray
# A sentence pair (entailment, paraphrase): two texts the tokenizer encodes as one sequence.
TextPair: TypeAlias = tuple[str, str]
# A sentence of a token-classification set: its words (a list, never a tuple: a tuple is a pair).
Words: TypeAlias = list[str]
# Extractive question answering: a question, its context and gold answers (tlkit.qa.squad).
Input: TypeAlias = str | TextPair | Words | Path | np.ndarray | QAExample
# How a sentence pair is written as one string (predict's command line, a model card's example).
PAIR_SEPARATOR = " ||| "
# The second text's column where a pair set names none (a packaged one): the tokenizer's name.
DEFAULT_PAIR_COLUMN = "text_pair"


def is_pair(item: object) -> bool:
    """Whether an input is a sentence pair."""
    return isinstance(item, tuple) and len(item) == 2


def split_pair(text: str) -> TextPair:
    """A pair written as one string, ``first ||| second``, as its two texts."""
    first, sep, second = text.partition(PAIR_SEPARATOR.strip())
    if not sep:
        raise ValueError(f"no {PAIR_SEPARATOR.strip()!r} between the two texts")
    return first.strip(), second.strip()


class DataSettings(Protocol):
    """The attributes of the config's ``data`` section that the data part reads.

    ``tlkit.config.DataConfig`` meets it; tests pass a ``types.SimpleNamespace``.
    """

    source: str
    task: Task
    text_column: str | None
    image_column: str | None
    label_column: str | None
    limit: int | None
    val_fraction: float
    test_fraction: float
    seed: int
    image_size: int | None
    max_length: int | None
    on_bad_image: Literal["skip", "error"]
    label_separator: str
    # Optional (read with getattr, default None): a table column naming each example's subgroup,
    # and the user's own validation and test sources (data.validation, data.test).
    group_column: str | None
    # Optional (getattr, default None): the column of each example's second text (pairs).
    text_pair_column: str | None


@dataclass
class LabelledData:
    """Inputs with their targets, in one modality, ready to split.

    ``targets`` is int64 class indices (single_label), float32 multi-hot of shape
    (n, len(classes)) (multi_label), float32 values (regression, ``classes`` is None), or an
    object array of each sentence's int64 tag indices (token_classification: ``inputs`` are
    word lists, ``classes`` the tags), or zeros (question_answering: ``inputs`` are
    ``QAExample`` records, which hold their answers; ``classes`` is None).
    ``test`` is the set's own test split where it ships one, or the user's (``data.test``);
    ``val`` likewise the set's own validation split or the user's (``data.validation``).
    ``skipped`` counts the inputs dropped as unreadable (``skipped_files`` names them) so a run
    can report it. ``groups`` names each example's subgroup (strings, from
    ``data.group_column``) where the source has one.
    """

    name: str
    modality: Modality
    task: Task
    inputs: list[Input]
    targets: np.ndarray
    classes: list[str] | None
    test: LabelledData | None = None
    val: LabelledData | None = None
    skipped: int = 0
    skipped_files: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None
    # rows left out for having no label (data.unlabelled: drop), counted for summary.json
    unlabelled: int = 0

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.targets):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.targets)} targets")
        if self.groups is not None and len(self.groups) != len(self.inputs):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.groups)} groups")

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        """Width of the head this data needs: one per class, or one value for regression."""
        return 1 if self.classes is None else len(self.classes)

    def subset(self, indices: Sequence[int] | np.ndarray, name: str | None = None) -> LabelledData:
        """The rows at ``indices`` with their groups (same classes, no test split, no skip count
        of its own)."""
        idx = np.asarray(indices, dtype=np.int64)
        return LabelledData(
            name=name or self.name,
            modality=self.modality,
            task=self.task,
            inputs=[self.inputs[i] for i in idx],
            targets=self.targets[idx],
            classes=self.classes,
            groups=None if self.groups is None else self.groups[idx],
        )

    def class_counts(self) -> dict[str, int]:
        """Examples per class (multi-label: per label); empty for regression."""
        if self.classes is None:
            return {}
        if self.task == "multi_label":
            counts = self.targets.sum(axis=0).astype(np.int64) if len(self) else np.zeros(len(self.classes), np.int64)
        elif self.task == "token_classification":  # words per tag
            counts = np.bincount(np.concatenate([*self.targets, np.zeros(0, np.int64)]),
                                 minlength=len(self.classes))
        else:
            counts = np.bincount(self.targets, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}


class Examples(Protocol):
    """What the loop, the evaluation and the features read examples from: a list, a torch
    Dataset (anything with a length and an index)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


def num_outputs_of(data: LabelledData) -> int:
    """Width of the head for loaded data: one output per class, or per regression target."""
    if data.task == "regression":
        return 1 if data.targets.ndim == 1 else int(data.targets.shape[1])
    if data.task == "question_answering":
        return 2  # a start and an end logit per token
    return len(data.classes or [])
