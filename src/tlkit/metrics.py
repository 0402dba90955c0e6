"""Metrics of a task from model outputs (logits or values) and targets, via scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np


def probabilities(outputs: np.ndarray, task: str) -> np.ndarray:
    if task in ("single_label", "token_classification"):
        z = outputs - outputs.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    if task == "multi_label":
        return 1.0 / (1.0 + np.exp(-outputs))
    return outputs


def compute_metrics(
    outputs: np.ndarray, targets: np.ndarray, task: str, classes: list[str] | None = None
) -> dict[str, Any]:
    from sklearn import metrics as skm

    if task == "token_classification":  # one row per word (tlkit.token_rows)
        from tlkit.token_rows import token_metrics

        return token_metrics(outputs, targets, classes)
    if task == "single_label":
        pred = outputs.argmax(axis=1)
        labels = list(range(outputs.shape[1]))
        p, r, f, s = skm.precision_recall_fscore_support(
            targets, pred, labels=labels, zero_division=0
        )
        names = classes or [str(i) for i in labels]
        return {
            "accuracy": float(skm.accuracy_score(targets, pred)),
            "f1_macro": float(np.mean(f)),
            "per_class": {
                names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                           "support": int(s[i])}
                for i in labels
            },
            "confusion_matrix": skm.confusion_matrix(targets, pred, labels=labels).tolist(),
        }
    if task == "multi_label":
        pred = (outputs > 0).astype(int)
        t = targets.astype(int)
        p, r, f, s = skm.precision_recall_fscore_support(t, pred, zero_division=0)
        names = classes or [str(i) for i in range(t.shape[1])]
        return {
            "subset_accuracy": float(skm.accuracy_score(t, pred)),
            "f1_micro": float(skm.f1_score(t, pred, average="micro", zero_division=0)),
            "f1_macro": float(skm.f1_score(t, pred, average="macro", zero_division=0)),
            "hamming_loss": float(skm.hamming_loss(t, pred)),
            "per_label": {
                names[i]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                           "support": int(s[i])}
                for i in range(t.shape[1])
            },
        }
    y = outputs.reshape(targets.shape) if outputs.size == targets.size else outputs[:, 0]
    return {
        "mse": float(skm.mean_squared_error(targets, y)),
        "mae": float(skm.mean_absolute_error(targets, y)),
        "r2": float(skm.r2_score(targets, y)) if len(targets) > 1 else float("nan"),
        **correlations(y, targets),
    }


def correlations(values: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Pearson's and Spearman's correlation of predicted and true values: what similarity
    benchmarks (STS-B, SICK-R) report, since a model that ranks pairs right but on another
    scale has a poor MSE and a good correlation. Several outputs: the mean over them. NaN
    where a correlation is undefined (under two examples, or a constant side)."""
    from scipy import stats

    y = np.asarray(values, dtype=np.float64).reshape(len(targets), -1)
    t = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
    got: dict[str, list[float]] = {"pearson": [], "spearman": []}
    for a, b in zip(y.T, t.T, strict=True):
        defined = len(a) > 1 and np.ptp(a) > 0 and np.ptp(b) > 0 and np.isfinite(a).all()
        got["pearson"].append(float(stats.pearsonr(a, b)[0]) if defined else float("nan"))
        got["spearman"].append(float(stats.spearmanr(a, b)[0]) if defined else float("nan"))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in got.items()}


def monitor_metric(task: str) -> tuple[str, str]:
    """The task's validation metric, which early stopping and the best checkpoint follow under
    ``model_selection: val_metric``, and whether higher is better ("max") or lower ("min")."""
    if task == "single_label":
        return "accuracy", "max"
    if task == "multi_label":
        return "f1_macro", "max"
    if task == "token_classification":
        return "entity_f1", "max"
    if task == "question_answering":  # SQuAD's F1 over the questions
        return "f1", "max"
    return "loss", "min"


# The metric that ranks subgroups per task, and whether higher is better.
_GROUP_METRIC = {"single_label": ("accuracy", "max"), "multi_label": ("f1_macro", "max"),
                 "regression": ("mae", "min"),
                 "token_classification": ("entity_f1", "max")}
