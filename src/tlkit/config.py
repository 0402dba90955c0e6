"""The run's configuration: the concept's ``transfer_config`` block plus a ``data`` section.

Loaded from YAML (safely), overridden with ``--set a.b=value``, and validated with pydantic before
any model or data loads. Every user mistake becomes a ``UserError`` whose message names the place
(dotted path, or YAML line and column) and the fix.
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tlkit import strategies
from tlkit.errors import UserError
from tlkit.strategies.lora import LoraSettings

# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------

SELECTOR_RE = re.compile(r"^(last_block|last_two_blocks|last_(\d+)_blocks|all)$")


class Strict(BaseModel):
    # No NaN or infinity in any number: `head_lr: .nan` or `max_grad_norm: .inf` are refused
    # here rather than discovered as a NaN loss.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


AUTO = "auto"  # freeze_strategy: chosen by measurement at fit time (tlkit.run.auto)

# numpy, scikit-learn and torch take seeds in [0, 2**32): refuse others at load time.
SEED_MAX = 2**32 - 1
# A class weight above this overflows the loss of a few thousand examples in float32.
MAX_CLASS_WEIGHT = 1e6


class UnfreezeStep(Strict):
    """From the start of ``epoch`` (counted from 0), the selected top groups train too."""

    epoch: int = Field(ge=0)
    unfreeze: str

    @field_validator("unfreeze")
    @classmethod
    def _selector(cls, v: str) -> str:
        if not SELECTOR_RE.match(v):
            raise ValueError(
                f"unknown selector {v!r}; use last_block, last_two_blocks, last_N_blocks "
                "(for example last_3_blocks) or all"
            )
        return v


class HeadConfig(Strict):
    type: Literal["linear", "mlp"] = "linear"
    hidden_size: int = Field(default=256, ge=1, le=65536)


class LayerGroupPattern(Strict):
    """A user-defined layer group: every backbone parameter whose name matches ``pattern``
    (``re.search``) and no earlier pattern. Listed from input to output."""

    name: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except (re.error, OverflowError, RecursionError) as e:
            raise ValueError(f"not a valid regular expression: {e}") from None
        return v


class CacheConfig(Strict):
    """Frozen layers are computed once: pooled features when the whole backbone is frozen,
    activations at the cut when only its bottom is. ``max_mb`` caps what is held in memory;
    above it the run falls back to the full forward. ``disk`` keeps pooled features for later
    runs on the same backbone, preprocessing and data."""

    enabled: bool = True
    max_mb: int = Field(default=2048, ge=1, le=1_000_000)
    disk: bool = True

    @model_validator(mode="after")
    def _cap_used(self) -> "CacheConfig":
        if not self.enabled and self.max_mb != 2048:
            raise ValueError("cache.max_mb caps the activation cache, which cache.enabled: "
                             "false turns off; remove max_mb, or set enabled: true")
        return self


class TransferConfig(Strict):
    source_model: str
    pretrained_weights: str = "packaged"
    # a name in tlkit.strategies' registry, or auto: fit chooses one by short trials
    # (tlkit.run.auto) inside auto_budget
    freeze_strategy: str = "all_frozen"
    # auto: the whole fit takes about this many times the default fit (all_frozen: loading the
    # backbone and one forward pass over every split); the trials and the pick's training get
    # the rest
    auto_budget: float = Field(default=5.0, ge=1, le=1000)
    top_n: int = Field(default=2, ge=0, description="trainable top groups for top_n_unfrozen")
    unfreeze_schedule: list[UnfreezeStep] = Field(default_factory=list)
    # lp_ft: epochs of the linear probe (phase 1, head only) before fine-tuning everything;
    # null: half the epochs.
    lp_epochs: int | None = Field(default=None, ge=1)
    lora: LoraSettings | None = None  # freeze_strategy lora; null: the defaults
    # L2-SP (Li et al., 2018): l2sp_lambda * ||theta - theta_pretrained||^2 over the backbone,
    # in place of its weight decay; 0 turns it off.
    l2sp_lambda: float = Field(default=0.0, ge=0, le=1e6)
    head_lr: float = Field(default=1e-3, gt=0, le=10)
    backbone_lr: float = Field(default=1e-4, gt=0, le=10)
    lr_decay_per_layer: float = Field(default=0.5, gt=0, le=1)
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    # warmup over this fraction of all optimizer steps, where that is more than warmup_steps
    warmup_ratio: float = Field(default=0.06, ge=0, lt=1)
    # At least this many optimizer steps in all: at small data each epoch then makes several
    # passes over the training split (tlkit.train.length); 0 turns it off.
    min_steps: int = Field(default=100, ge=0, le=10_000_000)
    # How the training batches are drawn: shuffle (each example once per pass) or balanced
    # (single-label: examples drawn with replacement so each class is drawn equally often).
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(default=0.01, ge=0, le=1)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    epochs: int = Field(default=10, ge=1, le=10000)
    batch_size: int = Field(default=32, ge=1, le=65536)
    mixed_precision: bool = False
    early_stopping_patience: int | None = Field(default=3, ge=1)
    # The best epoch (whose weights are kept) and early stopping follow the validation loss, or
    # the task's metric (accuracy, macro-F1); a tie goes to the later epoch.
    model_selection: Literal["val_loss", "val_metric"] = "val_loss"
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    head: HeadConfig = Field(default_factory=HeadConfig)
    # A linear head over frozen, cached features (all_frozen; the head-only phase of lp_ft and
    # gradual) is fitted to convergence by a convex solver (convex), or trained by SGD epochs.
    head_solver: Literal["convex", "sgd"] = "convex"
    # When the solved head is the whole run (all_frozen), fit it at the chosen strength on the
    # training and validation splits together (every label; its validation metrics are then
    # in-sample), as scikit-learn's LogisticRegressionCV refits on all its data.
    head_refit: bool = True
    # Single-label training loss weights: none; auto (n / (classes * count), scikit-learn's
    # "balanced"); or a weight per class name (unnamed classes weigh 1).
    class_weights: Literal["none", "auto"] | dict[str, float] = "none"
    layer_groups: list[LayerGroupPattern] | None = None
    pooling: Literal["mean", "cls", "pooler"] | None = None
    # Which BatchNorm layers keep their pretrained statistics while training (tlkit.plan.apply
    # norm_stats_mode): true, those of frozen groups; all, every one; false, none; auto, all
    # when the head trains alone before groups unfreeze (gradual, lp_ft), else true.
    freeze_norm_stats: bool | Literal["auto", "all"] = "auto"
    cache: CacheConfig = Field(default_factory=CacheConfig)
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("class_weights", mode="before")
    @classmethod
    def _class_names(cls, v: Any) -> Any:
        # YAML reads `{0: 20}` with the number 0, where the class is the label text "0", and
        # `{yes: 2}` with True: numbers name their text; a boolean or null name is ambiguous.
        if not isinstance(v, dict):
            return v
        out = {}
        for k, w in v.items():
            if isinstance(k, bool) or k is None:
                raise ValueError(f"the class name {k!r} was read by YAML as "
                                 f"{'a boolean' if k is not None else 'null'}; quote it, e.g. "
                                 "{'yes': 2.0}")
            if isinstance(w, float) and not math.isfinite(w):
                raise ValueError(f"the weight of class {str(k)!r} is {w}; give a finite number "
                                 "of 0 or more")
            out[str(k) if isinstance(k, (int, float)) else k] = w
        return out

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, v: Any) -> Any:
        if isinstance(v, dict) and any(not (w >= 0) for w in v.values()):
            raise ValueError("class weights must be numbers of 0 or more, e.g. {rare: 5.0}")
        if isinstance(v, dict) and any(w > MAX_CLASS_WEIGHT for w in v.values()):
            raise ValueError(f"class weights are at most {MAX_CLASS_WEIGHT:g} (a larger one "
                             "overflows the loss); weights are relative: scale them all down")
        if isinstance(v, dict) and v and not any(v.values()):
            # every named class 0: the solver fails, SGD's loss is 0 / 0
            raise ValueError(
                "every class weight given is 0: a class of weight 0 does not count in the loss, "
                "so these would leave only the classes not named (weight 1), or none; give the "
                "classes that should count a positive weight, e.g. {rare: 5.0, common: 1.0}")
        return v

    @field_validator("source_model")
    @classmethod
    def _known_name(cls, v: str) -> str:
        # Registry names are checked here, before anything loads; prefixed names (timm:, hf:,
        # torchvision:) are checked by the backbone registry, which imports those libraries.
        if ":" not in v:
            # local: the registry imports torch, and a config is checked before anything heavy
            from tlkit.backbones.registry import KNOWN

            if v not in KNOWN:
                close = difflib.get_close_matches(v, list(KNOWN), n=1, cutoff=0.4)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(
                    f"unknown backbone {v!r}: {hint}known names: {', '.join(KNOWN)}; or use "
                    "timm:NAME, hf:PATH_OR_ID, torchvision:NAME"
                )
        return v

    @field_validator(
        "head_lr", "backbone_lr", "lr_decay_per_layer", "weight_decay", "dropout", "l2sp_lambda",
        mode="before",
    )
    @classmethod
    def _number(cls, v: Any) -> Any:
        # YAML 1.1 reads 1e-3 as a string; our loader fixes that, --set and Python callers may not.
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                return v
        return v

    @field_validator("freeze_strategy")
    @classmethod
    def _registered(cls, v: str) -> str:
        known = [*strategies.names(), AUTO]
        if v not in known:
            expected = ", ".join(repr(k) for k in known[:-1]) + f" or {known[-1]!r}"
            raise PydanticCustomError("literal_error", "Input should be {expected}",
                                      {"expected": expected})
        return v

    @model_validator(mode="after")
    def _strategy_fits(self) -> "TransferConfig":
        if self.freeze_strategy != AUTO and self.auto_budget != 5.0:
            raise ValueError(f"auto_budget is only used by freeze_strategy auto, not "
                             f"{self.freeze_strategy!r}; remove it or set freeze_strategy: auto")
        if self.freeze_strategy == AUTO:  # every candidate's keys may be given
            return self._l2sp_fits()
        strategy = strategies.get(self.freeze_strategy)
        strategy.check(self)
        for owner, key in strategies.owned_keys():
            if owner != self.freeze_strategy and getattr(self, key) != type(
                    self).model_fields[key].get_default(call_default_factory=True):
                raise ValueError(
                    f"{'the ' + key + ' section' if key == 'lora' else key} is only used by "
                    f"freeze_strategy {owner}, not {self.freeze_strategy!r}; remove it or set "
                    f"freeze_strategy: {owner}")
        return self._l2sp_fits()

    def _l2sp_fits(self) -> "TransferConfig":
        if self.l2sp_lambda > 0 and self.pretrained_weights == "none":
            raise ValueError(
                "l2sp_lambda pulls the backbone toward its pretrained weights, but "
                "pretrained_weights is none (a random start); set l2sp_lambda: 0 or give "
                "pretrained weights"
            )
        return self

    # -- what each component receives: its own frozen, validated view ------------------------

    @property
    def plan_settings(self) -> "PlanSettings":
        return PlanSettings.model_validate(self.model_dump(include=set(PlanSettings.model_fields)))

    @property
    def loop_settings(self) -> "LoopSettings":
        return LoopSettings.model_validate(self.model_dump(include=set(LoopSettings.model_fields)))

    @property
    def cache_settings(self) -> "CacheSettings":
        return CacheSettings(**self.cache.model_dump(), source_model=self.source_model,
                             mixed_precision=self.mixed_precision, batch_size=self.batch_size)

    @property
    def head_settings(self) -> "HeadSettings":
        return HeadSettings(type=self.head.type, hidden_size=self.head.hidden_size,
                            dropout=self.dropout)


class View(BaseModel):
    """A component's settings: a frozen part of the validated config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanSettings(View):
    """What a strategy and the plan read: phases, rates, weight decay, L2-SP."""

    source_model: str
    freeze_strategy: str
    epochs: int
    top_n: int
    unfreeze_schedule: tuple[UnfreezeStep, ...]
    lp_epochs: int | None
    lora: LoraSettings | None
    head_lr: float
    backbone_lr: float
    lr_decay_per_layer: float
    weight_decay: float
    l2sp_lambda: float


