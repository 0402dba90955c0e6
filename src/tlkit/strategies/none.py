"""Full fine-tuning: every layer group trains from the first epoch, each at its discriminative
rate (``backbone_lr * lr_decay_per_layer^(L - l)``)."""

from __future__ import annotations

from typing import Any

from tlkit.strategies.base import FULL, PhaseSpec, Strategy


class FullFineTuning(Strategy):
    name = "none"
    summary = "full fine-tuning: every group trains at its discriminative rate"
    auto_rank = 3
    role = FULL

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, n_groups, "full fine-tuning")]


STRATEGY = FullFineTuning()
