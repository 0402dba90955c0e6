"""Every transfer strategy against training from scratch, at equal epochs, in one table.

Runs each strategy (all_frozen, top_n_unfrozen, gradual, none, none + L2-SP, lora, lp_ft) and
training from scratch (pretrained_weights: none, everything trains), and tlkit's classical
baseline (TF-IDF or raw pixels + logistic regression, no network) on Rotten Tomatoes with
MiniLM and on Fashion-MNIST with MobileNetV2 at 96 px, at label budgets of 200 and 2,000
training examples, through the library (``tlkit.run.fit_run`` with a config built in code, into a
temporary run directory), and prints test accuracy, trainable parameters, peak memory and seconds.

Each run is a child process of its own, so its peak memory (the resident-set high-water mark,
``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts the Python interpreter, torch and the
data as well as the model) is that run's alone and no run warms another's caches.

    .venv/bin/python bench/strategies.py                     # the full benchmark (about an hour
                                                             # and a half on 2 CPU cores)
    .venv/bin/python bench/strategies.py --epochs 1 --budgets 40 --test-limit 200 \\
        --max-length 32 --image-size 32                      # a smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STRATEGIES = ["all_frozen", "top_n_unfrozen", "gradual", "none", "none+l2sp", "lora", "lp_ft",
              "scratch", "classical"]

# Per data set: the backbone, data settings and the rates every strategy starts from. Chosen
# on the validation split in short trials (5 epochs, seed 0) so that no strategy is starved at
# 200 labels: small batches (13 and 7 steps an epoch), a head rate at which a probe converges
# within the epochs, backbone rates small enough not to wreck the features.
SETS: dict[str, dict[str, Any]] = {
    "rotten_tomatoes": {
        "source_model": "minilm-l6",
        "data": {"source": "rotten_tomatoes", "max_length": 64, "val_fraction": 0.2,
                 "test_fraction": 0.1},
        "tc": {"head_lr": 1e-2, "backbone_lr": 1e-4, "lr_decay_per_layer": 0.8,
               "batch_size": 16, "weight_decay": 0.01, "dropout": 0.1},
        # LoRA's matrices start at zero and learn at LoRA's usual, higher rate, the same in
        # every layer (5e-3 diverged at 2,000 labels); from scratch nothing is pretrained, so
        # no layer is slowed down either.
        "lora_lr": 2e-3,
        "scratch_lr": 5e-4,
    },
    "fashion_mnist": {
        "source_model": "mobilenetv2",
        "data": {"source": "fashion_mnist", "image_size": 96, "val_fraction": 0.2},
        "tc": {"head_lr": 1e-2, "backbone_lr": 3e-4, "lr_decay_per_layer": 0.7,
               "batch_size": 32, "weight_decay": 0.01, "dropout": 0.2},
        "lora_lr": 2e-3,
        "scratch_lr": 2e-3,
    },
}


def build_config(set_name: str, strategy: str, budget: int, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """The raw config (as a user would write it in YAML) of one run."""
    spec = SETS[set_name]
    data = dict(spec["data"])
    # The budget is the number of training labels; validation takes a fifth on top of it.
    data["limit"] = round(budget / (1 - data["val_fraction"]))
    data["seed"] = args.seed
    if args.max_length and "max_length" in data:
        data["max_length"] = args.max_length
    if args.image_size and "image_size" in data:
        data["image_size"] = args.image_size
    tc: dict[str, Any] = {
        "source_model": spec["source_model"],
        "pretrained_weights": "packaged",
        **spec["tc"],
        "epochs": args.epochs,
        # The same number of epochs for every strategy: no early stopping (the best epoch on
        # validation is still the one kept, for every strategy alike).
        "early_stopping_patience": None,
        "mixed_precision": args.amp,
        "seed": args.seed,
        "device": args.device,
    }
    steps = args.epochs * math.ceil(budget / tc["batch_size"])
    tc["warmup_steps"] = max(1, steps // 10)
    if strategy == "classical":  # no network: the config only carries the data and splits
        tc["freeze_strategy"] = "all_frozen"
        return {"transfer_config": tc, "data": data}
    if strategy == "scratch":
        tc.update(pretrained_weights="none", freeze_strategy="none",
                  backbone_lr=spec["scratch_lr"], lr_decay_per_layer=1.0)
    elif strategy == "none+l2sp":
        tc.update(freeze_strategy="none", l2sp_lambda=args.l2sp_lambda)
    elif strategy == "lora":
        tc.update(freeze_strategy="lora", backbone_lr=spec["lora_lr"], lr_decay_per_layer=1.0,
                  lora={"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.1})
    elif strategy == "lp_ft":
        # half the epochs probe, half fine-tune (lp_ft needs 2 epochs or more)
        tc.update(freeze_strategy="lp_ft", lp_epochs=max(1, args.epochs // 2))
    elif strategy == "top_n_unfrozen":
        tc.update(freeze_strategy="top_n_unfrozen", top_n=2)
    elif strategy == "gradual":
        from tlkit.strategies.gradual import default_schedule  # compare's schedule

        tc.update(freeze_strategy="gradual", unfreeze_schedule=default_schedule(args.epochs))
    else:
        tc["freeze_strategy"] = strategy
    return {"transfer_config": tc, "data": data}


# --------------------------------------------------------------------------------------------------
# One run, in a child process
# --------------------------------------------------------------------------------------------------


def run_one(raw: dict[str, Any], test_limit: int | None, threads: int | None,
            classical: bool = False) -> dict[str, Any]:
    import resource

    import torch

    if threads:
        torch.set_num_threads(threads)
    from tlkit.config import TransferConfig, validate
    from tlkit.run import fit_run

    if classical:
        return classical_one(raw, test_limit)
    if "cache" in TransferConfig.model_fields:
        # Frozen features may be computed once per run (that is the library's behaviour and
        # counts in its seconds), but never reused from an earlier run's disk cache.
        raw["transfer_config"].setdefault("cache", {})["disk"] = False
    cfg = validate(raw, "<bench>")

    def event(kind: str, info: dict[str, Any]) -> None:
        if kind == "epoch_end":
            print(f"    epoch {info['epoch']}  train_loss {info['train_loss']:.4f}  "
                  f"val_accuracy {info.get('val_accuracy', float('nan')):.4f}  "
                  f"({info['seconds']:.0f}s)", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-") as tmp:
        t0 = time.perf_counter()
        summary = fit_run(cfg, Path(tmp) / "run", event=event, test_limit=test_limit)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    out = {
        "test_accuracy": summary["test"]["accuracy"],
        "test_n": summary["data"]["sizes"]["test"],
        "train_n": summary["data"]["sizes"]["train"],
        "val_n": summary["data"]["sizes"]["val"],
        "trainable": summary["trainable_parameters_last_phase"],
        "parameters": summary["parameters"],
        "peak_rss_mib": round(peak, 1),
        "train_seconds": summary["train_seconds"],
        "seconds": round(seconds, 2),
        "best_epoch": summary["best_epoch"],
    }
    if torch.cuda.is_available():
        out["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def classical_one(raw: dict[str, Any], test_limit: int | None) -> dict[str, Any]:
    """tlkit's classical baseline (TF-IDF or raw pixels + logistic regression) on the splits the
    strategies' runs cut: seconds from loading the data to the test predictions."""
    import resource

    from tlkit.config import validate
    from tlkit.select.classical import fit_on_splits

    cfg = validate(raw, "<bench>")
    t0 = time.perf_counter()
    result, splits = fit_on_splits(cfg, test_limit)
    seconds = time.perf_counter() - t0
    assert result.test_outputs is not None
    return {
        "test_accuracy": float((result.test_outputs.argmax(1) == splits.test.targets).mean()),
        "test_n": len(splits.test), "train_n": len(splits.train), "val_n": len(splits.val),
        "trainable": result.parameters, "parameters": result.parameters,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "train_seconds": round(result.seconds, 2), "seconds": round(seconds, 2),
        "best_epoch": None, "name": result.name,
    }