class LoopSettings(View):
    """What the training loop reads."""

    epochs: int
    batch_size: int
    mixed_precision: bool
    early_stopping_patience: int | None
    model_selection: Literal["val_loss", "val_metric"]
    head_solver: Literal["convex", "sgd"]
    head_refit: bool
    gradient_accumulation_steps: int
    max_grad_norm: float | None
    warmup_steps: int
    warmup_ratio: float
    min_steps: int
    sampler: Literal["shuffle", "balanced"]
    scheduler: Literal["cosine", "linear", "constant"]
    seed: int
    freeze_norm_stats: bool | Literal["auto", "all"]
    head_lr: float  # the rate of parameters a hook adds (DANN's domain classifier)
    backbone_lr: float  # named in the message of a diverging loss
    weight_decay: float


class CacheSettings(View):
    """What the activation cache reads (and the key of its disk copies)."""

    enabled: bool
    max_mb: int
    disk: bool
    source_model: str
    mixed_precision: bool
    batch_size: int


class HeadSettings(View):
    type: Literal["linear", "mlp"]
    hidden_size: int
    dropout: float


class DataConfig(Strict):
    source: str
    # token_classification: one tag per word (named entities), from CoNLL or JSON-lines files
    task: Literal["single_label", "multi_label", "regression",
                  "token_classification"] = "single_label"
    text_column: str | None = None
    # Sentence pairs (entailment, paraphrase, similarity): the column of each example's second
    # text; the tokenizer encodes (text, text_pair) as one pair (CSV/JSONL/Parquet sources).
    text_pair_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    limit: int | None = Field(default=None, ge=1)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.1, ge=0, lt=1)  # 0: no test split of the source
    # The user's own validation / test sets (a file or folder like `source`, the same columns),
    # in place of the cuts of val_fraction / test_fraction (which are then not used).
    validation: str | None = None
    test: str | None = None
    seed: int = Field(default=0, ge=0, le=SEED_MAX)
    image_size: int | None = Field(default=None, ge=8, le=4096)
    max_length: int | None = Field(default=None, ge=2, le=8192)
    on_bad_image: Literal["skip", "error"] = "skip"
    label_separator: str = Field(default="|", min_length=1)
    group_by_length: bool = True  # text: batch similar lengths together to cut padding
    augment: Literal["none", "flip", "crop_flip"] = "none"  # images, training split only
    # DataLoader worker processes that decode, augment and tokenize the training batches;
    # auto: none on two cores or fewer, else half the cores, at most 4 (tlkit.train.loader)
    workers: Literal["auto"] | Annotated[int, Field(ge=0, le=64)] = "auto"
    # A column of the source naming each example's subgroup (CSV/JSONL/Parquet sources): the
    # test metrics are then also given per subgroup.
    group_column: str | None = None
    # Rows whose label says "no label" (an empty cell, null, NaN, a datasets ClassLabel -1):
    # refuse (exit 2 with their count and rows) or drop them (the count is logged and kept in
    # summary.json's data.unlabelled_dropped), in every source, validation and test set.
    unlabelled: Literal["refuse", "drop"] = "refuse"

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        # a given validation or test set takes the place of its fraction's cut
        val = 0.0 if self.validation is not None else self.val_fraction
        test = 0.0 if self.test is not None else self.test_fraction
        if val + test >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        if self.text_pair_column is not None and self.image_column is not None:
            raise ValueError("data.text_pair_column pairs two texts; it does not go with "
                             "data.image_column: remove one of them")
        if self.label_separator != "|" and self.task != "multi_label":
            raise ValueError(f"data.label_separator splits a cell into several labels, which "
                             f"only data.task multi_label does; task {self.task} would ignore "
                             "it: remove it (or set task: multi_label)")
        return self


