"""What a freeze strategy is: a small interface, and the phases it returns as data.

A phase is a range of epochs with a fixed set of trainable groups. Groups are counted from the top
(output side): ``trainable_top = 2`` means the two highest backbone groups train, with the head.
In an ``adapters_only`` phase (LoRA) a "trainable" group trains only its adapter matrices; its
pretrained weights stay frozen.

A strategy declares its own transfer_config keys in ``Settings`` (a pydantic model: each key's
type, default, bounds and why), which the config merges into the flat ``transfer_config``
(``tlkit.config.keys``) and accepts under that strategy only. It reads its settings through
``settings``: the validated ``transfer_config`` while the config is checked, its
``PlanSettings`` view afterwards (the same attribute names, its own keys among them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from tlkit.errors import UserError


# the rows of the concept's strategy table (``Strategy.role``; tlkit.select.advise reads them)
FEATURE_EXTRACTION = "feature extraction"
PARTIAL = "partial fine-tuning"
FULL = "full fine-tuning"


@dataclass(frozen=True)
class PhaseSpec:
    start_epoch: int  # first epoch of the phase, counted from 0
    end_epoch: int  # exclusive
    trainable_top: int  # how many top backbone groups train (0 = head only)
    label: str
    adapters_only: bool = False  # LoRA: only the adapter parameters of those groups train
    # a linear probe: the head alone, to convergence (the convex solver on cached features)
    converge_head: bool = False
    # one rate for every trained backbone group in place of the discriminative ones, and
    # whether the head trains (contrastive's phase 1: the body at contrastive_lr, no head)
    lr: float | None = None
    head_trains: bool = True


class StrategySettings(BaseModel):
    """A strategy's own keys (none here): a subclass declares each as a pydantic field, with its
    default (what the key is when the config leaves it out) and its bounds."""

    # as every section of the config: no unknown key, no NaN or infinity
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Strategy:
    """A freeze strategy: the interface every file in ``tlkit.strategies`` implements.

    ``name`` is the value of ``transfer_config.freeze_strategy``; ``Settings`` declares the
    transfer_config keys that only this strategy reads (the config refuses them under another
    strategy). ``phases`` is the one method a strategy must give; the others default to doing
    nothing."""

    name: str = ""
    summary: str = ""  # one line, for `tlkit --help`, `compare` and the docs
    Settings: type[StrategySettings] = StrategySettings  # its own keys (a subclass), if any
    # freeze_strategy auto's candidates (tlkit.select.auto) in this order, the order taken when
    # trials cannot choose; None: not a candidate
    auto_rank: int | None = None
    # False where no backbone group ever trains (feature extraction): auto solves its head
    # without a trial and gives it no fine-tuning rates; adaptation auto has nothing to align
    trains_backbone: bool = True
    # its row of the concept's strategy table (FEATURE_EXTRACTION, PARTIAL, FULL), which advise
    # reads; "" for a strategy the table does not name
    role: str = ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The transfer_config keys that only this strategy reads."""
        return tuple(self.Settings.model_fields)

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        """The phases, in epoch order, for a backbone of ``n_groups`` layer groups."""
        raise NotImplementedError

    def check(self, settings: Any) -> None:
        """Raise ValueError (a config error naming the fix) when the settings cannot work."""
        return None

    def notes(self, settings: Any, backbone: Any) -> list[str]:
        """What the plan's table does not show (printed below it)."""
        return []

    def prepare(self, backbone: Any, groups: list[Any], settings: Any) -> list[Any]:
        """Change the backbone before the plan is built (LoRA adds its adapters); returns the
        layer groups with every parameter placed."""
        return groups

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        """Turn ``tc`` (another config's transfer_config, as a dict) into this strategy's
        variant for ``compare``: set the keys this strategy needs. ``own`` is the original
        validated transfer_config, ``rates`` its diagnostics section."""
        return None

    def refuses(self, task: str, modality: str, augment: str = "none") -> str | None:
        """Why this strategy cannot train a ``task`` on ``modality`` data (``augment``: the
        training images' random augmentation), naming what to use instead; None where it can."""
        return None

    def hooks(self, model: Any, settings: Any, inputs: Any) -> list[Any]:
        """Loop hooks (``tlkit.train.hooks``) this strategy's training needs besides its plan,
        for ``model`` (the TransferModel) trained on ``inputs`` (``tlkit.inputs.Inputs``: the
        splits, the training dataset as the model sees it, its collate): contrastive's pair
        objective. Raises UserError where ``refuses`` gives a reason."""
        return []

    def epoch_examples(self, phase: int, labels: Any, settings: Any) -> int | None:
        """Examples the strategy's own hook runs forward and backward in one epoch of phase
        ``phase`` (counted from 0) on training ``labels``, for freeze_strategy auto's cost
        estimate; None: the loop's own batches (one pass over the training split)."""
        return None

    def normalizes_head(self, backbone: Any, solved: bool) -> str | None:
        """Why ``head.normalize: auto`` scales the features to unit length before the head
        under this strategy on ``backbone`` (``solved``: the convex solver fits the head);
        None where it does not."""
        return None

    def own_batches(self, labels: Any, settings: Any) -> tuple[int, int, str] | None:
        """Where this strategy's hook brings its own batches (``hooks``): (batches per epoch,
        epochs it acts, what a batch is) on training ``labels``, for the printed training
        length; None: the loop's own batches."""
        return None

    def fit_settings(self, tc: dict[str, Any]) -> None:
        """Adjust ``tc`` (a transfer_config as a dict, with the length freeze_strategy auto
        gives every candidate) where this strategy cannot run at that length."""
        return None


def selector_count(selector: str, n_groups: int) -> int:
    """How many top groups a schedule selector names."""
    if selector == "all":
        return n_groups
    if selector == "last_block":
        return min(1, n_groups)
    if selector == "last_two_blocks":
        return min(2, n_groups)
    m = re.fullmatch(r"last_(\d+)_blocks", selector)
    if m:
        n = int(m.group(1))
        if n < 1:
            raise UserError(f"unfreeze selector {selector!r}: N must be at least 1")
        if n > n_groups:
            raise UserError(
                f"unfreeze selector {selector!r} asks for {n} blocks but the backbone has "
                f"{n_groups} layer groups; use all, or a smaller N"
            )
        return n
    raise UserError(f"unknown unfreeze selector {selector!r}")


def phase_at(phases: list[Any], epoch: int) -> int:
    """Index of the phase that covers ``epoch``."""
    for i, p in enumerate(phases):
        if p.start_epoch <= epoch < p.end_epoch:
            return i
    return len(phases) - 1
