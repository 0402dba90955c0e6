"""Contrastive few-shot fine-tuning (SetFit: Tunstall et al., 2022, "Efficient Few-Shot Learning
Without Prompts"): phase 1 fine-tunes the whole backbone on pairs drawn from the labels (two
examples of one class should embed alike, of two classes apart; the head does not train), phase
2 solves the convex head on the features of the trained backbone (refitted on training and
validation, as ``all_frozen``).

Phase 1 runs on the training loop through its hooks (``tlkit.train.hooks``): ``PairObjective``
brings the epoch's pair batches, their loss and its optimizer, and acts in phase 1 only; phase 2
is the loop's own convex head on the cached pooled features, which the cache computes from the
trained weights (``tlkit.inputs.hooks_for`` gives it a fresh cache over the trained backbone).

The pairs are SetFit's: per epoch each training example is the anchor of ``contrastive_pairs``
pairs, half with an example of its class, half with one of another class. They are cheaper
here: a batch holds ``contrastive_batch_size / 2`` anchors, each partner is drawn among the
batch's own anchors where one fits (else from the whole split), and each distinct example of a
batch is encoded once, so a batch of 16 pairs encodes 8 to 16 examples where SetFit encodes 32
(each side of each pair): counted over ``pair_batches``' first epoch at 8 labels a class, 8 on
two classes, 13.7 on average on twenty (a positive partner mostly comes from outside the
batch).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from tlkit.errors import UserError
from tlkit.strategies.base import PhaseSpec, Strategy, StrategySettings
from tlkit.tensors import to_device

SUPCON_TEMPERATURE = 0.1  # Khosla et al. (2020)'s
# contrastive_loss auto: the loss that measured better per modality. Images: supcon, 2.0 and
# 1.9 points above the cosine loss on digits and Fashion-MNIST at 8 labels a class (3 draws
# each, above in all six; bench/few_shot.py --rows contrastive,supcon, bench/README.md). Text:
# SetFit's cosine loss, which contrastive matches SetFit with (supcon not measured on text).
LOSS_FOR = {"image": "supcon", "text": "cosine"}


def loss_for(setting: str, modality: str) -> str:
    """The loss ``contrastive_loss`` names (``auto``: ``LOSS_FOR`` of the modality)."""
    return LOSS_FOR.get(modality, "cosine") if setting == "auto" else setting
PAPER_PAIRS = 40  # pairs per example in the SetFit paper (num_iterations 20: 20 of each kind)
# pairs an epoch that the default stops at: SetFit's default sampling grows with the square of
# the labels (1.6 million pairs at 64 labels a class on 20 classes) and the paper's 40 an
# example with the labels (51,200 there); past this many the default draws fewer an example
# (bench/few_shot.py runs SetFit with as many: its --setfit-max-pairs)
EPOCH_PAIRS = 10_000
# AdamW's weight decay on the body's matrices in phase 1: sentence-transformers' fit, which
# SetFit trains through
BODY_WEIGHT_DECAY = 0.01


def setfit_pairs(labels: np.ndarray) -> int:
    """Pairs per example as SetFit's default sampling ("oversampling") draws them: as many
    pairs of each kind as there are distinct pairs of the commoner kind (two of one class, or
    of two classes), at most the paper's 40 an example, fewer past ``EPOCH_PAIRS`` an epoch;
    an even number, at least 2 (past 5,000 examples an epoch holds more than EPOCH_PAIRS).
    Balanced binary data with k examples a class: k pairs an example."""
    counts = np.unique(np.asarray(labels), return_counts=True)[1].astype(np.int64)
    n = int(counts.sum())
    same = int((counts * (counts - 1) // 2).sum())
    apart = (n * n - int((counts * counts).sum())) // 2
    per = -(-2 * max(same, apart) // max(1, n))  # rounded up
    per = min(PAPER_PAIRS, per + per % 2, EPOCH_PAIRS // max(1, n) // 2 * 2)
    return int(max(2, per))


def pair_batches(labels: np.ndarray, pairs_per_example: int | None, batch_pairs: int,
                 seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of pairs, each an int64 array of rows (i, j, same): a pure function
    of its arguments, so a resumed run draws the same pairs. Each example is the anchor of
    ``pairs_per_example // 2`` positive pairs (j of its class; itself where its class has no
    other example) and as many negative ones (j of another class): SetFit's
    ``num_iterations`` (None: ``setfit_pairs``). A batch holds ``batch_pairs // 2`` anchors (a shuffled order, repeated);
    each partner is drawn among the batch's anchors where one fits, else from the whole split."""
    labels = np.asarray(labels)
    n = len(labels)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise UserError("freeze_strategy contrastive draws negative pairs from two classes or "
                        f"more; the training split has {len(classes)}: give examples of "
                        "another class, or use freeze_strategy all_frozen")
    rng = np.random.default_rng([int(seed), int(epoch), 0x5E7F17])
    members = {c: np.flatnonzero(labels == c) for c in classes.tolist()}
    others = {c: np.flatnonzero(labels != c) for c in classes.tolist()}
    per_example = setfit_pairs(labels) if pairs_per_example is None else pairs_per_example
    rounds = max(1, per_example // 2)
    order = np.concatenate([rng.permutation(n) for _ in range(rounds)])
    per = max(1, batch_pairs // 2)
    batches = []
    for start in range(0, len(order), per):
        anchors = order[start:start + per]
        rows = []
        for a in anchors.tolist():
            c = labels[a]
            near = anchors[(labels[anchors] == c) & (anchors != a)]
            if not len(near):
                near = members[c][members[c] != a]
            far = anchors[labels[anchors] != c]
            if not len(far):
                far = others[c]
            rows.append((a, int(rng.choice(near)) if len(near) else a, 1))
            rows.append((a, int(rng.choice(far)), 0))
        batches.append(np.asarray(rows, dtype=np.int64))
    return batches


def cosine_pair_loss(a: torch.Tensor, b: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """SetFit's loss (sentence-transformers' ``CosineSimilarityLoss``): the cosine similarity of
    each pair's embeddings regressed to 1 (same class) or 0 (different classes)."""
    return F.mse_loss(F.cosine_similarity(a.float(), b.float(), dim=-1), same.float())


def supcon_loss(emb: torch.Tensor, labels: torch.Tensor,
                temperature: float = SUPCON_TEMPERATURE) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al., 2020): each example's log-probability of
    picking an example of its class among every other example of the batch, by cosine
    similarity over ``temperature``, averaged over its positives (examples without one in the
    batch are left out)."""
    z = F.normalize(emb.float(), dim=-1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    has = pos.any(1)
    if not bool(has.any()):
        return emb.sum() * 0.0  # no positive in the batch: no signal, no step
    mean_pos = log_prob.masked_fill(~pos, 0.0).sum(1)[has] / pos.sum(1)[has]
    return -mean_pos.mean()


class PairObjective:
    """Phase 1 on the training loop (``tlkit.train.hooks``): the epoch's pair batches, their
    loss on the pooled embeddings of the batch's distinct examples (each encoded once), and
    AdamW over the backbone at ``contrastive_lr``; no validation (the head has not trained: the
    best epoch is chosen in phase 2). It acts in the first ``contrastive_epochs`` epochs only."""

    name = "contrastive"

    def __init__(self, model: Any, train: Any, collate: Any, labels: np.ndarray,
                 settings: Any, modality: str = "text") -> None:
        self.model, self.train, self.collate = model, train, collate
        self.labels = np.asarray(labels)
        self.epochs = settings.contrastive_epochs
        self.pairs, self.batch = settings.contrastive_pairs, settings.contrastive_batch_size
        self.loss = loss_for(settings.contrastive_loss, modality)
        self.lr, self.seed = settings.contrastive_lr, settings.seed
        self.device = torch.device("cpu")
        self._drawn: tuple[int, np.ndarray, list[list[int]]] | None = None

    def acts(self, epoch: int) -> bool:
        return epoch < self.epochs

    def to(self, device: torch.device) -> None:
        self.device = device

    def _epoch(self, epoch: int) -> tuple[np.ndarray, list[list[int]]]:
        """The epoch's pairs (one table) and its batches as row numbers of that table."""
        if self._drawn is None or self._drawn[0] != epoch:
            drawn = pair_batches(self.labels, self.pairs, self.batch, self.seed, epoch)
            ends = np.cumsum([0] + [len(b) for b in drawn]).tolist()
            self._drawn = (epoch, np.concatenate(drawn),
                           [list(range(a, b)) for a, b in zip(ends, ends[1:])])
        return self._drawn[1], self._drawn[2]

    def batches(self, epoch: int) -> list[list[int]]:
        return self._epoch(epoch)[1]

    def batch_loss(self, model: Any, indices: list[int], step: Any) -> torch.Tensor:
        rows = self._epoch(step.epoch)[0][indices]
        ids, where = np.unique(rows[:, :2], return_inverse=True)
        inputs, _ = self.collate([self.train[int(i)] for i in ids])
        emb = model.backbone(to_device(inputs, self.device))
        if self.loss == "supcon":
            return supcon_loss(emb, torch.as_tensor(self.labels[ids], device=emb.device))
        pairs = torch.as_tensor(where.reshape(-1, 2), device=emb.device)
        return cosine_pair_loss(emb[pairs[:, 0]], emb[pairs[:, 1]],
                                torch.as_tensor(rows[:, 2], device=emb.device))

    def validate(self, model: Any) -> None:
        return None  # the head is untrained until phase 2: no epoch of phase 1 is a best one

    def optimizer(self) -> torch.optim.Optimizer:
        """AdamW over the backbone at ``contrastive_lr`` (weight decay on matrices only); the
        head is solved in phase 2, not stepped."""
        params = list(self.model.backbone.parameters())
        return torch.optim.AdamW([
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": BODY_WEIGHT_DECAY,
             "initial_lr": self.lr, "lr": self.lr, "group": "contrastive body"},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0,
             "initial_lr": self.lr, "lr": self.lr, "group": "contrastive biases and norms"}],
            lr=self.lr)

    def epoch_start(self, feed: Any, epoch: int, phase: Any) -> None:
        """Refuse, at phase 2, a run whose head cannot be solved on cached features (it would
        otherwise train it by SGD on the pair batches' schedule)."""
        if self.acts(epoch):
            return None
        several = torch.distributed.is_available() and torch.distributed.is_initialized() \
            and torch.distributed.get_world_size() > 1
        if several or "train" not in feed.cached or "val" not in feed.cached:
            raise UserError("freeze_strategy contrastive solves its head on the trained "
                            "backbone's features computed once, and this run cannot ("
                            + ("several processes" if several else "they did not fit under "
                               "transfer_config.cache.max_mb") + "); run it on one process "
                            "with the cache on (raise cache.max_mb), or use lp_ft")
        return None


