"""Should the head read a sentence encoder's pooled features as they are (standardised), or
scaled to unit length first (``head.normalize``)? Logistic regressions on the same labels, the
same test set, the two feature geometries.

On bench/few_shot.py's files (its test sets and nested label draws, written here the same way):

- frozen: MiniLM's pretrained mean-pooled features (tlkit's ``minilm-l6``, 128 tokens), each
  geometry standardised per dimension, C by stratified 5-fold cross-validation (log loss) as
  tlkit's convex solver chooses it;
- ``--contrastive``: tlkit ``contrastive`` runs with ``head.normalize: false`` (the raw
  geometry), then heads on their trained backbone's features of the run's labels: raw
  standardised, unit length, and unit length standardised, at C 0.01 to 100 and at C by 5-fold
  cross-validation over those labels (the labels the body trained on: what tlkit's solver did
  before ``head_solver.C_AFTER_TRAINING``); test accuracy and Brier score.

    .venv/bin/python bench/head_geometry.py --sets rotten_tomatoes,newsgroups20 --shots 8,16,64
    .venv/bin/python bench/head_geometry.py --sets rotten_tomatoes --shots 8,16 --contrastive
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _standardised(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m, s = a.mean(0), a.std(0) + 1e-6
    return (a - m) / s, (b - m) / s


def _scores(a: np.ndarray, y: Any, b: np.ndarray, yt: Any, c: float | None
            ) -> tuple[float, float]:
    """(test accuracy, test Brier score) of a logistic regression at ``c`` (None: C by
    stratified 5-fold cross-validation on log loss over the labels, refitted on them)."""
    import warnings

    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = (LogisticRegressionCV(Cs=list(CS), cv=5, scoring="neg_log_loss", max_iter=3000)
             if c is None else LogisticRegression(C=c, max_iter=3000)).fit(a, y)
    yt = np.asarray(yt)
    p = m.predict_proba(b)
    onehot = (yt[:, None] == m.classes_[None, :]).astype(np.float64)
    return float((m.predict(b) == yt).mean()), float(((p - onehot) ** 2).sum(1).mean())


def _accuracy(a: np.ndarray, y: Any, b: np.ndarray, yt: Any, c: float | None) -> float:
    return _scores(a, y, b, yt, c)[0]


def _embed(backbone: Any, tokenizer: Any, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), 64):
            enc = tokenizer(texts[i:i + 64], truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            out.append(backbone(dict(enc)).float().numpy())
    return np.concatenate(out)


def frozen(name: str, folder: Path, shots: list[int], draws: int) -> list[str]:
    import pandas as pd
    from transformers import AutoTokenizer

    from tlkit.backbones import load_backbone

    backbone = load_backbone("minilm-l6", "packaged").eval()
    tok = AutoTokenizer.from_pretrained(str(backbone.preprocessing.tokenizer))
    test = pd.read_csv(folder / "test.csv")
    xt = _embed(backbone, tok, test.text.astype(str).tolist(), 128)
    lines = []
    for k in shots:
        got: dict[str, list[float]] = {"standardised": [], "unit length, standardised": []}
        for d in range(draws):
            lab = pd.read_csv(folder / f"labels-{k}-d{d}.csv")
            x = _embed(backbone, tok, lab.text.astype(str).tolist(), 128)
            a, b = _standardised(x, xt)
            got["standardised"].append(_accuracy(a, lab.label, b, test.label, None))
            a, b = _standardised(_unit(x), _unit(xt))
            got["unit length, standardised"].append(_accuracy(a, lab.label, b, test.label, None))
        for what, accs in got.items():
            lines.append(f"| {name} | frozen | {k} | {what} | C by 5-fold CV | "
                         f"{np.mean(accs):.3f} | | {' '.join(f'{a:.3f}' for a in accs)} |")
    return lines


def contrastive(name: str, folder: Path, shots: list[int], draws: int) -> list[str]:
    import pandas as pd
    from transformers import AutoTokenizer

    from tlkit.config import validate
    from tlkit.run import fit_run
    from tlkit.saved import load_model

    test = pd.read_csv(folder / "test.csv")
    lines = []
    for k in shots:
        got: dict[tuple[str, float], list[tuple[float, float]]] = {}
        for d in range(draws):
            src = folder / f"labels-{k}-d{d}.csv"
            raw = {"transfer_config": {"source_model": "minilm-l6",
                                       "pretrained_weights": "packaged", "seed": d,
                                       "freeze_strategy": "contrastive",
                                       "head": {"normalize": False}},
                   "data": {"source": str(src), "test": str(folder / "test.csv"), "seed": d}}
            with tempfile.TemporaryDirectory(prefix="tlkit-head-geometry-") as tmp:
                fit_run(validate(raw, "<bench>"), Path(tmp) / "run")
                saved = load_model(Path(tmp) / "run" / "model")
                tok = AutoTokenizer.from_pretrained(str(Path(tmp) / "run" / "model" /
                                                        "tokenizer"))
                lab = pd.read_csv(src)
                x = _embed(saved.model.backbone, tok, lab.text.astype(str).tolist(), 128)
                xt = _embed(saved.model.backbone, tok, test.text.astype(str).tolist(), 128)
            for c in (*CS[1:], None):  # None: C by 5-fold CV over the labels the body trained on
                for what, (a, b) in (("standardised", _standardised(x, xt)),
                                     ("unit length", (_unit(x), _unit(xt))),
                                     ("unit length, standardised",
                                      _standardised(_unit(x), _unit(xt)))):
                    got.setdefault((what, -1.0 if c is None else c), []).append(
                        _scores(a, lab.label, b, test.label, c))
            print(f"  {name} {k} a class, draw {d} done", file=sys.stderr)
        for (what, c), res in sorted(got.items()):
            accs = [a for a, _ in res]
            lines.append(f"| {name} | contrastive body | {k} | {what} | "
                         f"{'5-fold CV' if c < 0 else f'{c:g}'} | {np.mean(accs):.3f} | "
                         f"{np.mean([br for _, br in res]):.3f} | "
                         f"{' '.join(f'{a:.3f}' for a in accs)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sets", default="rotten_tomatoes")
    p.add_argument("--shots", default="8,16")
    p.add_argument("--draws", type=int, default=3)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--contrastive", action="store_true",
                   help="also train contrastive (head.normalize false) and compare heads")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    import torch

    import few_shot  # its files: the same test sets and label draws

    torch.set_num_threads(args.threads)
    shots = [int(s) for s in args.shots.split(",")]
    t0 = time.perf_counter()
    lines = ["| set | features | labels a class | geometry | C | mean accuracy | mean Brier "
             "| draws' accuracy |", "|---|---|---:|---|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory(prefix="tlkit-head-geometry-data-") as tmp:
        for name in args.sets.split(","):
            folder = Path(tmp) / name
            few_shot.write_set(name, shots, args.draws, args.test_size, args.seed, folder)
            lines += frozen(name, folder, shots, args.draws)
            if args.contrastive:
                lines += contrastive(name, folder, shots, args.draws)
    print("\n".join(lines))
    print(f"\n{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
