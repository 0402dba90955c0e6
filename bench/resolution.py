"""At which resolution should small images run? Accuracy and seconds of tlkit fits at several
``data.image_size`` values, as ratios against the backbone's own size (224 px for MobileNetV2)
measured in the same run.

Data sets (packaged, offline): scikit-learn's digits (8 x 8 px) and Fashion-MNIST (28 x 28 px),
each cell handed to tlkit as files, exactly as ``bench/small_data.py`` writes them (its
``write_set``: a fixed, stratified test set per set; a stratified draw of ``labels`` examples
for each budget, of which tlkit's default ``val_fraction`` validates). The backbone is the
packaged MobileNetV2 (``mobilenetv2``, ``pretrained_weights: packaged``).

Rows, each a ``fit_run`` in a child process of its own with a fresh, empty ``TLKIT_CACHE``:

- frozen: tlkit's default strategy (``all_frozen``: the convex head on the cached pooled
  features), at every budget and size;
- top_n: a short fine-tune (``freeze_strategy: top_n_unfrozen``, the top 2 groups,
  ``--epochs`` epochs at bench/strategies.py's Fashion-MNIST base rates), at the budgets of
  ``--finetune-budgets`` only (its seconds grow with the labels and the pixels).

A size ``data`` in ``--sizes`` leaves ``data.image_size`` out: the size tlkit then chooses from
the images (``tlkit.data.transforms``), which the notes name.

Seconds are the ``fit_run`` call (loading the files and the model, the features, training, the
test evaluation, writing the run folder); ``acc / 224`` and ``s / 224`` divide a row's by the
same set, budget and row at ``--base`` px.

    .venv/bin/python bench/resolution.py --json /tmp/resolution.json          # the full run
    .venv/bin/python bench/resolution.py --sets digits --budgets 100 --sizes 32,224 \\
        --finetune-budgets "" --test-size 200                                # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import common
import small_data
import strategies

SETS = ("digits", "fashion_mnist")


def _raw(args: argparse.Namespace) -> dict[str, Any]:
    name, budget, size, row = args.cell.split(":")
    folder = Path(args.data) / name
    data: dict[str, Any] = {"source": str(folder / f"labels-{budget}.csv"),
                            "test": str(folder / "test.csv"), "seed": args.seed}
    if size != "data":
        data["image_size"] = int(size)
    tc: dict[str, Any] = {"source_model": "mobilenetv2", "pretrained_weights": "packaged",
                          "seed": args.seed}
    if row == "top_n":
        tc.update(strategies.SETS["fashion_mnist"]["tc"], freeze_strategy="top_n_unfrozen",
                  top_n=2, epochs=args.epochs)
    return {"transfer_config": tc, "data": data}


def row_fit(args: argparse.Namespace) -> dict[str, Any]:
    common.preimport_tlkit()
    from tlkit.config import validate
    from tlkit.run import fit_run

    cfg = validate(_raw(args), "<bench>")
    stages: list[str] = []

    def event(kind: str, info: dict[str, Any]) -> None:
        if kind == "stage":
            stages.append(str(info.get("what")))

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-resolution-") as tmp:
        t0 = time.perf_counter()
        summary = fit_run(cfg, Path(tmp) / "run", event=event)
        seconds = time.perf_counter() - t0
        meta = json.loads((Path(tmp) / "run" / "model" / "model.json").read_text())
    sizes = summary["data"]["sizes"]
    return {"seconds": seconds, "test_accuracy": summary["test"]["accuracy"],
            "n_train": sizes["train"], "n_val": sizes["val"], "n_test": sizes["test"],
            "input_size": int(meta["preprocessing"]["input_size"]),
            "size_note": next((s for s in stages if s.startswith("images ")), None),
            "best_epoch": summary.get("best_epoch")}


def guarded(args: argparse.Namespace) -> dict[str, Any]:
    try:
        return row_fit(args)
    except Exception as e:  # noqa: BLE001 - the table shows any row's failure
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[-1] if str(e) else ''}"}


def report(results: list[dict[str, Any]], cells: dict[str, Any], args: argparse.Namespace,
           argv: list[str]) -> str:
    head = ["set", "labels", "row", "px", "test acc", "acc / 224", "seconds", "s / 224"]
    base = {(r["set"], r["budget"], r["row"]): r["result"] for r in results
            if r["size"] == str(args.base) and "error" not in r["result"]}
    body = []
    for r in results:
        res = r["result"]
        b = base.get((r["set"], r["budget"], r["row"]), {})
        if "error" in res:
            body.append([r["set"], f"{r['budget']:,}", r["row"], r["size"], "error", "-", "-",
                         res["error"][:60]])
            continue
        px = str(res["input_size"]) + (" (data)" if r["size"] == "data" else "")
        body.append([r["set"], f"{cells[r['set']]['labelled'][r['budget']]:,}", r["row"], px,
                     f"{res['test_accuracy']:.3f}",
                     common.ratio(res["test_accuracy"], b.get("test_accuracy")),
                     f"{res['seconds']:.1f}", common.ratio(res["seconds"], b.get("seconds"))])
    lines = [common.table(head, body, {1, 3, 4, 5, 6, 7}), "", "Notes:"]
    for name, meta in cells.items():
        lines.append(f"- {name} ({meta['classes']} classes): test set {meta['test_origin']}, "
                     "the same for every row; labels: a stratified draw of the rest, "
                     "validation (a tenth) included.")
    notes = {r["result"]["size_note"] for r in results if r["result"].get("size_note")}
    lines += [f"- data.image_size left out: \"{n}\"" for n in sorted(notes)]
    lines.append(f"- frozen: all_frozen (tlkit's default); top_n: top_n_unfrozen, top 2 "
                 f"groups, {args.epochs} epochs, bench/strategies.py's Fashion-MNIST rates. "
                 f"acc / 224 and s / 224: over the same set, labels and row at {args.base} px.")
    threads = next((r["result"]["threads"] for r in results if "threads" in r["result"]),
                   args.threads)
    lines.append(f"- seed {args.seed}; machine: {common.machine_line(threads)}; a fresh "
                 "TLKIT_CACHE per row.")
    lines.append(f"- command: {common.command_line(__file__, argv)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS))
    p.add_argument("--budgets", default="100,1000", help="labels in all, validation included")
    p.add_argument("--sizes", default="32,64,96,128,224",
                   help="data.image_size values; 'data' leaves it out (tlkit's choice)")
    p.add_argument("--base", type=int, default=224, help="the size the ratios divide by")
    p.add_argument("--finetune-budgets", default="100", help="budgets of the top_n row")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the top_n row")
    p.add_argument("--test-size", type=int, default=1000)
    common.add_common_flags(p)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return common.child_main({"fit": guarded}, args)
    argv = list(sys.argv[1:] if argv is None else argv)
    sets = [s for s in args.sets.split(",") if s]
    budgets = sorted({int(b) for b in args.budgets.split(",") if b})
    tuned = {int(b) for b in args.finetune_budgets.split(",") if b}
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-resolution-data-") as tmp:
        cells = {s: small_data.write_set(s, budgets, args.test_size, args.seed, Path(tmp) / s)
                 for s in sets}
        for s in sets:
            for b in budgets:
                for row in ["frozen", *(["top_n"] if b in tuned else [])]:
                    for size in sizes:
                        print(f"[bench] {s}, {b} labels, {row}, {size}", file=sys.stderr,
                              flush=True)
                        with common.cold_tlkit_cache() as cache:
                            n = str(args.threads)
                            env = {"TLKIT_CACHE": str(cache), "OMP_NUM_THREADS": n,
                                   "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}
                            res = common.run_row(__file__, "fit", [
                                *argv, "--cell", f"{s}:{b}:{size}:{row}", "--data", tmp], env)
                        results.append({"set": s, "budget": b, "row": row, "size": size,
                                        "result": res})
    text = report(results, cells, args, argv)
    print(text)
    print(f"- benchmark wall time {time.perf_counter() - started:.0f} s.")
    common.save_json(args.json, {"argv": argv, "cells": cells, "results": results,
                                 "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
