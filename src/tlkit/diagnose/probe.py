"""Linear probes: how well a linear classifier on frozen features predicts the target.

After Yosinski et al. (2014): a probe at each layer group's output shows how general each
layer's features are for this target. Lower layers hold general features, upper ones
source-specific; where the probe's accuracy peaks below the top, the top layers are specific to
the source task and are the ones to retrain.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tlkit.threads import one_blas_thread


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, eval_x: np.ndarray,
                 eval_y: np.ndarray, seed: int = 0) -> dict[str, float]:
    """A multinomial logistic regression on standardised features, its L2 strength chosen by
    3-fold cross-validation on the training features; accuracy on the training and the
    evaluation features."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(train_y.astype(int))
    folds = int(min(3, counts[counts > 0].min())) if len(counts) else 0
    if folds >= 2:
        clf = LogisticRegressionCV(Cs=[0.01, 0.1, 1.0], cv=folds, max_iter=500,
                                   random_state=seed)
    else:  # a class with one example: no cross-validation possible
        clf = LogisticRegression(C=0.1, max_iter=500, random_state=seed)
    model = make_pipeline(StandardScaler(), clf)
    with warnings.catch_warnings(), one_blas_thread():  # and sklearn's deprecation chatter
        warnings.simplefilter("ignore")
        model.fit(train_x.astype(np.float64), train_y)
    return {
        "train_accuracy": float(model.score(train_x.astype(np.float64), train_y)),
        "accuracy": float(model.score(eval_x.astype(np.float64), eval_y)),
    }


def probe_layers(train: dict[int, np.ndarray], train_y: np.ndarray, val: dict[int, np.ndarray],
                 val_y: np.ndarray, names: dict[int, str], seed: int = 0) -> list[dict[str, Any]]:
    """One probe per cut (a group's output), lowest first."""
    rows = []
    for cut in sorted(train):
        r = linear_probe(train[cut], train_y, val[cut], val_y, seed)
        rows.append({"cut": cut, "group": names[cut], "dim": int(train[cut].shape[1]), **r})
    return rows


def profile(rows: list[dict[str, Any]], tolerance: float = 0.01) -> dict[str, Any]:
    """Where the probes peak: the best group, the top group's accuracy, and whether the top is
    within ``tolerance`` of the best (the top layers' features suit this target)."""
    best = max(rows, key=lambda r: r["accuracy"])
    top = rows[-1]
    return {"best_cut": best["cut"], "best_group": best["group"],
            "best_accuracy": best["accuracy"], "top_accuracy": top["accuracy"],
            "top_is_best": top["accuracy"] >= best["accuracy"] - tolerance,
            "groups_above_best": top["cut"] - best["cut"]}


def format_probe_table(rows: list[dict[str, Any]], divergence: dict[str, dict[str, Any]] | None
                       = None) -> str:
    """The probes per group, lowest first; with ``divergence`` (keyed by group name) its proxy
    A-distance and MMD beside each group that has them."""
    head = ["group", "dim", "probe train acc", "probe val acc"]
    if divergence:
        head += ["proxy A-distance", "MMD^2"]
    body = []
    best = max(r["accuracy"] for r in rows)
    for r in rows:
        cells = [r["group"] + (" *" if r["accuracy"] == best else ""), str(r["dim"]),
                 f"{r['train_accuracy']:.4f}", f"{r['accuracy']:.4f}"]
        if divergence:
            d = divergence.get(r["group"], {})
            cells += [f"{d['pad']:.3f}" if "pad" in d else "-",
                      f"{d['mmd']:.4f}" if "mmd" in d else "-"]
        body.append(cells)
    return text_table(head, body, right=set(range(1, len(head))))


def text_table(head: list[str], body: list[list[str]], right: set[int]) -> str:
    """A markdown table, aligned, the same on a terminal and in a file."""
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) if body else len(head[i])
              for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2)
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])
