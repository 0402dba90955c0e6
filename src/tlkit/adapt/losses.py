"""Alignment losses between a batch of source features and a batch of target features.

Each is an ``nn.Module`` called as ``loss(f_source, f_target, progress)`` (progress: the share of
training done, 0..1) and returning a scalar to add to the task loss (times the config's
``adaptation.weight``):

- DANN (Ganin et al., 2016): a domain classifier on the features, through a gradient reversal
  layer: the classifier learns to tell the domains apart, the backbone learns to make that
  impossible. The reversal coefficient follows the paper's schedule
  ``2 / (1 + exp(-gamma * progress)) - 1`` (0 at the start, near 1 at the end), a pure function
  of progress; progress comes from the optimizer step, which is in every checkpoint, and the
  domain classifier's weights are saved with the run's checkpoints.
- MMD (DAN, Long et al., 2015): squared maximum mean discrepancy with a sum of Gaussian kernels
  at bandwidths spread around the batch's median distance.
- CORAL (Sun & Saenko, 2016): the distance between the two feature covariances.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import nn


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, coef: float) -> torch.Tensor:
        ctx.coef = coef
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.coef * grad, None


def grad_reverse(x: torch.Tensor, coef: float) -> torch.Tensor:
    """Identity forward; the gradient times ``-coef`` backward."""
    return _GradReverse.apply(x, coef)


def dann_coefficient(progress: float, gamma: float = 10.0) -> float:
    """The gradient-reversal coefficient at ``progress`` (0..1) of training."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


class DANN(nn.Module):
    has_parameters = True

    def __init__(self, feature_dim: int, hidden: int = 256, gamma: float = 10.0) -> None:
        super().__init__()
        self.gamma = gamma
        self.domain_classifier = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 1))

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, progress: float) -> torch.Tensor:
        f = grad_reverse(torch.cat([f_s, f_t]), dann_coefficient(progress, self.gamma))
        logits = self.domain_classifier(f).squeeze(1)
        domain = torch.cat([torch.ones(len(f_s)), torch.zeros(len(f_t))]).to(logits)
        return nn.functional.binary_cross_entropy_with_logits(logits, domain)

    @torch.no_grad()
    def domain_accuracy(self, f_s: torch.Tensor, f_t: torch.Tensor) -> float:
        logits = self.domain_classifier(torch.cat([f_s, f_t])).squeeze(1)
        domain = torch.cat([torch.ones(len(f_s)), torch.zeros(len(f_t))]).to(logits)
        return float(((logits > 0).float() == domain).float().mean())


def mk_mmd(f_s: torch.Tensor, f_t: torch.Tensor,
           scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> torch.Tensor:
    """Squared multi-kernel MMD (biased estimate over the batch), Gaussian kernels whose
    bandwidths are ``scales`` times the median squared distance of the batch (held constant)."""
    x = torch.cat([f_s, f_t])
    d2 = torch.cdist(x, x).pow(2)
    med = d2.detach()[d2.detach() > 0].median() if bool((d2.detach() > 0).any()) else \
        torch.tensor(1.0, device=x.device)
    k = cast(torch.Tensor, sum(torch.exp(-d2 / (s * med)) for s in scales))  # 0 + tensor: a tensor
    n = len(f_s)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class MMD(nn.Module):
    has_parameters = False

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, progress: float) -> torch.Tensor:
        return mk_mmd(f_s, f_t)


def coral(f_s: torch.Tensor, f_t: torch.Tensor) -> torch.Tensor:
    """``||C_s - C_t||_F^2 / (4 d^2)`` of the feature covariances."""
    d = f_s.shape[1]

    def cov(f: torch.Tensor) -> torch.Tensor:
        f = f - f.mean(0, keepdim=True)
        return f.T @ f / max(len(f) - 1, 1)

    return (cov(f_s) - cov(f_t)).pow(2).sum() / (4 * d * d)


class CORAL(nn.Module):
    has_parameters = False

    def forward(self, f_s: torch.Tensor, f_t: torch.Tensor, progress: float) -> torch.Tensor:
        return coral(f_s, f_t)


def build_adapter(method: str, feature_dim: int, gamma: float = 10.0) -> nn.Module | None:
    if method == "dann":
        return DANN(feature_dim, gamma=gamma)
    if method == "mmd":
        return MMD()
    if method == "coral":
        return CORAL()
    return None  # none, adabn (no loss)
