"""Step 1 of a fit: from a config to everything training needs, cheap checks first (the run
directory, the data), then the model, so a mistake fails in seconds and never after an hour."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from tlkit.adapt.alignment import Alignment
from tlkit.adapt.target import Target, prepare_target
from tlkit.assemble import Assembled, assemble
from tlkit.backbones.base import TextPreprocessing
from tlkit.cache import CacheHook, cache_for
from tlkit.config import Config, dump_config
from tlkit.data import build_collate, build_dataset, load_source, make_splits, num_outputs_of
from tlkit.data.collate import TextCollate, tokenize
from tlkit.data.fingerprint import differences, fingerprint
from tlkit.data.transforms import resolve_preprocessing
from tlkit.diagnose.preprocessing import check_preprocessing
from tlkit.distributed import Dist, launched, setup
from tlkit.errors import UserError
from tlkit.plan import format_plan
from tlkit.plan.length import length_of
from tlkit.regularization import L2SP
from tlkit.rundir import RunDir, check_writable
from tlkit.train.checkpoint import load_checkpoint
from tlkit.train.loader import default_workers
from tlkit.train.loop import TrainData

Event = Callable[[str, dict[str, Any]], None]


@dataclass
class Prepared:
    """A run ready to train: its config, run directory, data, model and plan, and the hooks the
    loop will call."""

    cfg: Config
    run: RunDir
    dist: Dist
    event: Event
    t_start: float
    data: Any  # the loaded source (LabelledData)
    splits: Any
    asm: Assembled
    prep: Any  # the backbone's preprocessing
    train: TrainData
    test_ds: Any  # None without a test split
    findings: list[Any]  # the preprocessing check's
    cache: Any  # ActivationCache or None
    hooks: list[Any]
    target: Target | None
    resume: dict[str, Any] | None  # the checkpoint to continue from
    pretrained: torch.nn.Module | None  # the backbone before training, for forgetting
    test_limit: int | None


def open_run(cfg: Config, out: Path, resume: bool) -> tuple[RunDir, bool, Dist, bool]:
    """The run directory, checked against ``resume``: a finished run is never overwritten and a
    resumed one continues with its own config. Returns it, whether there is a checkpoint to
    resume, this process's place, and whether a --resume found nothing and starts over."""
    if launched() and cfg.adaptation.target is not None:
        raise UserError("adaptation.target runs on one process; run this config without "
                        "torchrun / accelerate launch, or remove the adaptation section")
    dist = setup(cfg.transfer_config.device)
    run = RunDir(out)
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    if dist.is_main:  # the others wait for rank 0, which claims the folder
        check_writable(run.path, "run")
    if resume and not run.last.is_file():
        # Killed before its first checkpoint (or never started): resuming is starting. So a run
        # killed at any moment continues with the same command.
        if run.summary.is_file():
            raise UserError(f"{out} holds a finished run without checkpoints/last.pt; choose "
                            "another --out (nothing was changed)")
        return run, False, dist, True
    elif resume:
        saved = run.config.read_text() if run.config.is_file() else None
        if saved is not None and saved != dump_config(cfg):
            raise UserError(f"the config differs from the one {out} was started with "
                            f"({run.config}); resume with that config, or start a new --out")
    elif run.path.is_dir() and (run.last.is_file() or run.summary.is_file()):
        raise UserError(f"{out} already holds a run; add --resume to continue it, or choose "
                        "another --out (nothing was changed)")
    return run, resume, dist, False