class Contrastive(Strategy):
    name = "contrastive"
    summary = ("SetFit-like: the backbone trains on same/different-class pairs, then the head "
               "is solved on its new features")
    auto_rank = 5
    trains_backbone = True
    role = ""

    class Settings(StrategySettings):
        # pairs per training example in each contrastive epoch, half with an example of its
        # class, half with one of another class; null: as many as SetFit's default sampling
        # draws (every distinct pair of the commoner kind; k with k examples in each of two
        # classes), at most the paper's 40 (its num_iterations 20), fewer past 10,000 an
        # epoch (at least 2 an example)
        contrastive_pairs: int | None = Field(default=None, ge=2, le=10000)
        # the loss on the pooled embeddings: cosine (SetFit's CosineSimilarityLoss: each pair's
        # cosine similarity regressed to 1 or 0), supcon (supervised contrastive loss over
        # the batch's examples, Khosla et al., 2020), or auto: the one that measured better for
        # the data's modality (supcon for images, cosine for text: LOSS_FOR)
        contrastive_loss: Literal["auto", "cosine", "supcon"] = "auto"
        # the backbone's rate in the contrastive phase, one for every layer (SetFit's 2e-5),
        # warmed up and decayed by the run's scheduler over that phase
        contrastive_lr: float = Field(default=2e-5, gt=0, le=1)
        # epochs of the contrastive phase (SetFit's 1); the head is then solved once
        contrastive_epochs: int = Field(default=1, ge=1, le=1000)
        # pairs per batch of the contrastive phase (SetFit's 16)
        contrastive_batch_size: int = Field(default=16, ge=2, le=65536)

    def check(self, settings: Any) -> None:
        ce = settings.contrastive_epochs
        if ce >= settings.epochs:
            raise ValueError(f"contrastive_epochs {ce} leaves no epoch for the head (epochs "
                             f"{settings.epochs}); set epochs above contrastive_epochs, for "
                             f"example epochs: {ce + 1}")
        if settings.head_solver != "convex" or settings.head.type != "linear" \
                or not settings.cache.enabled:
            raise ValueError("freeze_strategy contrastive solves a linear head on the trained "
                             "backbone's cached features: set head_solver: convex, head.type: "
                             "linear and cache.enabled: true (or use lp_ft)")

    def refuses(self, task: str, modality: str, augment: str = "none") -> str | None:
        if task != "single_label":
            return (f"freeze_strategy contrastive draws its pairs from single labels (same class "
                    f"or not); data.task is {task}: use lp_ft, none or all_frozen")
        if augment != "none":
            return (f"freeze_strategy contrastive solves its head on features computed once, "
                    f"and data.augment {augment} changes them every epoch: set data.augment: "
                    "none, or use lp_ft")
        return None

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        ce = settings.contrastive_epochs
        if ce >= settings.epochs:
            raise UserError(f"contrastive_epochs {ce} must be below epochs {settings.epochs}, "
                            "so that the head gets its phase")
        return [PhaseSpec(0, ce, n_groups, "contrastive: the backbone trains on pairs drawn "
                                           "from the labels, the head does not",
                          lr=settings.contrastive_lr, head_trains=False),
                PhaseSpec(ce, settings.epochs, 0, "the head solved on the trained features",
                          converge_head=True)]

    def notes(self, settings: Any, backbone: Any) -> list[str]:
        pairs = settings.contrastive_pairs or ("up to 40 (SetFit's count; fewer past "
                                               f"{EPOCH_PAIRS:,} pairs an epoch)")
        return [f"contrastive (SetFit, Tunstall et al., 2022): phase 1 trains every group at "
                f"contrastive_lr {settings.contrastive_lr:g} (weight decay "
                f"{BODY_WEIGHT_DECAY:g} on matrices) on {pairs} pairs per "
                "training example per epoch, half of "
                f"one class and half of two, in batches of {settings.contrastive_batch_size} "
                f"pairs, {self._loss_said(settings, backbone)} on the pooled embedding; phase 2 "
                "solves the linear head on the trained backbone's features."]

    @staticmethod
    def _loss_said(settings: Any, backbone: Any) -> str:
        kind = getattr(backbone, "kind", "")
        loss = loss_for(settings.contrastive_loss, kind)
        auto = f" (contrastive_loss auto, for {kind} data)" if (
            settings.contrastive_loss == "auto" and kind) else ""
        return f"{loss} loss{auto}"

    def normalizes_head(self, backbone: Any, solved: bool) -> str | None:
        # the pair loss trains the cosine geometry; the head on unit-length features: +1.4 /
        # +0.4 points over the standardised raw features at 8 / 16 labels a class (Rotten
        # Tomatoes, 3 draws, bench/few_shot.py at d8e0caa and a5302c8; bench/README.md).
        # SetFit's body ends with the same Normalize module.
        return "the contrastive phase trains the features' cosine similarities"

    def hooks(self, model: Any, settings: Any, inputs: Any) -> list[Any]:
        train = inputs.splits.train
        why = self.refuses(train.task, inputs.modality, inputs.augment)
        if why is not None:
            raise UserError(why)
        return [PairObjective(model, inputs.train_ds, inputs.collate, train.targets, settings,
                              inputs.modality)]

    def own_batches(self, labels: Any, settings: Any) -> tuple[int, int, str] | None:
        batches = pair_batches(np.asarray(labels), settings.contrastive_pairs,
                               settings.contrastive_batch_size, settings.seed, 0)
        return (len(batches), settings.contrastive_epochs,
                f"batches of {settings.contrastive_batch_size} pairs drawn from the "
                f"{len(labels):,} training labels, then the head solved once")

    def epoch_examples(self, phase: int, labels: Any, settings: Any) -> int | None:
        if phase != 0:
            return None
        per = settings.contrastive_pairs or setfit_pairs(np.asarray(labels))
        # each anchor, and about every other partner drawn from outside the batch
        return int(1.5 * len(labels) * max(1, per // 2))

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        mine = own.freeze_strategy == self.name
        for key, field in self.Settings.model_fields.items():
            tc[key] = getattr(own, key) if mine else field.get_default()
        tc["l2sp_lambda"] = 0.0  # the pairs' loss is the body's only objective

    def fit_settings(self, tc: dict[str, Any]) -> None:
        # the contrastive epochs, then one for the head (auto's length may be 1 epoch)
        ce = tc.get("contrastive_epochs") or 1
        tc["epochs"] = max(tc["epochs"], ce + 1)


STRATEGY = Contrastive()
