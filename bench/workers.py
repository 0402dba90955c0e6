"""DataLoader workers: an image fine-tuning run whose batches cannot come from the feature cache
(``data.augment: flip``) with ``data.workers: 0`` (decoding and augmentation in the training
process) against ``data.workers: 2`` (in two worker processes, prefetching).

MobileNetV2 (packaged ImageNet weights) on Fashion-MNIST at 96 px, ``top_n_unfrozen`` with the
top 2 groups training, the same splits, seed and batches in both rows: the batches are a pure
function of (seed, epoch, batch) whatever the workers, so the test accuracy must be the same;
the throughput (training images per second over the timed fit) is what may differ.

    .venv/bin/python bench/workers.py                      # 2,000 + 500 images, 2 epochs
    .venv/bin/python bench/workers.py --train 200 --val 50 --epochs 1   # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

ROWS = ["workers-0", "workers-2"]


def _raw(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    data = common.image_data_section(args.train, args.val, args.image_size, args.seed)
    data.update(augment="flip", workers=workers)
    return {"transfer_config": {"source_model": "mobilenetv2", "pretrained_weights": "packaged",
                                "freeze_strategy": "top_n_unfrozen", "top_n": 2,
                                "epochs": args.epochs, "batch_size": 64, "min_steps": 0,
                                "mixed_precision": False, "early_stopping_patience": None,
                                "seed": args.seed},
            "data": data}


def _row(args: argparse.Namespace, workers: int) -> dict[str, Any]:
    from tlkit.config import validate
    from tlkit.run import fit_run

    common.preimport_tlkit()
    with common.cold_tlkit_cache() as cache, tempfile.TemporaryDirectory() as tmp:
        import os

        os.environ["TLKIT_CACHE"] = str(cache)
        t0 = time.perf_counter()
        summary = fit_run(validate(_raw(args, workers), "<bench>"), Path(tmp) / "run",
                          test_limit=args.test_limit)
        seconds = time.perf_counter() - t0
    return {"workers": workers, "seconds": round(seconds, 2),
            "train_seconds": summary["train_seconds"],
            "images_per_second": round(args.train * args.epochs / summary["train_seconds"], 1),
            "test_accuracy": summary["test"]["accuracy"]}


ROW_FNS = {"workers-0": lambda a: _row(a, 0), "workers-2": lambda a: _row(a, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_flags(p)
    p.add_argument("--train", type=int, default=2000)
    p.add_argument("--val", type=int, default=500)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--test-limit", type=int, default=2000)
    args = p.parse_args(argv)
    if args.child:
        return common.child_main(ROW_FNS, args)
    rows = common.selected(ROWS, args.rows)
    results = [common.run_row(__file__, r, argv if argv is not None else sys.argv[1:])
               for r in rows]
    print(table(results, args))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = next((r for r in results if r.get("workers") == 0), None)
    lines = [f"workers: MobileNetV2 top 2 groups, Fashion-MNIST {args.train:,} images at "
             f"{args.image_size} px, augment flip, {args.epochs} epoch(s), {args.threads} "
             "torch thread(s)", "",
             "| data.workers | train seconds | images / s | throughput vs workers 0 | "
             "test accuracy | peak RSS MiB |", "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['row']} | failed: {r['error']} | | | | |")
            continue
        ratio = (f"{r['images_per_second'] / base['images_per_second']:.2f}x"
                 if base and "images_per_second" in base else "-")
        lines.append(f"| {r['workers']} | {r['train_seconds']:.1f} | {r['images_per_second']} | "
                     f"{ratio} | {r['test_accuracy']:.4f} | {r['peak_rss_mib']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
