"""Extractive question answering as data: questions (``tlkit.qa.squad.QAExample``) as rows to
split, and as the windows a model reads (``tlkit.qa.windows``), one training example per window.

A question is one row of ``LabelledData`` (its targets are zeros: each example holds its own
answers), so that the splits, ``data.limit`` and the overlap checks take whole questions; only
the dataset cuts them into windows, where every window of a question stays in its split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tlkit.data.types import LabelledData
from tlkit.qa.scoring import answer_scores, per_question
from tlkit.qa.squad import QAExample
from tlkit.qa.windows import Windows, encode_windows

# the HF recipe's default stride, where a saved model predates data.doc_stride
DOC_STRIDE = 128
_TENSORS = ("input_ids", "attention_mask", "token_type_ids")


def doc_stride_of(meta: dict[str, Any]) -> int:
    """The context tokens a saved question-answering model's windows share (its run's
    data.doc_stride, in model.json)."""
    return int((meta.get("qa") or {}).get("doc_stride", DOC_STRIDE))


def answers_data(name: str, examples: Sequence[QAExample]) -> LabelledData:
    """Questions as data to split, one row each."""
    return LabelledData(name=name, modality="text", task="question_answering",
                        inputs=list(examples), targets=np.zeros(len(examples), np.int64),
                        classes=None)


class WindowDataset(Dataset[tuple[dict[str, torch.Tensor], torch.Tensor]]):
    """The windows of a split's questions (``encode_windows``, padded to ``max_length``; the
    collate cuts a batch to its longest window): each item is a window's token tensors and its
    target, the answer's first and last token (the CLS token where the window does not hold
    the answer). ``examples`` and ``windows`` stay with it, so that its outputs can be scored
    per question (``score``)."""

    def __init__(self, data: LabelledData, tokenizer: Any, max_length: int,
                 doc_stride: int = DOC_STRIDE) -> None:
        self.examples: list[QAExample] = [x for x in data.inputs if isinstance(x, QAExample)]
        if len(self.examples) != len(data.inputs):
            raise ValueError("WindowDataset needs question-answering data (QAExample inputs)")
        self.windows: Windows = encode_windows(self.examples, tokenizer, max_length=max_length,
                                               stride=doc_stride)
        names = [k for k in _TENSORS if k in self.windows]
        # int32: the full SQuAD training set's windows in a few hundred MB
        self.tensors = {k: torch.tensor(self.windows[k],  # type: ignore[literal-required]
                                        dtype=torch.int32).reshape(-1, max_length)
                        for k in names}
        self.targets = torch.tensor(list(zip(self.windows["start_positions"],
                                             self.windows["end_positions"], strict=True)),
                                    dtype=torch.long).reshape(-1, 2)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}, self.targets[index]

    def lengths(self) -> list[int]:
        """Each window's real tokens (for batches of like length)."""
        return self.tensors["attention_mask"].sum(dim=1).tolist()

    def score(self, outputs: np.ndarray) -> dict[str, float]:
        """Exact match and F1 of the (windows, tokens, 2) start / end logits, per question."""
        return answer_scores(self.examples, self.windows, outputs)

    def per_question(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each question's exact match and F1 (0..1, in the questions' order)."""
        return per_question(self.examples, self.windows, outputs)
