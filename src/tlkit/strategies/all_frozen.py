"""Feature extraction: the backbone stays frozen, only the new head trains. Every frozen group is
a fixed function, so the run computes the pooled features once (``tlkit.cache``)."""

from __future__ import annotations

from typing import Any

from tlkit.strategies.base import FEATURE_EXTRACTION, PhaseSpec, Strategy


class AllFrozen(Strategy):
    name = "all_frozen"
    summary = "feature extraction: the backbone frozen, the head trains on features computed once"
    auto_rank = 0  # auto's frozen head: solved without a trial
    trains_backbone = False
    role = FEATURE_EXTRACTION

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, 0, "feature extraction: head only",
                          converge_head=True)]

    def normalizes_head(self, backbone: Any, solved: bool) -> str | None:
        # the convex solve on a sentence encoder's features, on their own (cosine) geometry:
        # MiniLM, 3 draws, 8 / 16 / 64 labels a class: Rotten Tomatoes +1.9 / +0.6 / +0.1,
        # 20 Newsgroups +0.7 / +0.4 / +0.5 points over the raw pooled features
        # (bench/head_geometry.py; bench/README.md, few_shot section)
        if solved and getattr(backbone, "cosine", False):
            return ("the backbone's embeddings were trained to be compared by cosine (its "
                    "sentence-transformers Normalize module)")
        return None

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        tc["l2sp_lambda"] = 0.0  # nothing in the backbone trains: nothing to pull back


STRATEGY = AllFrozen()
