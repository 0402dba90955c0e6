"""What a diagnostic needs from a config: the data splits, a backbone with its layer groups and
its own preprocessing, the datasets as the model sees them (``tlkit.inputs``: the same steps
``fit`` takes, in the same order, data first, without augmentation, cache or training)."""

from __future__ import annotations

from typing import Any

from tlkit import strategies
from tlkit.config import AUTO, Config, DataConfig
from tlkit.data import build_dataset, load_source, make_splits
from tlkit.inputs import Inputs, build_inputs, config_for
from tlkit.strategies.base import FEATURE_EXTRACTION


def load_splits(data_cfg: DataConfig) -> tuple[Any, str]:
    data = load_source(data_cfg)
    return make_splits(data, data_cfg), data.modality


def prepare(cfg: Config, source_model: str | None = None, pretrained_weights: str | None = None,
            splits: tuple[Any, str] | None = None) -> Inputs:
    """The backbone named in the config, or ``source_model`` / ``pretrained_weights`` in its
    place (a candidate of ``rank``), ready to compute features of the config's data. A config
    with ``freeze_strategy: auto`` (whose pick ``fit``'s trials make) is read with everything
    frozen, as a candidate is."""
    changes = {k: v for k, v in (("source_model", source_model),
                                 ("pretrained_weights", pretrained_weights)) if v is not None}
    if changes or cfg.transfer_config.freeze_strategy == AUTO:
        # The plan does not matter here: features are computed with everything frozen.
        name = changes.get("source_model", cfg.transfer_config.source_model)
        cfg = config_for(cfg, strategies.with_role(FEATURE_EXTRACTION),
                         {**changes, "l2sp_lambda": 0.0}, reason=f"candidate {name}",
                         sections={"adaptation": {"method": "none"}})
    s, modality = splits if splits is not None else load_splits(cfg.data)
    return build_inputs(cfg, s, modality, training=False)


def dataset_for(p: Inputs, data_cfg: DataConfig) -> Any:
    """Another data set (a reference, a source task) through this backbone's preprocessing:
    all of it, as one dataset."""
    return build_dataset(load_source(data_cfg), p.prep)
