"""What freeze_strategy auto chooses among: the registered strategies with an ``auto_rank``,
the raw pixels' model for images, auto's fine-tuning rates and length, and each candidate's
config (``candidate_config``)."""

from __future__ import annotations

from typing import Any

from tlkit import strategies
from tlkit.config import Config
from tlkit.inputs import config_for

# images: the raw pixels' model (tlkit.backbones.pixels), picked where the pretrained features do
# worse than the pixels themselves under the same convex head
PIXELS = "pixels"
MARGIN = 2.0  # paired standard errors a pick must win by
# Fine-tuning rates and length per modality, where the user's config leaves the key unset: a new
# head learns fast, the pretrained layers slowly and slower toward the input (bench/strategies.py's
# rates for MiniLM and MobileNetV2).
TUNING: dict[str, dict[str, Any]] = {
    "text": {"head_lr": 1e-2, "backbone_lr": 1e-4, "lr_decay_per_layer": 0.8, "batch_size": 16,
             "dropout": 0.1, "epochs": 5},
    "image": {"head_lr": 1e-2, "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7,
              "batch_size": 32, "dropout": 0.2, "epochs": 5},
}


def candidates() -> tuple[str, ...]:
    """The frozen head, then the fine-tuning candidates in the order taken when trials cannot
    choose (``Strategy.auto_rank``)."""
    return strategies.auto_candidates()


def frozen_head() -> str:
    """The candidate that trains no backbone group: its convex solve needs no trial."""
    return next(c for c in candidates() if not strategies.trains_backbone(c))


def fine_tuners() -> list[str]:
    """The candidates that train backbone groups, in their order."""
    return [c for c in candidates() if strategies.trains_backbone(c)]


# The fine-tuners the k-fold race (kfold.py) gives its first folds to on a modality's data,
# before the others in their order of cost: the one measured best there. Text: `contrastive`
# (SetFit's objective) against the frozen default on Rotten Tomatoes at 8, 16 and 64 labels a
# class (-0.4, +1.4, +6.5 points, 3 draws each) and on 20 Newsgroups' 4 classes at 32 and 64
# labels (+2.9, +0.8), and over 10 draws of Rotten Tomatoes at 16 and 32 labels 61.44 against
# top_n_unfrozen's 60.21 and the frozen head's 59.98 (bench/auto_rule.py; README, auto); where
# auto picked lp_ft on one fold, 0.680 against contrastive's 0.766 (bench/README.md,
# bench/few_shot.py). On images it measured below the frozen head (-4.1 to -7.9 points) and
# keeps its place.
RACE_FIRST: dict[str, tuple[str, ...]] = {"text": ("contrastive",)}


def race_order(modality: str, names: list[str]) -> list[str]:
    """``names`` (fine-tuners, in their order of cost) with ``modality``'s measured first ones
    (``RACE_FIRST``) moved to the front."""
    first = [n for n in RACE_FIRST.get(modality, ()) if n in names]
    return first + [n for n in names if n not in first]


def tuning_rates(cfg: Config, modality: str) -> dict[str, Any]:
    """auto's fine-tuning rates and length for ``modality``, for the keys the user left unset."""
    given = cfg.transfer_config.model_fields_set
    return {k: v for k, v in TUNING.get(modality, {}).items() if k not in given}


def candidate_config(cfg: Config, strategy: str, epochs: int | None = None,
                     min_steps: int | None = None, trial: bool = False,
                     rates: dict[str, Any] | None = None) -> Config:
    """``cfg`` with ``strategy`` in place of auto (``config_for``: the keys the user gave for it
    are kept, the other strategies' keys go back to their defaults); a fine-tuning candidate
    takes ``rates`` (auto's, for the keys the user left unset). A ``trial`` keeps the validation
    split out of the frozen head's fit, so every trial's validation loss is out-of-sample."""
    settings: dict[str, Any] = {}
    name, sections = strategy, None
    if strategy == PIXELS:  # no pretrained network: a logistic regression on the pixels
        name = frozen_head()
        settings.update(source_model="pixels", pretrained_weights="packaged")
        sections = {"data": {"image_size": None}}  # its own 16 x 16, not the network's size
    elif strategies.trains_backbone(strategy):
        settings.update(rates or {})
    if epochs is not None:
        settings["epochs"] = epochs
        settings["early_stopping_patience"] = None  # a trial is short: it runs its schedule out
    if min_steps is not None:
        settings["min_steps"] = min_steps
    if trial:
        settings["head_refit"] = False
    return config_for(cfg, name, settings, reason=f"freeze_strategy auto ({strategy})",
                      fitted=True, sections=sections)
