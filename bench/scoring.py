"""Batch scoring: `tlkit predict RUN --data texts.csv --out preds.csv` against a bare forward pass
of the same model over the same inputs, and its memory on a file ten times longer.

A MiniLM run on Rotten Tomatoes (all_frozen, 500 labels; trained once, not timed) scores a CSV
holding only a text column: the Rotten Tomatoes texts repeated to ``--n`` rows. Rows, each in a
child process of its own (peak memory is that row's alone):

- tlkit: ``tlkit.run.score_run`` (what ``tlkit predict --data --out`` calls): reads the CSV in
  chunks, tokenizes, runs the model, calibrates and writes every row's id, label and
  probabilities to a CSV. Timed end to end.
- tlkit (n / 10): the same on the first tenth of the file: the peak memory of the full file
  should be about the same (scoring streams).
- bare forward: the texts read into a list first (not timed), then the run's tokenizer and model
  over them in file order, batches of 64, inference mode; nothing written.

    .venv/bin/python bench/scoring.py                 # 100,000 rows
    .venv/bin/python bench/scoring.py --n 5000        # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

ROWS = ["tlkit", "tlkit-tenth", "bare"]
LABELS = {"tlkit": "tlkit predict --data --out (streamed)", "tlkit-tenth": "tlkit, n / 10 rows",
          "bare": "bare forward pass (tokenizer + model)"}


def _texts(n: int) -> list[str]:
    from tlkit.data.packaged import load_packaged

    base = [str(t) for t in load_packaged("rotten_tomatoes").inputs]
    return [base[i % len(base)] for i in range(n)]


def _row_tlkit(args: argparse.Namespace, path: Path) -> dict[str, Any]:
    from tlkit.run import score_run

    common.preimport_tlkit()
    import tlkit.run.scoring  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = score_run(Path(args.run), str(path), Path(tmp) / "preds.csv")
        seconds = time.perf_counter() - t0
    return {"n": done.rows, "seconds": round(seconds, 2), "errors": len(done.errors)}


def row_tlkit(args: argparse.Namespace) -> dict[str, Any]:
    return _row_tlkit(args, Path(args.csv))


def row_tlkit_tenth(args: argparse.Namespace) -> dict[str, Any]:
    return _row_tlkit(args, Path(args.csv_tenth))


def row_bare(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd
    import torch

    from tlkit.data import build_collate
    from tlkit.saved import load_model

    saved = load_model(Path(args.run) / "model")
    model = saved.model.eval()
    collate = build_collate(saved.preprocessing)
    texts = pd.read_csv(args.csv, dtype=str, keep_default_na=False)["text"].tolist()
    zero = torch.tensor(0)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            inputs, _ = collate([(t, zero) for t in texts[i:i + 64]])
            model(inputs)
    return {"n": len(texts), "seconds": round(time.perf_counter() - t0, 2)}


ROW_FNS = {"tlkit": row_tlkit, "tlkit-tenth": row_tlkit_tenth, "bare": row_bare}


def train_run(folder: Path, seed: int) -> Path:
    from tlkit.config import validate
    from tlkit.run import fit_run

    raw = {"transfer_config": {"source_model": "minilm-l6", "pretrained_weights": "packaged",
                               "freeze_strategy": "all_frozen", "epochs": 1,
                               "mixed_precision": False, "seed": seed},
           "data": {"source": "rotten_tomatoes", "limit": 500, "seed": seed}}
    run = folder / "run"
    fit_run(validate(raw, "<bench>"), run, event=lambda kind, info: None)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_flags(p)
    p.add_argument("--n", type=int, default=100_000, help="rows of the CSV to score")
    p.add_argument("--run", help=argparse.SUPPRESS)
    p.add_argument("--csv", help=argparse.SUPPRESS)
    p.add_argument("--csv-tenth", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return common.child_main(ROW_FNS, args)

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-scoring-") as tmp:
        folder = Path(tmp)
        print("[bench] training the run to score with (not timed) ...", file=sys.stderr)
        run = train_run(folder, args.seed)
        texts = _texts(args.n)
        full, tenth = folder / "texts.csv", folder / "texts_tenth.csv"
        for path, rows in ((full, texts), (tenth, texts[:max(1, args.n // 10)])):
            with open(path, "w", newline="", encoding="utf-8") as f:
                csv.writer(f).writerows([["text"], *[[t] for t in rows]])
        child_argv = [a for a in (argv if argv is not None else sys.argv[1:])]
        child_argv += ["--run", str(run), "--csv", str(full), "--csv-tenth", str(tenth)]
        results = [common.run_row(__file__, r, child_argv)
                   for r in common.selected(ROWS, args.rows)]
    print(table(results, args))
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def table(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    by = {r["row"]: r for r in results}
    bare = by.get("bare", {})
    bare_rate = bare["n"] / bare["seconds"] if "seconds" in bare else None
    lines = [f"batch scoring: MiniLM on {args.n:,} Rotten Tomatoes texts, {args.threads} "
             "thread(s)", "",
             "| row | rows | seconds | rows / s | throughput vs bare forward | peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {LABELS[r['row']]} | failed: {r['error']} | | | | |")
            continue
        rate = r["n"] / r["seconds"]
        ratio = f"{rate / bare_rate:.2f}x" if bare_rate else "-"
        lines.append(f"| {LABELS[r['row']]} | {r['n']:,} | {r['seconds']:.1f} | {rate:,.0f} | "
                     f"{ratio} | {r['peak_rss_mib']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
