"""Which decision rule should freeze_strategy auto use between candidates scored by k-fold
cross-validation (below 20 validation examples; src/tlkit/select/kfold.py, rule.py)? The one
that maximises expected test accuracy, measured here over many small label draws.

Per draw: a stratified, seeded draw of a few labels (100, and 8 and 16 per class, where that is
under the 200 labels at which a run's validation split reaches 20) from a fixed pool of a
packaged set; every candidate's out-of-fold scores on that draw (5 folds, the same folds for
every candidate, computed by auto's own functions) and its test accuracy on a fixed test set
(the candidate fitted on all the draw's labels, as the pick's fit would be). Every rule of
``tlkit.select.rule.RULES`` then picks a candidate from the out-of-fold scores alone; the table
gives each rule's mean test accuracy and its regret (the per-draw best candidate's test
accuracy minus the pick's, in points), per cell and over all draws, beside each candidate
alone and the per-draw best (the oracle).

Candidates (cheap ones, so that many draws fit on a shared 2-core CPU):

- images (digits at 64 px, Fashion-MNIST at 96 px, MobileNetV2, as bench/small_data.py): the
  frozen head (the convex solve on the pooled features, computed once per set through tlkit's
  own path) and the raw pixels (the same solve on tlkit's 16 x 16 pixels); the test accuracy
  is the solve at the strength the out-of-fold fit chose, refitted on all the draw's labels;
- text (Rotten Tomatoes; 20 Newsgroups, 4 classes: comp.graphics, rec.autos, sci.med,
  talk.politics.misc), MiniLM, fewer draws: the frozen head (on the features as its head reads
  them: unit length, ``head.normalize`` auto), and the fine-tuning candidates of
  ``--text-candidates`` (default ``top_n_unfrozen`` and ``contrastive``) at auto's rates and
  length, trained per fold by ``tlkit.select.kfold`` (a tlkit run of the draw's files), each
  one's test accuracy from the same training on all the draw's labels.

    nice -n 5 .venv/bin/python bench/auto_rule.py --json /tmp/auto_rule.json
    .venv/bin/python bench/auto_rule.py --rescore /tmp/auto_rule.json   # new rules, same draws
    .venv/bin/python bench/auto_rule.py --draws 3 --text-draws 1 --sets digits   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SETS = {"digits": 64, "fashion_mnist": 96}
TEXT_SETS = {"rotten_tomatoes": None,
             "newsgroups20": ["comp.graphics", "rec.autos", "sci.med", "talk.politics.misc"]}
POOL, TEST = 2000, 1000


def _budgets(n_classes: int) -> list[int]:
    return sorted({b for b in (100, 8 * n_classes, 16 * n_classes) if b < 200})


def _draw(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    kept, _ = train_test_split(np.arange(len(y)), train_size=k, stratify=y, random_state=seed)
    return np.sort(kept)


def convex_test(x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray, n_out: int,
                c: float) -> float:
    """The convex head at strength ``c`` fitted on all of ``(x, y)`` (standardised), its test
    accuracy."""
    from tlkit.train.head_solver import fit_at

    mean, std = x.mean(0), x.std(0) + 1e-6
    w, b = fit_at("single_label", (x - mean) / std, y, c, n_out)
    return float(((((xt - mean) / std) @ w.T + b).argmax(1) == yt).mean())


def convex_candidate(name: str, x: np.ndarray, y: np.ndarray, xt: np.ndarray, yt: np.ndarray,
                     n_out: int, seed: int) -> tuple[Any, float]:
    """(out-of-fold ``Scored``, test accuracy) of the convex head on features ``x``."""
    from tlkit.select.rule import scored
    from tlkit.select.kfold import K
    from tlkit.train.evaluate import example_losses
    from tlkit.train.head_solver import out_of_fold

    out, c = out_of_fold("single_label", x, y, n_out, seed, folds=K)
    return (scored(name, out, y, "single_label", example_losses(out, y, "single_label")),
            convex_test(x, y, xt, yt, n_out, c))


def image_features(name: str, size: int, seed: int) -> dict[str, Any]:
    """The pool's and the test set's frozen MobileNetV2 features and tlkit's 16 x 16 pixels."""
    from tlkit.config import validate
    from tlkit.device import pick_device
    from tlkit.diagnose.inputs import prepare
    from tlkit.diagnose.rank import pooled
    from tlkit.inputs import limited, load_data

    raw = {"transfer_config": {"source_model": "mobilenetv2", "pretrained_weights": "packaged",
                               "cache": {"disk": False, "max_mb": 4096}},
           "data": {"source": name, "limit": POOL, "image_size": size, "seed": seed}}
    cfg = validate(raw, "<bench>")
    data, splits = load_data(cfg)
    splits = limited(splits, TEST, seed)
    device = pick_device("cpu")
    out: dict[str, Any] = {}
    for cand, model, img in (("all_frozen", None, size), ("pixels", "pixels", None)):
        c = validate({**raw, "data": {**raw["data"], "image_size": img}}, "<bench>")
        p = prepare(c, source_model=model, splits=(splits, data.modality))
        f = {k: pooled(p, k, ds, device, lambda s: None)
             for k, ds in (("train", p.train_ds), ("val", p.val_ds), ("test", p.test_ds))}
        out[cand] = (np.concatenate([f["train"][0], f["val"][0]]).astype(np.float64),
                     f["test"][0].astype(np.float64))
        out["y"] = np.concatenate([f["train"][1], f["val"][1]])
        out["yt"] = f["test"][1]
    out["n_out"] = len(splits.classes or [])
    return out


