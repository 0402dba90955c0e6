"""Representation similarity: how alike two sets of activations of the same examples are."""

from __future__ import annotations

import numpy as np


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear centred kernel alignment (Kornblith et al., "Similarity of Neural Network
    Representations Revisited", ICML 2019) between activations ``x`` (n, d1) and ``y`` (n, d2)
    of the same n examples: ``|Yc^T Xc|_F^2 / (|Xc^T Xc|_F |Yc^T Yc|_F)`` on column-centred
    inputs. In [0, 1]; invariant to orthogonal transforms and isotropic scaling of either side,
    so 1 for ``x`` against ``x @ Q`` or ``3 * x``; near 0 for unrelated activations (with a
    positive bias of order d/n when n is not much larger than the widths).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x and y must be 2-D with the same rows, got {x.shape} and {y.shape}")
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    n, d1, d2 = len(x), x.shape[1], y.shape[1]
    if n * n < d1 * d2:
        # wide activations: the n x n Gram form costs less than the d1 x d2 cross-covariance
        k, l_ = x @ x.T, y @ y.T
        num, den = float(np.sum(k * l_)), float(np.linalg.norm(k) * np.linalg.norm(l_))
    else:
        num = float(np.linalg.norm(y.T @ x) ** 2)
        den = float(np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    if den == 0.0:
        raise ValueError("linear_cka is undefined for constant activations (zero variance)")
    return float(np.clip(num / den, 0.0, 1.0))