def child(args: argparse.Namespace) -> None:
    from tlkit.errors import UserError

    job = json.loads(Path(args.one).read_text())
    try:
        result = run_one(job["config"], job["test_limit"], job["threads"],
                         job.get("classical", False))
    except UserError as e:  # a setting this run cannot take (lp_ft with 1 epoch, ...)
        print(f"    error: {e}", file=sys.stderr)
        result = {"error": str(e).splitlines()[-1].strip()[:60]}
    Path(job["result"]).write_text(json.dumps(result))


def launch(raw: dict[str, Any], args: argparse.Namespace, classical: bool = False
           ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-job-") as tmp:
        job, result = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"config": raw, "test_limit": args.test_limit,
                                   "threads": args.threads, "result": str(result),
                                   "classical": classical}))
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(job)],
                              env=env, check=False)
        if proc.returncode != 0 or not result.is_file():
            return {"error": f"exit code {proc.returncode}"}
        return json.loads(result.read_text())


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------

LABELS = {"none+l2sp": "none + L2-SP", "scratch": "from scratch",
          "classical": "classical (TF-IDF / pixels + LR)"}


def format_table(rows: list[dict[str, Any]]) -> str:
    head = ["set", "labels", "strategy", "test acc", "trainable", "of", "peak RSS MiB",
            "train s", "total s"]
    body = []
    for r in rows:
        res = r["result"]
        if "error" in res:
            body.append([r["set"], str(r["budget"]), LABELS.get(r["strategy"], r["strategy"]),
                         res["error"], "", "", "", "", ""])
            continue
        share = res["trainable"] / res["parameters"]
        body.append([r["set"], f"{r['budget']:,}", LABELS.get(r["strategy"], r["strategy"]),
                     f"{res['test_accuracy']:.3f}", f"{res['trainable']:,}", f"{share:.1%}",
                     f"{res['peak_rss_mib']:,.0f}", f"{res['train_seconds']:.1f}",
                     f"{res['seconds']:.1f}"])
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    right = {1, 3, 4, 5, 6, 7, 8}

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def findings(rows: list[dict[str, Any]]) -> list[str]:
    """Which pretrained strategies do not beat training from scratch, per set and budget."""
    notes = []
    cells = {(r["set"], r["budget"], r["strategy"]): r["result"] for r in rows}
    for s, b in sorted({(r["set"], r["budget"]) for r in rows}):
        scratch = cells.get((s, b, "scratch"))
        if scratch is None or "error" in scratch:
            continue
        losers = [f"{LABELS.get(k, k)} ({res['test_accuracy']:.3f})"
                  for (s2, b2, k), res in cells.items()
                  if s2 == s and b2 == b and k != "scratch" and "error" not in res
                  and res["test_accuracy"] <= scratch["test_accuracy"]]
        verdict = ("every pretrained strategy beats it" if not losers
                   else "NOT beaten by " + ", ".join(losers))
        notes.append(f"{s} at {b:,} labels: from scratch {scratch['test_accuracy']:.3f}; "
                     f"{verdict}.")
    notes += classical_findings(cells)
    return notes


