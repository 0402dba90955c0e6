"""How far apart two domains are, measured on features: the proxy A-distance (a domain
classifier's held-out error) and the multi-kernel maximum mean discrepancy."""

from __future__ import annotations

from typing import cast

import numpy as np
from scipy.spatial.distance import cdist, pdist
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tlkit.threads import one_blas_thread

MMD_BANDWIDTH_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be 2-D with the same width, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 samples per side, got {len(a)} and {len(b)}")
    return a, b


def _subsample(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return x if len(x) <= k else x[rng.choice(len(x), size=k, replace=False)]


def proxy_a_distance(a: np.ndarray, b: np.ndarray, seed: int = 0,
                     max_per_side: int = 5000, folds: int = 5) -> dict[str, float | int]:
    """Proxy A-distance (Ben-David et al., "Analysis of Representations for Domain
    Adaptation", NeurIPS 2006): ``2 (1 - 2 err)``, ``err`` the 5-fold cross-validated error of a
    logistic-regression domain classifier on standardised features, clipped to [0, 2]
    (0: the domains cannot be told apart; 2: perfectly separable).

    The larger side is subsampled to the smaller (and both to ``max_per_side``) so that chance
    error is 0.5. Returns ``{"pad", "domain_error", "n"}``, ``n`` the count per side.
    """
    a, b = _pair(a, b)
    rng = np.random.default_rng(seed)
    n = min(len(a), len(b), max_per_side)
    if n < folds:
        raise ValueError(f"need at least {folds} samples per side for {folds}-fold CV, got {n}")
    x = np.concatenate([_subsample(a, n, rng), _subsample(b, n, rng)])
    y = np.repeat([0, 1], n)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with one_blas_thread():
        error = 1.0 - float(np.mean(cross_val_score(clf, x, y, cv=cv, scoring="accuracy")))
    pad = float(np.clip(2.0 * (1.0 - 2.0 * error), 0.0, 2.0))
    return {"pad": pad, "domain_error": error, "n": int(n)}


def mmd(a: np.ndarray, b: np.ndarray, seed: int = 0, max_per_side: int = 1000) -> float:
    """Squared maximum mean discrepancy (Gretton et al., JMLR 2012), unbiased estimate, with the
    multi-kernel of DAN (Long et al., "Learning Transferable Features with Deep Adaptation
    Networks", ICML 2015): the sum of Gaussian kernels ``exp(-|x - y|^2 / (2 s^2))`` at
    bandwidths ``s`` = median pairwise distance of the pooled sample times 0.25, 0.5, 1, 2, 4.

    Each side is subsampled (seeded) to at most ``max_per_side`` rows. The unbiased estimate
    can be slightly negative when the two samples come from the same distribution.
    """
    a, b = _pair(a, b)
    rng = np.random.default_rng(seed)
    a = _subsample(a, max_per_side, rng)
    b = _subsample(b, max_per_side, rng)
    median = float(np.median(pdist(np.concatenate([a, b]))))
    if median == 0.0:
        return 0.0
    d_aa, d_bb, d_ab = (cdist(p, q, "sqeuclidean") for p, q in ((a, a), (b, b), (a, b)))

    def kernel(d2: np.ndarray) -> np.ndarray:
        # sum() starts at 0, and 0 + array is an array
        return cast(np.ndarray,
                    sum(np.exp(-d2 / (2.0 * (median * f) ** 2)) for f in MMD_BANDWIDTH_FACTORS))

    def off_diagonal_mean(k: np.ndarray) -> float:
        m = len(k)
        return float((k.sum() - np.trace(k)) / (m * (m - 1)))

    return (off_diagonal_mean(kernel(d_aa)) + off_diagonal_mean(kernel(d_bb))
            - 2.0 * float(kernel(d_ab).mean()))
