"""``tlkit probe``: a linear probe at each layer group on the target data, and where the config
names a reference data set (``diagnostics.reference``), the divergence between the two at each
group's output: proxy A-distance and MMD."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tlkit.config import Config
from tlkit.device import pick_device
from tlkit.diagnose.divergence import mmd, proxy_a_distance
from tlkit.diagnose.features import group_names, layer_features
from tlkit.diagnose.inputs import dataset_for, prepare
from tlkit.diagnose.probe import format_probe_table, probe_layers, profile
from tlkit.diagnose.transferability import logme


def divergence_by_cut(target: dict[int, np.ndarray], reference: dict[int, np.ndarray],
                      seed: int = 0) -> dict[int, dict[str, Any]]:
    out = {}
    for cut in sorted(target):
        pad = proxy_a_distance(target[cut], reference[cut], seed=seed)
        out[cut] = {"pad": pad["pad"], "domain_error": pad["domain_error"],
                    "mmd": mmd(target[cut], reference[cut], seed=seed)}
    return out


def probe_run(cfg: Config, log: Callable[[str], None] = lambda s: None,
              divergence_at_every_group: bool = True) -> dict[str, Any]:
    """Probes at every group; the divergence to the reference at every group's output (or only
    at the backbone's, which is all ``advise`` reads); LogME of the top features."""
    t0 = time.perf_counter()
    tc = cfg.transfer_config
    device = pick_device(tc.device)
    p = prepare(cfg)
    p.backbone.to(device)
    log(f"probe: features of {len(p.train_ds):,} training and {len(p.val_ds):,} validation "
        f"examples at each of {p.n_groups} groups")
    kw: dict[str, Any] = {"device": device, "mixed_precision": tc.mixed_precision}
    tr, ty = layer_features(p.backbone, p.train_ds, p.collate, p.n_groups, **kw)
    va, vy = layer_features(p.backbone, p.val_ds, p.collate, p.n_groups, **kw)
    names = group_names(p.groups, list(tr))
    rows = probe_layers(tr, ty, va, vy, names, tc.seed)
    result: dict[str, Any] = {
        "source_model": tc.source_model, "data": cfg.data.source, "modality": p.modality,
        "n_train": len(p.train_ds), "n_val": len(p.val_ds), "n_groups": p.n_groups,
        "groups": [g.name for g in p.groups], "probes": rows, "profile": profile(rows),
        "logme": (logme(tr[p.n_groups], ty.astype(np.int64))
                  if cfg.data.task == "single_label" else None)}
    ref = cfg.diagnostics.reference
    if ref is not None:
        k = cfg.diagnostics.sample
        rds = dataset_for(p, ref)
        idx = np.random.default_rng(tc.seed).permutation(len(rds))[:k]
        cuts = list(tr) if divergence_at_every_group else [p.n_groups]
        log(f"probe: features of {len(idx):,} examples of the reference {ref.source}")
        rx, _ = layer_features(p.backbone, rds, p.collate, p.n_groups, cuts=cuts,
                               indices=idx, **kw)
        div = divergence_by_cut({c: tr[c][:k] for c in cuts}, rx, tc.seed)
        result["reference"] = ref.source
        result["divergence"] = {names[c]: d for c, d in div.items()}
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def format_probe_run(result: dict[str, Any]) -> str:
    div = result.get("divergence")
    prof = result["profile"]
    lines = [format_probe_table(result["probes"], div), "",
             f"{result['source_model']} on {result['data']}: a logistic-regression probe per "
             f"group, trained on {result['n_train']:,} examples, scored on {result['n_val']:,} "
             f"validation examples; * the best ({prof['best_group']}, "
             f"{prof['best_accuracy']:.4f}; the top group {prof['top_accuracy']:.4f})."]
    if div is not None:
        lines.append(f"divergence to {result['reference']}: proxy A-distance 2(1 - 2 err) of a "
                     "linear domain classifier (0 = same distribution, 2 = fully apart) and "
                     "multi-kernel MMD^2, at each group's pooled output.")
    lines.append(f"took {result['seconds']:.1f} s")
    return "\n".join(lines)
