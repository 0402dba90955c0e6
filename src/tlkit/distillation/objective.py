"""The distillation objective (Hinton, Vinyals and Dean, 2015, "Distilling the Knowledge in a
Neural Network") and the loop hook that trains the student with it.

The loss of a batch is ``alpha * T^2 * soft + (1 - alpha) * hard``: ``soft`` the divergence of
the student's temperature-``T`` outputs from the teacher's (single-label: KL of the softened
softmax distributions; multi-label: binary cross-entropy against the teacher's softened
sigmoids), scaled by T^2 so that its gradients keep their size as T changes (the paper's
section 2); ``hard`` the task loss on the labels. Regression has no temperature: the student's
values are regressed on the teacher's (soft) and on the labels (hard). Unlabelled inputs
(``distill.unlabelled``) have only the soft term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tlkit.tensors import to_device


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor | None,
            labelled: torch.Tensor, task: str, temperature: float, alpha: float,
            class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's distillation loss. ``student`` and ``teacher``: outputs (logits, or values)
    of every example; ``targets``: the labels of the batch (rows where ``labelled`` is False
    are ignored); ``labelled``: a bool per example."""
    s, t = student.float(), teacher.float().to(student.device)
    T = float(temperature)
    if task == "single_label":
        soft = F.kl_div(F.log_softmax(s / T, dim=1), F.log_softmax(t / T, dim=1),
                        reduction="batchmean", log_target=True) * T * T
    elif task == "multi_label":
        soft = F.binary_cross_entropy_with_logits(s / T, torch.sigmoid(t / T)) * T * T
    else:  # regression
        soft = F.mse_loss(s.reshape(t.shape), t)
    if alpha >= 1.0 or targets is None:
        return soft
    if not bool(labelled.any()):  # unlabelled inputs only: the labels' term is absent
        return alpha * soft
    keep = labelled.to(s.device)
    y = targets.to(s.device)[keep]
    if task == "single_label":
        hard = F.cross_entropy(s[keep], y.long(),
                               weight=None if class_weights is None else class_weights.to(s.device))
    elif task == "multi_label":
        hard = F.binary_cross_entropy_with_logits(s[keep], y.float())
    else:
        hard = F.mse_loss(s[keep].reshape(y.shape), y.float())
    return alpha * soft + (1.0 - alpha) * hard


def distill_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches over the ``n`` examples (the training split, then the unlabelled
    ones): a seeded shuffle, a pure function of its arguments, so a resumed run draws the
    same batches."""
    order = np.random.default_rng([int(seed), int(epoch), 0xD157]).permutation(n)
    return [order[i:i + batch_size].tolist() for i in range(0, n, batch_size)]


class Distillation:
    """The student's objective on the training loop (``tlkit.train.hooks``): batches over the
    training split and the unlabelled inputs, and ``kd_loss`` against the teacher's outputs,
    computed once before training (``teacher``, one row per example in that order). Validation
    is the loop's own (the task's loss and metrics on the validation split), so the best epoch
    and early stopping are the student's on the task."""

    name = "distill"

    def __init__(self, train: Any, unlabelled: Any | None, collate: Any, teacher: np.ndarray,
                 task: str, settings: Any, temperature: float, alpha: float,
                 class_weights: Any = None, source: str = "") -> None:
        self.train, self.unlabelled, self.collate = train, unlabelled, collate
        self.n_train = len(train)
        self.teacher = torch.as_tensor(np.asarray(teacher), dtype=torch.float32)
        self.task, self.temperature, self.alpha = task, temperature, alpha
        self.batch_size, self.seed = settings.batch_size, settings.seed
        self.class_weights = None if class_weights is None else torch.as_tensor(
            class_weights, dtype=torch.float32)
        self.source = source  # the teacher's run directory, for the summary
        self.saved: Any = None  # the teacher's SavedModel, for the test split's comparison
        self.student_said = ""  # what the student is
        self.unlabelled_count = 0 if unlabelled is None else len(unlabelled)
        self.device = torch.device("cpu")
        n_extra = 0 if unlabelled is None else len(unlabelled)
        if len(self.teacher) != self.n_train + n_extra:
            raise ValueError(f"teacher outputs for {len(self.teacher)} examples, "
                             f"{self.n_train + n_extra} to train on")

    def to(self, device: torch.device) -> None:
        self.device = device

    def batches(self, epoch: int) -> list[list[int]]:
        return distill_batches(len(self.teacher), self.batch_size, self.seed, epoch)

    def batch_loss(self, model: Any, indices: list[int], step: Any) -> torch.Tensor:
        extra = self.unlabelled
        items = [self.train[i] if i < self.n_train or extra is None
                 else extra[i - self.n_train] for i in indices]
        inputs, targets = self.collate(items)
        out = model(to_device(inputs, self.device))
        labelled = torch.as_tensor([i < self.n_train for i in indices])
        return kd_loss(out, self.teacher[indices], targets, labelled, self.task,
                       self.temperature, self.alpha, self.class_weights)
