"""Contrastive continued pretraining on unlabelled target images (``tlkit pretrain`` on an
image backbone): SimCLR (Chen, Kornblith, Norouzi and Hinton, ICML 2020, "A simple framework for
contrastive learning of visual representations") on the backbone's top layer groups.

Each image is turned into two random views (a random resized crop of 35-100% of its area,
a horizontal flip, brightness and contrast jitter, all drawn from torch's global generator, so
a checkpoint's random state resumes them), both go through the backbone and a new projection
head (a two-layer MLP, discarded afterwards, as SimCLR's), and ``info_nce`` pulls the two views of
an image together against the rest of the batch, in both directions. Only the top ``top_groups``
layer groups train; the groups below keep their weights and BatchNorm statistics, so the
pretraining stays cheap and the low-level filters that transfer well are not touched. What is
written is the backbone's weights (``backbone.safetensors``), which ``fit`` loads with the same
``source_model`` and ``pretrained_weights: OUT/backbone.safetensors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tlkit.adapt.contrastive import info_nce
from tlkit.backbones.registry import load_backbone, resolve_name
from tlkit.config import Config
from tlkit.data.collate import build_collate
from tlkit.data.datasets import build_dataset
from tlkit.data.transforms import resolve_preprocessing
from tlkit.data.types import LabelledData
from tlkit.errors import UserError

SIMCLR_TEMPERATURE = 0.2  # for batches of tens to hundreds (SimCLR's 0.1-0.5 sweep; MoCo v2's 0.2)
SIMCLR_LR = 1e-4
WEIGHTS = "backbone.safetensors"


def views(x: torch.Tensor) -> torch.Tensor:
    """One random view of each image of a normalised batch (B x 3 x H x W): a random resized
    crop (35-100% of the area, aspect 3/4-4/3) back to H x W, a flip half the time, brightness
    and contrast jitter (x0.6-1.4 each)."""
    b, _, h, w = x.shape
    out = torch.empty_like(x)
    scale = torch.empty(b).uniform_(0.35, 1.0)
    ratio = torch.exp(torch.empty(b).uniform_(np.log(3 / 4), np.log(4 / 3)))
    place = torch.rand(b, 2)
    flip = torch.rand(b) < 0.5
    for i in range(b):
        ch = int(round(min(h, max(2.0, h * float(torch.sqrt(scale[i] / ratio[i]))))))
        cw = int(round(min(w, max(2.0, w * float(torch.sqrt(scale[i] * ratio[i]))))))
        top, left = int(place[i, 0] * (h - ch)), int(place[i, 1] * (w - cw))
        crop = x[i:i + 1, :, top:top + ch, left:left + cw]
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        out[i] = crop[0].flip(-1) if bool(flip[i]) else crop[0]
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = torch.empty(b, 1, 1, 1).uniform_(0.6, 1.4)
    brightness = torch.empty(b, 1, 1, 1).uniform_(-0.4, 0.4)  # in units of the normalised scale
    return (out - mean) * contrast + mean + brightness


class _Model(nn.ModuleDict):
    """The backbone and projection head; in training mode the frozen groups' BatchNorm layers
    stay in eval mode (their statistics fixed), whoever switches the mode (the loop does at
    each epoch)."""

    def __init__(self, modules: dict[str, nn.Module], frozen_norms: Sequence[nn.Module]
                 ) -> None:
        super().__init__(modules)
        self.frozen_norms = frozen_norms  # a plain list: not submodules a second time

    def train(self, mode: bool = True) -> _Model:
        super().train(mode)
        for m in self.frozen_norms:
            m.eval()
        return self


class SimCLRObjective:
    """The backbone with its top groups trainable, a projection head, and the loss on a batch
    of images."""

    kind = "simclr"
    # the fewest images a batch may hold: each is contrasted with the others of its batch,
    # and the trainable groups' BatchNorm layers cannot train on one (tlkit.adapt.pretrain
    # merges a smaller last batch into the one before)
    min_batch = 2

    def __init__(self, cfg: Config, device: torch.device) -> None:
        tc, pc = cfg.transfer_config, cfg.adaptation.pretrain
        if resolve_name(tc.source_model).adapter != "timm":
            raise UserError(f"tlkit pretrain on images continues timm backbones (mobilenetv2, "
                            f"efficientnet-lite0, timm:NAME); {tc.source_model} is not one")
        self.device = device
        self.temperature = pc.temperature or SIMCLR_TEMPERATURE
        backbone = load_backbone(tc.source_model, tc.pretrained_weights)
        groups = backbone.layer_groups()
        backbone.use_groups(groups)
        self.groups = groups
        top = min(pc.top_groups, len(groups))
        trainable = {n for g in groups[len(groups) - top:] for n in g.param_names}
        for name, p in backbone.named_parameters():
            p.requires_grad_(name in trainable)
        # the frozen groups' BatchNorm layers keep their statistics (eval mode in train())
        self.frozen_norms = [m for name, m in backbone.named_modules()
                             if isinstance(m, nn.modules.batchnorm._BatchNorm)
                             and not any(f"{name}.{k}" in trainable for k, _ in
                                         m.named_parameters(recurse=False))]
        d = backbone.feature_dim
        projection = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, 128))
        self.model: Any = _Model({"backbone": backbone, "projection": projection},
                                 self.frozen_norms).to(device)
        self.prep = resolve_preprocessing(backbone.preprocessing, cfg.data)
        self.collate: Any = build_collate(self.prep)
        self.trainable_groups = [g.name for g in groups[len(groups) - top:]]

    def train(self) -> None:
        self.model.train()

    def batch(self, items: list[Any]) -> torch.Tensor:
        """Image inputs (paths, arrays) to the backbone's normalised tensors."""
        data = build_dataset(LabelledData("target", "image", "single_label", list(items),
                                          np.zeros(len(items), dtype=np.int64), ["-"]),
                             self.prep)
        x, _ = self.collate([data[i] for i in range(len(items))])
        return torch.as_tensor(x)

    def loss(self, items: list[Any]) -> torch.Tensor:
        x = self.batch(items)
        a = self.model["projection"](self.model["backbone"](views(x).to(self.device)))
        b = self.model["projection"](self.model["backbone"](views(x).to(self.device)))
        return 0.5 * (info_nce(a, b, self.temperature) + info_nce(b, a, self.temperature))

    def evaluate(self, items: list[Any]) -> float:
        """The loss on held-out images with the BatchNorm statistics as they stand (eval mode:
        measuring must not move them)."""
        self.model.eval()
        try:
            return float(self.loss(items))
        finally:
            self.train()

    def save(self, out: Path) -> str:
        """The backbone's weights where ``fit`` reads them; returns the config line to use."""
        from safetensors.torch import save_file

        backbone: Any = self.model["backbone"]
        state = {k: v.detach().cpu().contiguous() for k, v in backbone.model.state_dict().items()}
        save_file(state, str(out / WEIGHTS))
        return f"pretrained_weights: {out / WEIGHTS}"

    def cka(self, start: Any, out: Path, held: list[Any], device: torch.device, sample: int
            ) -> dict[str, float] | None:
        """CKA of each layer group's features on the held-out images against ``start`` (the
        backbone before pretraining)."""
        if len(held) < 4:
            return None
        from tlkit.diagnose.forgetting import forgetting

        data = build_dataset(LabelledData("held out", "image", "single_label", list(held),
                                          np.zeros(len(held), dtype=np.int64), ["-", "+"]),
                             self.prep)
        backbone = self.model["backbone"].eval()
        got = forgetting(start.eval(), backbone, self.groups, data, self.collate, device,
                         min(len(held), sample))
        return dict(got["cka"])
