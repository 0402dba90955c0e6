"""Task heads: a new, randomly initialised layer (or small MLP) on the backbone's features."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Task = Literal["single_label", "multi_label", "regression", "token_classification",
               "question_answering"]


class L2Normalize(nn.Module):
    """Each feature vector scaled to unit length: the head reads directions only, the geometry
    a cosine-trained embedding was made for (sentence-transformers' ``Normalize`` module)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


def build_head(
    in_features: int,
    num_outputs: int,
    kind: Literal["linear", "mlp"] = "linear",
    hidden_size: int = 256,
    dropout: float = 0.0,
    normalize: bool = False,
) -> nn.Module:
    """Single-label classification: logits over classes; multi-label: one logit per label
    (sigmoid at the loss); regression: one value per target. The shapes are the same, the task
    decides the loss and the activation at predict time. ``normalize``: the features are
    scaled to unit length first (``L2Normalize``, no parameters)."""
    if num_outputs < 1:
        raise ValueError("a head needs at least one output")
    first = [L2Normalize()] if normalize else []
    if kind == "linear":
        return nn.Sequential(*first, nn.Dropout(dropout), nn.Linear(in_features, num_outputs))
    return nn.Sequential(
        *first,
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden_size),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, num_outputs),
    )


def normalizes(head: Any) -> bool:
    """Whether ``head`` scales its input features to unit length before its layers."""
    return isinstance(head, nn.Sequential) and len(head) > 0 and isinstance(head[0], L2Normalize)


def head_inputs(x: np.ndarray, normalize: bool) -> np.ndarray:
    """Cached pooled features as the head's first layer sees them (unit length where the head
    normalizes): what a solver fitting that layer directly must be given."""
    if not normalize:
        return x
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
