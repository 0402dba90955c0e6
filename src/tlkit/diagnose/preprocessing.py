"""Feature misalignment: do the inputs the model receives look like those it was pretrained on?

A pretrained backbone expects its own preprocessing: images scaled to [0, 1] and normalised once
with its mean and std, at its resolution; text split by its own tokenizer. A mismatch trains
without any error and only shows as a poor score, so tlkit looks at a small fixed sample of the
training inputs, as the model would receive them, before training.

Images: an image normalised once with mean m and std s lies within [(0 - m) / s, (1 - m) / s] in
each channel, whatever it shows (tlkit's transform makes that exact). The checks compare the
sample's per-channel range, mean and std with that interval and with the intervals the usual
mistakes give: no normalisation ([0, 1] or [0, 255]), normalisation twice, 0-255 pixels
normalised as if they were 0-1. Text: the share of unknown tokens, token ids the model's
embedding has no row for, and the share of inputs cut at max_length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

from tlkit.backbones.base import ImagePreprocessing, TextPreprocessing
from tlkit.data.collate import tokenize
from tlkit.data.types import PAIR_SEPARATOR, Examples, is_pair
from tlkit.errors import UserError

SAMPLE_SIZE = 64  # training examples looked at: enough for statistics, a second to prepare
# Images: a value counts as outside an interval when it lies beyond it by this share of the
# interval's width (the exact bounds hold for tlkit's own transform; this leaves room for others).
RANGE_MARGIN = 0.05
# The side may differ from the pretrained one by this factor either way without a finding
# (CNNs are often evaluated a little above their training size).
RESOLUTION_TOLERANCE = (0.75, 1.5)
UNKNOWN_SHARE = 0.05  # of the sample's tokens
TRUNCATED_SHARE = 0.5  # of the sample's inputs

Policy = Literal["warn", "refuse", "off"]


@dataclass(frozen=True)
class Finding:
    """One mismatch: what was seen (with the numbers) and what to change."""

    # "warn": the model reads its inputs differently from pretraining; "info": worth knowing,
    # never a reason to refuse (e.g. long texts cut at max_length)
    severity: Literal["warn", "info"]
    what: str
    fix: str
    check: str  # a short stable name: not_normalised, normalised_twice, resolution, ...

    def message(self) -> str:
        return f"{self.what}; fix: {self.fix}"


def _warn(check: str, what: str, fix: str) -> Finding:
    return Finding("warn", what, fix, check)


def _info(check: str, what: str, fix: str) -> Finding:
    return Finding("info", what, fix, check)


def _fmt(values: Iterable[float], spec: str = ".2f") -> str:
    return "(" + ", ".join(format(float(v), spec) for v in values) + ")"


# ---------------------------------------------------------------------------------------------
# Images


def check_images(batch: torch.Tensor, prep: ImagePreprocessing) -> list[Finding]:
    """Findings about a batch of images (n x 3 x H x W) as the model receives it, against the
    preprocessing the backbone was pretrained with."""
    if batch.ndim != 4 or batch.shape[0] == 0:
        return [_warn("shape", f"the image batch has shape {tuple(batch.shape)}, not "
                               "(n, 3, height, width)",
                      "give images the backbone can read (files or HxW / HxWx3 uint8 arrays)")]
    findings: list[Finding] = []
    _, channels, height, width = (int(s) for s in batch.shape)
    low, high = RESOLUTION_TOLERANCE
    size = prep.input_size
    if not (low * size <= height <= high * size and low * size <= width <= high * size):
        # a deliberate choice (data.image_size) as often as a mistake: said, never refused
        findings.append(_info(
            "resolution",
            f"the images are {height}x{width} pixels but the backbone was pretrained on "
            f"{size}x{size}; its features are tuned to that scale",
            f"set data.image_size: {size} to run at that scale; a smaller size trains faster "
            "(for small images it is the default: README, Image size)"))
    if channels != 3:
        findings.append(_warn(
            "channels", f"the images have {channels} channel(s), the backbone takes 3 (RGB)",
            "give RGB images (tlkit's own transform turns grey images into 3 channels)"))
        return findings  # the per-channel statistics below compare with 3 expected channels
    x = batch.detach().float().transpose(0, 1).reshape(3, -1)
    if not bool(torch.isfinite(x).all()):
        findings.append(_warn("non_finite", "the images hold NaN or infinite values",
                              "check the image files and any preprocessing done before tlkit"))
        return findings
    finding = _value_finding(x.numpy().astype(np.float64), prep)
    if finding is not None:
        findings.append(finding)
    return findings


def _value_finding(x: np.ndarray, prep: ImagePreprocessing) -> Finding | None:
    """The normalisation mistake the per-channel values (3 x N) show, if any."""
    mean = np.asarray(prep.mean, dtype=np.float64)
    std = np.asarray(prep.std, dtype=np.float64)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std  # an image normalised once
    margin = RANGE_MARGIN * (hi - lo)
    mn, mx = x.min(axis=1), x.max(axis=1)
    mu, sd = x.mean(axis=1), x.std(axis=1)
    seen = f"per-channel mean {_fmt(mu)}, std {_fmt(sd)}, range [{mn.min():.2f}, {mx.max():.2f}]"
    stats = f"mean {_fmt(mean, '.3g')} and std {_fmt(std, '.3g')}"
    expected = (f"an image normalised with {stats} lies within "
                f"{_fmt(lo)} .. {_fmt(hi)}")
    pixels_01 = bool((mn >= -1e-3).all() and (mx <= 1 + 1e-3).all())
    normalised_once = bool(((mn >= lo - margin) & (mx <= hi + margin)).all())
    # Unnormalised [0, 1] pixels mostly lie within the normalised interval too, but never go
    # negative, which any pixel darker than the mean does once normalised (unless the backbone's
    # normalisation barely moves [0, 1]).
    if pixels_01 and (not normalised_once or bool((lo < -0.25).any())):
        return _warn(
            "not_normalised",
            f"the images look unnormalised: every value lies in [0, 1] ({seen}); {expected}, "
            "and its dark pixels are negative",
            f"normalise with the backbone's {stats} "
            "(tlkit's own transform does: give it files or uint8 arrays, not prepared tensors)")
    if normalised_once:
        return None
    if bool((mn >= -1e-3).all()) and float(mx.max()) <= 255 + 1e-3:
        return _warn(
            "not_normalised_0_255",
            "the images look like raw 0-255 pixels, neither scaled to [0, 1] nor normalised "
            f"({seen}); {expected}",
            f"divide by 255, then normalise with {stats} "
            "(tlkit's own transform does both: give it files or uint8 arrays)")
    lo2, hi2 = (lo - mean) / std, (hi - mean) / std  # an image normalised twice
    margin2 = RANGE_MARGIN * (hi2 - lo2)
    if bool(((mn >= lo2 - margin2) & (mx <= hi2 + margin2)).all()):
        return _warn(
            "normalised_twice",
            f"the images look normalised twice ({seen}): a second normalisation spreads the "
            f"values {float(np.median(1 / std)):.1f}x wider and shifts them by about "
            f"{float(np.median(-mean / std)):.1f}; {expected}",
            "normalise once: drop your own normalisation when tlkit's transform also applies it")
    hi255 = (255.0 - mean) / std  # 0-255 pixels normalised as if they were 0-1
    if bool(((mn >= lo - margin) & (mx <= hi255 + RANGE_MARGIN * (hi255 - lo))).all()):
        return _warn(
            "normalised_0_255",
            f"the images look like 0-255 pixels normalised as if they were 0-1 ({seen}); "
            f"{expected}",
            "divide the pixels by 255 before normalising (tlkit's own transform does: give it "
            "files or uint8 arrays)")
    return _warn(
        "out_of_range",
        f"the image values lie outside what the backbone's normalisation gives ({seen}); "
        f"{expected}",
        f"scale pixels to [0, 1] and normalise once with {stats}")


# ---------------------------------------------------------------------------------------------
# Text


def check_text(texts: list[Any], tokenizer: Any, model_vocab_size: int | None,
               prep: TextPreprocessing) -> list[Finding]:
    """Findings about how ``tokenizer`` reads ``texts`` for a model whose embedding has
    ``model_vocab_size`` rows (None: unknown, that check is skipped), cut at prep.max_length."""
    if not texts:
        return []
    findings: list[Finding] = []
    # What the model reads, special tokens included, and one token more: a text that still
    # fills max_length + 1 is cut at max_length.
    ids: list[list[int]] = tokenize(tokenizer, texts, prep.max_length + 1)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    unk = getattr(tokenizer, "unk_token_id", None)
    content = [[t for t in row if t not in special or t == unk] for row in ids]
    n_tokens = sum(len(row) for row in content)
    if unk is not None and n_tokens:
        per_text = [sum(t == unk for t in row) for row in content]
        share = sum(per_text) / n_tokens
        if share > UNKNOWN_SHARE:
            worst = texts[int(np.argmax(per_text))]
            worst = PAIR_SEPARATOR.join(worst) if is_pair(worst) else str(worst)
            example = worst if len(worst) <= 60 else worst[:57] + "..."
            findings.append(_warn(
                "unknown_tokens",
                f"{share:.0%} of the tokens of {len(texts)} sampled inputs are the unknown token "
                f"(e.g. in {example!r}): the tokenizer does not cover this text (another "
                "script or alphabet, or a tokenizer that does not belong to the model)",
                "use a backbone pretrained on text like this (e.g. a multilingual model), or "
                "the tokenizer saved with the model"))
    if model_vocab_size is not None:
        beyond = [t for row in ids for t in row if t >= model_vocab_size]
        if beyond:
            findings.append(_warn(
                "vocab_mismatch",
                f"the tokenizer gives token ids up to {max(beyond)} ({len(beyond)} tokens in "
                f"{len(texts)} sampled inputs) but the model's embedding has only "
                f"{model_vocab_size} rows: the tokenizer belongs to another model",
                "use the tokenizer saved with the backbone (the same folder or hub id)"))
    truncated = sum(len(row) > prep.max_length for row in ids)
    if truncated / len(texts) > TRUNCATED_SHARE:
        findings.append(_info(
            "truncated",
            f"{truncated} of {len(texts)} sampled inputs are longer than data.max_length "
            f"{prep.max_length} tokens and are cut; the model reads only their beginning",
            "raise data.max_length (up to what the backbone allows) if the end of a text "
            "matters, or keep it for speed"))
    return findings


def embedding_rows(backbone: Any) -> int | None:
    """Rows of a text backbone's token embedding (the ids it can read), if it can be told."""
    inner = getattr(backbone, "model", None)
    get = getattr(inner, "get_input_embeddings", None)
    if callable(get):
        try:
            embedding = get()
        except (NotImplementedError, AttributeError):
            embedding = None
        if isinstance(embedding, torch.nn.Embedding):
            return int(embedding.num_embeddings)
    size = getattr(getattr(inner, "config", None), "vocab_size", None)
    return int(size) if isinstance(size, int) else None