class DiagnosticsConfig(Strict):
    """What the diagnostics measure and on how much data; none of it changes the training."""

    # The source-domain reference for divergence (proxy A-distance, MMD), e.g. the kind of data
    # the backbone was pretrained on.
    reference: DataConfig | None = None
    # Labelled data of the source task (labels are the source classifier's class names or
    # indices): its accuracy before and after adaptation measures forgetting.
    source_task: DataConfig | None = None
    # Compare the statistics of the preprocessed inputs with what the backbone expects before
    # training: warn on a mismatch, refuse (exit 2) or skip the check.
    check_preprocessing: Literal["warn", "refuse", "off"] = "warn"

    @field_validator("check_preprocessing", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        return "off" if v is False else v  # YAML 1.1 reads a bare `off` as false
    calibration: bool = True  # ECE before and after temperature scaling on the test split
    baseline_seeds: int = Field(default=1, ge=1, le=20)  # from-scratch runs behind a verdict
    # What `fit --baseline` trains beside the run, each with its own verdict: the same network
    # from scratch (single-label only) and a classical model (TF-IDF or raw pixels + a linear
    # model). Default: both for single-label data, the classical one otherwise.
    baselines: list[Literal["scratch", "classical"]] | None = Field(default=None, min_length=1)
    classical_image_size: int = Field(default=16, ge=4, le=128)  # pixels on a side
    bootstrap: int = Field(default=1000, ge=100, le=100000)  # resamples of the test set
    sample: int = Field(default=1000, ge=50, le=100000)  # examples per side for divergence/CKA
    # Rates of the runs `compare` and `fit --baseline` add: training from scratch (every layer
    # at one rate; default 10x backbone_lr, a random network needs larger steps than a
    # pretrained one) and LoRA's matrices (default 10x backbone_lr, one rate for all layers).
    scratch_lr: float | None = Field(default=None, gt=0, le=10)
    lora_lr: float | None = Field(default=None, gt=0, le=10)
    # data.source, data.validation and data.test naming the same data (one file by any
    # spelling, byte-identical files, folders of identical files) is refused before anything
    # trains; true runs anyway. Rows shared between the splits are counted either way
    # (summary.json's data.overlap).
    allow_overlap: bool = False


class PretrainConfig(Strict):
    """Continued self-supervised pretraining on the unlabelled target data (``tlkit
    pretrain``). Text: masked-LM, or contrastive (unsupervised SimCSE); ``auto`` picks by what
    the backbone was trained with (a checkpoint with a masked-LM head: mlm; a sentence encoder
    without one: simcse). Images: contrastive (SimCLR, two augmented views) on the top
    ``top_groups`` layer groups."""

    objective: Literal["auto", "mlm", "simcse", "tsdae", "simclr"] = "auto"
    # the contrastive temperature (default: simcse 0.05, Gao et al.'s; simclr 0.2)
    temperature: float | None = Field(default=None, gt=0, le=10)
    # a share of the texts held out: their loss under the objective stops the pretraining when
    # it stops improving (after ``patience`` epochs), and CKA to the start is measured on them
    held_out: float = Field(default=0.05, ge=0, lt=0.5)
    patience: int | None = Field(default=1, ge=1, le=1000)
    epochs: int = Field(default=1, ge=1, le=1000)
    lr: float | None = Field(default=None, gt=0, le=1)  # default: text 5e-5, images 1e-4
    # images: the top layer groups that train (the rest keep their weights and statistics)
    top_groups: int = Field(default=2, ge=1, le=1000)
    batch_size: int = Field(default=32, ge=1, le=4096)
    mask_probability: float = Field(default=0.15, gt=0, lt=1)
    # simcse: each view drops each word with this probability (0: dropout views only; 0.15
    # helped on Rotten Tomatoes, bench/README.md); tsdae: the share of words deleted from the
    # encoder's input (the paper's 0.6 where this is left at simcse's default)
    word_deletion: float = Field(default=0.15, ge=0, lt=1)
    max_examples: int | None = Field(default=None, ge=1)  # a sample of the target texts
    warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    weight_decay: float = Field(default=0.01, ge=0, le=1)


class AdaptationConfig(Strict):
    """Unlabelled target data and the method that adapts the model to it. ``dann``, ``mmd`` and
    ``coral`` add an alignment loss between source and target features to the task loss (times
    ``weight``), so they need trainable backbone layers; ``adabn`` re-estimates the BatchNorm
    statistics on the target after training."""

    # auto: trains each method (none, adabn, and dann, mmd and coral at each of auto_weights)
    # and keeps the one the label-free score picks (tlkit.adapt.label_free): no target label is
    # used to choose; where the target has labels they only report how the pick did
    method: Literal["none", "dann", "mmd", "coral", "adabn", "auto"] = "none"
    # Unlabelled target inputs (any data source; labels, where it has them, are used only to
    # report the target metrics after training). With method none the target is only
    # measured: proxy A-distance and, with labels, its metrics.
    target: DataConfig | None = None
    weight: float = Field(default=1.0, ge=0, le=1000)
    dann_gamma: float = Field(default=10.0, gt=0, le=1000)  # DANN's coefficient schedule
    target_limit: int | None = Field(default=None, ge=1)  # target examples used (a sample)
    auto_weights: list[Annotated[float, Field(gt=0, le=1000)]] = Field(
        default_factory=lambda: [0.1, 1.0], min_length=1, max_length=8)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)

    @model_validator(mode="after")
    def _target_given(self) -> "AdaptationConfig":
        if self.method != "none" and self.target is None:
            raise ValueError(f"adaptation method {self.method} needs unlabelled target data: "
                             "add adaptation.target with a source, e.g. {source: my_images/}")
        if self.target_limit is not None and self.target is None:
            raise ValueError("adaptation.target_limit samples the target data, but there is no "
                             "adaptation.target: remove target_limit, or add a target")
        return self


