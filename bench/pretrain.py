"""Continued self-supervised pretraining on the unlabelled target text, against none (issue 19):
does fine-tuning from the continued backbone beat fine-tuning from the pretrained one?

Rotten Tomatoes (tlkit's packaged set): a fixed test split (``--test-fraction`` of the set, cut
by tlkit's functions with seed 0), and the rest as the target's unlabelled texts. Once, ``tlkit
pretrain`` continues MiniLM's pretraining on (a sample of ``--pretrain-examples``) those texts,
with the objective it picks (``auto``: contrastive SimCSE for MiniLM, which has no masked-LM
head) or ``--objective``. Then for each seed, ``--labels`` labelled examples are drawn
(stratified, seeded) from the non-test texts, written as a CSV with the test CSV beside it, and
tlkit fits the same config twice on them: from ``minilm-l6`` and from the continued folder.
Each fit: ``data.source`` the labelled CSV, ``data.test`` the test CSV, tlkit's default
validation share (0.1), ``--strategy`` (default ``none``, full fine-tuning, at
bench/adaptation.py's rates for this set: head 1e-2, backbone 1e-4 with layer decay 0.8, 5
epochs, batch 16, mixed precision: fp32 on a CPU without native bf16; ``all_frozen`` fits a
converged linear head on the frozen features at tlkit's defaults), the seed in ``data.seed``
and ``transfer_config.seed``.

Images (``--data fashion_mnist``): the target is a sample of ``--pretrain-examples`` of
Fashion-MNIST's 60,000 training images, unlabelled; ``tlkit pretrain`` continues MobileNetV2's
pretraining on them (SimCLR on the top ``--top-groups`` groups, at ``--image-size`` pixels); per
seed, ``--labels`` labelled training images (plus a fifth for validation, ``data.limit`` and
``data.seed``) fine-tune from the packaged weights and from the continued ones, both tested on
the same stratified ``--test-limit`` of the set's own test split (drawn with the seed).
``--strategy`` as for text (default for images: ``all_frozen``, tlkit's default at 200 labels).

The table: test accuracy per seed, mean and standard deviation over the seeds, and the mean
paired difference; whether the continued backbone improves the mean by more than one standard
deviation of the seeds, as measured.

    .venv/bin/python bench/pretrain.py --threads 2                           # the benchmark
    .venv/bin/python bench/pretrain.py --data fashion_mnist                  # images
    .venv/bin/python bench/pretrain.py --pretrain-examples 300 --seeds 0 --test-fraction 0.02
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common


# full fine-tuning's settings for Rotten Tomatoes at 200 labels, as bench/adaptation.py's
FINE_TUNING = {"head_lr": 1e-2, "backbone_lr": 1e-4, "lr_decay_per_layer": 0.8,
               "weight_decay": 0.01, "dropout": 0.1, "epochs": 5, "batch_size": 16,
               "warmup_steps": 10, "mixed_precision": True, "early_stopping_patience": None}


def _fit(raw: dict[str, Any], out: Path) -> tuple[float, float]:
    from tlkit.config import validate
    from tlkit.run import fit_run

    t0 = time.perf_counter()
    summary = fit_run(validate(raw, "<bench>"), out)
    return float(summary["test"]["accuracy"]), time.perf_counter() - t0


def run_images(args: argparse.Namespace) -> dict[str, Any]:
    """Fashion-MNIST: continued pretraining once on unlabelled training images, then per seed
    a fit from the packaged weights and one from the continued ones."""
    from tlkit.adapt.pretrain import pretrain
    from tlkit.config import validate

    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, Any] = {"seeds": seeds, "rows": {"pretrained": [], "continued": []},
                               "seconds": {"pretrained": [], "continued": []}}
    size = args.image_size
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-pretrain-") as tmp_name:
        tmp = Path(tmp_name)
        raw_pre = {"transfer_config": {"source_model": "mobilenetv2", "seed": 0},
                   "data": {"source": "fashion_mnist", "image_size": size},
                   "adaptation": {"target": {"source": "fashion_mnist", "image_size": size},
                                  "pretrain": {"max_examples": args.pretrain_examples,
                                               "epochs": args.pretrain_epochs,
                                               "batch_size": args.pretrain_batch,
                                               "top_groups": args.top_groups,
                                               **({"lr": args.pretrain_lr}
                                                  if args.pretrain_lr else {})}}}
        t0 = time.perf_counter()
        info = pretrain(validate(raw_pre, "<bench>"), tmp / "continued",
                        log=lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
        results["pretrain"] = {**info, "wall_seconds": round(time.perf_counter() - t0, 1)}
        weights = str(tmp / "continued" / "backbone.safetensors")
        for seed in seeds:
            for row, w in (("pretrained", "packaged"), ("continued", weights)):
                raw = {"transfer_config": {"source_model": "mobilenetv2",
                                           "pretrained_weights": w,
                                           "freeze_strategy": args.strategy, "seed": seed,
                                           "device": "cpu"},
                       "data": {"source": "fashion_mnist", "limit": round(args.labels / 0.8),
                                "val_fraction": 0.2, "image_size": size, "seed": seed}}
                print(f"[bench] seed {seed}: fit from the {row} backbone", file=sys.stderr,
                      flush=True)
                acc, secs, n_test = _fit_images(raw, tmp / f"run-{row}-{seed}", args.test_limit)
                results["rows"][row].append(acc)
                results["seconds"][row].append(round(secs, 1))
                results["n_test"] = n_test
    return results


def _fit_images(raw: dict[str, Any], out: Path, test_limit: int) -> tuple[float, float, int]:
    from tlkit.config import validate
    from tlkit.run import fit_run

    t0 = time.perf_counter()
    summary = fit_run(validate(raw, "<bench>"), out, test_limit=test_limit)
    return (float(summary["test"]["accuracy"]), time.perf_counter() - t0,
            int(summary["data"]["sizes"]["test"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="rotten_tomatoes",
                   choices=["rotten_tomatoes", "fashion_mnist"])
    p.add_argument("--labels", type=int, default=200)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--pretrain-examples", type=int, default=4000)
    p.add_argument("--pretrain-epochs", type=int, default=1)
    p.add_argument("--pretrain-lr", type=float, default=None,
                   help="default: text 3e-5, images tlkit's (1e-4)")
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--objective", default="auto", choices=["auto", "mlm", "simcse", "tsdae"])
    p.add_argument("--word-deletion", type=float, default=None,
                   help="simcse views: each word dropped with this probability")
    p.add_argument("--strategy", default=None,
                   help="default: text none (full fine-tuning), images all_frozen")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--top-groups", type=int, default=2)
    p.add_argument("--test-limit", type=int, default=2000, help="images: test images")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    images = args.data == "fashion_mnist"
    args.strategy = args.strategy or ("all_frozen" if images else "none")
    if args.pretrain_lr is None and not images:
        args.pretrain_lr = 3e-5
    import numpy as np
    import pandas as pd
    import torch
    from sklearn.model_selection import train_test_split

    torch.set_num_threads(args.threads)
    common.preimport_tlkit()
    from tlkit.adapt.pretrain import pretrain
    from tlkit.config import validate

    if images:
        results = run_images(args)
        text = report(results, args, argv, results["n_test"])
        print(text)
        common.save_json(args.json, {"argv": argv, **results, "table": text})
        return 0

    _, splits = common.splits_as_tlkit(
        {"transfer_config": {"source_model": "minilm-l6"},
         "data": {"source": "rotten_tomatoes", "test_fraction": args.test_fraction,
                  "val_fraction": 0.1, "seed": 0}}, None)
    pool = [*zip(splits.train.inputs, splits.train.targets),
            *zip(splits.val.inputs, splits.val.targets)]
    classes = splits.classes
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, Any] = {"seeds": seeds, "rows": {"pretrained": [], "continued": []},
                               "seconds": {"pretrained": [], "continued": []}}
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-pretrain-") as tmp_name:
        tmp = Path(tmp_name)
        pd.DataFrame({"text": splits.test.inputs,
                      "label": [classes[t] for t in splits.test.targets]}).to_csv(
            tmp / "test.csv", index=False)
        pd.DataFrame({"text": [t for t, _ in pool]}).to_csv(tmp / "target.csv", index=False)
        raw_pre = {"transfer_config": {"source_model": "minilm-l6", "seed": 0},
                   "data": {"source": str(tmp / "test.csv"), "max_length": args.max_length},
                   "adaptation": {"target": {"source": str(tmp / "target.csv"),
                                             "text_column": "text"},
                                  "pretrain": {"objective": args.objective,
                                               "max_examples": args.pretrain_examples,
                                               "epochs": args.pretrain_epochs,
                                               **({"lr": args.pretrain_lr}
                                                  if args.pretrain_lr else {}),
                                               "batch_size": args.pretrain_batch,
                                               **({"word_deletion": args.word_deletion}
                                                  if args.word_deletion is not None
                                                  else {})}}}
        t0 = time.perf_counter()
        info = pretrain(validate(raw_pre, "<bench>"), tmp / "continued",
                        log=lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))
        results["pretrain"] = {**info, "wall_seconds": round(time.perf_counter() - t0, 1)}
        for seed in seeds:
            texts = np.array([t for t, _ in pool], dtype=object)
            labels = np.array([classes[y] for _, y in pool], dtype=object)
            idx, _ = train_test_split(np.arange(len(pool)), train_size=args.labels,
                                      stratify=labels, random_state=seed)
            labelled = tmp / f"labelled-{seed}.csv"
            pd.DataFrame({"text": texts[idx], "label": labels[idx]}).to_csv(labelled, index=False)
            continued = {"source_model": f"hf:{tmp / 'continued'}"}
            for row, source in (("pretrained", {"source_model": "minilm-l6"}),
                                ("continued", continued)):
                rates = FINE_TUNING if args.strategy == "none" else {}
                raw = {"transfer_config": {**source, **rates, "freeze_strategy": args.strategy,
                                           "seed": seed, "device": "cpu"},
                       "data": {"source": str(labelled), "test": str(tmp / "test.csv"),
                                "seed": seed, "max_length": args.max_length}}
                print(f"[bench] seed {seed}: fit from the {row} backbone", file=sys.stderr,
                      flush=True)
                acc, secs = _fit(raw, tmp / f"run-{row}-{seed}")
                results["rows"][row].append(acc)
                results["seconds"][row].append(round(secs, 1))
    text = report(results, args, argv, len(splits.test))
    print(text)
    common.save_json(args.json, {"argv": argv, **results, "table": text})
    return 0


def report(results: dict[str, Any], args: argparse.Namespace, argv: list[str], n_test: int
           ) -> str:
    seeds = results["seeds"]
    head = ["backbone", *[f"seed {s}" for s in seeds], "mean", "sd", "seconds (mean)"]
    body = []
    stats: dict[str, tuple[float, float]] = {}
    images = args.data == "fashion_mnist"
    names = (("pretrained", "mobilenetv2 (pretrained)"),
             ("continued", "continued on the target images")) if images else (
        ("pretrained", "minilm-l6 (pretrained)"), ("continued", "continued on the target texts"))
    for row, label in names:
        accs = results["rows"][row]
        m = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        stats[row] = (m, sd)
        body.append([label, *[f"{a:.4f}" for a in accs], f"{m:.4f}", f"{sd:.4f}",
                     common.fmt(statistics.mean(results["seconds"][row]))])
    diffs = [c - p for c, p in zip(results["rows"]["continued"], results["rows"]["pretrained"])]
    gain = statistics.mean(diffs)
    sd_max = max(stats["pretrained"][1], stats["continued"][1])
    pre = results["pretrain"]
    lines = [common.table(head, body, set(range(1, len(head)))), "", "Notes:"]
    unit = "images" if images else "texts"
    lr = args.pretrain_lr or "1e-4 (tlkit's)"
    lines.append(
        f"- continued pretraining: objective {pre['objective']} ({pre['why']}); "
        f"{pre['examples']:,} {unit} ({pre['held_out']:,} more held out), {pre['epochs_run']} "
        f"epoch(s), {pre['steps']} steps, lr {lr}, batch {args.pretrain_batch}, "
        f"{pre['wall_seconds']:.0f} s; held-out loss per epoch {pre['held_out_loss_per_epoch']}; "
        f"CKA to the start per group {pre['cka_to_start']}.")
    if images:
        lines.append(
            f"- fine-tuning: {args.labels} labelled training images per seed (+ a fifth for "
            f"validation), {args.image_size} px, freeze_strategy {args.strategy} at tlkit's "
            f"defaults; test: a stratified {n_test:,} of Fashion-MNIST's test split drawn with "
            "the seed (fit's test_limit), the same for both rows of a seed.")
    else:
        lines.append(
            f"- fine-tuning: {args.labels} labels per seed (tlkit's default validation share "
            f"of them), freeze_strategy {args.strategy} "
            + ("at bench/adaptation.py's rates (head 1e-2, backbone 1e-4 decay 0.8, 5 epochs, "
               "batch 16, mixed precision: fp32 on a CPU without native bf16)"
               if args.strategy == "none" else "at tlkit's defaults")
            + f", max length {args.max_length}; "
            f"test: {n_test:,} snippets, the same for every fit.")
    lines.append(
        f"- continued minus pretrained, paired by seed: {', '.join(f'{100 * d:+.2f}' for d in diffs)}"
        f" points, mean {100 * gain:+.2f}; "
        + ("more than" if gain > sd_max else "not more than")
        + f" one standard deviation of the seeds ({100 * sd_max:.2f} points, the larger row's).")
    lines.append(f"- machine: {common.machine_line(args.threads)}.")
    lines.append(f"- command: {common.command_line(__file__, argv)}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
