"""Domain adaptation: each method against source-only training and an oracle, on a shifted target.

Labelled source: a Fashion-MNIST training subset. Target: Fashion-MNIST test images under a fixed
shift (the recipe: intensities inverted, rotated by ``--rotate`` degrees with a white fill, then
Gaussian noise of standard deviation ``--noise`` grey levels, clipped; one seeded draw), written
as PNG files with a CSV. The unlabelled target the methods adapt on and the target test set are
the same ``--target`` shifted test images (transductive, as in the DANN and DAN papers); the
oracle trains on labelled shifted images drawn from the *training* split instead (as many as the
source has), so it never sees a test image.

Rows (MobileNetV2, packaged ImageNet weights, every layer training at discriminative rates, the
same epochs and rates for every row): source only; DANN; MMD (multi-kernel, DAN); CORAL; AdaBN
(source-only training, then BatchNorm statistics re-estimated on the target); oracle. Each
adapted row reports the proxy A-distance between source and target features before and after.

Then MiniLM on Rotten Tomatoes: continued masked-LM pretraining (``tlkit pretrain``) on the
training pool's unlabelled text (the test split's snippets excluded), then fine-tuning on 200
labels, against the same fine-tuning without it.

    .venv/bin/python bench/adaptation.py                       # about 40 minutes on one thread
    .venv/bin/python bench/adaptation.py --source 200 --target 300 --epochs 1 --mlm-texts 300 \\
        --skip-text                                            # smoke, a few minutes
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import common

ROWS = ["source_only", "dann", "mmd", "coral", "adabn", "oracle"]


def shift(img: np.ndarray, rng: np.random.Generator, rotate: float, noise: float) -> np.ndarray:
    from PIL import Image

    inv = 255 - img.astype(np.uint8)
    rot = np.asarray(Image.fromarray(inv).rotate(rotate, resample=Image.BILINEAR, fillcolor=255))
    out = rot.astype(np.float32) + rng.normal(0, noise, size=rot.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_shifted(data: Any, idx: np.ndarray, folder: Path, seed: int, rotate: float,
                  noise: float) -> Path:
    """Shifted images as PNGs and a CSV (image, label) that tlkit reads as a source."""
    return common.write_images(data, idx, folder, seed,
                               lambda img, rng: shift(img, rng, rotate, noise))


def image_rows(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from tlkit.config import validate
    from tlkit.data.packaged import load_packaged
    from tlkit.run import fit_run

    fm = load_packaged("fashion_mnist")
    rng = np.random.default_rng(args.seed)
    target_idx = np.sort(rng.permutation(len(fm.test))[: args.target])
    target_csv = write_shifted(fm.test, target_idx, tmp / "target", args.seed + 1, args.rotate,
                               args.noise)
    # the oracle's labelled target: shifted training images, beyond the ones the source draws
    n_src = round(args.source / 0.8)
    oracle_idx = np.sort(rng.permutation(len(fm))[: n_src])
    oracle_csv = write_shifted(fm, oracle_idx, tmp / "oracle", args.seed + 2, args.rotate,
                               args.noise)
    tc = {"source_model": "mobilenetv2", "freeze_strategy": "none", "head_lr": 1e-2,
          "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7, "weight_decay": 0.01,
          "dropout": 0.2, "epochs": args.epochs, "batch_size": 32, "warmup_steps": 10,
          "mixed_precision": True, "early_stopping_patience": None, "seed": args.seed}
    img = {"image_size": args.image_size, "val_fraction": 0.2, "seed": args.seed}
    source = {"source": "fashion_mnist", "limit": n_src, **img}
    target = {"source": str(target_csv), "image_column": "image", "label_column": "label",
              "image_size": args.image_size}
    results = []
    for row in [r for r in ROWS if r in args.rows.split(",")]:
        raw: dict[str, Any] = {"transfer_config": dict(tc), "data": dict(source),
                               "diagnostics": {"sample": 500, "calibration": False}}
        if row == "oracle":
            raw["data"] = {"source": str(oracle_csv), "image_column": "image",
                           "label_column": "label", "limit": n_src, **img}
        # every row measures the target the same way (adaptation's report: target metrics,
        # proxy A-distance); source-only and the oracle name it with method none, which
        # only measures it and never feeds it to training
        method = "none" if row in ("source_only", "oracle") else row
        raw["adaptation"] = {"method": method, "target": target, "weight": args.weight,
                             "dann_gamma": 10.0}
        print(f"[bench] adaptation: {row}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        s = fit_run(validate(raw, row), tmp / "runs" / row, test_limit=args.test_limit)
        a = s["adaptation"]
        results.append({"row": row, "target_accuracy": a["target_test"]["accuracy"],
                        "source_test_accuracy": s["test"]["accuracy"],
                        "pad_before": a["pad_before"], "pad_after": a["pad_after"],
                        "seconds": time.perf_counter() - t0})
    return results


def text_rows(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from tlkit.adapt.pretrain import pretrain
    from tlkit.config import validate
    from tlkit.data import load_source, make_splits
    from tlkit.run import fit_run

    data_rt = {"source": "rotten_tomatoes", "max_length": 64, "val_fraction": 0.2,
               "test_fraction": 0.1, "seed": args.seed}
    # the unlabelled pool: the snippets outside the test split (as make_splits draws it)
    whole = make_splits(load_source(validate({"transfer_config": {"source_model": "minilm-l6"},
                                              "data": data_rt}).data),
                        validate({"transfer_config": {"source_model": "minilm-l6"},
                                  "data": data_rt}).data)
    test_texts = {str(t) for t in whole.test.inputs}
    pool = [(str(t), whole.classes[int(y)]) for part in (whole.train, whole.val)
            for t, y in zip(part.inputs, part.targets) if str(t) not in test_texts]
    csv_path = tmp / "rt_pool.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])  # tlkit's loader reads a label column; pretrain ignores it
        w.writerows(pool)
    tc = {"source_model": "minilm-l6", "freeze_strategy": "none", "head_lr": 1e-2,
          "backbone_lr": 1e-4, "lr_decay_per_layer": 0.8, "weight_decay": 0.01,
          "dropout": 0.1, "epochs": 5, "batch_size": 16, "warmup_steps": 10,
          "mixed_precision": True, "early_stopping_patience": None, "seed": args.seed}
    cfg_pre = validate({"transfer_config": tc, "data": data_rt, "adaptation": {
        "target": {"source": str(csv_path), "text_column": "text", "label_column": "label"},
        "pretrain": {"max_examples": args.mlm_texts, "epochs": 1, "lr": 1e-4,
                     "batch_size": 32, "warmup_steps": 10}}})
    print("[bench] adaptation: MiniLM continued pretraining", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    pre = pretrain(cfg_pre, tmp / "minilm-rt", log=lambda s: print(s, file=sys.stderr))
    pre_s = time.perf_counter() - t0
    out = []
    for row, model in (("MiniLM, fine-tuned", "minilm-l6"),
                       ("MiniLM + continued pretraining, fine-tuned", f"hf:{tmp / 'minilm-rt'}")):
        raw = {"transfer_config": {**tc, "source_model": model},
               "data": {**data_rt, "limit": round(args.text_labels / 0.8)},
               "diagnostics": {"calibration": False}}
        print(f"[bench] adaptation: {row}", file=sys.stderr, flush=True)
        t1 = time.perf_counter()
        s = fit_run(validate(raw, row), tmp / "runs" / row.split(",")[0].replace(" ", "_"))
        out.append({"row": row, "test_accuracy": s["test"]["accuracy"],
                    "n_test": s["data"]["sizes"]["test"], "seconds": time.perf_counter() - t1})
    out[1]["pretrain_seconds"] = pre_s
    out[1]["pretrain"] = pre
    return out


def report(img: list[dict[str, Any]], txt: list[dict[str, Any]], args: argparse.Namespace,
           argv: list[str]) -> str:
    """One table: the image rows against source-only, then the text rows against fine-tuning
    without continued pretraining."""
    head = ["set", "row", "target acc", "vs baseline", "source test acc", "PAD before",
            "PAD after", "seconds"]
    body = []
    base = next((r for r in img if r["row"] == "source_only"), None)
    for r in img:
        vs = ("baseline" if r is base or base is None else
              f"{100 * (r['target_accuracy'] - base['target_accuracy']):+.2f} pt")
        body.append(["Fashion-MNIST shifted", r["row"], f"{r['target_accuracy']:.4f}", vs,
                     f"{r['source_test_accuracy']:.4f}", f"{r['pad_before']:.3f}",
                     f"{r['pad_after']:.3f}", f"{r['seconds']:.0f}"])
    for i, r in enumerate(txt):
        vs = ("baseline" if i == 0 else
              f"{100 * (r['test_accuracy'] - txt[0]['test_accuracy']):+.2f} pt")
        secs = f"{r['seconds']:.0f}" + (f" (+{r['pretrain_seconds']:.0f} pretraining)"
                                        if "pretrain_seconds" in r else "")
        body.append(["Rotten Tomatoes", r["row"], f"{r['test_accuracy']:.4f}", vs, "-", "-",
                     "-", secs])
    lines = [common.table(head, body, {2, 3, 4, 5, 6, 7}), "", "Notes:"]
    if img:
        lines.append(
            f"- images: source = Fashion-MNIST, {args.source:,} training labels (+ a fifth for "
            f"validation), {args.image_size} px; target = {args.target:,} Fashion-MNIST test "
            f"images inverted, rotated {args.rotate:g} degrees (white fill) and with Gaussian "
            f"noise sd {args.noise:g} grey levels; the methods adapt on them unlabelled and are "
            "tested on them (transductive); the oracle trains on as many labelled shifted "
            "training-split images. MobileNetV2, freeze_strategy none, head 1e-2, backbone "
            f"3e-4 decay 0.7, {args.epochs} epochs, batch 32, mixed precision; alignment weight "
            f"{args.weight:g} (DANN's reversal coefficient on its schedule, gamma 10). "
            "source test acc: the source's own (unshifted) test split"
            + (f", a stratified {args.test_limit:,}" if args.test_limit else "") + ". PAD: proxy "
            "A-distance (0 same, 2 apart) between 500 source and 500 target pooled features, "
            "with the pretrained backbone (before) and the trained one (after).")
    if txt:
        pre = txt[1].get("pretrain", {})
        lines.append(
            f"- text: MiniLM, masked-LM continued pretraining on {pre.get('texts', '?'):,} "
            "unlabelled Rotten Tomatoes snippets (outside the test split), 1 epoch, lr 1e-4, "
            f"mlm loss {pre.get('mlm_loss_per_epoch')}; then both rows fine-tune on "
            f"{args.text_labels} labels (freeze_strategy none, 5 epochs, batch 16, head 1e-2, "
            f"backbone 1e-4 decay 0.8, 64 tokens), tested on {txt[0]['n_test']:,} snippets "
            "(target acc: the test accuracy).")
    lines.append(f"- machine: {common.machine_line(args.threads)}.")
    lines.append(f"- command: {common.command_line(__file__, argv)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=int, default=2000, help="labelled source training images")
    p.add_argument("--target", type=int, default=2000, help="shifted target test images")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rotate", type=float, default=30.0)
    p.add_argument("--noise", type=float, default=25.0)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--test-limit", type=int, default=1000)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--mlm-texts", type=int, default=4000)
    p.add_argument("--text-labels", type=int, default=200)
    p.add_argument("--skip-text", action="store_true")
    p.add_argument("--skip-images", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    common.add_replay_flags(p)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if common.replayed(args, argv, lambda saved, av: report(saved["images"], saved["text"],
                                                            args, av)):
        return 0
    import torch

    torch.set_num_threads(args.threads)
    with common.cold_tlkit_cache() as cache, tempfile.TemporaryDirectory(
            prefix="tlkit-bench-adapt-") as tmp:
        os.environ["TLKIT_CACHE"] = str(cache)
        img = [] if args.skip_images else image_rows(args, Path(tmp))
        txt = [] if args.skip_text else text_rows(args, Path(tmp))
    text = report(img, txt, args, argv)
    print(text)
    common.save_json(args.json, {"images": img, "text": txt, "table": text, "argv": argv})
    return 0


if __name__ == "__main__":
    sys.exit(main())