class MlflowConfig(Strict):
    """Where ``fit`` logs to MLflow: params, per-epoch metrics, the summary, the run directory."""

    # A tracking URI: a local folder (default mlruns/, MLflow's file store), file:///...,
    # sqlite:///mlflow.db (needs the full mlflow package) or http(s)://a-tracking-server
    uri: str = Field(default="mlruns", min_length=1)
    experiment: str = Field(default="tlkit", min_length=1)


class TrackingConfig(Strict):
    mlflow: MlflowConfig | None = None  # `tracking: {mlflow: {}}` logs to ./mlruns


class Config(Strict):
    transfer_config: TransferConfig
    data: DataConfig
    diagnostics: DiagnosticsConfig = Field(default_factory=DiagnosticsConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _sampler_fits(self) -> "Config":
        if self.transfer_config.sampler == "balanced" and self.data.task != "single_label":
            raise ValueError(
                f"sampler balanced draws each class equally often, which needs single-label "
                f"data; data.task is {self.data.task}: set sampler: shuffle")
        if self.transfer_config.class_weights != "none" and self.data.task in (
                "multi_label", "regression"):
            raise ValueError(
                f"transfer_config.class_weights weighs the classes of single-label (and token) "
                f"classification; data.task {self.data.task} would ignore it: remove it")
        return self

    @model_validator(mode="after")
    def _baselines_fit(self) -> "Config":
        chosen = self.diagnostics.baselines
        tokens = self.data.task == "token_classification"
        if chosen is not None and "classical" in chosen and tokens:
            raise ValueError(
                "diagnostics.baselines names classical, which classifies whole texts; "
                "data.task is token_classification: set baselines: [scratch]")
        if chosen is not None and "scratch" in chosen and self.data.task not in (
                "single_label", "token_classification"):
            raise ValueError(
                f"diagnostics.baselines names scratch, whose verdict compares test accuracy of "
                f"single-label runs; data.task is {self.data.task}: set baselines: [classical]")
        if chosen is not None and len(set(chosen)) != len(chosen):
            raise ValueError("diagnostics.baselines names a baseline twice; list each once")
        return self

    def baselines(self) -> list[str]:
        """The baselines `fit --baseline` trains (``diagnostics.baselines``, or its default for
        the task)."""
        if self.diagnostics.baselines is not None:
            return list(self.diagnostics.baselines)
        if self.data.task == "token_classification":
            return ["scratch"]
        return ["scratch", "classical"] if self.data.task == "single_label" else ["classical"]

    @model_validator(mode="after")
    def _tokens_fit(self) -> "Config":
        """What token classification does not do (yet): say so before anything loads."""
        if self.data.task != "token_classification":
            return self
        if self.transfer_config.freeze_strategy == AUTO:
            raise ValueError("freeze_strategy auto is for sequence tasks; for "
                             "token_classification choose a strategy (none, top_n_unfrozen, "
                             "lora, all_frozen, ...), or compare them with tlkit compare")
        if self.adaptation.target is not None:
            raise ValueError("adaptation aligns whole-sequence features; it does not apply to "
                             "data.task token_classification: remove the adaptation section")
        return self

    @model_validator(mode="after")
    def _adaptation_trains(self) -> "Config":
        if self.adaptation.method == "auto" and self.data.task != "single_label":
            raise ValueError(
                f"adaptation method auto picks by the target predictions of single-label "
                f"classes; data.task is {self.data.task}: name a method (dann, mmd, coral, "
                "adabn)")
        if self.adaptation.method == "auto" and self.transfer_config.freeze_strategy == AUTO:
            raise ValueError(
                "adaptation method auto trains each adaptation on the config's strategy; "
                "freeze_strategy auto would run its own trials inside each: choose a strategy "
                "(e.g. none or top_n_unfrozen), or name an adaptation method")
        if (self.adaptation.method in ("dann", "mmd", "coral")
                and self.transfer_config.freeze_strategy in ("all_frozen", AUTO)):
            raise ValueError(
                f"adaptation method {self.adaptation.method} aligns features by training the "
                f"backbone, but freeze_strategy {self.transfer_config.freeze_strategy} may train "
                "only the head; choose "
                "top_n_unfrozen, gradual, none or lora, or adaptation method adabn")
        return self


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------


class DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"{key!r} on lines {first} and {second}")
        self.key, self.first, self.second = key, first, second


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 (no dot, which YAML 1.1 requires) as a float, and refuses a
    key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise DuplicateKey(key, seen[key], line)
                seen[key] = line
            except TypeError:  # an unhashable key: the base class says so
                break
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