def classical_findings(cells: dict[tuple[str, int, str], dict[str, Any]]) -> list[str]:
    """Per set and budget: the classical baseline against the best transfer run of this
    benchmark, in accuracy points and seconds."""
    notes = []
    for (s, b, k), c in sorted(cells.items()):
        if k != "classical" or "error" in c:
            continue
        others = {k2: r for (s2, b2, k2), r in cells.items()
                  if s2 == s and b2 == b and k2 not in ("classical", "scratch") and "error" not in r}
        if not others:
            continue
        best = max(others, key=lambda k2: others[k2]["test_accuracy"])
        r = others[best]
        gap = 100 * (r["test_accuracy"] - c["test_accuracy"])
        notes.append(f"{s} at {b:,} labels: classical {c['test_accuracy']:.3f} in "
                     f"{c['seconds']:.1f} s; the best transfer run here, {LABELS.get(best, best)}, "
                     f"{r['test_accuracy']:.3f} ({gap:+.1f} points against classical) in "
                     f"{r['seconds']:.1f} s ({r['seconds'] / max(c['seconds'], 1e-9):.1f}x the "
                     "classical time).")
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    p.add_argument("--budgets", default="200,2000", help="training labels per run, comma-separated")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="comma-separated: " + ", ".join(STRATEGIES))
    p.add_argument("--epochs", type=int, default=5, help="epochs of every run (default 5)")
    p.add_argument("--test-limit", type=int, default=None,
                   help="evaluate on a stratified subset of this many test examples "
                        "(Fashion-MNIST's own test split has 10,000); default: all")
    p.add_argument("--max-length", type=int, default=None, help="tokens per text (default 64)")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 96)")
    p.add_argument("--l2sp-lambda", type=float, default=0.1,
                   help="L2-SP strength (default 0.1: 0.01 left MiniLM's accuracy unchanged)")
    p.add_argument("--lora-r", type=int, default=8, help="LoRA rank (alpha = 2 r)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results", default=None,
                   help="also append each run's result to this JSON-lines file")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        child(args)
        return 0
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    bad = [s for s in sets if s not in SETS] + [s for s in strategies if s not in STRATEGIES]
    if bad:
        p.error(f"unknown set(s) or strategy(ies): {', '.join(bad)}")
    configs = [(s, b, k, build_config(s, k, b, args)) for s in sets for b in budgets
               for k in strategies]
    rows = []
    started = time.perf_counter()
    for i, (s, b, k, raw) in enumerate(configs, start=1):
        print(f"[bench] {i}/{len(configs)} {s} {b} labels {LABELS.get(k, k)}", file=sys.stderr,
              flush=True)
        row = {"set": s, "budget": b, "strategy": k,
               "result": launch(raw, args, classical=k == "classical")}
        rows.append(row)
        if args.results:
            with open(args.results, "a", encoding="utf-8") as f:
                f.write(json.dumps({**row, "config": raw}) + "\n")
    import torch

    cmd = "python bench/strategies.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(format_table(rows))
    print()
    test_sizes = sorted({(r["set"], r["result"].get("test_n")) for r in rows
                         if "error" not in r["result"]})
    print("Notes:")
    for n in findings(rows):
        print(f"- {n}")
    print(f"- {args.epochs} epochs for every run, no early stopping (the best validation epoch "
          "is kept); labels = training examples, validation takes a fifth more "
          f"(limit = labels / 0.8); seed {args.seed}.")
    print("- test examples: " + ", ".join(f"{s} {n:,}" for s, n in test_sizes)
          + (f" (capped with --test-limit {args.test_limit}, a stratified subset)"
             if args.test_limit else ""))
    print("- trainable: parameters that train in the last phase (lp_ft and gradual train "
          "fewer before it); 'of' is their share of the model.")
    print("- peak RSS: resource.getrusage(RUSAGE_SELF).ru_maxrss of the run's own process "
          "(interpreter, torch, data and model included).")
    print("- seconds: train s is the training loop (with validation); total s adds data and "
          "model loading and the test evaluation.")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, threads {args.threads or torch.get_num_threads()}, "
          f"device {args.device}, {'bf16 autocast' if args.amp else 'fp32'}; "
          f"benchmark wall time {time.perf_counter() - started:.0f} s.")
    print(f"- command: {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
