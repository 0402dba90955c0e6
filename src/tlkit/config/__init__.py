"""The run's configuration: the concept's ``transfer_config`` block plus a ``data`` section.

Loaded from YAML (safely), overridden with ``--set a.b=value``, and validated with pydantic before
any model or data loads. Every user mistake becomes a ``UserError`` whose message names the place
(dotted path, or YAML line and column) and the fix.

- ``transfer.py``: the transfer_config block, and the frozen view each component gets of it
  (``plan_settings``, ``loop_settings``, ``cache_settings``, ``head_settings``);
- ``schema.py``: the whole ``Config`` (data, diagnostics, adaptation, tracking);
- ``keys.py``: each strategy's own keys (its ``Settings``) merged into the flat transfer_config;
- ``rules.py``: what a value or a combination of keys may not be, beyond types and ranges;
- ``loading.py``: safe YAML and its guards; ``validation.py``: pydantic's errors made readable;
- ``overrides.py``: ``--set``, ``load_config`` and ``derive``.

Import from here (``from tlkit.config import Config, load_config``).
"""

from tlkit.config.loading import MAX_YAML_VALUES, DuplicateKey, dump_config, parse_value, parse_yaml
from tlkit.config.keys import strategy_fields
from tlkit.config.overrides import apply_override, derive, load_config, without_strategy_keys
from tlkit.config.rules import AUTO, MAX_CLASS_WEIGHT
from tlkit.config.schema import (
    AdaptationConfig,
    Config,
    DataConfig,
    DiagnosticsConfig,
    DistillConfig,
    MlflowConfig,
    PretrainConfig,
    TrackingConfig,
)
from tlkit.config.transfer import (
    AUTO_BUDGET,
    SEED_MAX,
    CacheConfig,
    CacheSettings,
    HeadConfig,
    HeadSettings,
    LayerGroupPattern,
    LoopSettings,
    PlanSettings,
    Strict,
    TransferConfig,
    UnfreezeStep,
    View,
)
from tlkit.config.validation import validate
from tlkit.strategies.gradual import SELECTOR_RE

__all__ = [
    "AUTO", "AUTO_BUDGET", "MAX_CLASS_WEIGHT", "MAX_YAML_VALUES", "SEED_MAX", "SELECTOR_RE",
    "AdaptationConfig", "CacheConfig", "CacheSettings", "Config", "DataConfig",
    "DiagnosticsConfig", "DistillConfig", "DuplicateKey", "HeadConfig", "HeadSettings", "LayerGroupPattern",
    "LoopSettings", "MlflowConfig", "PlanSettings", "PretrainConfig", "Strict", "TrackingConfig",
    "TransferConfig", "UnfreezeStep", "View",
    "apply_override", "derive", "dump_config", "load_config", "parse_value", "parse_yaml",
    "strategy_fields", "validate", "without_strategy_keys",
]
