"""The input size of an image run whose config gives no ``data.image_size``: it follows the
images, as BiT-HyperRule does (Kolesnikov et al., 2020, "Big Transfer": small images are
fine-tuned at a small resolution, large ones at the backbone's).

The training images' median shorter side (of at most ``SAMPLE`` of them, evenly spaced, so the
same data always gives the same size) is scaled by ``SCALE``, rounded up to a multiple of
``STEP``, and kept between ``FLOOR`` and the backbone's own size: 8 px digits and 28 px
Fashion-MNIST run at 128 px (as BiT-HyperRule runs CIFAR's 32 px), 40 px images at 160, and
images of 56 px or more at the backbone's own size (MobileNetV2: 224); a run never goes above the
backbone's size. FLOOR is measured (bench/resolution.py, bench/README.md, MobileNetV2 on digits
and Fashion-MNIST): at 128 px the frozen features were within a point of 224 px's accuracy at 100
labels (digits +1.1, Fashion-MNIST +0.4 points) and at 1,000 labels of digits (+0.2), 3.0 points
below at 1,000 labels of Fashion-MNIST, in 0.14-0.28 of the seconds; a short top_n fine-tune at
100 labels, -2.6 and +2.5 points; 64 px lost 2.7 to 5.4 points. SCALE (4) is BiT-HyperRule's 32 -> 128 and is not measured between 32 px and the
backbone's size. An explicit ``data.image_size`` always wins, and a backbone that computes
features at its own size only (a ViT's fixed patch grid) keeps it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from tlkit.data.images import shorter_side

SAMPLE = 200  # images whose size is read (headers only)
SCALE = 4  # BiT-HyperRule upsamples 32 px images to 128 px
FLOOR = 128  # measured: bench/resolution.py
STEP = 32

Why = Literal["config", "data", "backbone", "fixed"]


@dataclass(frozen=True)
class ImageSize:
    """The size a run's images are fed at, and why."""

    size: int
    backbone: int  # the backbone's own input size
    why: Why  # config: data.image_size; data: from the images; backbone: the images are as
    # large or larger; fixed: the backbone takes no other size
    side: int | None = None  # the sampled images' median shorter side
    sampled: int = 0

    def describe(self) -> str:
        """One line for the plan and the fit's log."""
        if self.why == "config":
            return (f"images at {self.size} px (data.image_size; the backbone's own size is "
                    f"{self.backbone})")
        seen = (f"images {self.side} px (median shorter side of {self.sampled} sampled)"
                if self.side is not None else "no training image to measure")
        if self.why == "data":
            return (f"{seen}: running at {self.size} px, not the backbone's {self.backbone} "
                    "(data.image_size to override)")
        if self.why == "fixed":
            return (f"{seen}: running at the backbone's {self.backbone} px, the only size it "
                    f"takes (it computes no features at {size_for(self.side or 0, self.backbone)}"
                    " px)")
        return f"{seen}: running at the backbone's {self.backbone} px (data.image_size to override)"


def size_for(side: int, backbone: int) -> int:
    """The rule: images of shorter side ``side`` run at this size, for a backbone of size
    ``backbone`` (never above it)."""
    scaled = -(-SCALE * side // STEP) * STEP  # rounded up to a multiple of STEP
    return min(backbone, max(FLOOR, scaled))


def median_side(images: Sequence[Any]) -> tuple[int | None, int]:
    """The median shorter side of at most ``SAMPLE`` of ``images`` (evenly spaced, so that it
    is deterministic), and how many were read."""
    n = len(images)
    idx = range(n) if n <= SAMPLE else np.linspace(0, n - 1, SAMPLE).round().astype(int)
    sides = [s for s in (shorter_side(images[int(i)]) for i in idx) if s is not None]
    return (int(round(float(np.median(sides)))) if sides else None), len(sides)


def takes_size(backbone: torch.nn.Module, size: int) -> bool:
    """Whether ``backbone`` computes features of a ``size`` x ``size`` image: one blank image,
    in eval mode (no BatchNorm statistic moves, no random draw), every module's mode restored."""
    modes = {m: m.training for m in backbone.modules()}
    param = next(backbone.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, size, size, device=device))
        return True
    except (RuntimeError, AssertionError, ValueError):  # e.g. a ViT's patch grid (timm asserts)
        return False
    finally:
        for m, mode in modes.items():
            m.training = mode


def image_size_for(backbone: Any, image_size: int | None, images: Sequence[Any]) -> ImageSize:
    """The size a run of ``backbone`` (an image backbone: ``preprocessing.input_size``) feeds
    its ``images`` (the training split's inputs) at: ``image_size`` (the config's) where given,
    else the rule's size for the images."""
    own = int(backbone.preprocessing.input_size)
    if image_size is not None:
        return ImageSize(image_size, own, "config")
    side, sampled = median_side(images)
    size = own if side is None else size_for(side, own)
    if size >= own:
        return ImageSize(own, own, "backbone", side, sampled)
    if not takes_size(backbone, size):
        return ImageSize(own, own, "fixed", side, sampled)
    return ImageSize(size, own, "data", side, sampled)
