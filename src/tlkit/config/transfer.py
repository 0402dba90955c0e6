"""The ``transfer_config`` block (the concept's keys), and the frozen view of it that each
component receives (``plan_settings``, ``loop_settings``, ``cache_settings``,
``head_settings``). Each key's type and range are declared here, but for the keys of one
strategy (``top_n``, ``unfreeze_schedule``, ...), which its file in ``tlkit.strategies``
declares and ``tlkit.config.keys`` merges into ``TransferConfig`` and ``PlanSettings``; what
else a key's value or a combination of keys may not be is checked by ``tlkit.config.rules``,
which these models' validators call.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tlkit.config import rules
from tlkit.strategies.gradual import UnfreezeStep


class Strict(BaseModel):
    # No NaN or infinity in any number: `head_lr: .nan` or `max_grad_norm: .inf` are refused
    # here rather than discovered as a NaN loss.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    def _changed(self) -> set[str]:
        """The keys whose value differs from their default (given or not): what a rule that
        refuses an unused key looks at."""
        return {k for k, f in type(self).model_fields.items()
                if getattr(self, k) != f.get_default(call_default_factory=True)}


# numpy, scikit-learn and torch take seeds in [0, 2**32): refuse others at load time.
SEED_MAX = 2**32 - 1
AUTO_BUDGET = 5.0  # auto_budget's default: a named strategy in auto's place goes back to it


class HeadConfig(Strict):
    type: Literal["linear", "mlp"] = "linear"
    hidden_size: int = Field(default=256, ge=1, le=65536)
    # scale each pooled feature vector to unit length before the head's layers: true, false,
    # or auto: where the head is solved on features compared by cosine (contrastive's trained
    # backbone; a sentence-transformers encoder, trained with its Normalize module, under
    # all_frozen's convex solve); measured in bench/README.md's few_shot section
    normalize: bool | Literal["auto"] = "auto"


class LayerGroupPattern(Strict):
    """A user-defined layer group: every backbone parameter whose name matches ``pattern``
    (``re.search``) and no earlier pattern. Listed from input to output."""

    name: str
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        return rules.regular_expression(v)


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
        rules.cache_cap_used(self.enabled, self._changed())
        return self


class TransferConfig(Strict):
    source_model: str
    pretrained_weights: str = "packaged"
    # a name in tlkit.strategies' registry, or auto: fit chooses one by short trials
    # (tlkit.select.auto) inside auto_budget
    freeze_strategy: str = "all_frozen"
    # auto: the whole fit takes about this many times the default fit (all_frozen: loading the
    # backbone and one forward pass over the training and validation splits, with a floor per
    # labelled example: tlkit.select.auto); the trials and the pick's training get the rest
    auto_budget: float = Field(default=AUTO_BUDGET, ge=1, le=1000)
    # here: each strategy's own keys (its Settings), merged by tlkit.config.keys
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
    # passes over the training split (tlkit.plan.length); 0 turns it off.
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
        return rules.class_names(v)

    @field_validator("class_weights")
    @classmethod
    def _positive_weights(cls, v: Any) -> Any:
        return rules.class_weights(v)

    @field_validator("source_model")
    @classmethod
    def _known_name(cls, v: str) -> str:
        return rules.known_backbone(v)

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
        return rules.registered_strategy(v)

    @model_validator(mode="after")
    def _strategy_fits(self) -> "TransferConfig":
        rules.strategy_fits(self.freeze_strategy, self._changed(), self)
        rules.l2sp_fits(self.l2sp_lambda, self.pretrained_weights)
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
                            dropout=self.dropout, normalize=self.head.normalize,
                            freeze_strategy=self.freeze_strategy, head_solver=self.head_solver)


class View(BaseModel):
    """A component's settings: a frozen part of the validated config."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanSettings(View):
    """What a strategy and the plan read: phases, rates, weight decay, L2-SP."""

    source_model: str
    freeze_strategy: str
    epochs: int
    # here: each strategy's own keys (its Settings), merged by tlkit.config.keys
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
    normalize: bool | Literal["auto"]
    freeze_strategy: str  # normalize auto reads these two
    head_solver: Literal["convex", "sgd"]