# The concept document prints schedule entries as `- epoch: 3, unfreeze: "last_block"`.
_FLOW_PAIR_RE = re.compile(r"^(\s*)-\s+(\w+)\s*:\s*([^,{}\[\]]+?)\s*,\s*(\w+)\s*:\s*(.+?)\s*$")


def _yaml_error(path: str, text: str, e: yaml.YAMLError) -> UserError:
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = mark.line + 1 if mark else None
    col = mark.column + 1 if mark else None
    lines = text.splitlines()
    # Look for the concept's two-keys-on-one-line form near the error.
    for i in ([line - 1] if line else []) + list(range(len(lines))):
        if 0 <= i < len(lines):
            m = _FLOW_PAIR_RE.match(lines[i])
            if m:
                k1, v1, k2, v2 = m.group(2), m.group(3), m.group(4), m.group(5)
                v1, v2 = v1.strip().strip("\"'"), v2.strip().strip("\"'")
                fix = f"{m.group(1)}- {{{k1}: {v1}, {k2}: {v2}}}"
                return UserError(
                    f"{path}: line {i + 1}, column {len(m.group(1)) + 3}: "
                    f"{lines[i].strip()!r} is not valid YAML (two keys on one list line); "
                    f"fix: write it as a mapping in braces: {fix.strip()}"
                )
    where = f"line {line}, column {col}" if line else "somewhere"
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    snippet = f": {lines[line - 1].strip()!r}" if line and line <= len(lines) else ""
    return UserError(
        f"{path}: invalid YAML at {where}{snippet}: {problem}\n"
        "  fix: check the indentation and quoting on that line; a list entry with several keys "
        "is written - {key: value, key2: value2}"
    )


