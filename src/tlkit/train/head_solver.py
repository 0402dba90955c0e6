"""A converged linear head on fixed features, by a convex solver instead of SGD epochs.

When the only thing that trains is a linear head over features that do not change (every
backbone group frozen: ``all_frozen``, lp_ft's probe phase), the head's training problem is convex:
multinomial logistic regression (single-label), one logistic regression per label
(multi-label), ridge regression (regression). A full-batch solver reaches its optimum in
seconds on cached features, where a few SGD epochs at a small rate stop far short of it (with
80 examples, 30 SGD steps moved a 2-class loss from 0.69 to 0.63).

The L2 strength is chosen on the validation split by its loss; when that split is too small to
choose (fewer than ``MIN_VAL`` examples), by k-fold cross-validation; then the head is fitted at
the chosen strength, on the training split, or, when the solved head is the whole run
(all_frozen, ``head_refit``), on the training and validation splits together: every label the
user gave (the cross-validation then runs over both). The log says which. Features
are standardised for the solver and the scaling is folded into the head's weights, so the head
takes the raw features as before.

``ConvexHead`` is where the training loop hands such a phase to the solver: a phase hook
(``epoch_start``, ``tlkit.train.hooks``) that the loop builds for itself when the plan has a phase
that converges its head (``converge_head``) and the settings say ``head_solver: convex``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold
from torch import nn

from tlkit.assemble import Assembled
from tlkit.distributed import Dist
from tlkit.events import Event
from tlkit.heads import L2Normalize, head_inputs, normalizes
from tlkit.plan import Phase, Plan
from tlkit.threads import one_blas_thread
from tlkit.token_rows import KEPT, TAG
from tlkit.train.feed import Feed
from tlkit.train.hooks import Solved, with_method

# Inverse L2 strengths tried (sklearn's C; ridge uses alpha = 1 / C).
C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
# Fewer validation examples: choose by cross-validation on the training split (and, when the
# head is refitted on every label, the validation split too). On 20 validation examples the
# loss picked C 1e-3 on some 200-label draws of Rotten Tomatoes (MiniLM features), 4 to 5 points
# below a plain logistic regression; 5-fold cross-validation over the 200 gained 0.87 points on
# average over 8 draws and halved their spread, and from 50 examples on the two agree
# (bench/head_strength.py, bench/README.md).
MIN_VAL = 50
FOLDS = 5
# A head solved after a phase that trained the backbone on the training labels (contrastive's
# second phase) with too few validation examples to choose on: cross-validation over training
# examples the backbone has fitted is optimistic (it favours the weakest penalty: an
# overconfident head). The head is then SetFit's: scikit-learn's default strength on the
# features as the head reads them (unit length under contrastive), not standardised. On
# contrastive's trained features of Rotten Tomatoes (bench/head_geometry.py --contrastive, 3
# draws at 8 and at 16 labels a class): test accuracy 0.612 / 0.666 and Brier score 0.485 /
# 0.465, against 0.612 / 0.664 and 0.567 / 0.516 for the cross-validated strength on the
# standardised features (what the solver did before).
C_AFTER_TRAINING = 1.0


@dataclass(frozen=True)
class Solution:
    c: float
    chosen_on: str  # "validation" or "5-fold cross-validation on ...", and what it was fitted on
    scores: dict[float, float]  # C -> the mean loss it was chosen by
    # the head is fitted on the validation split too (it was too small to choose on): the
    # validation metrics are then in-sample
    val_in_fit: bool = False
    # the features were standardised for the fit (folded into the head's weights); a head
    # solved at the fixed strength after a trained backbone (``C_AFTER_TRAINING``) is not
    standardized: bool = True


def linear_of(head: nn.Module) -> nn.Linear | None:
    """The head's only linear layer, when the head is dropout + linear (tlkit's linear head;
    its features scaled to unit length first, or not)."""
    layers = [m for m in head.modules() if isinstance(m, nn.Linear)]
    others = [m for m in head.modules() if not isinstance(
        m, (nn.Linear, nn.Dropout, nn.Sequential, nn.Identity, L2Normalize))]
    return layers[0] if len(layers) == 1 and not others else None


def _fit(task: str, x: np.ndarray, y: np.ndarray, c: float, n_out: int,
         weights: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weight (n_out, d), bias (n_out,)) of the convex problem at strength ``c`` on
    standardised ``x``."""
    with warnings.catch_warnings(), one_blas_thread():
        # many classes with one example each look like regression targets to scikit-learn
        warnings.filterwarnings("ignore", message="The number of unique classes")
        return _fit_quietly(task, x, y, c, n_out, weights)


