"""A model's start / end logits over the windows of some questions, scored per question: the
answers ``best_spans`` picks across every window of a question, measured by SQuAD's official
exact match and F1 (``squad_scores``). What a fit's validation and test metrics are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tlkit.qa.metric import question_scores, squad_scores
from tlkit.qa.spans import SpanPrediction, best_spans
from tlkit.qa.squad import QAExample
from tlkit.qa.windows import Windows

MAX_ANSWER_LENGTH = 30  # tokens: the reference post-processing's default


def answers_of(examples: Sequence[QAExample], windows: Windows, outputs: Any,
               max_answer_length: int = MAX_ANSWER_LENGTH) -> list[SpanPrediction]:
    """Each question's best span from ``outputs``, (windows, tokens, 2): the start logits
    then the end logits of each token (a model's per-token head of two outputs)."""
    logits = np.asarray(outputs, dtype=np.float64)
    if logits.ndim != 3 or logits.shape[-1] != 2:
        raise ValueError(f"question answering's outputs are (windows, tokens, 2), not "
                         f"{logits.shape}")
    # SQuAD v2.0-style data (a question marked unanswerable): the empty answer where the
    # null score (the CLS token's) beats every span
    return best_spans(examples, windows, logits[..., 0], logits[..., 1],
                      max_answer_length=max_answer_length,
                      version_2=any(e.impossible for e in examples))


def answer_scores(examples: Sequence[QAExample], windows: Windows, outputs: Any
                  ) -> dict[str, float]:
    """``exact_match`` and ``f1`` (percentages, SQuAD v1.1's rules; v2.0's where a question
    is unanswerable) of the best spans, and the count of ``questions``."""
    if not examples:
        return {"exact_match": float("nan"), "f1": float("nan"), "questions": 0}
    chosen = answers_of(examples, windows, outputs)
    scores = squad_scores(examples, {p.id: p.text for p in chosen})
    return {"exact_match": scores["exact_match"], "f1": scores["f1"],
            "questions": int(scores["total"])}


def per_question(examples: Sequence[QAExample], windows: Windows, outputs: Any
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each question's exact match and F1 (0..1, in ``examples``' order) of the best spans:
    the per-example scores a paired comparison of two models resamples."""
    chosen = answers_of(examples, windows, outputs)
    em, f1 = question_scores(examples, {p.id: p.text for p in chosen})
    return (np.array([em[e.id] for e in examples], np.float64),
            np.array([f1[e.id] for e in examples], np.float64))