# A config is a few dozen values; anchors and aliases nested inside each other can expand a
# small file into billions (the "billion laughs"), which validation would walk one by one.
MAX_YAML_VALUES = 100_000


def _expanded_size(x: Any, memo: dict[int, int], active: set[int]) -> int:
    if not isinstance(x, (dict, list)):
        return 1
    key = id(x)
    if key in memo:
        return memo[key]
    if key in active:
        raise ValueError("an alias refers to the value that holds it")
    active.add(key)
    items = [v for kv in x.items() for v in kv] if isinstance(x, dict) else x
    n = 1
    for item in items:
        n = min(n + _expanded_size(item, memo, active), MAX_YAML_VALUES + 1)
    active.discard(key)
    memo[key] = n
    return n


def parse_yaml(text: str, path: str = "<config>") -> Any:
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except DuplicateKey as e:
        raise UserError(
            f"{path}: the key {e.key!r} is given twice in one section, on lines {e.first} and "
            f"{e.second}; YAML would keep only the second silently. Merge the two into one "
            "(e.g. one transfer_config: block)") from None
    except yaml.constructor.ConstructorError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise UserError(
            f"{path}: {where}: {e.problem}; tlkit loads YAML safely and never builds objects from "
            "tags\n  fix: remove the !tag and write plain values"
        ) from None
    except yaml.YAMLError as e:
        raise _yaml_error(path, text, e) from None
    except RecursionError:
        raise UserError(f"{path}: the YAML is nested too deeply to read; a config needs a few "
                        "levels: check the brackets and indentation") from None
    except Exception as e:  # noqa: BLE001
        # PyYAML's constructors for explicit tags fail with whatever Python raises on a bad
        # value (!!float x: ValueError; !!timestamp 2001-12-14:: AttributeError)
        raise UserError(f"{path}: a tagged value cannot be read ({type(e).__name__}: {e}); "
                        "fix: remove the !!tag and write a plain value") from None
    try:
        n = _expanded_size(data, {}, set())
    except (ValueError, RecursionError) as e:
        reason = str(e) if isinstance(e, ValueError) else "it is nested too deeply"
        raise UserError(f"{path}: the YAML cannot be used as a config: {reason}; write the "
                        "values out plainly") from None
    if n > MAX_YAML_VALUES:
        raise UserError(f"{path}: the YAML expands to more than {MAX_YAML_VALUES:,} values "
                        "(anchors and aliases repeated inside each other); a config holds a few "
                        "dozen: write the values out plainly")
    return data


