"""Choosing the adaptation without target labels: ``adaptation.method: auto`` on three shifts.

Labelled source: a Fashion-MNIST training subset. Each shift turns a sample of Fashion-MNIST's
test images into the target (PNG files and a CSV), one seeded draw:

- ``invert+rotate+noise``: bench/adaptation.py's (inverted, rotated 30 degrees with a white fill,
  Gaussian noise sd 25 grey levels);
- ``blur+low contrast``: a Gaussian blur (radius 1.5) and the contrast cut to 40% around mid grey;
- ``low resolution``: shrunk to 9 x 9 pixels and back to 28 x 28 (bilinear both ways).

For each shift one ``tlkit fit`` with ``adaptation.method: auto`` trains every candidate
(source-only, AdaBN, and DANN, MMD and CORAL at each weight), picks by the label-free score
(information maximisation on the unlabelled target among the candidates whose source validation
accuracy is within two standard errors of source-only's; tlkit.adapt.label_free) and trains the
pick. The
target's labels are used only here, to report each candidate's target accuracy: the pick's
against source-only's and against the best candidate's (the oracle choice, which needs them).
The methods adapt on the target images and are tested on them (transductive, as in the DANN
and DAN papers).

    .venv/bin/python bench/label_free.py                       # not yet timed in fp32
    .venv/bin/python bench/label_free.py --source 200 --target 200 --epochs 1 --weights 1 \\
        --shifts low_resolution                                # smoke, a few minutes
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import adaptation
import common

SHIFTS = ["invert_rotate_noise", "blur_low_contrast", "low_resolution"]
LABELS = {"invert_rotate_noise": "invert+rotate+noise", "blur_low_contrast": "blur+low contrast",
          "low_resolution": "low resolution"}


def _invert_rotate_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return adaptation.shift(img, rng, rotate=30.0, noise=25.0)


def _blur_low_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    blurred = np.asarray(Image.fromarray(img.astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1.5))).astype(np.float32)
    return 127.5 + 0.4 * (blurred - 127.5)


def _low_resolution(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    small = Image.fromarray(img.astype(np.uint8)).resize((9, 9), Image.BILINEAR)
    return np.asarray(small.resize(img.shape[::-1], Image.BILINEAR)).astype(np.float32)


RECIPES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "invert_rotate_noise": _invert_rotate_noise, "blur_low_contrast": _blur_low_contrast,
    "low_resolution": _low_resolution}


def run_shift(shift: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tlkit.config import validate
    from tlkit.data.packaged import load_packaged
    from tlkit.run import fit_run

    fm = load_packaged("fashion_mnist")
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.permutation(len(fm.test))[: args.target])
    target_csv = common.write_images(fm.test, idx, tmp / shift, args.seed + 1,
                                     RECIPES[shift])
    raw = {
        "transfer_config": {
            "source_model": "mobilenetv2", "freeze_strategy": "none", "head_lr": 1e-2,
            "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7, "weight_decay": 0.01,
            "dropout": 0.2, "epochs": args.epochs, "batch_size": 32, "warmup_steps": 10,
            "mixed_precision": True, "early_stopping_patience": None, "seed": args.seed},
        "data": {"source": "fashion_mnist", "limit": round(args.source / 0.8),
                 "image_size": args.image_size, "val_fraction": 0.2, "seed": args.seed},
        "adaptation": {"method": "auto", "auto_weights": args.weights, "dann_gamma": 10.0,
                       "target": {"source": str(target_csv), "image_column": "image",
                                  "label_column": "label", "image_size": args.image_size}},
        "diagnostics": {"sample": 500, "calibration": False},
    }
    print(f"[bench] label_free: {shift}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    s = fit_run(validate(raw, shift), tmp / "runs" / shift, test_limit=args.test_limit)
    auto = s["adaptation"]["auto"]
    return {"shift": shift, "trials": auto["trials"], "chosen": auto["chosen"],
            "why": auto["why"], "seconds": time.perf_counter() - t0}


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    head = ["shift", "source-only", "label-free pick", "pick acc", "vs source-only", "oracle",
            "oracle acc", "pick - oracle", "seconds"]
    body = []
    for r in rows:
        by = {t["name"]: t for t in r["trials"]}
        base, pick = by["none"], by[r["chosen"]]
        best = max(r["trials"], key=lambda t: t["target_accuracy"])
        body.append([
            LABELS[r["shift"]], f"{base['target_accuracy']:.4f}", r["chosen"],
            f"{pick['target_accuracy']:.4f}",
            f"{100 * (pick['target_accuracy'] - base['target_accuracy']):+.1f} pt",
            best["name"], f"{best['target_accuracy']:.4f}",
            f"{100 * (pick['target_accuracy'] - best['target_accuracy']):+.1f} pt",
            f"{r['seconds']:.0f}"])
    lines = [common.table(head, body, {1, 3, 4, 6, 7, 8}), "", "Each candidate (target IM: the "
             "label-free score; source val acc: the guard; target acc: from the labels, "
             "reported only):", ""]
    for r in rows:
        lines.append(f"- {LABELS[r['shift']]}: " + "; ".join(
            f"{t['name']} IM {t['target_im']:.3f} src {t['source_val_accuracy']:.3f} "
            f"tgt {t['target_accuracy']:.3f}" for t in r["trials"]))
    lines += ["", "Notes:",
              f"- source: {args.source:,} Fashion-MNIST training labels (+ a fifth for "
              f"validation) at {args.image_size} px; target: {args.target:,} Fashion-MNIST test "
              "images under the shift, adapted on unlabelled and tested on (transductive). "
              "MobileNetV2 (ImageNet), freeze_strategy none, head 1e-2, backbone 3e-4 decay "
              f"0.7, {args.epochs} epochs, batch 32, mixed_precision true (bf16 where the "
              "device has it natively, else fp32); candidates: none, adabn, and dann, mmd, "
              f"coral at weights {', '.join(f'{w:g}' for w in args.weights)}. seconds: the "
              "whole fit (every candidate's trial and the pick trained again).",
              f"- machine: {common.machine_line(args.threads)}.",
              f"- command: {common.command_line(__file__, argv)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=int, default=1000, help="labelled source training images")
    p.add_argument("--target", type=int, default=1000, help="shifted target test images")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--weights", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--test-limit", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    common.add_replay_flags(p)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if common.replayed(args, argv, lambda saved, av: report(saved["rows"], args, av)):
        return 0
    import torch

    torch.set_num_threads(args.threads)
    with common.cold_tlkit_cache() as cache, tempfile.TemporaryDirectory(
            prefix="tlkit-bench-labelfree-") as tmp:
        os.environ["TLKIT_CACHE"] = str(cache)
        rows = [run_shift(s, args, Path(tmp)) for s in args.shifts.split(",")]
    text = report(rows, args, argv)
    print(text)
    common.save_json(args.json, {"rows": rows, "table": text, "argv": argv})
    return 0


if __name__ == "__main__":
    sys.exit(main())
