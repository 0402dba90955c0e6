"""A run's inputs from its config, the one path ``fit``, freeze_strategy auto's trials and the
diagnostics (``rank``, ``probe``, ``advise``) all take: the config for a strategy
(``config_for``), the data first (``load_data``: a wrong path fails before a model loads), then
the model, its preprocessing, the datasets as the model sees them, the activation cache and the
loop hooks that read them (``build_inputs``, typed ``Inputs``)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from tlkit import strategies
from tlkit.assemble import Assembled, assemble
from tlkit.backbones.base import TextPreprocessing
from tlkit.cache import ActivationCache, CacheHook, cache_for
from tlkit.config import AUTO_BUDGET, Config, TransferConfig, derive, without_strategy_keys
from tlkit.data import build_collate, build_dataset, load_source, make_splits, num_outputs_of
from tlkit.data.answers import DOC_STRIDE, WindowDataset
from tlkit.data.collate import TextCollate, tokenize
from tlkit.data.resolution import image_size_for
from tlkit.data.transforms import resolve_preprocessing
from tlkit.distributed import SINGLE, Dist
from tlkit.errors import UserError
from tlkit.regularization import L2SP
from tlkit.train.loader import default_workers
from tlkit.train.loop import TrainData

Log = Callable[[str], None]


def config_for(cfg: Config, strategy: str, settings: dict[str, Any] | None = None, *,
               reason: str, variant: bool = False, fitted: bool = False,
               sections: dict[str, dict[str, Any]] | None = None) -> Config:
    """``cfg`` with ``strategy`` in its place: the keys the config gives for that strategy are
    kept, the other strategies' keys go back to their defaults, then ``settings`` (transfer_config
    keys) are set and the other ``sections`` changed (``{"data": {...}}``). ``variant``: the
    strategy first sets the keys its variant for ``compare`` needs (``Strategy.variant``);
    ``fitted``: it adjusts the length freeze_strategy auto gives every candidate
    (``Strategy.fit_settings``). Validated again, with ``reason`` naming it in an error."""
    tc = cfg.transfer_config.model_dump(mode="json")
    own = {k: tc[k] for owner, k in strategies.owned_keys() if owner == strategy}
    tc = without_strategy_keys(tc)
    # a named strategy in auto's place: auto's own budget goes back to its default
    tc.update(own, freeze_strategy=strategy, auto_budget=AUTO_BUDGET)
    chosen = strategies.get(strategy)
    if variant:
        chosen.variant(tc, cfg.transfer_config, cfg.diagnostics)
    tc.update(settings or {})
    if fitted:
        chosen.fit_settings(tc)
    return derive(cfg, reason, transfer_config=tc, **(sections or {}))


@dataclass
class Inputs:
    """What a config's run computes with: its splits, the assembled model (backbone with layer
    groups, head, plan), the backbone's preprocessing and collate, the datasets as the model
    sees them, the activation cache and the hooks the loop calls."""

    cfg: Config
    splits: Any
    modality: str
    asm: Assembled
    prep: Any  # the backbone's preprocessing, with the config's overrides
    collate: Any
    augment: str  # the training dataset's augmentation ("none" outside training)
    train_ds: Any
    val_ds: Any
    test_ds: Any  # None without a test split
    cache: ActivationCache | None
    hooks: list[Any]
    load_seconds: float  # loading the backbone and assembling the model
    notes: list[str] = field(default_factory=list)  # for the run's log

    @property
    def tc(self) -> TransferConfig:
        return self.cfg.transfer_config

    @property
    def backbone(self) -> Any:
        return self.asm.model.backbone

    @property
    def groups(self) -> list[Any]:
        return self.asm.groups

    @property
    def n_groups(self) -> int:
        return len(self.asm.groups)

    def training_data(self) -> TrainData:
        """What the loop trains on: the datasets, the collate, and per training example its
        length (texts: batches of like length), class weights and sampling weights."""
        cfg, train = self.cfg, self.splits.train
        lengths = None
        if isinstance(self.train_ds, WindowDataset):  # question answering: per window
            lengths = self.train_ds.lengths() if cfg.data.group_by_length else None
        elif self.modality == "text" and cfg.data.group_by_length:
            assert isinstance(self.collate, TextCollate)
            assert isinstance(self.prep, TextPreprocessing)
            enc = tokenize(self.collate.tokenizer, self.train_ds.inputs, self.prep.max_length)
            lengths = [len(x) for x in enc["input_ids"]]
        workers = cfg.data.workers
        return TrainData(self.train_ds, self.val_ds, self.collate, train.task,
                         self.splits.classes, lengths,
                         class_weights_of(self.tc.class_weights, train),
                         balanced_weights(train) if self.tc.sampler == "balanced" else None,
                         default_workers() if workers == "auto" else workers)


def load_data(cfg: Config) -> tuple[Any, Any]:
    """The loaded source and its splits, as a fit of ``cfg`` cuts them."""
    data = load_source(cfg.data)
    return data, make_splits(data, cfg.data)


def build_inputs(cfg: Config, splits: Any, modality: str, dist: Dist = SINGLE, *,
                 training: bool = True, log: Log | None = None, backbone: Any = None
                 ) -> Inputs:
    """The model for ``cfg`` on its data (``load_data`` first), in the order ``fit`` takes:
    the seed, the model (the head's initialisation), the preprocessing and datasets, then
    (``training``) the activation cache and the loop hooks. Outside ``training`` (the
    diagnostics) the datasets are not augmented and no cache or hook is made. ``log`` is what
    the cache says while it computes. ``backbone``: the model's backbone in place of the
    config's source_model (a distilled student's, ``tlkit.distillation``)."""
    tc = cfg.transfer_config
    augment = cfg.data.augment if training and modality == "image" else "none"
    if training and tc.freeze_strategy in strategies.names():  # before the model loads
        why = strategies.get(tc.freeze_strategy).refuses(splits.train.task, modality, augment)
        if why is not None:
            raise UserError(why)
    t0 = time.perf_counter()
    torch.manual_seed(tc.seed)  # the head's initialisation (and a random backbone's)
    asm = assemble(tc, num_outputs_of(splits.train), modality=modality,
                   max_length=cfg.data.max_length, task=splits.train.task,
                   backbone=backbone)
    load_seconds = time.perf_counter() - t0
    # an image run without data.image_size follows its training images (tlkit.data.resolution)
    size = (image_size_for(asm.model.backbone, cfg.data.image_size, splits.train.inputs)
            if modality == "image" else None)
    prep = resolve_preprocessing(asm.model.backbone.preprocessing, cfg.data, size)
    # question answering's windows (None outside it: unread)
    stride = DOC_STRIDE if cfg.data.doc_stride is None else cfg.data.doc_stride
    inputs = Inputs(cfg, splits, modality, asm, prep, build_collate(prep), augment,
                    build_dataset(splits.train, prep, augment, doc_stride=stride),
                    build_dataset(splits.val, prep, doc_stride=stride),
                    None if splits.test is None else build_dataset(splits.test, prep,
                                                                   doc_stride=stride),
                    None, [], load_seconds)
    if size is not None and size.why != "config":
        inputs.notes.append(size.describe())
    length_said = getattr(asm.model.backbone, "length_said", None)
    if modality == "text" and cfg.data.max_length is None and length_said:
        inputs.notes.append(length_said)  # the model's own length, or tlkit's default
    if not training:
        return inputs
    if tc.cache.enabled and augment != "none":
        # Random augmentation gives another input each epoch: a cached activation would be
        # wrong. Frozen layers then run every epoch, and the log says so.
        inputs.notes.append(f"data.augment is {augment}: frozen layers run every epoch (the "
                            "activation cache is off)")
    elif tc.cache.enabled and splits.train.task != "question_answering":
        # (Question answering runs uncached: every token's state of every window is far past
        # any cap, and the windows are scored per question from their dataset.)
        # Without random augmentation the preprocessing is deterministic: cached activations
        # are exactly what the full forward would compute each epoch.
        inputs.cache = cache_for(asm.model.backbone, len(asm.groups), inputs.collate,
                                 dist.device, tc.cache_settings, prep,
                                 log=log or (lambda s: None), dist=dist)
    inputs.hooks = hooks_for(tc, asm, inputs.cache, inputs)
    return inputs


def with_model(base: Inputs, cfg: Config, hooks: bool = True) -> Inputs:
    """``base``'s data, preprocessing and cache, with the model ``cfg`` assembles on a copy of
    ``base``'s backbone (never trained: auto's trials each start from it), and its loop hooks
    (``hooks``; not for a model that is only measured)."""
    torch.manual_seed(cfg.transfer_config.seed)  # the head's initialisation, as fit's
    asm = assemble(cfg.transfer_config, num_outputs_of(base.splits.train), base.modality,
                   base.cfg.data.max_length, backbone=copy.deepcopy(base.backbone),
                   task=base.splits.train.task)
    return replace(base, cfg=cfg, asm=asm,
                   hooks=hooks_for(cfg.transfer_config, asm, base.cache, base) if hooks else [])


def hooks_for(tc: TransferConfig, asm: Assembled, cache: ActivationCache | None,
              inputs: Inputs | None = None) -> list[Any]:
    """The loop hooks of the model's own training: L2-SP (the source weights are the
    pretrained ones, snapshot before a resumed run's checkpoint loads), the strategy's own
    (``Strategy.hooks``, on ``inputs``' data) and the activation cache. (The target's alignment,
    ``tlkit.adapt``, is added by ``run/prepare.py``.)"""
    hooks: list[Any] = [L2SP(asm.model.backbone, tc.l2sp_lambda)] if tc.l2sp_lambda > 0 else []
    if inputs is not None and tc.freeze_strategy in strategies.names():
        hooks += strategies.get(tc.freeze_strategy).hooks(asm.model, tc, inputs)
    if cache is not None:
        cuts = [asm.plan.frozen_below(p) for p in asm.plan.phases]
        if any(later > cut for i, cut in enumerate(cuts) for later in cuts[i + 1:]):
            # a phase reads activations above layers an earlier phase trained (contrastive's
            # head on the trained body): computed afresh from this model's trained weights
            cache = cache.fresh(asm.model.backbone)
        hooks.append(CacheHook(cache, asm.plan))
    return hooks


def check_length(tc: Any, length: Any) -> None:
    """Refuse a warmup longer than the run: the rate would never reach its peak and the run
    would learn next to nothing while exiting 0."""
    if tc.warmup_steps > length.total_steps:
        raise UserError(
            f"transfer_config.warmup_steps is {tc.warmup_steps:,}, more than the run's "
            f"{length.total_steps:,} optimizer steps ({length.describe().split(': ', 1)[1]}): the "
            "learning rate would never reach its peak; set warmup_steps below "
            f"{length.total_steps:,}, or use warmup_ratio (a share of the steps)")


def limited(splits: Any, test_limit: int | None, seed: int) -> Any:
    """``splits`` with the test split cut to ``test_limit`` examples (stratified, seeded), as
    ``fit_run(..., test_limit=...)`` evaluates."""
    if test_limit is not None and splits.test is not None and len(splits.test) > test_limit:
        splits.test = subset(splits.test, test_limit, seed)
    return splits


def subset(data: Any, n: int, seed: int) -> Any:
    """A subset of ``n`` examples, stratified for single-label data."""
    idx = np.arange(len(data))
    strat = data.targets if data.task == "single_label" else None
    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=strat, random_state=seed)
    except ValueError:  # too few of some class to stratify
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return data.subset(np.sort(keep), name=data.name)


def class_weights_of(spec: Any, train: Any) -> list[float] | None:
    """The single-label loss's class weights: ``auto`` weighs each class by n / (classes *
    its count) (scikit-learn's "balanced"; a class without training examples weighs 1), a
    mapping names the classes to weigh (the others weigh 1)."""
    if spec == "none" or train.task not in ("single_label", "token_classification"):
        return None
    classes = list(train.classes)
    if spec == "auto":  # token classification: over the words
        tags = (np.concatenate(list(train.targets)) if train.task == "token_classification"
                else train.targets)
        counts = np.bincount(tags, minlength=len(classes))
        present = int(np.count_nonzero(counts))
        return [len(tags) / (present * c) if c else 1.0 for c in counts.tolist()]
    unknown = sorted(set(spec) - set(classes))
    if unknown:
        folded = {c.casefold(): c for c in classes}
        named = [repr(u) + (f" (did you mean {folded[u.casefold()]!r}?)"
                            if u.casefold() in folded else "") for u in unknown[:5]]
        raise UserError(f"transfer_config.class_weights names {', '.join(named)}, "
                        f"not among the classes ({', '.join(classes[:10])}"
                        f"{', ...' if len(classes) > 10 else ''}); fix the names (they are "
                        "matched exactly, case included)")
    weights = [float(spec.get(c, 1.0)) for c in classes]
    tags = (np.concatenate([*train.targets, np.zeros(0, np.int64)])
            if train.task == "token_classification" else train.targets)
    counts = np.bincount(np.asarray(tags, dtype=np.int64), minlength=len(classes))
    absent = [c for c in spec if counts[classes.index(c)] == 0]
    if absent:
        raise UserError(f"transfer_config.class_weights names {', '.join(map(repr, absent[:5]))}, "
                        "absent from the training split (only the validation or test set holds "
                        "examples of it): its weight would change nothing; remove it")
    counted = [c for c, w, k in zip(classes, weights, counts.tolist(), strict=True) if w > 0 and k]
    if len(counted) < 2:
        zero = [c for c, w in zip(classes, weights, strict=True) if w == 0]
        left = (f"only {counted[0]!r} keeps a positive weight" if counted
                else "no class keeps a positive weight")
        raise UserError(
            f"transfer_config.class_weights gives {', '.join(map(repr, zero[:5]))}"
            f"{' ...' if len(zero) > 5 else ''} weight 0: {left} among the {len(classes)} "
            "classes in training, so the loss would count "
            + ("one class alone and the model would learn to predict it always"
               if counted else "no example and the model would learn nothing")
            + "; give the classes that should count a positive weight (a class not named "
            "weighs 1)")
    return weights


def balanced_weights(train: Any) -> list[float]:
    """The balanced sampler's weight of each training example: 1 / its class's count, so each
    class is drawn equally often."""
    counts = np.bincount(train.targets)
    return [1.0 / counts[t] for t in train.targets]
