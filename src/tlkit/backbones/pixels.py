"""Raw pixels as features: the image model a user would fit without transfer.

No pretrained network: an image is resized to a small square (``size`` x ``size``, 16 by
default) and its pixel values in [0, 1] are the features, ``3 x size x size`` of them. With
``freeze_strategy: all_frozen`` tlkit's convex solver fits a multinomial logistic regression on
them (standardised, the scaling folded into the head): the classical baseline of
``tlkit.diagnose.classical``, as a model that ``fit``, ``predict``, ``evaluate`` and ``export``
serve like any other. ``freeze_strategy: auto`` picks it where it beats every transfer candidate
on the run's own data (``tlkit.select.auto``). It has no parameters: only the head trains.
"""

from __future__ import annotations

from typing import Any

import torch

from tlkit.backbones.base import Backbone, ImagePreprocessing, LayerGroup

SIZE = 16


class PixelsBackbone(Backbone):
    kind = "image"

    def __init__(self, size: int = SIZE) -> None:
        super().__init__()
        self.size = int(size)
        self.feature_dim = 3 * self.size * self.size
        # resized straight to the square (no centre crop), values in [0, 1]
        self.preprocessing = ImagePreprocessing(self.size, self.size, "bilinear",
                                                (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        self.spec: dict[str, Any] = {"adapter": "pixels", "size": self.size}

    def forward(self, inputs: Any) -> torch.Tensor:
        x = inputs["pixel_values"] if isinstance(inputs, dict) else inputs
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                align_corners=False, antialias=True)
        return x.flatten(1)

    def layer_groups(self) -> list[LayerGroup]:
        # one group without parameters: the whole "backbone" is frozen, so its features (the
        # resized pixels) are cached and the head is solved on them
        return [LayerGroup("pixels", ())]
