"""``--format timm``: an image run on a timm backbone with a linear head as a folder that timm
loads.

Written through timm's own ``save_for_hf``: the architecture with the head as its classifier,
``model.safetensors`` and a ``config.json`` holding the run's preprocessing and label names;
``timm.create_model("local-dir:FOLDER", pretrained=True)`` loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.errors import UserError
from tlkit.export.common import Runner, labels, require_backbone


def export_timm(saved: Any, out: Path) -> Runner:
    """Write ``saved`` (a ``tlkit.saved.SavedModel``) to the folder ``out``; the folder loaded
    back by timm, as a runner."""
    require_backbone(saved, "timm", "image", "timm", "timm")
    import timm
    from timm.models import save_for_hf

    head = saved.meta["head"]
    if head.get("normalize"):
        raise UserError("--format timm needs a plain linear head (timm's classifier is one "
                        "layer); this run's head scales the features to unit length first "
                        "(head.normalize): use --format onnx or torchscript")
    if head["type"] != "linear":
        raise UserError("--format timm needs a linear head (timm's classifier is one layer); "
                        "this run has an MLP head: use --format onnx or torchscript")
    spec = saved.meta["backbone"]
    names = labels(saved)
    body = saved.model.backbone.model
    model: Any = timm.create_model(spec["model_name"], pretrained=False, num_classes=len(names),
                                   pretrained_cfg_overlay=spec.get("cfg_overlay") or None)
    state = {k: v for k, v in body.state_dict().items()}
    linear = saved.model.head[-1]
    classifier = model.get_classifier()
    found = [n for n, m in model.named_modules() if m is classifier]
    state[f"{found[0]}.weight"], state[f"{found[0]}.bias"] = linear.weight, linear.bias
    model.load_state_dict(state, strict=True)
    prep = saved.meta["preprocessing"]
    size = int(prep["input_size"])
    data_config = {"input_size": (3, size, size), "interpolation": prep["interpolation"],
                   "mean": tuple(prep["mean"]), "std": tuple(prep["std"]),
                   "crop_pct": size / float(prep["resize_size"]), "crop_mode": "center"}
    out.mkdir(parents=True, exist_ok=True)
    save_for_hf(model, str(out), model_config={"label_names": list(names.values())},
                safe_serialization=True, data_config=data_config)
    loaded: Any = timm.create_model(f"local-dir:{out.resolve()}", pretrained=True).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            return loaded(inputs).float().numpy()

    return run
