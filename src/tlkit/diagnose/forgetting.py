"""Forgetting: how far fine-tuning moved each group's representation away from the pretrained one.

Linear CKA (Kornblith et al., 2019) between the pretrained and the adapted backbone's pooled
output of each group, on a fixed sample of the validation split: 1 = the same representation up
to rotation and scale, lower = further moved. Where the config gives labelled data of the source
task (``diagnostics.source_task``, labels = indices of the source classifier's classes) and the
backbone still has its source classifier (the packaged ImageNet models), also the source-task
accuracy of that classifier on the pretrained and on the adapted features: the forgetting the
concept describes ("source task performance drops dramatically after fine-tuning").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tlkit.backbones.packaged import PACKAGED_VISION, imagenet_classifier
from tlkit.data import build_dataset, load_source
from tlkit.diagnose.features import cuttable_groups, group_names, layer_features
from tlkit.diagnose.similarity import linear_cka
from tlkit.errors import UserError


def forgetting(pretrained: Any, adapted: Any, groups: list[Any], data: Any, collate: Any,
               device: torch.device, sample: int, mixed_precision: bool = False,
               source_task: Any | None = None, source_model: str = "") -> dict[str, Any]:
    n_groups = len(groups)
    k = min(sample, len(data))
    idx = list(range(k))
    pretrained.use_groups(groups)
    cuts = cuttable_groups(adapted, n_groups)
    kw: dict[str, Any] = {"device": device, "mixed_precision": mixed_precision, "indices": idx}
    was = adapted.training
    before, _ = layer_features(pretrained.to(device), data, collate, n_groups, cuts, **kw)
    after, _ = layer_features(adapted.to(device), data, collate, n_groups, cuts, **kw)
    adapted.train(was)
    names = group_names(groups, cuts)
    cka = {names[c]: round(linear_cka(before[c], after[c]), 4) for c in cuts}
    out: dict[str, Any] = {"cka": cka, "sample": k,
                           "least_similar": min(cka, key=cka.__getitem__) if cka else None}
    if source_task is not None:
        out["source_task"] = source_accuracy(pretrained, adapted, n_groups, source_task,
                                             collate, device, source_model, mixed_precision)
    return out


def source_accuracy(pretrained: Any, adapted: Any, n_groups: int, data_cfg: Any, collate: Any,
                    device: torch.device, source_model: str, mixed_precision: bool
                    ) -> dict[str, Any]:
    """The source classifier's accuracy on the source-task data, through the pretrained and
    through the adapted backbone."""
    if source_model not in PACKAGED_VISION:
        raise UserError(f"diagnostics.source_task needs the backbone's source classifier; "
                        f"{source_model} has none here (the packaged vision models do: "
                        f"{', '.join(PACKAGED_VISION)}); remove diagnostics.source_task")
    data = load_source(data_cfg)
    try:
        if data.classes is None:  # regression data: no class indices to read
            raise TypeError("no classes")
        labels = np.array([int(data.classes[t]) for t in data.targets])
    except (TypeError, ValueError):
        raise UserError("diagnostics.source_task labels must be the source classifier's class "
                        "indices (0-999 for ImageNet), e.g. one folder per index") from None
    ds = build_dataset(data, adapted.preprocessing)
    clf = imagenet_classifier(source_model).get_classifier().to(device).eval()
    res = {}
    for name, bb in (("before", pretrained), ("after", adapted)):
        feats, _ = layer_features(bb, ds, collate, n_groups, cuts=[n_groups], device=device,
                                  mixed_precision=mixed_precision)
        x = torch.from_numpy(feats[n_groups]).to(device)
        with torch.inference_mode():
            pred = clf(x).argmax(1).cpu().numpy()
        res[f"accuracy_{name}"] = float((pred == labels).mean())
    res["n"] = int(len(labels))
    res["drop_points"] = round(100 * (res["accuracy_before"] - res["accuracy_after"]), 2)
    return res
