"""The frozen head's L2 strength: chosen on the validation loss, or by cross-validation over
every label? (issue 19's third text measurement, bench/README.md)

tlkit's default at small sizes (``all_frozen``) fits a logistic-regression head on frozen
features and chooses its L2 strength (C, on ``head_solver.C_GRID``) on the loss of the
validation split, or, below ``head_solver.MIN_VAL`` validation examples, by 5-fold
cross-validation over the training and validation splits; the head is then refitted on both.
This replays the choice on MiniLM's pooled features of Rotten Tomatoes (computed once, through
tlkit's own path: ``tlkit.diagnose.inputs.prepare`` and ``tlkit.diagnose.rank.pooled``): for
each budget and seeded draw, the budget's labels are drawn stratified from the non-test
snippets, a tenth of them held out as validation (tlkit's default share), and the head is solved
three ways: C chosen on the validation loss, C by cross-validation over all the labels (both
with ``head_solver.solve``, the threshold forced either way), and scikit-learn's plain
``LogisticRegression`` (C 1) on all the labels, the reference a user would try first. Test: a
tenth of the set (tlkit's split, seed 0), the same for every row.

    .venv/bin/python bench/head_strength.py                      # budgets 100 .. 2,000, 8 draws
    .venv/bin/python bench/head_strength.py --budgets 200 --draws 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from typing import Any

import common


def _draws(x: Any, y: Any, xt: Any, yt: Any, budget: int, draws: int) -> dict[str, Any]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    from tlkit.train import head_solver

    n_out = int(max(y.max(), yt.max())) + 1
    accs: dict[str, list[float]] = {"validation": [], "cross-validation": [], "LR, C 1": []}
    picks: dict[str, Counter[float]] = {"validation": Counter(), "cross-validation": Counter()}
    for seed in range(draws):
        idx, _ = train_test_split(np.arange(len(y)), train_size=budget, stratify=y,
                                  random_state=seed)
        tr, va = train_test_split(idx, test_size=0.1, stratify=y[idx], random_state=seed)
        for way, threshold in (("validation", 0), ("cross-validation", 10 ** 9)):
            head_solver.MIN_VAL = threshold
            w, b, sol = head_solver.solve("single_label", x[tr], y[tr], x[va], y[va], n_out,
                                          seed, refit=True)
            accs[way].append(float(((xt @ w.T + b).argmax(1) == yt).mean()))
            picks[way][sol.c] += 1
        lr = LogisticRegression(max_iter=2000).fit(x[idx], y[idx])
        accs["LR, C 1"].append(float(lr.score(xt, yt)))
    return {"budget": budget, "val": len(va), "accs": accs,
            "picks": {k: dict(sorted(v.items())) for k, v in picks.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="100,200,500,1000,2000")
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    common.preimport_tlkit()
    from tlkit.config import validate
    from tlkit.device import pick_device
    from tlkit.diagnose.inputs import prepare
    from tlkit.diagnose.rank import pooled

    cfg = validate({"transfer_config": {"source_model": "minilm-l6", "seed": 0,
                                        "cache": {"disk": False}},
                    "data": {"source": "rotten_tomatoes", "test_fraction": 0.1,
                             "val_fraction": 0.1, "seed": 0, "max_length": args.max_length}},
                   "<bench>")
    t0 = time.perf_counter()
    prep = prepare(cfg)
    device = pick_device("cpu")
    log = lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True)  # noqa: E731
    parts = [pooled(prep, k, ds, device, log) for k, ds in
             (("train", prep.train_ds), ("val", prep.val_ds), ("test", prep.test_ds))]
    x = np.concatenate([parts[0][0], parts[1][0]]).astype(np.float64)
    y = np.concatenate([parts[0][1], parts[1][1]]).astype(np.int64)
    xt, yt = parts[2][0].astype(np.float64), parts[2][1].astype(np.int64)
    feature_seconds = time.perf_counter() - t0
    rows = [_draws(x, y, xt, yt, int(b), args.draws) for b in args.budgets.split(",")]
    head = ["labels", "validation", "C on the validation loss", "C by cross-validation",
            "LR, C 1", "cv - val", "C picked (val)", "C picked (cv)"]
    body = []
    for r in rows:
        a = r["accs"]
        m = {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
             for k, v in a.items()}
        gain = statistics.mean(c - v for c, v in zip(a["cross-validation"], a["validation"]))
        body.append([f"{r['budget']:,}", str(r["val"]),
                     *[f"{m[k][0]:.4f} +- {m[k][1]:.4f}"
                       for k in ("validation", "cross-validation", "LR, C 1")],
                     f"{100 * gain:+.2f}",
                     ", ".join(f"{c:g} x{n}" for c, n in r["picks"]["validation"].items()),
                     ", ".join(f"{c:g} x{n}" for c, n in r["picks"]["cross-validation"].items())])
    lines = [common.table(head, body, {1, 2, 3, 4, 5}), "", "Notes:",
             f"- test accuracy, mean +- sd over {args.draws} stratified draws per budget; "
             f"MiniLM (minilm-l6) pooled features at {args.max_length} tokens of "
             f"{len(y):,} non-test and {len(yt):,} test snippets ({feature_seconds:.0f} s); "
             "cv - val: the mean paired difference in points.",
             f"- machine: {common.machine_line(args.threads)}.",
             f"- command: {common.command_line(__file__, argv)}"]
    text = "\n".join(lines)
    print(text)
    common.save_json(args.json, {"argv": argv, "rows": rows, "table": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
