"""torchvision classification models: the classifier is replaced by an identity, groups by the
generic rule (``features`` stages for MobileNet / EfficientNet, stem + layer1..4 for ResNet)."""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from tlkit.backbones.base import Backbone, ImagePreprocessing, Interpolation, LayerGroup
from tlkit.backbones.groups import groups_by_generic_rule
from tlkit.errors import UserError

_HEAD_ATTRS = ("classifier", "fc", "heads", "head")


def _first_linear_in(m: nn.Module) -> nn.Linear | None:
    if isinstance(m, nn.Linear):
        return m
    for c in m.modules():
        if isinstance(c, nn.Linear):
            return c
    return None


class TorchvisionBackbone(Backbone):
    kind = "image"

    def __init__(self, name: str, weights: str | None = None, weights_file: str | None = None):
        super().__init__()
        import torchvision

        try:
            builder = torchvision.models.get_model_builder(name)
        except ValueError:
            raise UserError(f"torchvision has no model {name!r}") from None
        model = builder(weights=weights) if weights else builder(weights=None)
        if weights_file:
            try:
                sd = torch.load(weights_file, map_location="cpu", weights_only=True)
                missing, unexpected = model.load_state_dict(sd, strict=False)
            except Exception as e:  # noqa: BLE001 - unreadable file, not a state_dict, shapes
                raise UserError(
                    f"cannot load {weights_file} into torchvision {name}: {type(e).__name__}: "
                    f"{(str(e).splitlines() or [''])[0][:200]}; fix: give a state_dict saved "
                    "from this architecture (torch.save(model.state_dict(), path))"
                ) from None
            if missing or unexpected:
                raise UserError(f"{weights_file} does not fit torchvision {name}: missing "
                                f"{missing[:3]}, unexpected {unexpected[:3]}")
        head_attr = next((a for a in _HEAD_ATTRS if isinstance(getattr(model, a, None),
                                                               nn.Module)), None)
        if head_attr is None:
            raise UserError(f"cannot find the classifier of torchvision {name}")
        lin = _first_linear_in(getattr(model, head_attr))
        if lin is None:
            raise UserError(f"cannot read the feature size of torchvision {name}")
        self.feature_dim = int(lin.in_features)
        setattr(model, head_attr, nn.Identity())
        self.model = model
        self.preprocessing = _preprocessing_of(name, weights)
        self.spec = {"adapter": "torchvision", "name": name}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def layer_groups(self) -> list[LayerGroup]:
        return groups_by_generic_rule(self)


def _preprocessing_of(name: str, weights: str | None) -> ImagePreprocessing:
    import torchvision

    if weights:
        try:
            w: Any = torchvision.models.get_model_weights(name)[weights]
            t = w.transforms()
            interp = str(getattr(t, "interpolation", "bilinear")).split(".")[-1].lower()
            return ImagePreprocessing(
                input_size=int(t.crop_size[0]), resize_size=int(t.resize_size[0]),
                interpolation=cast(Interpolation, interp)
                if interp in ("bilinear", "bicubic", "nearest") else "bilinear",
                mean=tuple(float(x) for x in t.mean), std=tuple(float(x) for x in t.std),
            )
        except (KeyError, AttributeError, TypeError):
            pass
    return ImagePreprocessing()
