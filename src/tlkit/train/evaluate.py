"""Outputs, loss and metrics of a split: from the inputs (the whole model runs), or from cached
activations (only the part above the cut runs). With several processes each runs its block of
the split and every process gets the whole, gathered in the data's order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import nn

from tlkit.data.collate import Collate
from tlkit.data.types import Examples
from tlkit.device import autocast
from tlkit.distributed import SINGLE, Dist
from tlkit.metrics import compute_metrics
from tlkit.model import TransferModel
from tlkit.tensors import to_device
from tlkit.token_rows import TokenLoss
from tlkit.train.batches import batches_of


class SpanLoss(nn.Module):
    """Question answering's loss (the Hugging Face recipe): the mean of the cross-entropies of
    the start and the end token, over (batch, tokens, 2) logits and (batch, 2) targets;
    ``reduction="none"`` gives one value per window."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(reduction=reduction)

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        start = self.ce(outputs[..., 0], targets[:, 0])
        end = self.ce(outputs[..., 1], targets[:, 1])
        return (start + end) / 2


def loss_function(task: str, reduction: str = "mean",
                  weight: Sequence[float] | None = None) -> nn.Module:
    """The task's loss; ``weight`` (single-label, token classification): each class's weight
    in the mean."""
    if task == "token_classification":
        return TokenLoss(reduction, weight)
    if task == "question_answering":
        return SpanLoss(reduction)
    if task == "single_label":
        return nn.CrossEntropyLoss(
            reduction=reduction,
            weight=None if weight is None else torch.tensor(list(weight), dtype=torch.float32))
    if task == "multi_label":
        return nn.BCEWithLogitsLoss(reduction=reduction)
    return nn.MSELoss(reduction=reduction)


def output_for_loss(out: torch.Tensor, task: str) -> torch.Tensor:
    out = out.float()
    return out.squeeze(-1) if task == "regression" and out.shape[-1] == 1 else out


@torch.inference_mode()
def predict_outputs(
    model: nn.Module, data: Examples, collate: Collate, batch_size: int,
    device: torch.device, mixed_precision: bool = False, *, dist: Dist = SINGLE,
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs (logits or values) and targets of ``data``, in its order."""
    was_training = model.training
    model.eval()
    outs, tgts = [], []
    for idx in batches_of(dist.block(len(data)), batch_size):
        inputs, targets = collate([data[i] for i in idx])
        with autocast(device, mixed_precision):
            out = model(to_device(inputs, device))
        outs.append(out.float().cpu())
        tgts.append(targets)
    model.train(was_training)
    return _joined(outs, tgts, dist)


def _joined(outs: list[torch.Tensor], tgts: list[torch.Tensor], dist: Dist
            ) -> tuple[np.ndarray, np.ndarray]:
    """The batches' outputs and targets as arrays; with several processes, every process's
    block gathered in rank order (the data's order)."""
    if not dist.enabled:
        return _per_token_cat([o.numpy() for o in outs]), torch.cat(tgts).numpy()
    mine = (_per_token_cat([o.numpy() for o in outs]), torch.cat(tgts).numpy()) if outs \
        else None
    parts = [p for p in dist.gather(mine) if p is not None]
    return _per_token_cat([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# where a batch of windows was shorter than another: a logit no token has (softmax gives 0)
_NO_TOKEN = -1e9


def _per_token_cat(parts: list[np.ndarray]) -> np.ndarray:
    """The batches' outputs joined; per-token outputs (question answering's (windows, tokens,
    2), each batch cut to its longest window) padded to the longest with ``_NO_TOKEN``."""
    if not parts or parts[0].ndim != 3:
        return np.concatenate(parts)
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0)),
                                  constant_values=_NO_TOKEN) for p in parts])


def _scored(outputs: np.ndarray, targets: np.ndarray, task: str, classes: list[str] | None,
            data: Any = None) -> dict[str, Any]:
    """The loss and the task's metrics; question answering's are scored per question by the
    windows' dataset ``data`` (``tlkit.data.answers.WindowDataset.score``), which holds the
    questions and where each window's tokens lie in its context."""
    out, tgt = output_for_loss(torch.from_numpy(outputs), task), torch.from_numpy(targets)
    loss = float(loss_function(task)(out, tgt))
    if task == "question_answering":
        if not callable(getattr(data, "score", None)):
            raise ValueError("question answering is scored from its windows' dataset")
        return {"loss": loss, **data.score(outputs)}
    return {"loss": loss, **compute_metrics(outputs, targets, task, classes)}


def example_losses(outputs: np.ndarray, targets: np.ndarray, task: str) -> np.ndarray:
    """Each example's loss (multi-label and multi-output regression: its mean over outputs)."""
    out, tgt = output_for_loss(torch.from_numpy(outputs), task), torch.from_numpy(targets)
    each = loss_function(task, "none")(out, tgt).double()
    return (each.reshape(len(each), -1).mean(1) if each.ndim > 1 else each).numpy()


@torch.inference_mode()
def evaluate_cached(model: TransferModel, cached: Any, task: str, batch_size: int,
                    device: torch.device, classes: list[str] | None,
                    mixed_precision: bool = False, *, return_outputs: bool = False,
                    dist: Dist = SINGLE) -> Any:
    """Validation from cached activations: only the part above the cut runs. With
    ``return_outputs``: (metrics, outputs, targets), as ``evaluate_split`` gives them."""
    was_training = model.training
    model.eval()
    outs, tgts = [], []
    for idx in batches_of(dist.block(len(cached)), batch_size):
        inputs, targets = cached.batch(idx, device)
        with autocast(device, mixed_precision):
            out = model.forward_from_cut(inputs, cached.cut)
        outs.append(out.float().cpu())
        tgts.append(targets.cpu())
    model.train(was_training)
    outputs, targets_np = _joined(outs, tgts, dist)
    metrics = _scored(outputs, targets_np, task, classes, getattr(cached, "data", None))
    return (metrics, outputs, targets_np) if return_outputs else metrics


@overload
def evaluate_split(
    model: nn.Module, data: Examples, collate: Collate, task: str, batch_size: int,
    device: torch.device, classes: list[str] | None, mixed_precision: bool = False,
    *, return_outputs: Literal[False] = False, dist: Dist = SINGLE,
) -> dict[str, Any]: ...


@overload
def evaluate_split(
    model: nn.Module, data: Examples, collate: Collate, task: str, batch_size: int,
    device: torch.device, classes: list[str] | None, mixed_precision: bool = False,
    *, return_outputs: Literal[True], dist: Dist = SINGLE,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]: ...


def evaluate_split(
    model: nn.Module, data: Examples, collate: Collate, task: str, batch_size: int,
    device: torch.device, classes: list[str] | None, mixed_precision: bool = False,
    *, return_outputs: bool = False, dist: Dist = SINGLE,
) -> dict[str, Any] | tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The loss and metrics of ``data``; with ``return_outputs`` also its outputs and targets,
    as (metrics, outputs, targets), for measures beyond the metrics (e.g. per subgroup)."""
    outputs, targets = predict_outputs(model, data, collate, batch_size, device, mixed_precision,
                                       dist=dist)
    metrics = _scored(outputs, targets, task, classes, data)
    return (metrics, outputs, targets) if return_outputs else metrics
