"""Rank candidate backbones for a target task without fine-tuning any of them.

For each candidate: its pooled features of the training split (once, through the feature cache,
so a later ``fit``, ``probe`` or ``rank`` on the same backbone and data reuses them), then LogME,
H-score, and where the candidate still has the classifier it was pretrained with, LEEP and NCE
on that classifier's outputs. Candidates are ranked by LogME (You et al., 2021), the score that
needs no source classifier, so every candidate has one. With ``probe``, a linear probe on the
same features (trained on the training split, scored on validation) gives each candidate's
measured accuracy, and Kendall's tau says how well the score's order agrees with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tlkit.backbones.packaged import PACKAGED_VISION, imagenet_classifier
from tlkit.backbones.registry import resolve_name
from tlkit.cache import cache_for
from tlkit.config import Config
from tlkit.device import pick_device
from tlkit.diagnose.classical import classical_note, fit_classical
from tlkit.diagnose.inputs import load_splits, prepare
from tlkit.diagnose.probe import linear_probe, text_table
from tlkit.diagnose.transferability import all_scores
from tlkit.errors import UserError

Log = Callable[[str], None]


def parse_candidates(spec: str) -> list[tuple[str, str | None]]:
    """``A,B@none,C@/path/weights.safetensors``: a backbone name, and optionally the weights to
    load in place of the config's ``pretrained_weights`` (``none``: random initialisation)."""
    out = []
    for part in [s.strip() for s in spec.split(",") if s.strip()]:
        name, _, weights = part.partition("@")
        out.append((name, weights or None))
    if not out:
        raise UserError("--backbones is empty; give a comma-separated list such as "
                        "mobilenetv2,efficientnet-lite0,mobilenetv2@none")
    return out


def check_name(name: str) -> None:
    """A UserError for an unknown name, with the closest known one."""
    resolve_name(name)


def label_of(name: str, weights: str | None) -> str:
    return name if weights is None else f"{name}@{weights}"


def pooled(p: Any, name: str, dataset: Any, device: torch.device, log: Log
           ) -> tuple[np.ndarray, np.ndarray]:
    """The backbone's pooled features of a split, through the run's own activation cache (on
    disk where the config keeps it, so fit and rank reuse each other's), with the targets."""
    cache = cache_for(p.backbone.to(device), p.n_groups, p.collate, device, p.tc.cache_settings,
                      p.prep, log)
    split = cache.get(name, dataset, p.n_groups)
    if split is None or split.dense is None:
        raise UserError(f"the features of {name} do not fit under transfer_config.cache.max_mb "
                        f"({p.tc.cache.max_mb}); raise it")
    return split.dense.float().numpy(), split.targets.numpy()


def source_probabilities(name: str, weights: str | None, features: np.ndarray
                         ) -> np.ndarray | None:
    """The outputs of the classifier the candidate was pretrained with, on its pooled features,
    as probabilities; None where there is none (a text encoder, random weights)."""
    if weights not in (None, "packaged") or name not in PACKAGED_VISION:
        return None
    clf = imagenet_classifier(name).get_classifier()
    with torch.inference_mode():
        logits = clf(torch.from_numpy(features).float())
    return torch.softmax(logits.float(), dim=1).numpy()


