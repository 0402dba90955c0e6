"""tlkit's defaults against simple references on a user's small data: is the toolkit at least as
good as what a user would get from a logistic regression?

Data sets (packaged, offline): Rotten Tomatoes (text, 2 classes), 20 Newsgroups (text, 20
classes), scikit-learn's digits (8x8 images, 10 classes) and Fashion-MNIST (28x28 images, 10
classes); label budgets of 100 and 1,000 (``--budgets``). Each (set, labels) cell is handed to
every row as a user would hand it to tlkit: files in a temporary folder, written once by the
parent before any row runs:

- the test set, fixed per set (the same for every row and every budget): a stratified subset of
  ``--test-size`` examples (seeded) of the set's own test split (20 Newsgroups, Fashion-MNIST);
  for the sets without one (Rotten Tomatoes, digits) held out first, stratified and seeded, and
  capped so that the largest budget still fits in the rest (digits: 1,797 - 1,000 = 797);
- the labelled budget: a stratified draw (seeded) of that many examples from the rest (the
  set's own training split, or what the held-out test set leaves).

Texts are a CSV ``text,label``; images are PNG files (written losslessly from the set's uint8
arrays) listed in a CSV ``image,label`` (a folder per class cannot hold Fashion-MNIST's
"T-shirt/top"). tlkit reads them with ``data.source: <budget file>`` and ``data.test: <test
file>`` and its default ``val_fraction`` (0.1): the budget is everything tlkit gets, its
validation split included (100 labels = 90 train + 10 validation).

Rows, each in a child process of its own (``common.run_row``), each with a fresh, empty
``TLKIT_CACHE`` (no row reuses another's features):

- tlkit default: ``fit_run`` of a config with only ``source_model`` (``minilm-l6`` for text,
  ``mobilenetv2`` for images), ``pretrained_weights: packaged``, ``seed`` and the data section
  (``source``, ``test``, ``seed``; ``image_size`` only with ``--image-size``); every other setting is
  TransferConfig's default: ``all_frozen``, whose linear head a convex solver fits on the cached
  pooled features (the L2 strength chosen on validation, or by 5-fold cross-validation on the
  training split when validation has fewer than 50 examples; the runs in bench/README.md
  before 2026-12-03 chose on validation from 20).
- tlkit auto: the same with ``freeze_strategy: auto``; the strategy it chose goes in the notes.
- LR on frozen features: scikit-learn's LogisticRegression on the same pooled frozen features
  (computed by tlkit's own path: ``tlkit.diagnose.inputs.prepare`` for the splits, backbone and
  preprocessing of tlkit default's config, ``tlkit.diagnose.rank.pooled`` for the features
  through tlkit's activation cache), standardised, trained on all the budget's labels (train +
  validation), C chosen by stratified 5-fold cross-validation (log loss over every class) over
  1e-3 .. 1e2 (tlkit's solver's grid), refitted on all the labels.
- TF-IDF + LR (text): TfidfVectorizer (word 1-2 grams, sublinear tf) and LogisticRegression, C
  chosen the same way over 1e-3 .. 1e4 (the vectorizer refitted in every fold); pixels + LR
  (images): the raw pixels of the PNG files scaled to [0, 1], standardised,
  LogisticRegression, C over 1e-3 .. 1e2 as above.
- full fine-tuning: tlkit with ``freeze_strategy: none``, the base rates of ``bench/strategies.py``
  for the backbone's set (head_lr, backbone_lr, lr_decay_per_layer, batch_size, weight_decay,
  dropout: Rotten Tomatoes' for MiniLM, Fashion-MNIST's for MobileNetV2) and ``--epochs``
  (default 5); everything else as tlkit default.

Seconds: a tlkit row's is its ``fit_run`` call (loading the files and the model, features,
training, test, writing the run folder); a reference row's is its work from reading the files
to the test predictions. Imports happen before the clock in every row. Test accuracy and
macro-F1 (the mean of every class's F1) on the same test set for every row of a cell.

    .venv/bin/python bench/small_data.py --json /tmp/bench_small.json    # the full benchmark
    .venv/bin/python bench/small_data.py --sets digits,rotten_tomatoes --budgets 100 \\
        --test-size 200 --rows default,lr_frozen,pixels_lr,tfidf_lr      # a smoke run
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import numpy as np

ROWS = ["default", "auto", "lr_frozen", "tfidf_lr", "pixels_lr", "finetune"]
LABELS = {"default": "tlkit default", "auto": "tlkit auto", "lr_frozen": "LR on frozen features",
          "tfidf_lr": "TF-IDF + LR", "pixels_lr": "pixels + LR", "finetune": "full fine-tuning"}
ONLY_FOR = {"tfidf_lr": "text", "pixels_lr": "image"}

# Per set: its kind, the backbone, the image size, and the set of bench/strategies.py whose base
# rates the full fine-tuning row takes (that benchmark tuned them for each backbone).
SETS: dict[str, dict[str, Any]] = {
    "rotten_tomatoes": {"modality": "text", "source_model": "minilm-l6",
                        "rates_from": "rotten_tomatoes"},
    "newsgroups20": {"modality": "text", "source_model": "minilm-l6",
                     "rates_from": "rotten_tomatoes"},
    "digits": {"modality": "image", "source_model": "mobilenetv2",
               "rates_from": "fashion_mnist"},
    "fashion_mnist": {"modality": "image", "source_model": "mobilenetv2",
                      "rates_from": "fashion_mnist"},
}

# The inverse L2 strengths the references choose from: on standardised features those of tlkit's
# head solver; TF-IDF's unscaled features need weaker penalties too (at 100 labels of 20
# Newsgroups the cross-validated loss still fell at 1e4).
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
C_GRID_TFIDF = (*C_GRID, 1e3, 1e4)
FOLDS = 5


# --------------------------------------------------------------------------------------------------
# The files of each cell (in the parent, before any row runs)
# --------------------------------------------------------------------------------------------------


def _draw(idx: np.ndarray, y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """A stratified, seeded draw of ``k`` of ``idx`` (all of them when ``k`` is not smaller)."""
    from sklearn.model_selection import train_test_split

    if k >= len(idx):
        return np.sort(idx)
    kept, _ = train_test_split(idx, train_size=k, stratify=y[idx], random_state=seed)
    return np.sort(kept)


def _write_table(path: Path, column: str, inputs: list[Any], labels: list[str]) -> None:
    import pandas as pd

    pd.DataFrame({column: inputs, "label": labels}).to_csv(path, index=False)


def _image_files(folder: Path, arrays: Any, idx: np.ndarray, prefix: str) -> list[str]:
    """PNG files of the uint8 arrays ``arrays[idx]`` (lossless), their paths relative to
    ``folder`` (tlkit reads a table's relative paths from the table's folder)."""
    from PIL import Image

    (folder / "images").mkdir(exist_ok=True)
    out = []
    for i in idx:
        rel = f"images/{prefix}{int(i):05d}.png"
        if not (folder / rel).is_file():
            Image.fromarray(np.asarray(arrays[int(i)], dtype=np.uint8)).save(folder / rel)
        out.append(rel)
    return out


def write_set(name: str, budgets: list[int], test_size: int, seed: int, folder: Path
              ) -> dict[str, Any]:
    """Write ``test.csv`` and ``labels-<budget>.csv`` of one set into ``folder``; what they hold."""
    from tlkit.data.packaged import load_packaged

    data = load_packaged(name)
    y = np.asarray(data.targets)
    classes = list(data.classes or [])
    everything = np.arange(len(y))
    if data.test is not None:
        test_data, test_y = data.test, np.asarray(data.test.targets)
        test_idx = _draw(np.arange(len(test_y)), test_y, test_size, seed)
        pool = everything
        origin = (f"a stratified {len(test_idx):,} of its own test split "
                  f"({len(test_y):,})" if len(test_idx) < len(test_y)
                  else f"its own test split ({len(test_y):,})")
    else:
        n_test = min(test_size, len(y) - max(budgets))
        if n_test < 2 * len(classes):
            raise SystemExit(f"{name}: {len(y):,} examples leave no test set beside a budget of "
                             f"{max(budgets):,}; lower --budgets")
        pool = _draw(everything, y, len(y) - n_test, seed)
        test_idx = np.setdiff1d(everything, pool)
        test_data, test_y = data, y
        origin = (f"{len(test_idx):,} held out of its {len(y):,} (stratified"
                  + (f"; capped so that {max(budgets):,} labels fit in the rest)"
                     if n_test < test_size else ")"))
    folder.mkdir(parents=True, exist_ok=True)
    modality = SETS[name]["modality"]
    column = "text" if modality == "text" else "image"

    def inputs(src: Any, idx: np.ndarray, prefix: str) -> list[Any]:
        if modality == "text":
            return [str(src.inputs[int(i)]) for i in idx]
        return _image_files(folder, src.inputs, idx, prefix)

    own = data.test is not None
    _write_table(folder / "test.csv", column, inputs(test_data, test_idx, "test-" if own else ""),
                 [classes[int(t)] for t in test_y[test_idx]])
    labelled = {}
    for b in budgets:
        idx = _draw(pool, y, b, seed)
        _write_table(folder / f"labels-{b}.csv", column, inputs(data, idx, ""),
                     [classes[int(t)] for t in y[idx]])
        labelled[b] = len(idx)
    return {"set": name, "modality": modality, "classes": len(classes), "n_test": len(test_idx),
            "test_origin": origin, "labelled": labelled, "folder": str(folder)}


# --------------------------------------------------------------------------------------------------
# Rows (each runs in its own process)
# --------------------------------------------------------------------------------------------------


def _cell(args: argparse.Namespace) -> tuple[str, int, Path]:
    name, _, budget = args.cell.partition(":")
    return name, int(budget), Path(args.data) / name


def tlkit_raw(args: argparse.Namespace, strategy: str = "default") -> dict[str, Any]:
    """The config of a tlkit row, as a user would write it."""
    name, budget, folder = _cell(args)
    spec = SETS[name]
    data: dict[str, Any] = {"source": str(folder / f"labels-{budget}.csv"),
                            "test": str(folder / "test.csv"), "seed": args.seed}
    if spec["modality"] == "image" and args.image_size:  # else tlkit's own, from the images
        data["image_size"] = args.image_size
    tc: dict[str, Any] = {"source_model": spec["source_model"], "pretrained_weights": "packaged",
                          "seed": args.seed}
    if strategy == "auto":
        tc["freeze_strategy"] = "auto"
        if args.auto_budget is not None:
            tc["auto_budget"] = args.auto_budget
    elif strategy == "finetune":
        import strategies  # bench/strategies.py: its base rates per set

        tc.update(strategies.SETS[spec["rates_from"]]["tc"], freeze_strategy="none",
                  epochs=args.epochs)
    return {"transfer_config": tc, "data": data}


def _tlkit_row(args: argparse.Namespace, strategy: str) -> dict[str, Any]:
    common.preimport_tlkit()
    from tlkit.config import validate
    from tlkit.run import fit_run

    raw = tlkit_raw(args, strategy)
    cfg = validate(raw, "<bench>")  # freeze_strategy auto: a UserError until it exists
    stages: list[str] = []

    def event(kind: str, info: dict[str, Any]) -> None:
        if kind == "stage":
            stages.append(str(info.get("what")))

    with tempfile.TemporaryDirectory(prefix="tlkit-bench-small-") as tmp:
        t0 = time.perf_counter()
        summary = fit_run(cfg, Path(tmp) / "run", event=event)
        seconds = time.perf_counter() - t0
    sizes = summary["data"]["sizes"]
    out: dict[str, Any] = {
        "seconds": seconds, "test_accuracy": summary["test"]["accuracy"],
        "macro_f1": summary["test"]["f1_macro"], "n_train": sizes["train"],
        "n_val": sizes["val"], "n_test": sizes["test"],
        "test_origin": summary["data"].get("origins", {}).get("test"),
        "given_test": raw["data"]["test"], "best_epoch": summary.get("best_epoch"),
        "config": raw,
    }
    solved = [s for s in stages if "fitted to convergence" in s]
    if solved:
        m = re.search(r"C ([0-9.e+-]+), chosen on (.*)\)", solved[-1])
        if m:
            out["head_c"], out["head_chosen_on"] = float(m.group(1)), m.group(2)
    if isinstance(summary.get("auto"), dict):
        out["auto"] = summary["auto"]
        out["auto_chosen"] = summary["auto"].get("chosen")
    return out


def row_default(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "default")


def row_auto(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "auto")


def row_finetune(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "finetune")


def _preimport_sklearn() -> None:
    import sklearn.feature_extraction.text
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.model_selection
    import sklearn.pipeline
    import sklearn.preprocessing  # noqa: F401


def cv_logreg(steps: list[tuple[str, Any]], x: Any, y: np.ndarray, x_test: Any,
              y_test: np.ndarray, seed: int, cs: tuple[float, ...] = C_GRID) -> dict[str, Any]:
    """``steps`` then LogisticRegression, C chosen by stratified 5-fold cross-validation (log
    loss; every step refitted in each fold), refitted on all of ``x``; its test metrics."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, log_loss, make_scorer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import Pipeline

    labels = sorted(set(y.tolist()) | set(y_test.tolist()))
    # every class named: sklearn's "neg_log_loss" scores a fold whose test part lacks a class
    # (20 Newsgroups at 100 labels has classes of 3) as NaN, and a grid of NaNs picks the first C
    loss = make_scorer(log_loss, greater_is_better=False, response_method="predict_proba",
                       labels=labels)
    pipe = Pipeline([*steps, ("lr", LogisticRegression(max_iter=5000))])
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    grid = GridSearchCV(pipe, {"lr__C": list(cs)}, cv=folds, scoring=loss, error_score="raise")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        grid.fit(x, y)
    pred = grid.predict(x_test)
    return {"test_accuracy": float(accuracy_score(y_test, pred)),
            "macro_f1": float(f1_score(y_test, pred, labels=labels, average="macro",
                                       zero_division=0)),
            "c": float(grid.best_params_["lr__C"]),
            "cv_log_loss": {f"{c:g}": round(-float(v), 4) for c, v in
                            zip(cs, grid.cv_results_["mean_test_score"], strict=True)},
            "n_fit": len(y), "n_test": len(y_test)}


