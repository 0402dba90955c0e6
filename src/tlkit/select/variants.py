"""A config's variants: the same run with another strategy, or from scratch. Pure: a validated
config in, a validated config out. ``compare`` trains every strategy's variant; ``fit
--baseline`` trains the scratch one."""

from __future__ import annotations

from typing import Any

from tlkit import strategies
from tlkit.config import AUTO, Config, validate
from tlkit.data import has_test_split
from tlkit.errors import UserError
from tlkit.inputs import config_for
from tlkit.strategies.base import FULL

SCRATCH = "scratch"  # the same architecture from random initialisation


def variant(cfg: Config, strategy: str, settings: dict[str, Any] | None = None) -> Config:
    """The config with ``strategy`` in place of its own (``scratch``: random initialisation,
    full fine-tuning at ``diagnostics.scratch_lr``); ``settings`` are transfer_config keys
    to set as well (an advice's). Each strategy sets the keys it needs (``Strategy.variant``)."""
    reason = f"compare: {strategy}"
    if strategy == AUTO:  # the candidates read the strategies' keys the config gives
        raw = cfg.model_dump(mode="json")
        raw["transfer_config"]["freeze_strategy"] = AUTO
        return validate(raw, reason)
    if strategy == SCRATCH:
        d = cfg.diagnostics
        return config_for(cfg, strategies.with_role(FULL), {
            "pretrained_weights": "none", "l2sp_lambda": 0.0, "lr_decay_per_layer": 1.0,
            "backbone_lr": d.scratch_lr or 10 * cfg.transfer_config.backbone_lr,
            **(settings or {})}, reason=reason)
    return config_for(cfg, strategy, settings, reason=reason, variant=True)


def check_comparable(cfg: Config, command: str, tokens: bool = False) -> None:
    """Runs of ``cfg`` can be compared by test accuracy: single-label (or, with ``tokens``,
    token classification, by token accuracy), with a test split."""
    if cfg.data.task != "single_label" and not (
            tokens and cfg.data.task in ("token_classification", "question_answering")):
        raise UserError(f"{command} ranks single-label classification runs by test accuracy; "
                        f"this config's task is {cfg.data.task}")
    if not has_test_split(cfg.data):
        raise UserError(f"{command} ranks runs by their test predictions, but "
                        "data.test_fraction is 0 and no data.test is given; give a test set or a "
                        "test_fraction")


def check_baselines(cfg: Config) -> None:
    """Refuse, before anything trains, a --baseline the config cannot give a verdict on."""
    if SCRATCH in cfg.baselines():
        check_comparable(cfg, "--baseline", tokens=True)
    elif not has_test_split(cfg.data):
        raise UserError("--baseline compares test predictions, but data.test_fraction is 0 and "
                        "no data.test is given; give a test set or a test_fraction")
