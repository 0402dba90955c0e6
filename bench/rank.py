"""`tlkit rank` against fine-tuning the same candidates: how long each takes, and how well the
scores' order agrees with the accuracies.

Candidates (default): MobileNetV2, EfficientNet-Lite0 (the packaged ImageNet weights) and a
random-initialised MobileNetV2, on Fashion-MNIST at 96 px. One command, one table:

- rank: ``tlkit.diagnose.rank.rank`` with a cold feature cache (a fresh ``TLKIT_CACHE``): every
  candidate's pooled features of the training split, then LogME, H-score, LEEP and NCE; its
  seconds are the whole call, features included. The linear probes (``--probe``: on the same
  features, scored on validation) are timed apart and are not part of rank's seconds.
- fine-tune: ``fit_run`` of each candidate with ``freeze_strategy: none`` (every layer trains,
  discriminative rates), the same epochs for each; its seconds are the whole run, test included.

Kendall's tau of LogME against the linear-probe accuracies (what issue 6 asks) and against the
fine-tuned test accuracies.

    .venv/bin/python bench/rank.py                         # 1,000 labels, 5 epochs
    .venv/bin/python bench/rank.py --labels 200 --epochs 1 --test-limit 500    # smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", default="mobilenetv2,efficientnet-lite0,mobilenetv2@none")
    p.add_argument("--labels", type=int, default=1000, help="training labels (validation: a "
                   "fifth more)")
    p.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (compare's budget)")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--test-limit", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    with common.cold_tlkit_cache() as cache:
        os.environ["TLKIT_CACHE"] = str(cache)
        return run(args, argv)


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from tlkit.config import validate
    from tlkit.diagnose.rank import parse_candidates, rank
    from tlkit.run import fit_run

    raw = {"transfer_config": {"source_model": "mobilenetv2", "head_lr": 1e-2,
                               "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7,
                               "batch_size": 32, "epochs": args.epochs, "warmup_steps": 10,
                               "mixed_precision": True, "early_stopping_patience": None},
           "data": {"source": "fashion_mnist", "limit": round(args.labels / 0.8),
                    "val_fraction": 0.2, "image_size": args.image_size}}
    cfg = validate(raw)
    cands = parse_candidates(args.candidates)
    # imports are not what is timed (as in the other benchmarks): both sides import first
    common.preimport_tlkit()
    import scipy.stats  # noqa: F401
    import sklearn.covariance  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import tlkit.diagnose.transferability  # noqa: F401
    import tlkit.run  # noqa: F401
    t0 = time.perf_counter()
    res = rank(cfg, cands, probe=False, log=lambda s: print(s, file=sys.stderr))
    rank_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probed = rank(cfg, cands, probe=True, log=lambda s: None)  # features now from the cache
    probe_s = time.perf_counter() - t0
    probe_acc = {c["candidate"]: c["probe_accuracy"] for c in probed["candidates"]}
    fine: dict[str, dict[str, Any]] = {}
    for name, weights in cands:
        label = name if weights is None else f"{name}@{weights}"
        tc = {**raw["transfer_config"], "source_model": name, "freeze_strategy": "none"}
        if weights == "none":
            tc.update(pretrained_weights="none", backbone_lr=2e-3, lr_decay_per_layer=1.0)
        print(f"fine-tuning {label}", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="tlkit-bench-rank-") as tmp:
            t1 = time.perf_counter()
            s = fit_run(validate({**raw, "transfer_config": tc}), Path(tmp) / "run",
                        test_limit=args.test_limit)
            fine[label] = {"seconds": time.perf_counter() - t1,
                           "test_accuracy": s["test"]["accuracy"]}
    from scipy.stats import kendalltau

    rows = res["candidates"]
    head = ["rank", "candidate", "LogME", "LEEP", "NCE", "H-score", "probe val acc",
            "fine-tuned test acc", "rank s", "fine-tune s"]
    body = [[str(r["rank"]), r["candidate"], f"{r['logme']:.4f}",
             "-" if r["leep"] is None else f"{r['leep']:.4f}",
             "-" if r["nce"] is None else f"{r['nce']:.4f}", f"{r['hscore']:.3f}",
             f"{probe_acc[r['candidate']]:.4f}", f"{fine[r['candidate']]['test_accuracy']:.4f}",
             f"{r['seconds']:.1f}", f"{fine[r['candidate']]['seconds']:.1f}"] for r in rows]
    ft_total = sum(f["seconds"] for f in fine.values())
    tau_p = kendalltau([r["logme"] for r in rows], [probe_acc[r["candidate"]] for r in rows])
    tau_f = kendalltau([r["logme"] for r in rows],
                       [fine[r["candidate"]]["test_accuracy"] for r in rows])
    lines = [common.table(head, body, {0, 2, 3, 4, 5, 6, 7, 8, 9}), "", "Notes:",
             f"- rank of {len(rows)} candidates: {rank_s:.1f} s (cold feature cache, features "
             f"included); fine-tuning them: {ft_total:.1f} s; rank / fine-tune = "
             f"{rank_s / ft_total:.3f} (issue 6 asks under 0.1).",
             f"- Kendall's tau of LogME against the linear-probe accuracy: "
             f"{tau_p.statistic:.3f}; against the fine-tuned test accuracy: "
             f"{tau_f.statistic:.3f}. The linear probes took {probe_s:.1f} s more (on the cached "
             "features, not in rank's seconds).",
             f"- data: Fashion-MNIST, {args.labels:,} training labels + a fifth more for "
             f"validation, {args.image_size} px; fine-tuning: freeze_strategy none, "
             f"{args.epochs} epochs, batch 32, head 1e-2, backbone 3e-4 decay 0.7 (random "
             "init: 2e-3 for all), bf16 autocast; test: a stratified subset of "
             f"{args.test_limit:,} test images.",
             f"- machine: {common.machine_line(args.threads)}.",
             f"- command: {common.command_line(__file__, sys.argv[1:] if argv is None else argv)}"]
    text = "\n".join(lines)
    print(text)
    common.save_json(args.json, {"rank": res, "probe": probe_acc, "fine_tune": fine,
                                 "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