def _read(path: Path) -> Any:
    import pandas as pd

    return pd.read_csv(path, dtype={"label": str})


def row_lr_frozen(args: argparse.Namespace) -> dict[str, Any]:
    common.preimport_tlkit()
    _preimport_sklearn()
    import tlkit.diagnose.rank  # noqa: F401
    from tlkit.config import validate
    from tlkit.device import pick_device
    from tlkit.diagnose.inputs import prepare
    from tlkit.diagnose.rank import pooled

    cfg = validate(tlkit_raw(args, "default"), "<bench>")  # tlkit default's own config
    t0 = time.perf_counter()
    device = pick_device(cfg.transfer_config.device)
    p = prepare(cfg)  # tlkit's splits, backbone and preprocessing, as fit_run makes them
    log: Callable[[str], None] = lambda s: print(f"    {s}", file=sys.stderr)
    feats = {k: pooled(p, k, ds, device, log)
             for k, ds in (("train", p.train_ds), ("val", p.val_ds), ("test", p.test_ds))}
    t_feat = time.perf_counter() - t0
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([feats["train"][0], feats["val"][0]])
    y = np.concatenate([feats["train"][1], feats["val"][1]])
    out = cv_logreg([("scale", StandardScaler())], x, y, feats["test"][0], feats["test"][1],
                    args.seed)
    out.update(seconds=time.perf_counter() - t0, feature_seconds=t_feat,
               feature_dim=int(x.shape[1]))
    return out


