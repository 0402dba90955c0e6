"""timm vision backbones: ``timm.create_model`` with the classifier removed, groups from the
model's own ``group_matcher``, preprocessing from timm's data config."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from typing import Any

import torch

from tlkit.backbones.base import Backbone, ImagePreprocessing, LayerGroup
from tlkit.backbones.groups import groups_by_generic_rule, groups_from_timm_matcher
from tlkit.errors import UserError


def _import_timm() -> Any:
    import timm  # heavy: imported only when a timm backbone is built

    return timm


@contextlib.contextmanager
def _timm_load_report() -> Iterator[list[str]]:
    """What timm's loader says about keys it could not match (it logs them and carries on:
    with a new class count it loads non-strictly, so a wrong file would silently leave the
    network at its random initialisation)."""
    records: list[str] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("timm.models._builder")
    handler, level, propagate = _Keep(logging.INFO), log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


def _create_checked(timm: Any, model_name: str, weights_file: str, kwargs: dict[str, Any]) -> Any:
    try:
        with _timm_load_report() as report:
            model = timm.create_model(model_name, **kwargs)
    except Exception as e:  # noqa: BLE001 - whatever the file holds, the user must change it
        raise UserError(
            f"cannot load {weights_file} into timm {model_name}: {type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:300]}; fix: "
            "give a state_dict (.safetensors / .pth) saved from this architecture"
        ) from None
    problems = []
    for r in report:
        if r.startswith(("Missing keys", "Unexpected keys")):
            keys = [k for k in r.split("(", 1)[-1].split(")", 1)[0].split(", ")
                    if not k.endswith("num_batches_tracked")]
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                problems.append(f"{r.split(' ', 1)[0].lower()} {', '.join(keys[:3])}{more}")
    if problems:
        raise UserError(
            f"{weights_file} does not fit timm {model_name}: {'; '.join(problems)}; fix: give "
            "weights saved from this architecture (or pretrained_weights: none for a random "
            "initialisation)"
        )
    return model


def keep_blocks(model: Any, kept: list[list[int]]) -> None:
    """Keep the blocks ``kept[s]`` of each stage ``s`` of a timm staged CNN (``blocks``, a
    sequence of stages), in place: a distilled student's depth (``tlkit.distillation.student``)."""
    if len(kept) != len(model.blocks):
        raise ValueError(f"blocks_kept names {len(kept)} stages, the model has "
                         f"{len(model.blocks)}")
    for s, stage in enumerate(model.blocks):
        model.blocks[s] = torch.nn.Sequential(*[stage[i] for i in kept[s]])


# timm families whose forward_features is a plain chain of these attributes, in this order
_CHAINS = {
    "EfficientNet": ("conv_stem", "bn1", "blocks*", "conv_head", "bn2"),
}


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
        if weights_file:
            self.model = _create_checked(timm, model_name, weights_file, kwargs)
        else:
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

    # the trunk as a chain of units, for the frozen-prefix cache
    def units(self) -> list[str] | None:
        chain = _CHAINS.get(type(self.model).__name__)
        if chain is None:
            return None
        units: list[str] = []
        for attr in chain:
            if attr.endswith("*"):
                seq = getattr(self.model, attr[:-1])
                units += [f"model.{attr[:-1]}.{i}" for i in range(len(seq))]
            else:
                units.append(f"model.{attr}")
        return units

    def run_unit(self, index: int, state: torch.Tensor) -> torch.Tensor:
        if not hasattr(self, "_unit_modules"):
            self._unit_modules = [self.get_submodule(u) for u in self.units() or []]
        return self._unit_modules[index](state)

    def end(self, state: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(state)

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