def parse_value(text: str) -> Any:
    """A --set value, read as a YAML scalar or flow collection (so 3e-4 is a float)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except Exception:  # noqa: BLE001 - not YAML (or a bad !!tag): the value is the text itself
        return text


# --------------------------------------------------------------------------------------------------
# Overrides and validation
# --------------------------------------------------------------------------------------------------


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise UserError(
            f"--set {assignment!r}: expected KEY=VALUE, for example --set transfer_config.head_lr=3e-4"
        )
    key, _, value = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise UserError(f"--set {assignment!r}: the key is empty")
    node: Any = raw
    for i, p in enumerate(parts[:-1]):
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {'.'.join(parts[:i])} is not a section")
        node = node.setdefault(p, {})
    if not isinstance(node, dict):
        raise UserError(f"--set {key}: {'.'.join(parts[:-1])} is not a section")
    node[parts[-1]] = parse_value(value)


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid field names of the model at ``loc`` (a pydantic error location, without the key)."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        ann = field.annotation
        model = _model_in(ann)
        if model is None:
            return []
    return list(model.model_fields)


def _model_in(ann: Any) -> Any:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for a in getattr(ann, "__args__", ()) or ():
        m = _model_in(a)
        if m is not None:
            return m
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _explain(e: ValidationError, source: str) -> UserError:
    msgs = []
    for err in e.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic reports which member of a union failed; drop those tags
        loc = tuple(p for p in loc if p not in ("list[UnfreezeStep]", "list[LayerGroupPattern]"))
        dotted = _format_loc(loc)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            valid = _fields_at(loc[:-1])
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            parent = _format_loc(loc[:-1]) or "the top level"
            msgs.append(
                f"unknown key {key!r} at {dotted}: {hint}valid keys in {parent}: {', '.join(valid)}"
            )
        elif err["type"] == "missing":
            msgs.append(f"missing required key {dotted}")
        elif err["type"] == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            msgs.append(f"{dotted}: {err['input']!r} is not one of {allowed}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            where = f"{dotted}: " if dotted else ""
            shown = "" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})"
            msgs.append(f"{where}{msg}{shown}")
    return UserError(f"{source}: invalid config:\n  " + "\n  ".join(msgs))


def validate(raw: Any, source: str = "<config>") -> Config:
    if not isinstance(raw, dict):
        raise UserError(
            f"{source}: the config must be a mapping with transfer_config and data sections, "
            f"got {type(raw).__name__}"
        )
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise _explain(e, source) from None


def derive(cfg: Config, source: str, **sections: dict[str, Any]) -> Config:
    """``cfg`` with some keys changed (``transfer_config={...}``, ``data={...}``), validated
    again: a derived config is checked like a user's. The keys the user set (pydantic's
    ``model_fields_set``) are those of ``cfg`` and the changed ones, so a derived config still
    tells the user's settings from the defaults (``freeze_strategy: auto`` sets rates only where
    the user left them)."""
    raw = cfg.model_dump(mode="json")
    for name, changes in sections.items():
        raw[name].update(changes)
    new = validate(raw, source)
    for name, changes in sections.items():  # what the user set stays told apart from defaults
        getattr(new, name).__pydantic_fields_set__ = (getattr(cfg, name).model_fields_set
                                                      | set(changes))
    return new


def without_strategy_keys(tc: dict[str, Any]) -> dict[str, Any]:
    """A transfer_config (as a dict) with every strategy's own keys back at their defaults: the
    start of a variant with another strategy."""
    for _, key in strategies.owned_keys():
        tc[key] = TransferConfig.model_fields[key].get_default(call_default_factory=True)
    return tc


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} not found; give the path to a YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config {str(p)!r}: {e}") from None
    raw = parse_yaml(text, str(p))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{p}: the config must be a mapping with transfer_config and data sections")
    for o in overrides:
        apply_override(raw, o)
    return validate(raw, str(p))


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