_GROUP_SUMMARY_KEYS = ("worst_group", "gap", "gap_metric")


def subgroup_metrics(
    outputs: np.ndarray, targets: np.ndarray, groups: np.ndarray, task: str,
    classes: list[str] | None = None,
) -> dict[str, Any]:
    """The task's headline metrics per subgroup (``groups`` names each example's group), with
    ``n`` examples each; then ``worst_group`` (by accuracy for single-label, macro-F1 for
    multi-label, MAE for regression) and ``gap``, best minus worst in that metric (worst minus
    best for MAE), named by ``gap_metric``. Groups are keys in sorted order; a group named like
    one of the summary keys gets the suffix " (group)"."""
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(groups)} groups")
    metric, better = _GROUP_METRIC[task]
    out: dict[str, Any] = {}
    scores: dict[str, float] = {}
    for name in sorted(set(groups.tolist())):
        rows = groups == name
        key = f"{name} (group)" if name in _GROUP_SUMMARY_KEYS else name
        out[key] = {"n": int(rows.sum()), **_headline(outputs[rows], targets[rows], task, classes)}
        scores[key] = out[key][metric]
    # best first; a group whose metric is undefined (NaN) is not ranked
    ranked = sorted((k for k in scores if not np.isnan(scores[k])), key=lambda k: scores[k],
                    reverse=better == "max")
    worst = ranked[-1] if ranked else None
    gap = abs(scores[ranked[0]] - scores[ranked[-1]]) if ranked else None
    out.update(worst_group=worst, gap=None if gap is None else float(gap), gap_metric=metric)
    return out


def _headline(outputs: np.ndarray, targets: np.ndarray, task: str,
              classes: list[str] | None) -> dict[str, Any]:
    """compute_metrics without the per-class tables. Single-label macro-F1 averages over the
    classes the group holds or is predicted as: a class absent from a group would count as an
    F1 of 0 and drag a small group's score down for nothing."""
    if task == "single_label":
        from sklearn import metrics as skm

        pred = outputs.argmax(axis=1)
        return {"accuracy": float(skm.accuracy_score(targets, pred)),
                "f1_macro": float(skm.f1_score(targets, pred, average="macro", zero_division=0))}
    full = compute_metrics(outputs, targets, task, classes)
    tables = ("per_label", "per_class", "confusion_matrix")
    return {k: v for k, v in full.items() if k not in tables}


def bootstrap_intervals(outputs: np.ndarray, targets: np.ndarray, task: str,
                        resamples: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """95% percentile-bootstrap intervals of a test set's headline metrics (single-label:
    accuracy and macro-F1; regression: RMSE and MAE; none for other tasks or under two
    examples): the examples resampled with replacement ``resamples`` times."""
    y = np.asarray(targets)
    if len(y) < 2:
        return {}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(resamples, len(y)))
    got: dict[str, tuple[float, float]] = {}
    if task == "single_label":
        pred = outputs.argmax(axis=1)
        correct = (pred == y).astype(np.float64)
        got["accuracy"] = _percentiles(correct[idx].mean(axis=1))
        k = outputs.shape[1]
        got["f1_macro"] = _percentiles(np.array([_macro_f1(pred[i], y[i], k) for i in idx]))
    elif task == "regression":
        diff = outputs.reshape(len(y), -1) - y.reshape(len(y), -1)
        squared, absolute = (diff ** 2).mean(axis=1), np.abs(diff).mean(axis=1)
        got["rmse"] = _percentiles(np.sqrt(squared[idx].mean(axis=1)))
        got["mae"] = _percentiles(absolute[idx].mean(axis=1))
    return got


def _macro_f1(pred: np.ndarray, y: np.ndarray, k: int) -> float:
    """Macro-F1 over the classes present (counted with numpy: a thousand resamples stay
    quick)."""
    tp = np.bincount(y[pred == y], minlength=k).astype(float)
    fp = np.bincount(pred, minlength=k) - tp
    fn = np.bincount(y, minlength=k) - tp
    denom = 2 * tp + fp + fn
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present])) if present.any() else 0.0


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)
