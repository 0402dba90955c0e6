"""Did the transfer help? The accuracy difference between a transferred model and a baseline
(typically trained from scratch), with an interval that accounts for both the finite test set
(paired bootstrap over test examples) and, when several seeds were run, seed-to-seed variation
(a t-interval over seeds); the verdict is read from the wider of the two."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from tlkit.token_rows import word_scores

POSITIVE, NEGATIVE, NONE = "positive transfer", "negative transfer", "no measurable effect"

# Resampled indices held in memory at once (int64): about 32 MB.
_CHUNK_ELEMENTS = 4_000_000


def _two_sided(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return (1.0 - level) / 2.0


def paired_bootstrap(correct_a: np.ndarray, correct_b: np.ndarray, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict[str, float | int]:
    """Paired bootstrap (Efron & Tibshirani, 1993; for model comparison e.g. Koehn, EMNLP
    2004) of the accuracy difference ``mean(a) - mean(b)`` on the same n test examples:
    examples are resampled with replacement, the same indices for both models, and the
    percentile interval of the resampled differences is returned.

    ``correct_a`` and ``correct_b`` are per-example correctness, bool or in [0, 1] (a mean over
    several baseline seeds is allowed). Returns ``{"margin", "low", "high", "resamples"}``.
    """
    a = np.asarray(correct_a, dtype=np.float64)
    b = np.asarray(correct_b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or len(a) == 0:
        raise ValueError(f"correct_a and correct_b must be 1-D of the same non-zero length, got "
                         f"{a.shape} and {b.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    tail = _two_sided(level)
    diff = a - b
    n = len(diff)
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // n)
    means = np.concatenate([
        diff[rng.integers(0, n, size=(min(rows, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, rows)
    ])
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return {"margin": float(diff.mean()), "low": float(low), "high": float(high),
            "resamples": int(resamples)}


def seed_interval(values_a: Sequence[float], values_b: Sequence[float],
                  level: float = 0.95) -> dict[str, float | int]:
    """Difference of mean accuracy over seeds, ``mean(a) - mean(b)``, with Welch's t-interval
    (unequal variances, Welch-Satterthwaite degrees of freedom). Needs at least 2 seeds per
    side. Returns ``{"margin", "low", "high", "df", "seeds_a", "seeds_b"}``."""
    a = np.asarray(values_a, dtype=np.float64)
    b = np.asarray(values_b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 seeds per side, got {a.size} and {b.size}")
    tail = _two_sided(level)
    margin = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    if se == 0.0:
        # every seed gave the same accuracy on each side: no seed spread to widen anything
        df, half = float(len(a) + len(b) - 2), 0.0
    else:
        df = float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
        half = float(stats.t.ppf(1.0 - tail, df) * se)
    return {"margin": margin, "low": margin - half, "high": margin + half, "df": df,
            "seeds_a": len(a), "seeds_b": len(b)}


def verdict(low: float, high: float, margin: float) -> str:
    """"positive transfer" when the whole interval is above 0, "negative transfer" when it is
    below 0, else "no measurable effect". The decision rests on the interval alone; ``margin``
    (the point estimate) is only checked to lie within it, to catch swapped arguments."""
    if not low <= high:
        raise ValueError(f"low must not exceed high, got low={low}, high={high}")
    if not low - 1e-12 <= margin <= high + 1e-12:
        raise ValueError(f"margin {margin} lies outside the interval [{low}, {high}]")
    if low > 0:
        return POSITIVE
    if high < 0:
        return NEGATIVE
    return NONE


def _seeds(k: int, name: str) -> str:
    return f"{k} {name} seed" + ("" if k == 1 else "s")


def transfer_verdict(transfer_correct: np.ndarray, baseline_correct_list: Sequence[np.ndarray],
                     transfer_seed_accs: Sequence[float] | None = None, resamples: int = 1000,
                     seed: int = 0, level: float = 0.95,
                     baseline_name: str = "scratch", unit: str = "examples") -> dict[str, Any]:
    """Verdict on a transfer against a baseline, in accuracy units (0..1).

    The paired bootstrap compares ``transfer_correct`` with the per-example correctness averaged
    over the baseline seeds' predictions on the same test set. When there are at least 2
    transfer seeds (``transfer_seed_accs``, every seed's test accuracy) and 2 baseline seeds, a
    t-interval over seeds is computed too, and the wider interval decides. Returns ``margin``,
    ``low``, ``high``, ``level``, ``method``, ``verdict``, a one-line ``text`` and both
    component results (``bootstrap``, ``seeds``: None without enough seeds).
    """
    if len(baseline_correct_list) == 0:
        raise ValueError("need at least one baseline seed's predictions")
    transfer = np.asarray(transfer_correct, dtype=np.float64)
    baselines = [np.asarray(c, dtype=np.float64) for c in baseline_correct_list]
    if any(c.shape != transfer.shape for c in baselines):
        raise ValueError("every baseline seed's correctness must match transfer_correct's "
                         f"shape {transfer.shape}")
    boot = paired_bootstrap(transfer, np.mean(baselines, axis=0), resamples, seed, level)
    n, k_base = len(transfer), len(baselines)
    chosen = boot
    method = (f"paired bootstrap over {n:,} test {unit}, {_seeds(k_base, baseline_name)}")

    seeds = None
    if transfer_seed_accs is not None and len(transfer_seed_accs) >= 2 and k_base >= 2:
        seeds = seed_interval(transfer_seed_accs, [float(c.mean()) for c in baselines], level)
        if seeds["high"] - seeds["low"] > boot["high"] - boot["low"]:
            chosen = seeds
            method = (f"t-interval over {_seeds(len(transfer_seed_accs), 'transfer')} and "
                      f"{_seeds(k_base, baseline_name)}, {n:,} test {unit}")

    margin, low, high = chosen["margin"], chosen["low"], chosen["high"]
    decision = verdict(low, high, margin)
    text = (f"{decision}: {100 * margin:+.1f} points ({100 * level:g}% CI {100 * low:+.1f} to "
            f"{100 * high:+.1f}, {method})")
    return {"margin": margin, "low": low, "high": high, "level": level, "method": method,
            "verdict": decision, "text": text, "bootstrap": boot, "seeds": seeds}


def per_example_scores(outputs: np.ndarray, targets: np.ndarray, task: str) -> np.ndarray:
    """Each test example's score, higher better, whose mean is the task's headline: correct or
    not (single-label accuracy; token classification: per word, token accuracy), the share of labels right (multi-label: 1 - Hamming loss), the
    negative squared error (regression: minus the MSE)."""
    if task == "single_label":
        return (outputs.argmax(1) == targets).astype(np.float64)
    if task == "token_classification":  # per word: its tag right or not (token accuracy)
        return word_scores(outputs, targets)
    if task == "multi_label":
        return ((outputs > 0) == (targets > 0.5)).mean(axis=1).astype(np.float64)
    y = outputs.reshape(targets.shape) if outputs.size == targets.size else outputs[:, 0]
    err = (np.asarray(y, np.float64) - np.asarray(targets, np.float64)) ** 2
    return -(err.reshape(len(err), -1).mean(axis=1))


CLASSICAL_BETTER = "the classical baseline is better"
TRANSFER_BETTER = "transfer beats the classical baseline"
NO_DIFFERENCE = "no measurable difference"


def classical_verdict(transfer_outputs: np.ndarray, classical_outputs: np.ndarray,
                      targets: np.ndarray, task: str, name: str, resamples: int = 1000,
                      seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Transfer against the classical baseline on the same test examples: the difference of
    the task's headline (accuracy, label accuracy, or MSE for regression, lower better) with a
    paired-bootstrap interval, and one of three verdicts: transfer beats the classical
    baseline, no measurable difference, or the classical baseline is better (transfer is not
    paying for itself)."""
    a = per_example_scores(transfer_outputs, targets, task)
    b = per_example_scores(classical_outputs, targets, task)
    boot = paired_bootstrap(a, b, resamples, seed, level)
    margin, low, high = boot["margin"], boot["low"], boot["high"]
    decision = verdict(low, high, margin)
    ci = f"{100 * level:g}% CI"
    if task == "regression":  # scores are -squared error: the margin is MSE(classical) - MSE(transfer)
        size = f"{abs(margin):.4g} MSE"
        interval = f"(classical minus transfer MSE, {ci} {low:+.4g} to {high:+.4g})"
    else:
        unit = "points" if task == "single_label" else "points of label accuracy"
        size = f"{100 * abs(margin):.1f} {unit}"
        interval = f"(transfer minus classical, {ci} {100 * low:+.1f} to {100 * high:+.1f})"
    method = f"paired bootstrap over {len(a):,} test examples"
    if decision == POSITIVE:
        kind, text = TRANSFER_BETTER, f"{TRANSFER_BETTER} ({name}) by {size} {interval}"
    elif decision == NEGATIVE:
        kind = CLASSICAL_BETTER
        text = (f"{CLASSICAL_BETTER} ({name}) by {size} {interval}: transfer is not paying "
                "for itself here")
    else:
        kind = NO_DIFFERENCE
        text = (f"{NO_DIFFERENCE} from the classical baseline ({name}): "
                f"{'+' if margin >= 0 else '-'}{size} {interval}")
    return {"margin": margin, "low": low, "high": high, "level": level, "method": method,
            "verdict": kind, "text": f"{text}, {method}",
            "transfer_score": float(a.mean()), "classical_score": float(b.mean())}
