"""SQuAD's official evaluation: exact match and token F1, re-implemented to give the numbers of
the official scripts (``evaluate-v1.1.py``; ``evaluate-v2.0.py`` without a no-answer probability
file).

Both compare normalized answers (``normalize_answer``) and keep, per question, the best score
over its gold answers; the averages are percentages. They differ only where a text normalizes to
nothing: v2.0 drops such gold answers, gives an unanswerable question the single gold answer ""
and scores an empty prediction against an empty gold answer 1 (F1 too), where v1.1's F1 is 0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from tlkit.qa.squad import QAExample

_PUNCTUATION = frozenset(string.punctuation)  # ASCII punctuation only, as the official script
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case, ASCII punctuation removed, the articles a / an / the removed, white space
    runs made single spaces and the ends stripped: the official scripts' order of steps."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> float:
    """1.0 where the normalized texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1(prediction: str, truth: str, *, version_2: bool = False) -> float:
    """The F1 of the normalized texts' word multisets. With no word in common it is 0; where
    either side has no word at all v2.0 gives 1 if both are empty and 0 otherwise (v1.1: 0)."""
    predicted = normalize_answer(prediction).split()
    gold = normalize_answer(truth).split()
    if version_2 and (not predicted or not gold):
        return float(predicted == gold)
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def gold_answers(example: QAExample, *, version_2: bool) -> list[str]:
    """The texts a prediction is compared with: all gold answers (v1.1); v2.0 drops those that
    normalize to nothing and gives an unanswerable question [""]."""
    texts = [text for text, _ in example.answers]
    if not version_2:
        return texts
    return [t for t in texts if normalize_answer(t)] or [""]


def question_scores(examples: Sequence[QAExample], predictions: Mapping[str, str], *,
                    version_2: bool | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Each question's exact match and F1 (0 or 1, and 0..1: the best over its gold answers),
    by id: what ``squad_scores`` averages, and what a paired comparison of two models on the
    same questions resamples. ``version_2`` as ``squad_scores``; a question without a
    prediction scores 0."""
    if not examples:
        raise ValueError("squad_scores needs at least one example")
    v2 = any(e.impossible for e in examples) if version_2 is None else version_2
    if not v2 and any(e.impossible for e in examples):
        raise ValueError("unanswerable examples need version_2=True (SQuAD v2.0 scoring)")
    em_of: dict[str, float] = {}
    f1_of: dict[str, float] = {}
    for e in examples:
        if e.id not in predictions:
            em_of[e.id] = f1_of[e.id] = 0.0
            continue
        golds = gold_answers(e, version_2=v2)
        predicted = predictions[e.id]
        em_of[e.id] = _best(exact_match, predicted, golds)
        f1_of[e.id] = _best(lambda p, t: f1(p, t, version_2=v2), predicted, golds)
    return em_of, f1_of


def squad_scores(examples: Sequence[QAExample], predictions: Mapping[str, str], *,
                 version_2: bool | None = None) -> dict[str, float]:
    """Exact match and F1 (percentages, each the best over a question's gold answers, averaged
    over ``examples``) of ``predictions`` (id -> answer text, "" for no answer). ``version_2``
    defaults to whether any example is unanswerable; v2.0 adds the scores over the answerable
    (``has_answer_*``) and unanswerable (``no_answer_*``) questions, as the official script's
    HasAns / NoAns. A question without a prediction scores 0 (v1.1's rule) and is counted in
    ``missing``."""
    em_of, f1_of = question_scores(examples, predictions, version_2=version_2)
    v2 = any(e.impossible for e in examples) if version_2 is None else version_2
    scores = _averages(examples, em_of, f1_of, "")
    scores["missing"] = float(sum(e.id not in predictions for e in examples))
    if v2:
        for prefix, impossible in (("has_answer_", False), ("no_answer_", True)):
            part = [e for e in examples if e.impossible == impossible]
            if part:
                scores.update(_averages(part, em_of, f1_of, prefix))
    return scores


def _best(score: Callable[[str, str], float], prediction: str, golds: list[str]) -> float:
    return max(score(prediction, gold) for gold in golds)


def _averages(examples: Sequence[QAExample], em_of: Mapping[str, float],
              f1_of: Mapping[str, float], prefix: str) -> dict[str, float]:
    total = len(examples)
    return {f"{prefix}exact_match": 100.0 * sum(em_of[e.id] for e in examples) / total,
            f"{prefix}f1": 100.0 * sum(f1_of[e.id] for e in examples) / total,
            f"{prefix}total": float(total)}
