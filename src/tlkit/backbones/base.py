"""The contract every backbone meets, whatever library it comes from.

A backbone is an ``nn.Module`` that maps a batch of preprocessed inputs to pooled features of size
``feature_dim``. It knows its ordered layer groups (input to output), its own preprocessing, and it
never carries the classifier it was pretrained with: the task head is attached by ``TransferModel``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn


@dataclass(frozen=True)
class ImagePreprocessing:
    """What the backbone expects of an image (timm's data config, in its own words)."""

    input_size: int = 224
    resize_size: int = 256
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bilinear"
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    kind: Literal["image"] = "image"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextPreprocessing:
    """What the backbone expects of text: its tokenizer (a local folder) and the longest input."""

    tokenizer: str = ""
    max_length: int = 128
    kind: Literal["text"] = "text"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Preprocessing = ImagePreprocessing | TextPreprocessing


def preprocessing_from_dict(d: dict[str, Any]) -> Preprocessing:
    d = dict(d)
    kind = d.get("kind")
    if kind == "image":
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return ImagePreprocessing(**d)
    if kind == "text":
        return TextPreprocessing(**d)
    raise ValueError(f"unknown preprocessing kind {kind!r}")


@dataclass(frozen=True)
class LayerGroup:
    """One group of backbone parameters; names are relative to the backbone module."""

    name: str
    param_names: tuple[str, ...]
    # Module paths whose forward makes up this group, in order, where the group is a clean
    # sequential stage; used by caches that cut the network between groups.
    modules: tuple[str, ...] = field(default=())


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward`` and groups."""

    kind: Literal["image", "text"]
    feature_dim: int
    preprocessing: Preprocessing
    # How the backbone was built, enough for ``tlkit predict`` to build it again offline
    # (architecture only: the weights come from the run directory's model.safetensors).
    spec: dict[str, Any]

    def forward(self, inputs: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def layer_groups(self) -> list[LayerGroup]:  # pragma: no cover - abstract
        raise NotImplementedError

    def no_weight_decay_names(self) -> set[str]:
        """Parameter names (relative to the backbone) that take no weight decay beyond the
        norms and biases, which are excluded by rule."""
        return set()
