"""Task heads: a new, randomly initialised layer (or small MLP) on the backbone's features."""

from __future__ import annotations

from typing import Literal

from torch import nn

Task = Literal["single_label", "multi_label", "regression", "token_classification"]


def build_head(
    in_features: int,
    num_outputs: int,
    kind: Literal["linear", "mlp"] = "linear",
    hidden_size: int = 256,
    dropout: float = 0.0,
) -> nn.Module:
    """Single-label classification: logits over classes; multi-label: one logit per label
    (sigmoid at the loss); regression: one value per target. The shapes are the same, the task
    decides the loss and the activation at predict time."""
    if num_outputs < 1:
        raise ValueError("a head needs at least one output")
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_outputs))
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden_size),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, num_outputs),
    )
