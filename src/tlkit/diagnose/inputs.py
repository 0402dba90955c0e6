"""What a diagnostic needs from a config: the data splits, a backbone with its layer groups and
its own preprocessing, the datasets as the model sees them. The same steps ``fit`` takes, in
the same order (data first, so a wrong path fails before a model loads), without training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tlkit.assemble import assemble
from tlkit.config import Config, DataConfig, TransferConfig, derive, without_strategy_keys
from tlkit.data import build_collate, build_dataset, load_source, make_splits, num_outputs_of
from tlkit.data.transforms import resolve_preprocessing


@dataclass
class Prepared:
    tc: TransferConfig
    splits: Any
    modality: str
    backbone: Any
    groups: list[Any]
    prep: Any
    collate: Any
    train: Any
    val: Any
    test: Any

    @property
    def n_groups(self) -> int:
        return len(self.groups)


def load_splits(data_cfg: DataConfig) -> tuple[Any, str]:
    data = load_source(data_cfg)
    return make_splits(data, data_cfg), data.modality


def prepare(cfg: Config, source_model: str | None = None, pretrained_weights: str | None = None,
            splits: tuple[Any, str] | None = None) -> Prepared:
    """The backbone named in the config, or ``source_model`` / ``pretrained_weights`` in its
    place (a candidate of ``rank``), ready to compute features of the config's data."""
    tc = cfg.transfer_config
    changes = {k: v for k, v in (("source_model", source_model),
                                 ("pretrained_weights", pretrained_weights)) if v is not None}
    if changes:
        # The plan does not matter here: features are computed with everything frozen.
        tc_raw = without_strategy_keys(tc.model_dump(mode="json"))
        tc_raw.update(changes, freeze_strategy="all_frozen", l2sp_lambda=0.0)
        tc = derive(cfg, f"candidate {tc_raw['source_model']}", transfer_config=tc_raw,
                    adaptation={"method": "none"}).transfer_config
    s, modality = splits if splits is not None else load_splits(cfg.data)
    import torch

    torch.manual_seed(tc.seed)  # a random initialisation is the same every time
    asm = assemble(tc, num_outputs_of(s.train), modality=modality,
                   max_length=cfg.data.max_length)
    backbone = asm.model.backbone
    prep = resolve_preprocessing(backbone.preprocessing, cfg.data)
    collate = build_collate(prep)
    return Prepared(tc, s, modality, backbone, asm.groups, prep, collate,
                    build_dataset(s.train, prep), build_dataset(s.val, prep),
                    None if s.test is None else build_dataset(s.test, prep))


def dataset_for(p: Prepared, data_cfg: DataConfig) -> Any:
    """Another data set (a reference, a source task) through this backbone's preprocessing:
    all of it, as one dataset."""
    return build_dataset(load_source(data_cfg), p.prep)
