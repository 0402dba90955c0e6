"""timm vision backbones: ``timm.create_model`` with the classifier removed, groups from the
model's own ``group_matcher``, preprocessing from timm's data config."""

from __future__ import annotations

import math
from typing import Any

import torch

from tlkit.backbones.base import Backbone, ImagePreprocessing, LayerGroup
from tlkit.backbones.groups import groups_by_generic_rule, groups_from_timm_matcher


def _import_timm() -> Any:
    import timm  # heavy: imported only when a timm backbone is built

    return timm


class TimmBackbone(Backbone):
    kind = "image"

    def __init__(
        self,
        model_name: str,
        weights_file: str | None = None,
        hub: bool = False,
        cfg_overlay: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        timm = _import_timm()
        overlay = dict(cfg_overlay or {})
        kwargs: dict[str, Any] = {"num_classes": 0}
        if weights_file:
            # timm's own pretrained path: it drops the file's classifier for the new class count.
            overlay["file"] = weights_file
            kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay)
        elif hub:
            kwargs.update(pretrained=True, pretrained_cfg_overlay=overlay or None)
        else:
            kwargs.update(pretrained=False, pretrained_cfg_overlay=overlay or None)
        self.model = timm.create_model(model_name, **kwargs)
        self.model.reset_classifier(0)  # the pretrained classifier never stays in place
        self.feature_dim = int(self.model.num_features)
        dc = timm.data.resolve_data_config({}, model=self.model)
        size = int(dc["input_size"][-1])
        self.preprocessing = ImagePreprocessing(
            input_size=size,
            resize_size=int(math.floor(size / float(dc.get("crop_pct", 1.0) or 1.0))),
            interpolation=dc.get("interpolation", "bilinear")
            if dc.get("interpolation") in ("bilinear", "bicubic", "nearest")
            else "bilinear",
            mean=tuple(float(x) for x in dc["mean"]),
            std=tuple(float(x) for x in dc["std"]),
        )
        self.spec = {"adapter": "timm", "model_name": model_name, "cfg_overlay": {
            k: v for k, v in overlay.items() if k != "file"}}

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs)

    def layer_groups(self) -> list[LayerGroup]:
        names = [n for n, _ in self.named_parameters()]
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is not None:
            try:
                spec = matcher(coarse=True)
            except NotImplementedError:
                spec = None
            if spec:
                # timm's patterns are matched against timm's own names (without "model."):
                # some have several ^-anchored alternatives, which a prefix would break.
                return groups_from_timm_matcher(names, spec, strip_prefix="model.")
        return groups_by_generic_rule(self)

    def no_weight_decay_names(self) -> set[str]:
        fn = getattr(self.model, "no_weight_decay", None)
        if fn is None:
            return set()
        keys = set(fn())
        return {n for n, _ in self.named_parameters() if n.removeprefix("model.") in keys
                or n.removeprefix("model.").split(".")[0] in keys}