# ---------------------------------------------------------------------------------------------


def sample_indices(n: int, k: int = SAMPLE_SIZE) -> np.ndarray:
    """A fixed sample of ``k`` of ``n`` indices (the same for every run of the same data)."""
    if n <= k:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=k, replace=False))


def _as_text(item: Any, tokenizer: Any) -> Any:
    """A training input as text: question answering's windows come tokenized, so their
    tokens (the question and the window's piece of context, without CLS, SEP and padding)
    are written back; an unknown token stays one."""
    if not isinstance(item, dict):
        return item
    ids = item["input_ids"][item["attention_mask"] > 0].tolist()
    drop = {getattr(tokenizer, n, None) for n in ("cls_token_id", "sep_token_id",
                                                  "pad_token_id")}
    return tokenizer.decode([t for t in ids if t not in drop])


def check_preprocessing(backbone: Any, collate: Callable[[list[Any]], Any], dataset: Examples,
                        policy: Policy, log: Callable[[str], None]) -> list[Finding]:
    """Check a fixed sample of ``dataset`` as ``collate`` batches it for ``backbone``; per
    ``policy``: "off" skips the check, "warn" logs each finding, "refuse" raises a UserError
    listing the warnings (informational findings are logged, never refused). Returns the
    findings."""
    if policy == "off" or len(dataset) == 0:
        return []
    idx = sample_indices(len(dataset))
    # Augmentation draws from torch's generator: keep its state, so training draws as it would
    # without this check.
    with torch.random.fork_rng(devices=[]):
        items = [dataset[int(i)] for i in idx]
    prep = backbone.preprocessing
    if isinstance(prep, ImagePreprocessing):
        inputs, _ = collate(items)
        findings = check_images(inputs, prep)
    else:
        tokenizer = getattr(collate, "tokenizer", None)
        if tokenizer is None:
            return []
        max_length = int(getattr(collate, "max_length", prep.max_length))
        findings = check_text([_as_text(item[0], tokenizer) for item in items], tokenizer,
                              embedding_rows(backbone), replace(prep, max_length=max_length))
    warnings = [f for f in findings if f.severity == "warn"]
    if policy == "refuse" and warnings:
        listed = "\n".join(f"  - {f.message()}" for f in warnings)
        raise UserError(
            f"the preprocessing check found {len(warnings)} problem(s) in {len(idx)} sampled "
            f"training inputs:\n{listed}\nfix them, or set diagnostics.check_preprocessing: "
            "warn to train anyway.")
    for f in findings:
        log(f"preprocessing check{'' if f.severity == 'warn' else ' (info)'}: {f.message()}")
    return findings
