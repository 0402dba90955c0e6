"""Metrics of a task from model outputs (logits or values) and targets, via scikit-learn."""

from __future__ import annotations

from typing import Any

import numpy as np


def probabilities(outputs: np.ndarray, task: str) -> np.ndarray:
    if task == "single_label":
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
    }


def monitor_metric(task: str) -> tuple[str, str]:
    """The validation metric that early stopping and the best checkpoint follow, and whether
    higher is better ("max") or lower ("min")."""
    if task == "single_label":
        return "accuracy", "max"
    if task == "multi_label":
        return "f1_macro", "max"
    return "loss", "min"
