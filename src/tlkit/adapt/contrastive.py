"""Contrastive objectives for self-supervised continued pretraining on unlabelled target data.

``info_nce`` is the in-batch contrastive loss both SimCSE (text) and SimCLR (images) train with:
two views of each example in a batch, each view's positive the other view of the same example,
every other example of the batch a negative, cosine similarities over a temperature and a
cross-entropy over the batch. Unsupervised SimCSE (Gao, Yao and Chen, EMNLP 2021, "SimCSE:
Simple Contrastive Learning of Sentence Embeddings") makes the two views of a sentence by running
it through the encoder twice, under two dropout masks, with a temperature of 0.05; SimCLR (Chen et
al., ICML 2020) makes them by random augmentation. ``delete_words`` makes a sentence's views
harder than dropout alone (word deletion, one of the augmentations of CLEAR, Wu et al. 2020, and
ESimCSE's comparison, Wu et al. COLING 2022): a sentence encoder trained contrastively already
tells two dropout views of a sentence apart from the rest of the batch, so that loss starts at
zero and teaches nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SIMCSE_TEMPERATURE = 0.05  # Gao et al.'s


def delete_words(text: str, p: float) -> str:
    """``text`` with each word dropped with probability ``p`` (drawn from torch's generator,
    which checkpoints save), at least one word kept."""
    words = text.split()
    if p <= 0 or len(words) < 2:
        return text
    keep = torch.rand(len(words)) >= p
    if not bool(keep.any()):
        keep[int(torch.randint(len(words), (1,)))] = True
    return " ".join(w for w, k in zip(words, keep.tolist()) if k)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = SIMCSE_TEMPERATURE
             ) -> torch.Tensor:
    """The in-batch contrastive loss of views ``a`` and ``b`` (row i of each: one example):
    cross-entropy of each ``a[i]`` picking ``b[i]`` among every ``b[j]`` by cosine similarity
    over ``temperature``."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))
