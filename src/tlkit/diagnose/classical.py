"""The classical baseline: what a user would do without a pretrained network.

The alternative a user weighs against transfer is rarely a network trained from scratch; it is
a linear model on cheap features. For text, TF-IDF of word 1-2 grams and character 2-5 grams
(within word boundaries, sublinear term frequency; the features of the usual scikit-learn text
baseline) and a logistic regression; for images, the raw pixels at a small size
(``diagnostics.classical_image_size`` on a side, scaled to [0, 1], standardised; one channel
where every image is grey) and a logistic regression. Multi-label data gets one logistic
regression per label (one-vs-rest), regression ridge (alpha = 1 / C). scikit-learn does the
work, through the same convex solver tlkit's own frozen head uses (``train.head_solver``).

The L2 strength is chosen by 3-fold cross-validation on the training split (on at most
``CV_SAMPLE`` examples of it, a seeded sample, so a large set does not take minutes). The model
is fitted on the training split for its validation outputs (honest: validation is unseen, so
``freeze_strategy: auto`` and ``rank`` can compare it with transfer on validation), then refitted
at that strength on training and validation together for its test outputs, as tlkit's solved
head is: both then see every label the user gave. The text vocabulary and IDF weights come from
the training texts alone (no labels involved).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkit.data.images import open_rgb
from tlkit.data.types import LabelledData, is_pair
from tlkit.metrics import compute_metrics

CV_SAMPLE = 2000  # training examples the cross-validation runs over, at most
FOLDS = 3
MAX_TEXT_FEATURES = 20_000  # per vectorizer (words, characters), the most frequent kept


@dataclass
class ClassicalResult:
    """A fitted classical baseline's outputs (logits, or values for regression: the shapes a
    tlkit model outputs) and how it was chosen."""

    name: str  # e.g. "TF-IDF + logistic regression"
    c: float
    chosen_on: str
    feature_dim: int
    parameters: int
    seconds: float
    val_outputs: np.ndarray  # of the model fitted on the training split only
    test_outputs: np.ndarray | None  # of the model refitted on training + validation

    def record(self, task: str, val: LabelledData, test: LabelledData | None,
               classes: list[str] | None) -> dict[str, Any]:
        """What a run records (summary.json): the settings, seconds and metrics."""
        keep = ("accuracy", "f1_macro", "f1_micro", "subset_accuracy", "hamming_loss", "mse",
                "mae", "r2", "pearson", "spearman")

        def metrics(outputs: np.ndarray, data: LabelledData) -> dict[str, float]:
            m = compute_metrics(outputs, data.targets, task, classes)
            return {k: v for k, v in m.items() if k in keep}

        return {"name": self.name, "c": self.c, "chosen_on": self.chosen_on,
                "feature_dim": self.feature_dim, "parameters": self.parameters,
                "seconds": round(self.seconds, 2),
                "val": metrics(self.val_outputs, val) if len(val) else None,
                "test": None if test is None or self.test_outputs is None
                else metrics(self.test_outputs, test)}


def name_of(modality: str, task: str) -> str:
    features = "TF-IDF" if modality == "text" else "pixels"
    model = {"single_label": "logistic regression", "multi_label":
             "one-vs-rest logistic regression", "regression": "ridge regression"}[task]
    return f"{features} + {model}"


def _text_features(train: list[Any]) -> Any:
    """TF-IDF of word 1-2-grams and character 2-5-grams, fitted on the training texts: a
    function from texts (or sentence pairs) to a sparse matrix."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    union = FeatureUnion([
        ("words", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True,
                                  max_features=MAX_TEXT_FEATURES)),
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                                  max_features=MAX_TEXT_FEATURES)),
    ])
    if not (train and is_pair(train[0])):
        union.fit([str(t) for t in train])
        return lambda texts: union.transform([str(t) for t in texts]).tocsr()
    # Sentence pairs: each text's TF-IDF and their elementwise product (the n-grams the two
    # share, weighted), which is what a linear model needs to see overlap or contradiction.
    from scipy import sparse

    union.fit([t[0] for t in train] + [t[1] for t in train])

    def pairs(items: list[Any]) -> Any:
        a = union.transform([t[0] for t in items])
        b = union.transform([t[1] for t in items])
        return sparse.hstack([a, b, a.multiply(b)]).tocsr()

    return pairs


def pixels(inputs: list[Any], size: int) -> np.ndarray:
    """Each image resized to ``size`` x ``size`` (bilinear, aspect not kept), RGB in [0, 1],
    flattened: (n, size * size * 3) float32."""
    from PIL import Image

    out = np.empty((len(inputs), size * size * 3), dtype=np.float32)
    for i, item in enumerate(inputs):
        img = open_rgb(item).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img, dtype=np.float32).reshape(-1) / 255.0
    return out


