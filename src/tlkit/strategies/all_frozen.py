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

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        tc["l2sp_lambda"] = 0.0  # nothing in the backbone trains: nothing to pull back


STRATEGY = AllFrozen()