def image_draws(name: str, size: int, draws: int, seed: int,
                keep: Any = lambda row: None) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    f = image_features(name, size, seed)
    print(f"  {name}: features in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    y, yt, n_out = f["y"], f["yt"], f["n_out"]
    rows = []
    for labels in _budgets(n_out):
        for d in range(draws):
            idx = _draw(y, labels, seed + 1000 * d + labels)
            cands, test = [], {}
            for cand in ("all_frozen", "pixels"):
                x, xt = f[cand]
                s, acc = convex_candidate(cand, x[idx], y[idx], xt, yt, n_out, seed)
                cands.append(s)
                test[cand] = acc
            rows.append({"set": name, "labels": labels, "draw": d, "cands": cands, "test": test})
            keep(rows[-1])
        print(f"  {name} {labels} labels: {draws} draws, {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
    return rows


def _text_pool(name: str, seed: int) -> tuple[list[str], np.ndarray, list[str], np.ndarray,
                                               list[str]]:
    from tlkit.data.packaged import load_packaged

    data = load_packaged(name)
    keep = TEXT_SETS[name]
    classes = list(data.classes or [])

    def rows(d: Any) -> tuple[list[str], np.ndarray]:
        y = np.asarray(d.targets)
        idx = np.arange(len(y)) if keep is None else np.flatnonzero(
            np.isin(y, [classes.index(c) for c in keep]))
        return [str(d.inputs[i]) for i in idx], y[idx]

    x, y = rows(data)
    if data.test is not None:
        xt, yt = rows(data.test)
        pool = _draw(y, min(POOL, len(y) - 1), seed)
    else:
        test = _draw(y, min(TEST, len(y) // 3), seed)
        pool = np.setdiff1d(np.arange(len(y)), test)
        xt, yt = [x[i] for i in test], y[test]
        x, y = [x[i] for i in pool], y[pool]
        pool = np.arange(len(y))
    tkeep = _draw(yt, min(TEST, len(yt) - 1), seed) if len(yt) > TEST else np.arange(len(yt))
    return ([x[i] for i in pool], y[pool], [xt[i] for i in tkeep], yt[tkeep],
            [classes[c] for c in sorted(set(y.tolist()))])


def text_draws(name: str, draws: int, seed: int, folder: Path,
               tuners: tuple[str, ...] = ("top_n_unfrozen", "contrastive"),
               budgets: list[int] | None = None, keep: Any = lambda row: None
               ) -> list[dict[str, Any]]:
    """Draws of a text set: the frozen head and ``tuners``, through auto's own k-fold."""
    import pandas as pd

    from tlkit.config import validate
    from tlkit.distributed import setup
    from tlkit.heads import head_inputs, normalizes
    from tlkit.select.kfold import K, convex_inputs, fold_outputs, together, trained_out_of_fold
    from tlkit.select.rule import scored
    from tlkit.select.trials import base_for
    from tlkit.train.evaluate import example_losses
    from tlkit.train.head_solver import features

    t0 = time.perf_counter()
    x, y, xt, yt, classes = _text_pool(name, seed)
    names = sorted(set(y.tolist()))
    label = {c: classes[i] for i, c in enumerate(names)}
    pd.DataFrame({"text": xt, "label": [label[int(c)] for c in yt]}).to_csv(
        folder / f"{name}-test.csv", index=False)
    rows = []
    for labels in budgets or _budgets(len(names)):
        for d in range(draws):
            idx = _draw(y, labels, seed + 1000 * d + labels)
            src = folder / f"{name}-{labels}-{d}.csv"
            pd.DataFrame({"text": [x[i] for i in idx],
                          "label": [label[int(c)] for c in y[idx]]}).to_csv(src, index=False)
            cfg = validate({"transfer_config": {
                "source_model": "minilm-l6", "pretrained_weights": "packaged",
                "freeze_strategy": "auto", "seed": seed, "cache": {"disk": False}},
                "data": {"source": str(src), "test": str(folder / f"{name}-test.csv"),
                         "seed": seed}}, "<bench>")
            base = base_for(cfg, setup("cpu"), lambda k, i: None)
            data, tst = together(base), base.splits.test
            convex = convex_inputs(base)
            assert convex is not None
            xt_f = head_inputs(features(base.cache.get("test", base.inputs.test_ds,
                                                       base.cache.n_groups))[0],
                               normalizes(base.inputs.asm.model.head))
            s, acc = convex_candidate("all_frozen", convex[0][1], data.targets, xt_f,
                                      tst.targets, base.n_out, seed)
            cands, test = [s], {"all_frozen": acc}
            from tlkit.train.head_solver import folds_of

            parts = folds_of("single_label", data.targets, K, seed)
            for tuner in tuners:
                out, _ = trained_out_of_fold(base, tuner, data, parts, {})
                cands.append(scored(tuner, out, data.targets, "single_label",
                                    example_losses(out, data.targets, "single_label")))
                test[tuner] = float((fold_outputs(base, tuner, data, tst).argmax(1)
                                     == tst.targets).mean())
            rows.append({"set": name, "labels": labels, "draw": d, "cands": cands,
                         "test": test})
            keep(rows[-1])
            print(f"  {name} {labels} labels draw {d}: {test} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return rows


def evaluate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell and over all draws: each rule's (and candidate's) mean test accuracy and
    regret against the per-draw best, in points."""
    from tlkit.select.rule import RULES, decide

    out: dict[str, Any] = {}
    cells = sorted({(r["set"], r["labels"]) for r in rows}) + [("all", 0)]
    for cell in cells:
        sel = [r for r in rows if cell == ("all", 0) or (r["set"], r["labels"]) == cell]
        best = np.array([max(r["test"].values()) for r in sel])
        res: dict[str, Any] = {"draws": len(sel), "oracle": 100 * float(best.mean())}
        for cand in sorted({c for r in sel for c in r["test"]}):
            acc = np.array([r["test"].get(cand, np.nan) for r in sel])
            res[f"only {cand}"] = (100 * float(np.nanmean(acc)),
                                   100 * float(np.nanmean(best - acc)))
        for rule in RULES:
            acc = np.array([r["test"][decide(r["cands"], rule)[0]] for r in sel])
            res[rule] = (100 * float(acc.mean()), 100 * float((best - acc).mean()))
        out[f"{cell[0]}:{cell[1]}" if cell[1] else "all"] = res
    return out


def report(table: dict[str, Any]) -> str:
    lines = []
    for cell, res in table.items():
        lines.append(f"{cell} ({res['draws']} draws; per-draw best {res['oracle']:.2f})")
        for k, v in res.items():
            if isinstance(v, tuple):
                lines.append(f"    {k:<28} test accuracy {v[0]:6.2f}   regret {v[1]:5.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default=",".join([*IMAGE_SETS, *TEXT_SETS]))
    p.add_argument("--draws", type=int, default=30, help="draws per image cell")
    p.add_argument("--text-draws", type=int, default=4, help="draws per text cell")
    p.add_argument("--text-candidates", default="top_n_unfrozen,contrastive",
                   help="fine-tuning candidates of the text draws, comma-separated")
    p.add_argument("--text-budgets", default="",
                   help="labels per text draw, comma-separated (default: 100, 8 and 16 a "
                        "class where under 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write every draw's figures here (with each candidate's "
                                  "out-of-fold outputs, which --rescore reads)")
    p.add_argument("--rescore", action="append", default=[],
                   help="no draws: score every rule of RULES on the draws of these --json "
                        "files (repeatable)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = [r for f in args.rescore for r in saved_draws(Path(f))]

    def keep(row: dict[str, Any]) -> None:  # each draw saved as it ends: a killed run keeps them
        rows.append(row)
        if args.json:
            save(Path(args.json), rows, None)

    with tempfile.TemporaryDirectory(prefix="tlkit-auto-rule-") as tmp:
        for name in ([] if args.rescore else args.sets.split(",")):
            if name in IMAGE_SETS:
                image_draws(name, IMAGE_SETS[name], args.draws, args.seed, keep)
            elif args.text_draws > 0:
                text_draws(name, args.text_draws, args.seed, Path(tmp),
                           tuple(args.text_candidates.split(",")),
                           [int(b) for b in args.text_budgets.split(",") if b] or None, keep)
    table = evaluate(rows)
    print(report(table))
    print(f"{len(rows)} draws in {time.perf_counter() - t0:.0f} s")
    if args.json and not args.rescore:
        save(Path(args.json), rows, table)
    return 0


def save(path: Path, rows: list[dict[str, Any]], table: dict[str, Any] | None) -> None:
    """Every draw's figures (each candidate's mean out-of-fold scores and its out-of-fold
    outputs, which ``--rescore`` reads) and, at the end, the table."""
    path.write_text(json.dumps({
        "table": table, "draws": [{k: v for k, v in r.items() if k != "cands"} | {
            "oof": {c.name: {"accuracy": None if c.correct is None else
                             float(c.correct.mean()),
                             "brier": None if c.brier is None else float(c.brier.mean()),
                             "loss": float(c.loss.mean())} for c in r["cands"]},
            "outputs": {c.name: {"outputs": np.asarray(c.outputs).round(6).tolist(),
                                 "targets": np.asarray(c.targets).tolist()}
                        for c in r["cands"] if c.outputs is not None}}
            for r in rows]}))


def saved_draws(path: Path) -> list[dict[str, Any]]:
    """The draws of a ``--json`` file, each candidate's ``Scored`` rebuilt from its saved
    out-of-fold outputs (files written before they were saved cannot be rescored)."""
    from tlkit.select.rule import scored
    from tlkit.train.evaluate import example_losses

    rows = []
    for r in json.loads(path.read_text())["draws"]:
        if "outputs" not in r:
            raise SystemExit(f"{path} has no out-of-fold outputs (written before --rescore "
                             "existed): rerun the draws")
        cands = []
        for name in r["oof"]:  # in the order they were scored (the order of cost)
            o = r["outputs"][name]
            out, y = np.asarray(o["outputs"]), np.asarray(o["targets"], dtype=np.int64)
            cands.append(scored(name, out, y, "single_label",
                                example_losses(out, y, "single_label")))
        rows.append({k: v for k, v in r.items() if k not in ("oof", "outputs")} |
                    {"cands": cands})
    return rows


if __name__ == "__main__":
    sys.exit(main())
