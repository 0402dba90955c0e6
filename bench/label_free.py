"""Choosing the adaptation without target labels: ``adaptation.method: auto`` on three shifts,
exhaustive and inside its budget.

Labelled source: a Fashion-MNIST training subset. Each shift turns a sample of Fashion-MNIST's
test images into the target (PNG files and a CSV), one seeded draw:

- ``invert+rotate+noise``: bench/adaptation.py's (inverted, rotated 30 degrees with a white fill,
  Gaussian noise sd 25 grey levels);
- ``blur+low contrast``: a Gaussian blur (radius 1.5) and the contrast cut to 40% around mid grey;
- ``low resolution``: shrunk to 9 x 9 pixels and back to 28 x 28 (bilinear both ways).

For each shift two ``tlkit fit`` runs of the same config with ``adaptation.method: auto``:
``exhaustive`` (``adaptation.auto_budget: null``: every candidate, source-only, AdaBN, and DANN,
MMD and CORAL at each weight, trains its full schedule, then the pick is trained again) and
``budgeted`` (tlkit's default ``auto_budget``: short trials by successive halving, then the pick
trained once; tlkit.select.adapt_auto). Both pick by the label-free score (information
maximisation on the unlabelled target among the candidates whose source validation accuracy is
within two standard errors of source-only's; tlkit.adapt.label_free). The target's labels are
used only here, to report the target accuracy of each run's final model and of each exhaustive
candidate (the oracle: the best of those, which needs the labels). The methods adapt on the
target images and are tested on them (transductive, as in the DANN and DAN papers).

    .venv/bin/python bench/label_free.py                       # about 30 min here
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


MODES = {"exhaustive": None, "budgeted": "default"}


def run_shift(shift: str, mode: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tlkit.config import validate
    from tlkit.data.packaged import load_packaged
    from tlkit.run import fit_run

    fm = load_packaged("fashion_mnist")
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.permutation(len(fm.test))[: args.target])
    target_csv = common.write_images(fm.test, idx, tmp / f"{shift}-{mode}", args.seed + 1,
                                     RECIPES[shift])
    adaptation = {"method": "auto", "auto_weights": args.weights, "dann_gamma": 10.0,
                  "target": {"source": str(target_csv), "image_column": "image",
                             "label_column": "label", "image_size": args.image_size}}
    if mode == "exhaustive":
        adaptation["auto_budget"] = None
    elif args.budget is not None:
        adaptation["auto_budget"] = args.budget
    raw = {
        "transfer_config": {
            "source_model": "mobilenetv2", "freeze_strategy": "none", "head_lr": 1e-2,
            "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7, "weight_decay": 0.01,
            "dropout": 0.2, "epochs": args.epochs, "batch_size": 32, "warmup_steps": 10,
            "mixed_precision": True, "early_stopping_patience": None, "seed": args.seed},
        "data": {"source": "fashion_mnist", "limit": round(args.source / 0.8),
                 "image_size": args.image_size, "val_fraction": 0.2, "seed": args.seed},
        "adaptation": adaptation,
        "diagnostics": {"sample": 500, "calibration": False},
    }
    print(f"[bench] label_free: {shift}, {mode}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    s = fit_run(validate(raw, shift), tmp / "runs" / f"{shift}-{mode}",
                test_limit=args.test_limit)
    auto = s["adaptation"]["auto"]
    return {"shift": shift, "mode": mode, "trials": auto["trials"], "chosen": auto["chosen"],
            "why": auto["why"], "seconds": time.perf_counter() - t0,
            "target_accuracy": s["adaptation"]["target_test"]["accuracy"],
            **{k: auto[k] for k in ("budget_seconds", "source_only_seconds", "trial_seconds")
               if k in auto}}


def _pt(x: float) -> str:
    return f"{100 * x:+.1f} pt"


def report(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str]) -> str:
    head = ["shift", "source-only", "oracle", "oracle acc", "exhaustive pick", "acc", "seconds",
            "budgeted pick", "acc", "seconds", "budgeted - exhaustive", "seconds ratio"]
    body = []
    by = {(r["shift"], r["mode"]): r for r in rows}
    for shift in dict.fromkeys(r["shift"] for r in rows):
        full, cut = by.get((shift, "exhaustive")), by.get((shift, "budgeted"))
        line = [LABELS[shift]]
        if full is not None:
            trained = [t for t in full["trials"] if "target_accuracy" in t]
            base = next(t for t in trained if t["name"] == "none")
            best = max(trained, key=lambda t: t["target_accuracy"])
            line += [f"{base['target_accuracy']:.4f}", best["name"],
                     f"{best['target_accuracy']:.4f}", full["chosen"],
                     f"{full['target_accuracy']:.4f}", f"{full['seconds']:.0f}"]
        else:
            line += ["-"] * 6
        if cut is not None:
            line += [cut["chosen"], f"{cut['target_accuracy']:.4f}", f"{cut['seconds']:.0f}"]
        else:
            line += ["-"] * 3
        if full is not None and cut is not None:
            line += [_pt(cut["target_accuracy"] - full["target_accuracy"]),
                     f"{cut['seconds'] / full['seconds']:.2f}"]
        else:
            line += ["-", "-"]
        body.append(line)
    lines = [common.table(head, body, {1, 3, 5, 6, 8, 9, 10, 11}), "",
             "Each trial (rung: 0 an eighth of the schedule, 1 a quarter, 2 a half; '-' the "
             "full schedule; IM: the label-free score; src: source validation accuracy, the "
             "guard; tgt: target accuracy from the labels, reported only):", ""]
    for r in rows:
        lines.append(f"- {LABELS[r['shift']]}, {r['mode']}"
                     + (f" (budget {r['budget_seconds']:.0f} s, trials {r['trial_seconds']:.0f}"
                        " s)" if "budget_seconds" in r else "") + ": " + "; ".join(
            (f"{t['name']} [{t.get('rung', '-')}] IM {t['target_im']:.3f} src "
             f"{t['source_val_accuracy']:.3f} tgt {t['target_accuracy']:.3f}"
             if "target_im" in t else f"{t['name']} skipped") for t in r["trials"]))
    lines += ["", "Notes:",
              f"- source: {args.source:,} Fashion-MNIST training labels (+ a fifth for "
              f"validation) at {args.image_size} px; target: {args.target:,} Fashion-MNIST test "
              "images under the shift, adapted on unlabelled and tested on (transductive). "
              "MobileNetV2 (ImageNet), freeze_strategy none, head 1e-2, backbone 3e-4 decay "
              f"0.7, {args.epochs} epochs, batch 32, mixed_precision true (bf16 where the "
              "device has it natively, else fp32); candidates: none, adabn, and dann, mmd, "
              f"coral at weights {', '.join(f'{w:g}' for w in args.weights)}. acc: the run's "
              "final model on the target; seconds: the whole fit (trials and the pick's "
              "training); seconds ratio: budgeted / exhaustive.",
              f"- machine: {common.machine_line(args.threads)}.",
              f"- command: {common.command_line(__file__, argv)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--source", type=int, default=500, help="labelled source training images")
    p.add_argument("--target", type=int, default=500, help="shifted target test images")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--weights", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--shifts", default=",".join(SHIFTS))
    p.add_argument("--modes", default=",".join(MODES),
                   help="exhaustive (auto_budget null), budgeted (tlkit's default), or both")
    p.add_argument("--budget", type=float, default=None,
                   help="adaptation.auto_budget of the budgeted runs (default: tlkit's)")
    p.add_argument("--test-limit", type=int, default=200)
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
        rows = [run_shift(s, m, args, Path(tmp)) for s in args.shifts.split(",")
                for m in args.modes.split(",")]
    text = report(rows, args, argv)
    print(text)
    common.save_json(args.json, {"rows": rows, "table": text, "argv": argv})
    return 0


if __name__ == "__main__":
    sys.exit(main())
