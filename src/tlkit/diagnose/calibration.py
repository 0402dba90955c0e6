"""Calibration of a classifier's confidence: expected calibration error, the reliability table
behind a reliability diagram, and temperature scaling (Guo et al., "On Calibration of Modern
Neural Networks", ICML 2017)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

# Temperatures searched by fit_temperature: wide enough for any sensible network.
LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def _checked(scores: np.ndarray, labels: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if s.ndim != 2 or labels.shape != (len(s),) or len(s) == 0:
        raise ValueError(f"{name} must be (n, k) with labels (n,), n > 0; got {s.shape} "
                         f"and {labels.shape}")
    if np.any((labels < 0) | (labels >= s.shape[1])):
        raise ValueError(f"labels must lie in [0, {s.shape[1]})")
    return s, labels.astype(np.int64)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """Reliability table: the top-class confidence split into ``bins`` equal-width bins on
    [0, 1] (each right-closed, ``(lo, hi]``), with each bin's mean confidence, accuracy and
    count (confidence and accuracy None for an empty bin), and the ECE they give."""
    p, labels = _checked(probs, labels, "probs")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    filled = count > 0
    gap = np.abs(correct_sum[filled] - conf_sum[filled]) / len(p)
    return {
        "edges": edges.tolist(),
        "confidence": [float(c / k) if k else None for c, k in zip(conf_sum, count)],
        "accuracy": [float(a / k) if k else None for a, k in zip(correct_sum, count)],
        "count": count.astype(int).tolist(),
        "ece": float(gap.sum()),
    }


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error (Naeini et al., AAAI 2015; Guo et al., 2017): the
    count-weighted mean of |accuracy - confidence| over equal-width confidence bins."""
    return reliability(probs, labels, bins)["ece"]


def _nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    logp = log_softmax(logits / temperature, axis=1)
    return float(-np.mean(logp[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """Temperature scaling (Guo et al., 2017): the T > 0 minimising the mean negative
    log-likelihood of ``softmax(logits / T)`` on validation logits. Deterministic bounded
    search over log T (scipy's ``minimize_scalar``), T in [0.05, 20]; the NLL is convex in 1/T,
    so the minimum is the global one within the range."""
    z, labels = _checked(logits, labels, "logits")
    res = minimize_scalar(lambda log_t: _nll(z, labels, float(np.exp(log_t))),
                          bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))


def calibration_report(val_logits: np.ndarray, val_labels: np.ndarray,
                       test_logits: np.ndarray, test_labels: np.ndarray,
                       bins: int = 15) -> dict[str, Any]:
    """Fit a temperature on the validation split and report, on the test split, ECE, NLL and
    the reliability table before and after scaling by it."""
    t = fit_temperature(val_logits, val_labels)
    z, labels = _checked(test_logits, test_labels, "test_logits")
    before = reliability(softmax(z, axis=1), labels, bins)
    after = reliability(softmax(z / t, axis=1), labels, bins)
    return {
        "temperature": t,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "nll_before": _nll(z, labels),
        "nll_after": _nll(z, labels, t),
        "reliability_before": before,
        "reliability_after": after,
    }


THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray) -> list[float]:
    """Multi-label decisions: per class, the threshold on the grid 0.05, 0.10, ... 0.95 that
    maximises that class's F1 on validation (ties: the one nearest 0.5); 0.5 for a class with
    no positive example there, where F1 cannot choose."""
    probs, targets = np.asarray(probs, dtype=np.float64), np.asarray(targets) > 0.5
    out: list[float] = []
    for k in range(probs.shape[1]):
        y = targets[:, k]
        if not y.any():
            out.append(0.5)
            continue
        pred = probs[:, k][None, :] >= THRESHOLD_GRID[:, None]  # (grid, n)
        tp = (pred & y).sum(1)
        f1 = 2 * tp / np.maximum(1, pred.sum(1) + y.sum())
        best = np.flatnonzero(f1 >= f1.max() - 1e-12)
        out.append(float(THRESHOLD_GRID[best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]]))
    return out
