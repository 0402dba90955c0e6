"""The whole config: the ``transfer_config`` block (``tlkit.config.transfer``) with the
``data``, ``diagnostics``, ``adaptation`` and ``tracking`` sections. Each key's type and range
are declared here; what else a value or a combination of keys may not be is checked by
``tlkit.config.rules``, which these models' validators call (in the order they are declared:
the first refusal of a model is the one reported).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from tlkit.config import rules
from tlkit.config.transfer import SEED_MAX, Strict, TransferConfig


class DataConfig(Strict):
    source: str
    # token_classification: one tag per word (named entities), from CoNLL or JSON-lines files;
    # question_answering: extractive (SQuAD-style), an answer span of a context per question
    task: Literal["single_label", "multi_label", "regression", "token_classification",
                  "question_answering"] = "single_label"
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
    max_length: int | None = Field(default=None, ge=2, le=8192)  # question_answering: 384
    # question_answering only: the context tokens two windows of one long context share (the
    # Hugging Face "doc stride"); default 128
    doc_stride: int | None = Field(default=None, ge=0, le=8192)
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

    @model_validator(mode="before")
    @classmethod
    def _qa_defaults(cls, raw: Any) -> Any:
        """Question answering's own defaults (Hugging Face's run_qa): windows of 384 tokens
        sharing 128; written into config.yaml, so a run says what it used."""
        if isinstance(raw, dict) and raw.get("task") == "question_answering":
            raw = dict(raw)
            for key, value in rules.QA_DEFAULTS.items():
                if raw.get(key) is None:
                    raw[key] = value
        return raw

    @model_validator(mode="after")
    def _fractions(self) -> "DataConfig":
        rules.fractions_leave_training(self.val_fraction, self.test_fraction, self.validation,
                                       self.test)
        rules.one_second_input(self.text_pair_column, self.image_column)
        rules.separator_fits(self.label_separator, self.task)
        rules.stride_fits(self.doc_stride, self.max_length, self.task)
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

    # auto: tries each method (none, adabn, and dann, mmd and coral at each of auto_weights) in
    # short trials inside auto_budget and keeps the one the label-free score picks (tlkit.adapt.label_free): no target label is
    # used to choose; where the target has labels they only report how the pick did
    method: Literal["none", "dann", "mmd", "coral", "adabn", "auto"] = "none"
    # Unlabelled target inputs (any data source; labels, where it has them, are used only to
    # report the target metrics after training). With method none the target is only
    # measured: proxy A-distance and, with labels, its metrics. Its `test` key: a labelled
    # target-domain test file or folder, read as data.test is (the target's column settings,
    # labels among the source's classes), never used to train or choose; summary.json's
    # target_test (with 95% intervals), the report and the model card give its metrics, and
    # the source's test split is then named the source domain test.
    target: DataConfig | None = None
    weight: float = Field(default=1.0, ge=0, le=1000)
    dann_gamma: float = Field(default=10.0, gt=0, le=1000)  # DANN's coefficient schedule
    target_limit: int | None = Field(default=None, ge=1)  # target examples used (a sample)
    auto_weights: list[Annotated[float, Field(gt=0, le=1000)]] = Field(
        default_factory=lambda: [0.1, 1.0], min_length=1, max_length=8)
    # auto's whole fit (short trials by successive halving, then the pick's training) in about
    # this many times one source-only fit's seconds (tlkit.select.adapt_auto); null: every
    # candidate trains its full schedule (the slow, exhaustive choice)
    auto_budget: float | None = Field(default=3.0, ge=1, le=1000)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)

    @model_validator(mode="after")
    def _target_given(self) -> "AdaptationConfig":
        rules.target_given(self.method, self.target is not None, self.target_limit)
        return self


class DistillConfig(Strict):
    """Knowledge distillation (Hinton et al., 2015) from a finished run, the teacher, into this
    run's model, the student (``tlkit distill``): the student trains on the teacher's
    temperature-softened outputs, computed once, plus the labels. Its data section is the
    teacher's, so both are measured on the same test split."""

    teacher: str = Field(min_length=1)  # the teacher's run directory (a finished fit)
    # truncate: a copy of the teacher with fewer layers, initialised from its trained weights
    # (transformers: ``layers`` of its encoder layers, evenly spaced with the first and the
    # last, as DistilBERT took every other layer of BERT; timm EfficientNet-family CNNs: the
    # first block of each stage, the repeated residual blocks dropped); else the student is
    # transfer_config.source_model, loaded with its pretrained weights
    student: Literal["truncate", "backbone"] = "truncate"
    layers: int | None = Field(default=None, ge=1, le=1000)  # truncate, text: default half
    # the softmax temperature of the soft targets; their loss is scaled by T^2 (Hinton et al.)
    temperature: float = Field(default=2.0, gt=0, le=100)
    # the soft targets' weight in the loss; 1 - alpha weighs the labels' loss
    alpha: float = Field(default=0.5, ge=0, le=1)
    # unlabelled inputs the teacher labels for the student (a table's input column or a folder
    # of images), besides the training split: more inputs is where distillation pays
    unlabelled: DataConfig | None = None
    unlabelled_limit: int | None = Field(default=None, ge=1)  # a sample of them


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
    distill: DistillConfig | None = None  # this run is a student (tlkit distill)

    @model_validator(mode="after")
    def _sampler_fits(self) -> "Config":
        tc = self.transfer_config
        rules.sampler_fits(tc.sampler, tc.class_weights, self.data.task)
        return self

    @model_validator(mode="after")
    def _baselines_fit(self) -> "Config":
        rules.baselines_fit(self.diagnostics.baselines, self.data.task)
        return self

    def baselines(self) -> list[str]:
        """The baselines `fit --baseline` trains (``diagnostics.baselines``, or its default for
        the task)."""
        if self.diagnostics.baselines is not None:
            return list(self.diagnostics.baselines)
        if self.data.task in ("token_classification", "question_answering"):
            return ["scratch"]
        return ["scratch", "classical"] if self.data.task == "single_label" else ["classical"]

    @model_validator(mode="after")
    def _tokens_fit(self) -> "Config":
        """What token classification does not do (yet): say so before anything loads."""
        rules.tokens_fit(self.data.task, self.transfer_config.freeze_strategy,
                         self.adaptation.target is not None)
        return self

    @model_validator(mode="after")
    def _answers_fit(self) -> "Config":
        """What question answering cannot train with: say so before anything loads."""
        tc = self.transfer_config
        rules.answers_fit(self.data.task, tc.freeze_strategy, tc.head_solver, tc.head.type,
                          tc.head.normalize, tc.pooling, self.adaptation.target is not None,
                          self.distill is not None)
        return self

    @model_validator(mode="after")
    def _target_test_fits(self) -> "Config":
        t = self.adaptation.target
        if t is not None:
            rules.target_test_fits(t.test, t.task, self.data.task)
        return self

    @model_validator(mode="after")
    def _distill_fits(self) -> "Config":
        if self.distill is not None:
            rules.distill_fits(self.transfer_config.freeze_strategy, self.data.task,
                               self.adaptation.method)
        return self

    @model_validator(mode="after")
    def _adaptation_trains(self) -> "Config":
        rules.adaptation_trains(self.adaptation.method, self.data.task,
                                self.transfer_config.freeze_strategy)
        return self
