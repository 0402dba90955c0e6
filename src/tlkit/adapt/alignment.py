"""Domain adaptation by feature alignment (DANN, MMD, CORAL) as a hook of the training loop:
each batch's source features and a batch of unlabelled target features go through the
alignment loss (``tlkit.adapt.losses``), whose weighted value adds to the task loss."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tlkit.data.types import Examples
from tlkit.model import TransferModel
from tlkit.train.batches import target_indices
from tlkit.train.feed import Feed
from tlkit.train.hooks import Step

# the adaptation methods whose loss this hook adds (``tlkit.adapt.losses.build_adapter``)
ALIGNING = ("dann", "mmd", "coral")


def aligns(adaptation: Any) -> bool:
    """Whether a config's ``adaptation`` section trains with the ``Alignment`` hook: each
    source batch then runs with a target batch of its size (together, for images)."""
    return adaptation.target is not None and adaptation.method in ALIGNING


class Alignment:
    """The loop's hook for ``adaptation.method`` dann, mmd or coral. The loss's own parameters
    (DANN's domain classifier) train at the head's rate and are in every checkpoint."""

    name = "adaptation"  # its key in the checkpoint and its optimizer group
    loss_name = "train_adaptation_loss"

    def __init__(self, loss: nn.Module, target: Examples, weight: float, seed: int) -> None:
        self.loss, self.target, self.weight, self.seed = loss, target, weight, seed

    def splits(self) -> dict[str, Examples]:
        return {"target": self.target}

    def to(self, device: torch.device) -> None:
        self.loss.to(device)

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.loss.parameters()

    def state_dict(self) -> dict[str, Any]:
        return self.loss.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state)

    def forward(self, model: TransferModel, feed: Feed, inputs: Any, step: Step
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's outputs on the source batch, and the weighted alignment loss between its
        features and those of a target batch (a pure function of seed, epoch and batch)."""
        t_idx = target_indices(len(self.target), step.size, self.seed, step.epoch, step.batch)
        t_inputs, _ = feed.batch("target", t_idx)
        with step.autocast():
            f_s, f_t = _features_of(model, feed, inputs, t_inputs)
            out = model.head(f_s)
        return out, self.weight * self.loss(f_s.float(), f_t.float(), step.progress)


def _features_of(model: TransferModel, feed: Feed, source: Any, target: Any
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled backbone features of a source and a target batch. Image batches run as one batch,
    as DANN's reference code does, so BatchNorm sees both domains together; text batches (padded
    apart) run one after the other."""
    if isinstance(source, torch.Tensor) and isinstance(target, torch.Tensor):
        f = feed.features(model, torch.cat([source, target]))
        return f[:len(source)], f[len(source):]
    return feed.features(model, source), feed.features(model, target)