def prepare(cfg: Config, run: RunDir, resume: bool, dist: Dist, event: Event,
            test_limit: int | None = None, given: Config | None = None) -> Prepared:
    """Everything ``cfg`` trains with; ``given`` is the user's config where it differs
    (freeze_strategy auto: ``cfg`` is the pick's), the one config.yaml keeps."""
    tc = cfg.transfer_config
    t_start = time.perf_counter()
    event("stage", {"what": f"loading data {cfg.data.source}"})
    data, splits = splits_of(cfg)
    if splits.train_only_classes:
        event("stage", {"what": f"{len(splits.train_only_classes)} class(es) with a single "
                                "example stay in training only (no stratified cut can hold them): "
                                + ", ".join(splits.train_only_classes[:10])
                                + (" ..." if len(splits.train_only_classes) > 10 else "")})
    if splits.test is None:
        event("stage", {"what": "no test split (data.test_fraction is 0): the run reports its "
                                "validation metrics"})
    splits = limited(splits, test_limit, cfg.data.seed)
    length = length_of(len(splits.train), tc.loop_settings)
    check_length(tc, length)  # before the model loads
    if dist.is_main:
        same_data(run, splits, resume)
    event("stage", {"what": f"loading backbone {tc.source_model}", "sizes": splits.sizes()})
    torch.manual_seed(tc.seed)  # the head's initialisation
    asm = assemble(tc, num_outputs_of(splits.train), modality=data.modality,
                   max_length=cfg.data.max_length)
    # The source weights are the pretrained ones: snapshot them now, before a resumed run's
    # checkpoint is loaded into the model.
    hooks: list[Any] = [L2SP(asm.model.backbone, tc.l2sp_lambda)] if tc.l2sp_lambda > 0 else []
    prep = resolve_preprocessing(asm.model.backbone.preprocessing, cfg.data)
    collate = build_collate(prep)
    augment = cfg.data.augment if data.modality == "image" else "none"
    train_ds = build_dataset(splits.train, prep, augment)
    findings = check_preprocessing(asm.model.backbone, collate, train_ds,
                                   cfg.diagnostics.check_preprocessing,
                                   lambda m: event("stage", {"what": m}))
    event("stage", {"what": length.describe()})
    if dist.is_main:
        run.write_text(run.config, dump_config(given or cfg))
        run.write_text(run.plan, format_plan(asm.plan, length) + "\n")
    # rank 0 reads the checkpoint and sends it to the others (their disk may not hold it)
    state_in = dist.on_main(lambda: load_checkpoint(run.last) if resume else None)
    if dist.is_main and state_in is not None:
        run.truncate_metrics(int(state_in["state"]["epoch"]))
    elif dist.is_main and run.metrics.exists():
        run.metrics.unlink()
    cache = None
    if tc.cache.enabled and augment != "none":
        # Random augmentation gives another input each epoch: a cached activation would be
        # wrong. Frozen layers then run every epoch, and the log says so.
        event("stage", {"what": f"data.augment is {augment}: frozen layers run every epoch "
                                "(the activation cache is off)"})
    elif tc.cache.enabled:
        # Without random augmentation the preprocessing is deterministic: cached activations
        # are exactly what the full forward would compute each epoch.
        cache = cache_for(asm.model.backbone, len(asm.groups), collate, dist.device,
                          tc.cache_settings, prep, log=lambda msg: event("stage", {"what": msg}),
                          dist=dist)
        hooks.append(CacheHook(cache, asm.plan))
    target = None
    if cfg.adaptation.target is not None:  # method none: the target is only measured
        target = prepare_target(cfg, data.modality, splits.classes, prep, asm.model.backbone,
                                len(asm.groups), train_ds, collate, dist.device, event)
        if target.loss is not None:
            hooks.append(Alignment(target.loss, target.train, cfg.adaptation.weight, tc.seed))
    return Prepared(
        cfg, run, dist, event, t_start, data, splits, asm, prep,
        training_data(cfg, data.modality, splits, prep, collate, train_ds),
        None if splits.test is None else build_dataset(splits.test, prep), findings, cache,
        hooks, target, state_in,
        _pretrained_copy(cfg, asm, dist), test_limit)


