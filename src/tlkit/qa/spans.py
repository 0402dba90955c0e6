"""From a model's start and end logits over the windows back to answer text: Hugging Face's
question-answering post-processing.

For each example, over all of its windows: the ``n_best`` highest start and end logits of each
window are paired; a pair is a candidate when both tokens are context tokens, start <= end and
the span is at most ``max_answer_length`` tokens. Candidates are ranked by start_logit +
end_logit; the best one gives the answer, ``context[char_start:char_end]``. For SQuAD v2.0 the
null score (the CLS token's start + end logit, the smallest over the example's windows) competes:
the answer is "" when the null score exceeds the best candidate's score plus ``null_threshold``.

One difference from the reference script: positions outside the context (question, special and
padding tokens) are masked before the top ``n_best`` are taken, so that they never crowd out a
window's context tokens; where the reference finds a candidate, the best one is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from tlkit.qa.squad import QAExample
from tlkit.qa.windows import Offset, Windows


@dataclass(frozen=True)
class SpanPrediction:
    """The answer chosen for one example.

    ``score`` is the logit sum start_logit + end_logit of what was chosen (the null score when
    the answer is ""); ``probability`` is its softmax probability among the candidates kept for
    the example (the ``n_best`` best spans, and for v2.0 the null answer), as the reference
    script reports it. ``start`` and ``end`` are the answer's characters in the context
    (``context[start:end] == text``), None when the answer is ""."""

    id: str
    text: str
    start: int | None
    end: int | None
    score: float
    probability: float
    null_score: float | None  # v2.0: the example's null score; None for v1.1


@dataclass(frozen=True)
class _Candidate:
    score: float
    start: int
    end: int


def best_spans(examples: Sequence[QAExample], windows: Windows, start_logits: ArrayLike,
               end_logits: ArrayLike, *, n_best: int = 20, max_answer_length: int = 30,
               version_2: bool = False, null_threshold: float = 0.0) -> list[SpanPrediction]:
    """One ``SpanPrediction`` per example (in order) from the (windows, tokens) start and end
    logits of ``windows`` (``encode_windows(examples, ...)``). ``version_2`` lets the null
    answer "" win (SQuAD v2.0); without it an example always gets its best span (or "" when
    no window has a valid one)."""
    starts = np.asarray(start_logits, dtype=np.float64)
    ends = np.asarray(end_logits, dtype=np.float64)
    count = len(windows["example_index"])
    if starts.ndim != 2 or starts.shape != ends.shape or starts.shape[0] != count:
        raise ValueError(f"start and end logits must both be (windows, tokens) = ({count}, "
                         f"...), not {starts.shape} and {ends.shape}")
    if n_best < 1 or max_answer_length < 1:
        raise ValueError(f"n_best ({n_best}) and max_answer_length ({max_answer_length}) must "
                         "be at least 1")
    if count and not 0 <= min(windows["example_index"]) <= max(windows["example_index"]) \
            < len(examples):
        raise ValueError(f"the windows come from more than the {len(examples)} examples given: "
                         "give best_spans the examples encode_windows was given")
    by_example: list[list[int]] = [[] for _ in examples]
    for w, e in enumerate(windows["example_index"]):
        by_example[e].append(w)
    predictions = []
    for example, owned in zip(examples, by_example, strict=True):
        candidates: list[_Candidate] = []
        null: float | None = None
        for w in owned:
            offsets = windows["offsets"][w]
            cls = windows["cls_index"][w]
            window_null = float(starts[w, cls] + ends[w, cls])
            null = window_null if null is None else min(null, window_null)
            candidates.extend(_window_candidates(starts[w], ends[w], offsets, n_best,
                                                 max_answer_length))
        candidates = sorted(candidates, key=lambda c: -c.score)[:n_best]
        predictions.append(_choose(example, candidates, null, version_2, null_threshold))
    return predictions


def _window_candidates(starts: np.ndarray, ends: np.ndarray, offsets: Sequence[Offset | None],
                       n_best: int, max_answer_length: int) -> list[_Candidate]:
    """The valid (start, end) pairs among the window's ``n_best`` best start and end tokens,
    as character spans of the context."""
    # unpadded windows are shorter than the logits (padded to the batch's longest)
    spans = (list(offsets) + [None] * len(starts))[:len(starts)]
    context = np.array([s is not None for s in spans])
    if not context.any():
        return []
    masked_starts = np.where(context, starts, -np.inf)
    masked_ends = np.where(context, ends, -np.inf)
    top = min(n_best, int(context.sum()))
    # a stable sort: ties go to the earlier token, whatever the platform
    best_starts = np.argsort(-masked_starts, kind="stable")[:top]
    best_ends = np.argsort(-masked_ends, kind="stable")[:top]
    found = []
    for s in best_starts:
        for e in best_ends:
            first, last = spans[s], spans[e]
            if first is None or last is None or e < s or e - s + 1 > max_answer_length:
                continue
            found.append(_Candidate(float(starts[s] + ends[e]), first[0], last[1]))
    return found


def _choose(example: QAExample, candidates: list[_Candidate], null: float | None,
            version_2: bool, null_threshold: float) -> SpanPrediction:
    """The best candidate, or "" where there is none or (v2.0) the null score wins."""
    scores = [c.score for c in candidates] + ([null] if version_2 and null is not None else [])
    probabilities = _softmax(np.asarray(scores)) if scores else np.zeros(0)
    null_wins = version_2 and null is not None and (
        not candidates or null > candidates[0].score + null_threshold)
    if null_wins or not candidates:
        return SpanPrediction(example.id, "", None, None,
                              float(null) if null_wins and null is not None else 0.0,
                              float(probabilities[-1]) if null_wins else 0.0,
                              null if version_2 else None)
    best = candidates[0]
    return SpanPrediction(example.id, example.context[best.start:best.end], best.start,
                          best.end, best.score, float(probabilities[0]),
                          null if version_2 else None)


def _softmax(scores: np.ndarray) -> np.ndarray:
    exp = np.exp(scores - scores.max())
    return np.asarray(exp / exp.sum())
