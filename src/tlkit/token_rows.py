"""Token classification's rows: one per word, so that the loss, the metrics and calibration
read a batch of sentences as they read a batch of single-label examples.

A batch of sentences becomes one row per word. The head scores the word's first sub-word
(the usual convention: a word split into several sub-words takes its label on the first, the
others are left out of the loss). Each row's target is three integers:

- ``TAG``: the word's tag (an index into the classes: ``O``, ``B-TYPE``, ``I-TYPE``);
- ``KEPT``: 1 when the word is inside the model's input, 0 when ``max_length`` cut it off (or
  the tokenizer gave it no sub-word): such a word is out of the loss and predicted ``O``;
- ``START``: 1 on the first word of each sentence, so that rows can be regrouped into
  sentences for entity-level metrics after any number of batches are joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

TAG, KEPT, START = 0, 1, 2
OUTSIDE = "O"


class TokenLoss(nn.Module):
    """Cross-entropy over the words inside the input (``KEPT``), optionally class-weighted;
    ``reduction="none"`` gives one value per row (0 for a word cut off)."""

    def __init__(self, reduction: str = "mean", weight: Sequence[float] | None = None) -> None:
        super().__init__()
        self.reduction = reduction
        self.ce = nn.CrossEntropyLoss(
            reduction="none",
            weight=None if weight is None else torch.tensor(list(weight), dtype=torch.float32))

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        kept = targets[:, KEPT].to(outputs.dtype)
        each = self.ce(outputs, targets[:, TAG]) * kept
        if self.reduction == "none":
            return each
        w = kept if self.ce.weight is None else self.ce.weight[targets[:, TAG]] * kept
        return each.sum() / w.sum().clamp(min=1e-12)


def predicted(outputs: np.ndarray, targets: np.ndarray, classes: list[str] | None = None
              ) -> np.ndarray:
    """Each row's predicted tag index: the argmax, and ``O`` for a word cut off (``O`` is
    the first class unless ``classes`` say otherwise; tlkit.data.tokens.tag_set puts it first)."""
    pred = outputs.argmax(axis=1)
    outside = classes.index(OUTSIDE) if classes and OUTSIDE in classes else 0
    return np.where(targets[:, KEPT] > 0, pred, outside)


def sentence_bounds(targets: np.ndarray) -> list[tuple[int, int]]:
    """(first row, end row) of each sentence."""
    starts = np.flatnonzero(targets[:, START]).tolist()
    return list(zip(starts, [*starts[1:], len(targets)], strict=True))


def kept_rows(outputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows of words inside the input as single-label outputs and class indices (for
    calibration and the temperature, per token)."""
    kept = targets[:, KEPT] > 0
    return outputs[kept], targets[kept, TAG].astype(np.int64)


def word_scores(outputs: np.ndarray, targets: np.ndarray, classes: list[str] | None = None
                ) -> np.ndarray:
    """Each word's score, 1 when its predicted tag is right (the verdict's per-example score;
    its mean is token accuracy)."""
    return (predicted(outputs, targets, classes) == targets[:, TAG]).astype(np.float64)


def token_metrics(outputs: np.ndarray, targets: np.ndarray, classes: list[str] | None
                  ) -> dict[str, Any]:
    """Entity-level precision, recall and F1 (seqeval, micro over the entities; an entity
    counts when its type and its span are both exact), macro-F1 over the entity types, each
    type's figures, and token accuracy over every word."""
    from seqeval.metrics import classification_report

    names = list(classes or [])
    pred = predicted(outputs, targets, names)
    gold_tags = [names[t] for t in targets[:, TAG]]
    pred_tags = [names[t] for t in pred]
    bounds = sentence_bounds(targets)
    gold = [gold_tags[a:b] for a, b in bounds]
    guess = [pred_tags[a:b] for a, b in bounds]
    types = sorted({n[2:] for n in names if n != OUTSIDE})
    report = classification_report(gold, guess, output_dict=True, zero_division=0) \
        if bounds else {}
    micro = report.get("micro avg", {})
    per_type = {t: {"precision": float(report.get(t, {}).get("precision", 0.0)),
                    "recall": float(report.get(t, {}).get("recall", 0.0)),
                    "f1": float(report.get(t, {}).get("f1-score", 0.0)),
                    "support": int(report.get(t, {}).get("support", 0))} for t in types}
    present = [v["f1"] for v in per_type.values() if v["support"] > 0]
    return {
        "entity_f1": float(micro.get("f1-score", 0.0)),
        "entity_precision": float(micro.get("precision", 0.0)),
        "entity_recall": float(micro.get("recall", 0.0)),
        "f1_macro": float(np.mean(present)) if present else 0.0,
        "token_accuracy": float((pred == targets[:, TAG]).mean()) if len(pred) else 0.0,
        "words": int(len(targets)),
        "words_cut": int((targets[:, KEPT] == 0).sum()),
        "per_type": per_type,
    }
