"""Where a phase's batches come from: the inputs through the whole model, or activations cached
at the cut (the frozen bottom computed once; ``tlkit.cache``) through the part above it.

A ``Feed`` holds every split the loop reads (train, val, and any a hook adds, such as
adaptation's target), each either cached or not; the training splits are all cached or none is,
so one forward serves them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tlkit.data.collate import Collate
from tlkit.data.types import Examples
from tlkit.distributed import Dist
from tlkit.model import TransferModel
from tlkit.tensors import to_device
from tlkit.train.evaluate import evaluate_cached, evaluate_split, example_losses


@dataclass(frozen=True)
class Feed:
    splits: Mapping[str, Examples]
    collate: Collate
    device: torch.device
    cut: int | None = None  # the cut the training splits are cached at, None: not cached
    cached: Mapping[str, Any] = field(default_factory=dict)  # split name -> CachedSplit

    def batch(self, split: str, indices: Sequence[int]) -> tuple[Any, torch.Tensor]:
        """Inputs and targets of these examples of ``split``, on the device."""
        if split in self.cached:
            return self.cached[split].batch(indices, self.device)
        data = self.splits[split]
        inputs, targets = self.collate([data[i] for i in indices])
        return to_device(inputs, self.device), to_device(targets, self.device)

    def forward(self, model: TransferModel, inputs: Any) -> torch.Tensor:
        return model(inputs) if self.cut is None else model.forward_from_cut(inputs, self.cut)

    def features(self, model: TransferModel, inputs: Any) -> torch.Tensor:
        """The backbone's pooled features (the head's input)."""
        bb = model.backbone
        return bb(inputs) if self.cut is None else bb.forward_from(inputs, self.cut)

    def evaluate(self, model: TransferModel, split: str, task: str, classes: list[str] | None,
                 batch_size: int, mixed_precision: bool, dist: Dist
                 ) -> tuple[dict[str, Any], np.ndarray]:
        """The split's metrics, and each example's loss."""
        if split in self.cached:
            metrics, outputs, targets = evaluate_cached(
                model, self.cached[split], task, batch_size, self.device, classes,
                mixed_precision, return_outputs=True, dist=dist)
        else:
            metrics, outputs, targets = evaluate_split(
                model, self.splits[split], self.collate, task, batch_size, self.device, classes,
                mixed_precision, return_outputs=True, dist=dist)
        return metrics, example_losses(outputs, targets, task)