def rank(cfg: Config, candidates: list[tuple[str, str | None]], probe: bool = False,
         log: Log = lambda s: None) -> dict[str, Any]:
    tc = cfg.transfer_config
    if cfg.data.task != "single_label":
        raise UserError("rank scores single-label classification data (data.task: "
                        f"single_label); this config's task is {cfg.data.task}")
    device = pick_device(tc.device)
    for name, _ in candidates:  # every name checked before anything heavy runs
        check_name(name)
    splits = load_splits(cfg.data)
    rows = []
    for name, weights in candidates:
        label = label_of(name, weights)
        log(f"rank: {label}")
        t0 = time.perf_counter()
        p = prepare(cfg, name, weights or tc.pretrained_weights, splits=splits)
        x, y = pooled(p, "train", p.train_ds, device, log)
        t_feat = time.perf_counter() - t0
        src = source_probabilities(name, weights or tc.pretrained_weights, x)
        scores = all_scores(x, y.astype(np.int64), src)
        row: dict[str, Any] = {"candidate": label, "feature_dim": int(x.shape[1]), **scores,
                               "feature_seconds": round(t_feat, 2)}
        row["score_seconds"] = round(time.perf_counter() - t0 - t_feat, 2)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        if probe:
            t1 = time.perf_counter()
            vx, vy = pooled(p, "val", p.val_ds, device, log)
            row["probe_accuracy"] = linear_probe(x, y, vx, vy, tc.seed)["accuracy"]
            row["probe_seconds"] = round(time.perf_counter() - t1, 2)
        rows.append(row)
        del p
    rows.sort(key=lambda r: r["logme"], reverse=True)
    for i, r in enumerate(rows):
        r["rank"] = i + 1
    out: dict[str, Any] = {"ranked_by": "logme", "candidates": rows,
                           "n_train": int(len(splits[0].train)),
                           "seconds": round(sum(r["seconds"] for r in rows), 2),
                           "classical": _classical(cfg, splits[0], log)}
    if probe and len(rows) >= 2:
        from scipy.stats import kendalltau

        tau = kendalltau([r["logme"] for r in rows], [r["probe_accuracy"] for r in rows])
        out["kendall_tau_logme_vs_probe"] = (None if np.isnan(tau.statistic)
                                             else float(tau.statistic))
    return out


def _classical(cfg: Config, splits: Any, log: Log) -> dict[str, Any]:
    """The classical baseline's probe: TF-IDF or raw pixels + logistic regression, fitted on the
    training split, its accuracy on validation (what --probe measures of each candidate)."""
    log("rank: the classical baseline")
    r = fit_classical(splits.train, splits.val, None, len(splits.classes),
                      cfg.transfer_config.seed, cfg.diagnostics.classical_image_size)
    acc = (float((r.val_outputs.argmax(1) == splits.val.targets).mean())
           if len(splits.val) else None)
    return {"candidate": f"classical: {r.name}", "probe_accuracy": acc,
            "seconds": round(r.seconds, 2), "c": r.c}


def format_rank(result: dict[str, Any]) -> str:
    probe = any("probe_accuracy" in r for r in result["candidates"])
    head = ["rank", "candidate", "LogME", "H-score", "LEEP", "NCE", "seconds"]
    if probe:
        head.insert(6, "probe val acc")

    def f(v: Any, spec: str = ".4f") -> str:
        return "-" if v is None else format(v, spec)

    body = []
    for r in result["candidates"]:
        cells = [str(r["rank"]), r["candidate"], f(r["logme"]), f(r["hscore"]), f(r["leep"]),
                 f(r["nce"]), f(r["seconds"], ".1f")]
        if probe:
            cells.insert(6, f(r.get("probe_accuracy")))
        body.append(cells)
    c = result.get("classical")
    if c:  # not a backbone: no scores, no rank; its validation accuracy beside the probes
        cells = ["-", c["candidate"], "-", "-", "-", "-", f(c["seconds"], ".1f")]
        if probe:
            cells.insert(6, f(c.get("probe_accuracy")))
        body.append(cells)
    lines = [text_table(head, body, right={0, 2, 3, 4, 5, 6, 7} if probe else {0, 2, 3, 4, 5, 6}),
             "",
             f"ranked by LogME on the pooled features of {result['n_train']:,} training examples; "
             "LEEP and NCE need the classifier a candidate was pretrained with ('-': none). "
             f"Scoring took {result['seconds']:.1f} s in all (seconds: features, from the cache "
             "where they were computed before, and scores)."]
    said = classical_note(result)
    if said:
        lines.append(said)
    if "kendall_tau_logme_vs_probe" in result:
        tau = result["kendall_tau_logme_vs_probe"]
        lines.append(f"Kendall's tau between LogME and the linear-probe accuracy on validation: "
                     f"{'-' if tau is None else format(tau, '.3f')}")
    return "\n".join(lines)
