"""The raw pixels' test of freeze_strategy auto, for single-label images: where a logistic
regression on the raw pixels (``tlkit.backbones.pixels``) beats the same convex head on the
pretrained features, out of fold on the training and validation examples by more than
``MARGIN`` paired standard errors, the pixels' model (``source_model: pixels``, which tlkit
serves like any run) takes the frozen head's place: the fine-tuning candidates are compared
with it on validation, and it is the pick unless one beats it there."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tlkit.data import build_collate, build_dataset
from tlkit.data.transforms import resolve_preprocessing
from tlkit.events import Event
from tlkit.metrics import probabilities
from tlkit.select.candidates import MARGIN, PIXELS
from tlkit.select.record import Trial
from tlkit.select.trials import Base
from tlkit.train.selection import noise_of


@dataclass
class PixelsWin:
    """Raw pixels beat the pretrained features: why, and the pixels' head fitted on the
    training split at the strength chosen out of fold, scored on each validation example (its
    loss, paired with a fine-tuning trial's validation losses)."""

    reason: str
    val_losses: list[float]


def pixels_win(base: Base, event: Event, trials: list[Trial]) -> PixelsWin | None:
    """Images, single-label: do raw pixels (``tlkit.backbones.pixels``) beat the pretrained
    network's frozen features under the same convex head? Each example's out-of-fold Brier score
    (a proper score, and bounded: one overconfident mistake cannot swamp the paired test as a
    log loss of 30 can) over the training and validation splits together (the same folds for
    both feature sets, so the scores pair up; the pretrained features are the cached ones the
    frozen head was fitted on).
    Returns why, with the pixels' validation losses, when they win by more than ``MARGIN``
    paired standard errors, else None. The pixels' model then takes the frozen head's place: a
    fine-tuned network may still beat both (digits at 64 labels a class: full fine-tuning and
    ``contrastive`` 2 points above the pixels), and is compared with it on validation."""
    if base.modality != "image" or base.data.task != "single_label" or base.cache is None:
        return None
    from tlkit.heads import head_inputs, normalizes
    from tlkit.train.evaluate import example_losses
    from tlkit.train.head_solver import features, held_out_logits, out_of_fold

    n = base.cache.n_groups
    got = [base.cache.get(name, getattr(base.data, name), n) for name in ("train", "val")]
    if any(g is None for g in got):
        return None
    pairs = [features(g) for g in got if g is not None]
    x_frozen = head_inputs(np.concatenate([x for x, _ in pairs]),
                           normalizes(base.inputs.asm.model.head))
    y = np.concatenate([t for _, t in pairs])
    if len(y) < 20:
        return None
    event("stage", {"what": "freeze_strategy auto: raw pixels against the pretrained features "
                            "(out-of-fold, the same folds)"})
    t0 = time.perf_counter()
    x_pixels = np.concatenate([pixel_features(base, split) for split in
                               (base.splits.train, base.splits.val)])
    seed = base.cfg.transfer_config.seed
    mine, c_px = out_of_fold("single_label", x_pixels, y, base.n_out, seed)
    theirs, c_fr = out_of_fold("single_label", x_frozen, y, base.n_out, seed)
    px, fr = _brier(mine, y), _brier(theirs, y)
    gain = float((fr - px).mean())
    se = noise_of(px, list(fr), "loss")
    won = gain > MARGIN * se
    trials.append(Trial(PIXELS, -1, 0, 0, float(px.mean()),
                        float((mine.argmax(1) == y).mean()), round(time.perf_counter() - t0, 2),
                        note=f"raw pixels + the convex head: out-of-fold Brier score over "
                             f"{len(y)} examples (C {c_px:g}); the pretrained features on the "
                             f"same folds: {fr.mean():.4f}, accuracy "
                             f"{(theirs.argmax(1) == y).mean():.4f} (C {c_fr:g})"))
    if not won:
        return None
    n_train = len(pairs[0][1])
    logits = held_out_logits("single_label", x_pixels[:n_train], y[:n_train], x_pixels[n_train:],
                             c_px, base.n_out)
    # the loss a trial's per-example validation losses are (train/evaluate.py)
    val = example_losses(logits, y[n_train:], "single_label").tolist()
    return PixelsWin(
        f"raw pixels beat the pretrained features under the same convex head: out-of-fold "
        f"Brier score {px.mean():.4f} against {fr.mean():.4f} over {len(y)} examples, by more "
        f"than {MARGIN:g} paired standard errors ({MARGIN:g} x {se:.4f}): the pixels' model "
        "(source_model pixels, a logistic regression on 16 x 16 pixels, served like any other) "
        "takes the frozen head's place against the fine-tuning candidates", val)


def _brier(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each example's Brier score: the squared distance of its probabilities to its one-hot
    label (0 to 2)."""
    p = probabilities(outputs, "single_label")
    p[np.arange(len(y)), y] -= 1.0
    return (p ** 2).sum(1)


def pixel_features(base: Base, split: Any) -> np.ndarray:
    from tlkit.backbones.pixels import PixelsBackbone

    bb = PixelsBackbone()
    # as the pixels' model will see them: its own 16 x 16, not the network's image_size
    prep = resolve_preprocessing(bb.preprocessing, base.cfg.data.model_copy(
        update={"image_size": None}))
    ds, collate = build_dataset(split, prep, "none"), build_collate(prep)
    out = []
    with torch.no_grad():
        for i in range(0, len(ds), 64):
            batch: list[Any] = [ds[j] for j in range(i, min(i + 64, len(ds)))]
            inputs, _ = collate(batch)
            out.append(bb(inputs).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, bb.feature_dim))
