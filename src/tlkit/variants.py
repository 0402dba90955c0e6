"""A config's variants: the same run with another strategy, or from scratch. Pure: a validated
config in, a validated config out. ``compare`` trains every strategy's variant; ``fit
--baseline`` trains the scratch one."""

from __future__ import annotations

from typing import Any

from tlkit import strategies
from tlkit.config import Config, validate, without_strategy_keys


def variant(cfg: Config, strategy: str, settings: dict[str, Any] | None = None) -> Config:
    """The config with ``strategy`` in place of its own (``scratch``: random initialisation,
    everything trains at ``diagnostics.scratch_lr``); ``settings`` are transfer_config keys
    to set as well (an advice's). Each strategy sets the keys it needs (``Strategy.variant``)."""
    raw = cfg.model_dump(mode="json")
    tc = without_strategy_keys(raw["transfer_config"])
    d = cfg.diagnostics
    if strategy == "scratch":
        tc.update(pretrained_weights="none", freeze_strategy="none", l2sp_lambda=0.0,
                  backbone_lr=d.scratch_lr or 10 * cfg.transfer_config.backbone_lr,
                  lr_decay_per_layer=1.0)
    else:
        tc["freeze_strategy"] = strategy
        strategies.get(strategy).variant(tc, cfg.transfer_config, d)
    tc.update(settings or {})
    return validate(raw, f"compare: {strategy}")