def _fit_quietly(task: str, x: np.ndarray, y: np.ndarray, c: float, n_out: int,
                 weights: dict[int, float] | None) -> tuple[np.ndarray, np.ndarray]:
    d = x.shape[1]
    if task == "regression":
        model = Ridge(alpha=1.0 / c).fit(x, y)
        return np.atleast_2d(model.coef_).reshape(n_out, d), np.atleast_1d(model.intercept_)
    if task == "multi_label":
        w, b = np.zeros((n_out, d)), np.zeros(n_out)
        for j in range(n_out):
            yj = y[:, j]
            if yj.min() == yj.max():  # a label always (or never) on in training
                b[j] = 10.0 if yj[0] > 0.5 else -10.0
                continue
            m = LogisticRegression(C=c, max_iter=2000).fit(x, yj)
            w[j], b[j] = m.coef_[0], m.intercept_[0]
        return w, b
    present = np.unique(y)
    w, b = np.zeros((n_out, d)), np.full(n_out, -10.0)  # classes never seen in training
    if len(present) == 1:  # one class in this (cross-validation) training part: a constant
        b[present[0]] = 0.0
        return w, b
    kept = None if weights is None else {int(k): weights[int(k)] for k in present}
    m = LogisticRegression(C=c, max_iter=2000, class_weight=kept).fit(x, y)
    if len(present) == 2:  # sklearn's binary form: one vector for the second class
        w[present[1]], b[present[1]] = m.coef_[0] / 2, m.intercept_[0] / 2
        w[present[0]], b[present[0]] = -m.coef_[0] / 2, -m.intercept_[0] / 2
    else:
        w[present], b[present] = m.coef_, m.intercept_
    return w, b


