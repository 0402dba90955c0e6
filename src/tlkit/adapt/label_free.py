"""Choosing a domain adaptation without target labels.

A user adapting to unlabelled target data has no target labels to tell which method (none,
DANN, MMD, CORAL, AdaBN) and which weight worked. tlkit scores each trained candidate with two
label-free measures and picks by them:

- **Information maximisation on the target** (IM; the objective of SHOT, Liang, Hu and Feng,
  ICML 2020, "Do we really need to access the source data?", used as a validator by Musgrave,
  Belongie and Lim, 2022, "Three new validators and a large-scale benchmark ranking for
  unsupervised domain adaptation"): the entropy of the mean target prediction minus the mean
  entropy of each target prediction, over ``log K``. It is high when each target example is
  predicted confidently and the predictions spread over the classes, as they do when the target
  falls into the source's class clusters; low when the model is unsure on the target, or when it
  collapses onto a few classes.
- **The source's validation accuracy** as a guard: Musgrave et al. found that in many settings
  plain source validation accuracy selects as well as any target-only validator, and that
  target-only scores can be fooled by a degenerate model (an adaptation weight so high that the
  alignment loss wrecks the features makes confident, diverse and wrong predictions). A
  candidate whose source validation accuracy falls below source-only training's by more than
  the validation split can tell apart (``source_margin``: two standard errors of that accuracy
  on the split's size, and at least 2 points) is not eligible, whatever its IM. AdaBN keeps
  source-only's model and its source statistics for the source, so it has source-only's source
  accuracy.

The pick: the eligible candidate of highest IM; source-only training is always eligible, so the
pick is never a candidate that is worse on the source by more than the margin. Target labels,
where the user has some, are only used to report how the label-free pick did (``oracle``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

SOURCE_MARGIN = 0.02  # the least source validation accuracy a candidate may give up


def information_maximisation(probabilities: np.ndarray) -> float:
    """IM of a set of predicted class distributions (rows): H(mean) - mean H, over log K
    (0: every prediction the same, or every one uniform; 1: each one-hot, classes balanced)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    k = p.shape[1]
    if k < 2 or len(p) == 0:
        return 0.0
    mean = p.mean(axis=0)
    h_mean = float(-(mean * np.log(mean)).sum())
    mean_h = float(-(p * np.log(p)).sum(axis=1).mean())
    return (h_mean - mean_h) / math.log(k)


def source_margin(accuracy: float, n_val: int | None) -> float:
    """How far below source-only's source validation ``accuracy`` a candidate may fall: two
    standard errors of an accuracy measured on ``n_val`` examples (a difference a split that
    size cannot tell from chance), and at least ``SOURCE_MARGIN``."""
    if not n_val:
        return SOURCE_MARGIN
    return max(SOURCE_MARGIN, 2 * math.sqrt(max(accuracy * (1 - accuracy), 1e-4) / n_val))


@dataclass
class Candidate:
    """One trained adaptation: its label-free measures and, where known, its target accuracy."""

    name: str  # e.g. "dann weight 0.1"
    method: str
    weight: float
    target_im: float
    source_val_accuracy: float
    target_accuracy: float | None = None  # from target labels: reported, never used to pick

    def row(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _base(candidates: list[Candidate]) -> Candidate:
    base = next((c for c in candidates if c.method == "none"), None)
    if base is None:
        raise ValueError("the candidates must include source-only training (method none)")
    return base


def ranked(candidates: list[Candidate], margin: float = SOURCE_MARGIN
           ) -> tuple[list[Candidate], list[Candidate]]:
    """The candidates best first by the label-free score: the eligible ones (source-only, and
    those within ``margin`` of its source validation accuracy) by IM on the target (ties to
    source-only), then the rest by source validation accuracy; and the eligible ones."""
    floor = _base(candidates).source_val_accuracy - margin
    eligible = [c for c in candidates if c.method == "none" or c.source_val_accuracy >= floor]
    rest = [c for c in candidates if c not in eligible]
    return (sorted(eligible, key=lambda c: (c.target_im, c.method == "none"), reverse=True)
            + sorted(rest, key=lambda c: c.source_val_accuracy, reverse=True)), eligible


def choose(candidates: list[Candidate], n_val: int | None = None
           ) -> tuple[Candidate, str]:
    """The label-free pick among ``candidates`` (one of them method ``none``) and why;
    ``n_val``: the size of the source validation split their accuracies were measured on."""
    base = _base(candidates)
    margin = source_margin(base.source_val_accuracy, n_val)
    order, eligible = ranked(candidates, margin)
    pick = order[0]
    left_out = [c.name for c in candidates if c not in eligible]
    why = (f"highest information maximisation on the unlabelled target ({pick.target_im:.3f}) "
           f"among the candidates within {100 * margin:.1f} points of source-only's source "
           f"validation accuracy ({base.source_val_accuracy:.3f}"
           + (f" on {n_val:,} examples)" if n_val else ")"))
    if left_out:
        why += f"; left out for their source accuracy: {', '.join(left_out)}"
    return pick, why


def oracle(candidates: list[Candidate]) -> Candidate | None:
    """The candidate with the best target accuracy (needs target labels), or None."""
    known = [c for c in candidates if c.target_accuracy is not None]
    return max(known, key=lambda c: c.target_accuracy or 0.0) if known else None