def training_data(cfg: Config, modality: str, splits: Any, prep: Any, collate: Any,
                  train_ds: Any) -> TrainData:
    """What the loop trains on: the datasets, the collate, and per training example its length
    (texts: batches of like length), class weights and sampling weights."""
    tc = cfg.transfer_config
    lengths = None
    if modality == "text" and cfg.data.group_by_length:
        assert isinstance(collate, TextCollate) and isinstance(prep, TextPreprocessing)
        enc = tokenize(collate.tokenizer, train_ds.inputs, prep.max_length)
        lengths = [len(x) for x in enc["input_ids"]]
    workers = cfg.data.workers
    return TrainData(train_ds, build_dataset(splits.val, prep), collate, splits.train.task,
                     splits.classes, lengths, class_weights_of(tc.class_weights, splits.train),
                     balanced_weights(splits.train) if tc.sampler == "balanced" else None,
                     default_workers() if workers == "auto" else workers)


def _pretrained_copy(cfg: Config, asm: Assembled, dist: Dist) -> torch.nn.Module | None:
    """Forgetting compares the adapted backbone with the pretrained one: a copy when any
    backbone group trains (the model still holds the pretrained weights here; a resumed run's
    checkpoint loads inside fit)."""
    n = len(asm.groups)
    if (any(r.trainable for ph in asm.plan.phases for r in ph.rows[:n])
            and cfg.transfer_config.pretrained_weights != "none" and dist.is_main):
        return copy.deepcopy(asm.model.backbone).eval()
    return None


def same_data(run: RunDir, splits: Any, resume: bool) -> None:
    """A new run records its data's fingerprint; a resumed one must find the same data (the
    fingerprint of a run from before there was one is written now)."""
    now = fingerprint(splits)
    if resume and run.data.is_file():
        try:
            before = json.loads(run.data.read_text())
        except (OSError, ValueError):
            before = None
        said = differences(before, now) if isinstance(before, dict) else ["its record "
                                                                          f"{run.data} is unreadable"]
        if said:
            raise UserError(f"--resume with other data than {run.path} was started with: "
                            + "; ".join(said) + ". Restore that data to continue the run, or "
                            "start a new run in another --out (nothing was changed)")
        return
    run.write_json(run.data, now)


def check_length(tc: Any, length: Any) -> None:
    """Refuse a warmup longer than the run: the rate would never reach its peak and the run
    would learn next to nothing while exiting 0."""
    if tc.warmup_steps > length.total_steps:
        raise UserError(
            f"transfer_config.warmup_steps is {tc.warmup_steps:,}, more than the run's "
            f"{length.total_steps:,} optimizer steps ({length.describe().split(': ', 1)[1]}): the "
            "learning rate would never reach its peak; set warmup_steps below "
            f"{length.total_steps:,}, or use warmup_ratio (a share of the steps)")


def splits_of(cfg: Config) -> tuple[Any, Any]:
    """The loaded source and its splits, as a fit of ``cfg`` cuts them."""
    data = load_source(cfg.data)
    return data, make_splits(data, cfg.data)


def limited(splits: Any, test_limit: int | None, seed: int) -> Any:
    """``splits`` with the test split cut to ``test_limit`` examples (stratified, seeded), as
    ``fit_run(..., test_limit=...)`` evaluates."""
    if test_limit is not None and splits.test is not None and len(splits.test) > test_limit:
        splits.test = subset(splits.test, test_limit, seed)
    return splits


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
        raise UserError(f"transfer_config.class_weights names {', '.join(map(repr, unknown[:5]))}, "
                        f"not among the classes ({', '.join(classes[:10])}); fix the names")
    return [float(spec.get(c, 1.0)) for c in classes]


def balanced_weights(train: Any) -> list[float]:
    """The balanced sampler's weight of each training example: 1 / its class's count, so each
    class is drawn equally often."""
    counts = np.bincount(train.targets)
    return [1.0 / counts[t] for t in train.targets]


def subset(data: Any, n: int, seed: int) -> Any:
    """A subset of ``n`` examples, stratified for single-label data."""
    idx = np.arange(len(data))
    strat = data.targets if data.task == "single_label" else None
    try:
        keep, _ = train_test_split(idx, train_size=n, stratify=strat, random_state=seed)
    except ValueError:  # too few of some class to stratify
        keep, _ = train_test_split(idx, train_size=n, random_state=seed)
    return data.subset(np.sort(keep), name=data.name)