def _image_features(train: list[Any], size: int) -> Any:
    x = pixels(train, size)
    rgb = x.reshape(len(x), -1, 3)
    grey = bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 0] == rgb[..., 2]))

    def transform(inputs: list[Any]) -> np.ndarray:
        z = pixels(inputs, size)
        return z.reshape(len(z), -1, 3)[..., 0].astype(np.float64) if grey \
            else z.astype(np.float64)

    return transform


def _sample(y: np.ndarray, task: str, n: int, seed: int) -> np.ndarray:
    """At most ``n`` indices of ``y``, stratified for single-label targets."""
    if len(y) <= n:
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        keep, _ = train_test_split(idx, train_size=n, random_state=seed,
                                   stratify=y if task == "single_label" else None)
    except ValueError:  # a class too rare to stratify
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return np.sort(keep)


class _Scaler:
    """Standardisation of dense features (fitted on the data the model is fitted on); sparse
    TF-IDF rows are already on one scale and stay sparse."""

    def __init__(self, x: Any) -> None:
        self.dense = isinstance(x, np.ndarray)
        if self.dense:
            self.mean, self.std = x.mean(0), x.std(0) + 1e-6

    def __call__(self, x: Any) -> Any:
        return (x - self.mean) / self.std if self.dense else x


def _stack(a: Any, b: Any) -> Any:
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b])
    from scipy.sparse import vstack

    return vstack([a, b]).tocsr()


def fit_classical(train: LabelledData, val: LabelledData, test: LabelledData | None,
                  n_out: int, seed: int = 0, image_size: int = 16,
                  class_weights: list[float] | None = None) -> ClassicalResult:
    """The classical baseline on a run's own splits (see the module's docstring)."""
    from tlkit.train.head_solver import cross_validate, fit_at  # torch: only when fitting

    t0 = time.perf_counter()
    task = train.task
    weights = (None if class_weights is None or task != "single_label"
               else {i: float(w) for i, w in enumerate(class_weights)})
    transform = (_text_features(train.inputs) if train.modality == "text"
                 else _image_features(train.inputs, image_size))
    x_train = transform(train.inputs)
    x_val = transform(val.inputs) if len(val) else None
    y_train, y_val = train.targets, val.targets
    if task == "regression":
        y_train, y_val = y_train.astype(np.float64), y_val.astype(np.float64)
    with warnings.catch_warnings():  # convergence chatter at the weakest penalties
        warnings.simplefilter("ignore")
        scale = _Scaler(x_train)
        z = scale(x_train)
        cv = _sample(y_train, task, CV_SAMPLE, seed)
        best, _, k = cross_validate(task, z[cv], y_train[cv], n_out, seed, weights, FOLDS)
        w, b = fit_at(task, z, y_train, best, n_out, weights)
        val_out = (np.asarray(scale(x_val) @ w.T + b) if x_val is not None
                   else np.zeros((0, n_out)))
        test_out = None
        if test is not None:
            x_all = x_train if x_val is None else _stack(x_train, x_val)
            y_all = y_train if x_val is None else np.concatenate([y_train, y_val])
            scale_all = _Scaler(x_all)
            w2, b2 = fit_at(task, scale_all(x_all), y_all, best, n_out, weights)
            test_out = np.asarray(scale_all(transform(test.inputs)) @ w2.T + b2)
    sampled = f" (a sample of {len(cv):,})" if len(cv) < len(y_train) else ""
    chosen_on = (f"C {best:g} by {k}-fold cross-validation on the training split{sampled}; "
                 "validation outputs from the fit on training, test outputs from the refit on "
                 "training and validation")
    d = int(x_train.shape[1])
    if task == "regression":
        val_out = val_out.reshape(len(val_out), -1)
        test_out = None if test_out is None else test_out.reshape(len(test_out), -1)
    return ClassicalResult(name_of(train.modality, task), float(best), chosen_on, d,
                           n_out * (d + 1), time.perf_counter() - t0, val_out.astype(np.float32),
                           None if test_out is None else test_out.astype(np.float32))


def classical_note(result: dict[str, Any]) -> str | None:
    """What the classical row says against the candidates' probes, when both were measured."""
    c = result.get("classical") or {}
    probes = [r["probe_accuracy"] for r in result["candidates"] if "probe_accuracy" in r]
    if c.get("probe_accuracy") is None:
        return None
    if not probes:
        return (f"The classical baseline ({c['candidate'].removeprefix('classical: ')}) reaches "
                f"{c['probe_accuracy']:.4f} on validation; --probe measures each candidate the "
                "same way.")
    if c["probe_accuracy"] >= max(probes):
        return (f"The classical baseline's validation accuracy ({c['probe_accuracy']:.4f}) is at "
                f"or above every candidate's linear probe (best {max(probes):.4f}): no candidate "
                "transfers better than it here, before any fine-tuning.")
    return (f"The best candidate's probe ({max(probes):.4f}) is above the classical baseline's "
            f"validation accuracy ({c['probe_accuracy']:.4f}).")