def _budget_and_test(args: argparse.Namespace) -> tuple[Path, Any, Any, list[str]]:
    """The cell's folder, its labelled budget and test set as read from the files, and the
    classes of both (sorted)."""
    _, budget, folder = _cell(args)
    train, test = _read(folder / f"labels-{budget}.csv"), _read(folder / "test.csv")
    return folder, train, test, sorted(set(train["label"]) | set(test["label"]))


def row_tfidf_lr(args: argparse.Namespace) -> dict[str, Any]:
    _preimport_sklearn()
    import pandas as pd  # noqa: F401
    from sklearn.feature_extraction.text import TfidfVectorizer

    t0 = time.perf_counter()
    _, train, test, classes = _budget_and_test(args)
    y = np.array([classes.index(v) for v in train["label"]])
    y_test = np.array([classes.index(v) for v in test["label"]])
    out = cv_logreg([("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True))],
                    train["text"].astype(str).tolist(), y, test["text"].astype(str).tolist(),
                    y_test, args.seed, C_GRID_TFIDF)
    out["seconds"] = time.perf_counter() - t0
    return out


def row_pixels_lr(args: argparse.Namespace) -> dict[str, Any]:
    _preimport_sklearn()
    import pandas as pd  # noqa: F401
    from PIL import Image
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    folder, train, test, classes = _budget_and_test(args)

    def pixels(frame: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([np.asarray(Image.open(folder / f).convert("L"), dtype=np.float64).ravel()
                      for f in frame["image"]]) / 255.0
        return x, np.array([classes.index(v) for v in frame["label"]])

    (x, y), (x_test, y_test) = pixels(train), pixels(test)
    out = cv_logreg([("scale", StandardScaler())], x, y, x_test, y_test, args.seed)
    out["seconds"] = time.perf_counter() - t0
    return out


ROW_FUNCS: dict[str, common.Row] = {
    "default": row_default, "auto": row_auto, "lr_frozen": row_lr_frozen,
    "tfidf_lr": row_tfidf_lr, "pixels_lr": row_pixels_lr, "finetune": row_finetune}


def guarded(fn: common.Row) -> common.Row:
    """A row that records its error (the message of a UserError, say) instead of crashing."""

    def row(args: argparse.Namespace) -> dict[str, Any]:
        try:
            return fn(args)
        except Exception as e:  # noqa: BLE001 - the table shows any row's failure
            traceback.print_exc()
            lines = [s.strip() for s in str(e).splitlines() if s.strip()]
            # the last line says what is wrong (a config error's first names the file)
            return {"error": f"{type(e).__name__}: {lines[-1] if lines else ''}",
                    "error_full": " ".join(lines)}

    return row


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def _notes(r: dict[str, Any], res: dict[str, Any], meta: dict[str, Any]) -> str:
    if "error" in res:
        return res["error"][:110]
    out = []
    if r["row"] in ("default", "auto", "finetune"):
        out.append(f"train {res['n_train']} + val {res['n_val']}")
        if res.get("auto_chosen"):
            out.append(f"chose {res['auto_chosen']}")
        if "head_c" in res:
            how = "CV" if "cross" in res.get("head_chosen_on", "") else "val"
            out.append(f"head C {res['head_c']:g} ({how})")
        if r["row"] == "finetune" and res.get("best_epoch") is not None:
            out.append(f"best epoch {res['best_epoch']}")
        if res["n_test"] != meta["n_test"] or res.get("test_origin") != res.get("given_test"):
            out.append(f"TEST NOT THE GIVEN ONE ({res['n_test']}, {res.get('test_origin')})")
    else:
        out.append(f"fit on {res['n_fit']}, C {res['c']:g} (5-fold CV)")
        if "feature_seconds" in res:
            out.append(f"features {res['feature_seconds']:.1f} s")
        if res["n_test"] != meta["n_test"]:
            out.append(f"TEST SIZE {res['n_test']}")
    return "; ".join(out)


def report(results: list[dict[str, Any]], cells: dict[str, dict[str, Any]],
           args: argparse.Namespace, argv: list[str]) -> str:
    head = ["set", "labels", "row", "test acc", "macro-F1", "seconds", "s / default", "notes"]
    body = []
    base = {(r["set"], r["budget"]): r["result"] for r in results if r["row"] == "default"}
    for r in results:
        res, meta = r["result"], cells[r["set"]]
        ok = "error" not in res
        body.append([r["set"], f"{meta['labelled'][r['budget']]:,}", LABELS[r["row"]],
                     common.fmt(res.get("test_accuracy"), ".3f") if ok else "error",
                     common.fmt(res.get("macro_f1"), ".3f") if ok else "-",
                     common.fmt(res.get("seconds")) if ok else "-",
                     common.ratio(res.get("seconds"),
                                  base.get((r["set"], r["budget"]), {}).get("seconds")) if ok
                     else "-",
                     _notes(r, res, meta)])
    lines = [common.table(head, body, {1, 3, 4, 5, 6}), "", "Notes:"]
    for name, meta in cells.items():
        lines.append(f"- {name} ({meta['modality']}, {meta['classes']} classes, "
                     f"{SETS[name]['source_model']}"
                     + ((f", {args.image_size} px" if args.image_size else
                         ", tlkit's own image size (from the images: data/resolution.py)")
                        if meta["modality"] == "image" else "")
                     + f"): test set {meta['test_origin']}, the same for every row and budget; "
                     "labels: a stratified draw of the rest.")
    for (s, b), res in base.items():
        auto = next((r["result"] for r in results
                     if r["set"] == s and r["budget"] == b and r["row"] == "auto"), None)
        if auto is None:
            continue
        if "error" in auto:
            lines.append(f"- tlkit auto / tlkit default time, {s} at {b:,} labels: - (auto "
                         "failed)")
        else:
            lines.append(f"- tlkit auto / tlkit default time, {s} at {b:,} labels: "
                         f"{common.ratio(auto.get('seconds'), res.get('seconds'))} "
                         f"({auto['seconds']:.1f} s against {res.get('seconds', 0):.1f} s); "
                         f"test acc {100 * (auto['test_accuracy'] - res['test_accuracy']):+.1f} "
                         "points.")
    lines.append(
        "- tlkit rows: the budget file as data.source and the test file as data.test, the "
        "default val_fraction (0.1) cut from the budget; seconds = the fit_run call. References: "
        "LogisticRegression on all the budget's labels, C of "
        f"{', '.join(f'{c:g}' for c in C_GRID)} (TF-IDF also 1e3, 1e4) by stratified "
        f"{FOLDS}-fold cross-validation (log loss); seconds from reading the files (LR on frozen features: from tlkit's "
        "prepare, the features included) to the test predictions. Full fine-tuning: "
        f"freeze_strategy none, {args.epochs} epochs, bench/strategies.py's base rates. "
        "s / default: the row's seconds over tlkit default's in the same cell.")
    threads = next((r["result"]["threads"] for r in results if "threads" in r["result"]),
                   args.threads)
    lines.append(f"- seed {args.seed}; machine: {common.machine_line(threads)}; a fresh "
                 "TLKIT_CACHE per row.")
    lines.append(f"- command: {common.command_line(__file__, argv)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    p.add_argument("--budgets", default="100,1000",
                   help="labels tlkit gets in all (validation included), comma-separated")
    p.add_argument("--test-size", type=int, default=1000,
                   help="test examples per set (a stratified subset; default 1,000)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the full fine-tuning row")
    p.add_argument("--auto-budget", type=float, default=None,
                   help="transfer_config.auto_budget of the tlkit auto row (default: tlkit's)")
    p.add_argument("--image-size", type=int, default=None,
                   help="pixels of every image set (default: tlkit's own, from the images; "
                   "the runs before issue 33 used digits 64, fashion_mnist 96)")
    common.add_common_flags(p)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return common.child_main({k: guarded(f) for k, f in ROW_FUNCS.items()}, args)
    argv = list(sys.argv[1:] if argv is None else argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in SETS]
    if bad:
        p.error(f"unknown set(s) {', '.join(bad)}; sets: {', '.join(SETS)}")
    budgets = sorted({int(b) for b in args.budgets.split(",") if b.strip()})
    rows = common.selected(ROWS, args.rows)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-small-data-") as tmp:
        data = Path(tmp)
        cells = {s: write_set(s, budgets, args.test_size, args.seed, data / s) for s in sets}
        for s in sets:
            for b in budgets:
                for r in rows:
                    if ONLY_FOR.get(r, cells[s]["modality"]) != cells[s]["modality"]:
                        continue
                    print(f"[bench] {s}, {b} labels", file=sys.stderr, flush=True)
                    with common.cold_tlkit_cache() as cache:
                        n = str(args.threads)
                        env = {"TLKIT_CACHE": str(cache), "OMP_NUM_THREADS": n,
                               "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}
                        res = common.run_row(__file__, r, [*argv, "--cell", f"{s}:{b}",
                                                           "--data", str(data)], env)
                    results.append({"set": s, "budget": b, "row": r, "result": res})
    text = report(results, cells, args, argv)
    print(text)
    print(f"- benchmark wall time {time.perf_counter() - started:.0f} s.")
    common.save_json(args.json, {"argv": argv, "cells": cells, "results": results,
                                 "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