def _loss(task: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
    return _loss_of(task, x @ w.T + b, y)


def _loss_of(task: str, outputs: np.ndarray, y: np.ndarray) -> float:
    out = torch.from_numpy(outputs)
    if task == "regression":
        return float(torch.nn.functional.mse_loss(out.squeeze(-1) if out.shape[1] == 1 else out,
                                                  torch.from_numpy(y).double()))
    if task == "multi_label":
        return float(torch.nn.functional.binary_cross_entropy_with_logits(
            out, torch.from_numpy(y).double()))
    return float(torch.nn.functional.cross_entropy(out, torch.from_numpy(y).long()))


def loss_weights(task: str, y: np.ndarray, class_weights: Any = None, balanced: bool = False
                 ) -> dict[int, float] | None:
    """Each class's weight in the solver's loss (single-label): ``class_weights`` (the
    config's, per class index), times, with ``balanced`` (``sampler: balanced``), n / (classes *
    the class's count in ``y``), so that each class counts equally, as the balanced sampler
    draws each class equally often in expectation. None: every example weighs 1."""
    if task != "single_label" or (class_weights is None and not balanced):
        return None
    n_classes = int(max(len(class_weights or ()), int(y.max(initial=-1)) + 1))
    weights = {i: 1.0 for i in range(n_classes)}
    for i, w in enumerate(class_weights or ()):
        weights[i] = float(w)
    if balanced and len(y):
        counts = np.bincount(y.astype(np.int64), minlength=n_classes)
        present = int(np.count_nonzero(counts))
        for i, c in enumerate(counts.tolist()):
            if c:
                weights[i] *= len(y) / (present * c)
    return weights


def scaling(x: np.ndarray, standardize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) the solver scales ``x`` by: per feature, or none (0, 1) where the head is
    fitted on the features as given."""
    if standardize:
        return x.mean(0), x.std(0) + 1e-6
    return np.zeros(x.shape[1]), np.ones(x.shape[1])


def solve(task: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
          val_y: np.ndarray, n_out: int, seed: int = 0,
          class_weights: Any = None, refit: bool = False, balanced: bool = False,
          trained: bool = False) -> tuple[np.ndarray, np.ndarray, Solution]:
    """The head (weight, bias on the raw features) at the strength the validation loss (or
    cross-validation, where validation is too small) prefers. ``refit``: the head is then fitted
    on the training and validation splits together (all the labels; the cross-validation runs
    over both), as scikit-learn's ``LogisticRegressionCV`` refits on all its data.
    ``balanced`` (``sampler: balanced``): each class weighs the same in the loss in all
    (``loss_weights``), what balanced sampling gives SGD in expectation. ``trained``: an
    earlier phase trained the backbone on the training labels, so cross-validation over them
    cannot choose the strength: with too few validation examples the head is fitted at
    ``C_AFTER_TRAINING`` on the features as given (not standardised)."""
    both = refit and len(val_y) > 0
    all_x = np.concatenate([train_x, val_x]) if both else train_x
    all_y = np.concatenate([train_y, val_y]) if both else train_y
    weights = loss_weights(task, all_y, class_weights, balanced)
    fixed = trained and len(val_y) < MIN_VAL
    mean, std = scaling(all_x, not fixed)
    z, zv, za = (train_x - mean) / std, (val_x - mean) / std, (all_x - mean) / std
    if fixed:
        best, scores = C_AFTER_TRAINING, {}
        chosen_on = ("no choice: the backbone trained on these training labels, and "
                     f"{len(val_y)} validation examples are too few to choose on (SetFit's "
                     "head, scikit-learn's default, on the features unstandardised)")
    elif len(val_y) >= MIN_VAL:
        chosen_on = "validation"
        scores = {c: _loss(task, zv, val_y, *_fit(task, z, train_y, c, n_out, weights))
                  for c in C_GRID}
        best = min(C_GRID, key=lambda c: (scores[c], -c))  # a tie goes to the weaker penalty
    else:
        best, scores, k = cross_validate(task, za, all_y, n_out, seed, weights)
        chosen_on = (f"{k}-fold cross-validation on the training "
                     + ("and validation splits" if both else "split"))
    if both:
        chosen_on += "; then fitted on training and validation together (all the labels)"
    w, b = _fit(task, za, all_y, best, n_out, weights)
    # fold the standardisation in: w (x - mean) / std + b = (w / std) x + (b - w mean / std)
    return w / std, b - (w / std) @ mean, Solution(best, chosen_on, scores, both, not fixed)


def cross_validate(task: str, x: Any, y: np.ndarray, n_out: int, seed: int = 0,
                   weights: dict[int, float] | None = None, folds: int = FOLDS
                   ) -> tuple[float, dict[float, float], int]:
    """The strength of ``C_GRID`` with the lowest mean held-out loss over k folds of ``(x,
    y)`` (x already scaled as the fit will see it; dense or scipy-sparse), the mean loss of
    every strength, and k. A tie goes to the weaker penalty."""
    k = min(folds, len(y))
    parts = _folds(task, y, k, seed)
    scores = {c: float(np.mean([_loss(task, x[te], y[te],
                                      *_fit(task, x[tr], y[tr], c, n_out, weights))
                                for tr, te in parts]))
              for c in C_GRID}
    return min(C_GRID, key=lambda c: (scores[c], -c)), scores, k


def out_of_fold(task: str, x: np.ndarray, y: np.ndarray, n_out: int, seed: int = 0,
                folds: int = 3) -> tuple[np.ndarray, float]:
    """Each example's held-out output over k folds of ``(x, y)`` (standardised per fold) at the
    strength of ``C_GRID`` whose held-out loss is lowest, and that strength: two feature sets
    scored on the same folds give paired per-example outputs. The strength is chosen on the
    same folds (slightly optimistic, alike for every feature set compared)."""
    k = min(folds, len(y))
    parts = [(tr, te, x[tr].mean(0), x[tr].std(0) + 1e-6) for tr, te in _folds(task, y, k, seed)]
    best: tuple[float, float, np.ndarray] | None = None
    for c in C_GRID:
        out = np.zeros((len(y), n_out))
        for tr, te, mean, std in parts:
            w, b = _fit(task, (x[tr] - mean) / std, y[tr], c, n_out)
            out[te] = ((x[te] - mean) / std) @ w.T + b
        loss = float(np.mean([_loss_of(task, out[te], y[te]) for _, te, _, _ in parts]))
        if best is None or loss < best[0]:
            best = (loss, c, out)
    assert best is not None
    return best[2], best[1]


def fit_at(task: str, x: Any, y: np.ndarray, c: float, n_out: int,
           weights: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(weight (n_out, d), bias (n_out,)) of the convex problem at strength ``c`` on ``x`` as
    given (no scaling; dense or scipy-sparse): outputs are ``x @ weight.T + bias``."""
    return _fit(task, x, y, c, n_out, weights)


def folds_of(task: str, y: np.ndarray, k: int, seed: int
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training part, held-out part) index pairs of ``out_of_fold``'s k folds for the same
    ``(task, y, k, seed)``: candidates trained on these parts pair up with its outputs."""
    return _folds(task, y, min(k, len(y)), seed)


def _folds(task: str, y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """k folds, stratified by class for single-label targets where every class has two
    examples or more (so each class is in most training parts)."""
    if task == "single_label" and np.bincount(y).max() >= k and \
            np.bincount(y)[np.bincount(y) > 0].min() >= 2:
        with warnings.catch_warnings():  # classes with fewer than k examples: fine here
            warnings.filterwarnings("ignore", message="The least populated class")
            return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))
    return list(KFold(k, shuffle=True, random_state=seed).split(y))


def held_out_logits(task: str, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray,
                    c: float, n_out: int, class_weights: Any = None, balanced: bool = False,
                    standardized: bool = True) -> np.ndarray:
    """The validation outputs of the head fitted at ``c`` on the training split alone: what a
    head refitted on training + validation would output on examples it has not seen (for a
    temperature fitted on validation); ``standardized`` as the solve was."""
    weights = loss_weights(task, train_y, class_weights, balanced)
    mean, std = scaling(train_x, standardized)
    w, b = _fit(task, (train_x - mean) / std, train_y, c, n_out, weights)
    return ((val_x - mean) / std) @ w.T + b


# What SGD training reads and a solved head does not (when the solve is the whole run):
# the key, and why it does nothing there.
UNREAD_BY_SOLVER = (
    ("head_lr", "no SGD step is taken"),
    ("weight_decay", "the L2 strength is chosen on validation or by cross-validation"),
    ("epochs", "the solve is one full-batch fit to convergence"),
    ("early_stopping_patience", "there is one fit, no epochs to stop"),
    ("model_selection", "there is one fit, no epochs to choose from"),
    ("min_steps", "no SGD step is taken"),
    ("warmup_steps", "no SGD step is taken"),
    ("warmup_ratio", "no SGD step is taken"),
    ("scheduler", "no SGD step is taken"),
    ("gradient_accumulation_steps", "no SGD step is taken"),
    ("max_grad_norm", "no gradient is clipped"),
    ("freeze_norm_stats", "the features are computed once, with every layer frozen"),
)


def unread_by_solver(settings: Any, dropout: float | None = None) -> list[str]:
    """The settings (a ``LoopSettings``; and the head's ``dropout``) that a head solved as the
    whole run does not read, where they differ from their defaults: "key value (why)"."""
    from tlkit.config import TransferConfig  # the defaults

    fields = TransferConfig.model_fields
    said = [f"{key} {getattr(settings, key)} ({why})" for key, why in UNREAD_BY_SOLVER
            if getattr(settings, key) != fields[key].get_default()]
    if dropout is not None and dropout != fields["dropout"].get_default():
        said.append(f"dropout {dropout:g} (the solver fits the linear head without dropout)")
    return said


def set_head(linear: nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))


def features(cached: Any) -> tuple[np.ndarray, np.ndarray]:
    """A cached split's pooled features and targets as float64 / target arrays (token
    classification: the rows of the words inside the input, with their tags)."""
    x, y = cached.dense.float().numpy().astype(np.float64), cached.targets.numpy()
    if getattr(cached, "offsets", None) is not None:
        kept = y[:, KEPT] > 0
        return x[kept], y[kept, TAG]
    return x, y


@dataclass
class ConvexHead:
    """The phase hook that fits a linear probe's head to convergence: at the start of a phase
    that converges its head (all_frozen, lp_ft's first phase), on features cached for train and
    val, the convex solver fits the head in place of the phase's SGD epochs."""

    model: Any  # the TransferModel
    n_groups: int  # the backbone's layer groups: the cut where every one of them is frozen
    plan: Plan
    data: Any  # the loop's TrainData
    settings: Any  # its LoopSettings
    dist: Dist
    event: Event

    @classmethod
    def of(cls, asm: Assembled, data: Any, settings: Any, dist: Dist, hooks: Any,
           event: Event) -> ConvexHead | None:
        """The hook, where the run can use it: ``head_solver: convex``, a phase that converges
        the head, a linear head, one process, and no hook whose forward trains the features
        (domain adaptation)."""
        if (settings.head_solver != "convex"
                or not any(p.converge_head for p in asm.plan.phases)
                or linear_of(asm.model.head) is None or dist.enabled
                or with_method(hooks, "forward")):
            return None
        return cls(asm.model, len(asm.groups), asm.plan, data, settings, dist, event)

    def epoch_start(self, feed: Feed, epoch: int, phase: Phase) -> Solved | None:
        """The phase solved (its metrics row's ``head_solver`` entry, the training loss and
        the phase's end), or None where it does not apply. The loop moves the optimizer's
        step count on by the phase's steps, so the schedule of a later phase is the one
        planned."""
        if not phase.converge_head or feed.cut != self.n_groups \
                or not {"train", "val"} <= set(feed.cached):
            return None
        model, data, s = self.model, self.data, self.settings
        linear = linear_of(model.head)
        assert linear is not None  # checked by ``of``
        x, y = features(feed.cached["train"])
        xv, yv = features(feed.cached["val"])
        norm = normalizes(model.head)  # the linear layer reads unit-length features
        x, xv = head_inputs(x, norm), head_inputs(xv, norm)
        # The solved head is the run's last training (the whole run, or contrastive's head on
        # the trained body): fitted on every label, validation's included (not for token
        # classification, whose held-out validation outputs are per word).
        last = all(p.end_epoch <= phase.end_epoch for p in self.plan.phases)
        whole = phase.start_epoch == 0 and last
        tokens = data.task == "token_classification"
        # an earlier phase trained the backbone on these training labels (contrastive)
        trained = any(p.end_epoch <= phase.start_epoch and any(r.trainable for r in p.rows[:-1])
                      for p in self.plan.phases)
        # sampler balanced: each class weighs the same in the solver's loss (what the sampler
        # gives SGD in expectation)
        w, b, sol = solve("single_label" if tokens else data.task, x, y, xv, yv,
                          linear.out_features, s.seed, data.class_weights,
                          refit=s.head_refit and last and not tokens,
                          balanced=data.sample_weights is not None, trained=trained)
        set_head(linear, w, b)
        balanced = ", each class weighted equally (sampler balanced)" \
            if data.sample_weights is not None else ""
        self.event("stage", {"what": f"phase {phase.index + 1}: the linear head fitted to "
                                     f"convergence on the cached features (L2 strength C "
                                     f"{sol.c:g}, chosen on {sol.chosen_on}{balanced})"})
        unread = unread_by_solver(s, next(
            (m.p for m in model.head.modules() if isinstance(m, nn.Dropout)), None)) \
            if whole else []
        if unread:  # the solve is the whole run: SGD's settings do nothing
            self.event("stage", {"what": "settings this run does not use (the head is solved, "
                                         "not trained by SGD; head_solver sgd would use them): "
                                 + "; ".join(unread)})
        train, _ = feed.evaluate(model, "train", data.task, data.classes, s.batch_size,
                                 s.mixed_precision, self.dist)
        n = len(feed.cached["train"])
        return Solved({"head_solver": {"c": sol.c, "chosen_on": sol.chosen_on,
                                       **({"val_in_fit": True} if sol.val_in_fit else {}),
                                       **({} if sol.standardized else {"standardized": False})}},
                      train["loss"] * n, n, phase.end_epoch)
