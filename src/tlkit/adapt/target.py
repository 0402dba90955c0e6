"""The target side of a run with ``adaptation``: its data through the backbone's preprocessing,
the alignment loss, and the report after training (proxy A-distance between source and target
features before and after adaptation; target metrics where the target data has labels), and the
labelled target test set (``adaptation.target.test``), read as ``data.test`` is and measured
as the source's test split is, with intervals."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from tlkit.adapt.adabn import adabn, has_batchnorm
from tlkit.adapt.label_free import information_maximisation
from tlkit.adapt.losses import build_adapter
from tlkit.config import Config
from tlkit.data import build_dataset, load_source
from tlkit.data.cells import image_cell, read_cells, text_cell
from tlkit.data.images import is_image_file
from tlkit.data.sources import input_column, load_given, resolve_source, table_format
from tlkit.data.types import LabelledData
from tlkit.diagnose.divergence import proxy_a_distance
from tlkit.diagnose.features import layer_features
from tlkit.errors import UserError
from tlkit.inputs import subset
from tlkit.metrics import bootstrap_intervals
from tlkit.train.evaluate import evaluate_split, predict_outputs

TEST_KEY = "adaptation.target.test"


@dataclass
class Target:
    method: str
    source: str
    train: Any  # the target examples the adaptation uses (target_limit of them)
    labelled: Any | None  # all target examples with labels on the source's classes, or None
    loss: torch.nn.Module | None
    n_groups: int
    sample: int
    seed: int
    pad_before: dict[str, Any] = field(default_factory=dict)
    labelled_is_train: bool = False  # labelled holds the examples of train, in its order
    test: Any | None = None  # adaptation.target.test as the model sees it, or None

    def pad(self, backbone: Any, source: Any, collate: Any, device: torch.device,
            mixed_precision: bool) -> dict[str, Any]:
        """Proxy A-distance between the backbone's pooled features of a sample of the source's
        training split and one of the target."""
        rng = np.random.default_rng(self.seed)
        si = np.sort(rng.permutation(len(source))[: self.sample]).tolist()
        ti = np.sort(rng.permutation(len(self.train))[: self.sample]).tolist()
        kw: dict[str, Any] = {"device": device, "mixed_precision": mixed_precision}
        fs, _ = layer_features(backbone, source, collate, self.n_groups, [self.n_groups],
                               indices=si, **kw)
        ft, _ = layer_features(backbone, self.train, collate, self.n_groups, [self.n_groups],
                               indices=ti, **kw)
        return proxy_a_distance(fs[self.n_groups], ft[self.n_groups], seed=self.seed)

    def measures(self, model: Any, collate: Any, device: torch.device, task: str,
                 classes: list[str] | None, tc: Any) -> dict[str, Any]:
        """The model on the target: the label-free score (single-label) and, where the target
        has labels, its metrics."""
        out: dict[str, Any] = {}
        logits = None
        if self.labelled is not None:
            m, outputs, _ = evaluate_split(model, self.labelled, collate, task, tc.batch_size,
                                           device, classes, tc.mixed_precision,
                                           return_outputs=True)
            out["target_test"] = {k: v for k, v in m.items()
                                  if k in ("loss", "accuracy", "f1_macro")}
            out["target_test"]["n"] = len(self.labelled)
            if self.labelled_is_train:  # the same examples: one pass serves both
                logits = outputs
        if task == "single_label":  # the label-free measure (tlkit.adapt.label_free)
            if logits is None:
                logits, _ = predict_outputs(model, self.train, collate, tc.batch_size, device,
                                            tc.mixed_precision)
            probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), dim=1).numpy()
            out["target_im"] = round(information_maximisation(probs), 4)
        return out

    def test_metrics(self, model: Any, collate: Any, device: torch.device, task: str,
                     classes: list[str] | None, tc: Any, resamples: int) -> dict[str, Any] | None:
        """The model on the labelled target test set: the metrics the source's test split
        gets, its size, and 95% bootstrap intervals of the headline metrics (as the model card
        gives the source's); None without one."""
        if self.test is None:
            return None
        m, outputs, targets = evaluate_split(model, self.test, collate, task, tc.batch_size,
                                             device, classes, tc.mixed_precision,
                                             return_outputs=True)
        found = bootstrap_intervals(outputs, targets, task, resamples, seed=0)
        intervals: dict[str, Any] = {k: [round(lo, 4), round(hi, 4)]
                                     for k, (lo, hi) in found.items()}
        return {**m, "n": len(self.test),
                **({"intervals": {"level": 0.95, "resamples": resamples, **intervals}}
                   if intervals else {})}

    def report(self, model: Any, source: Any, collate: Any, device: torch.device, task: str,
               classes: list[str] | None, tc: Any) -> dict[str, Any]:
        after = self.pad(model.backbone, source, collate, device, tc.mixed_precision)
        out: dict[str, Any] = {
            "method": self.method, "target": self.source, "target_examples": len(self.train),
            "pad_before": self.pad_before["pad"], "pad_after": after["pad"],
            "domain_error_before": self.pad_before["domain_error"],
            "domain_error_after": after["domain_error"], "pad_sample": self.sample,
        }
        out.update(self.measures(model, collate, device, task, classes, tc))
        if self.method == "none" and task == "single_label" and has_batchnorm(model.backbone):
            # what AdaBN would make of this model (its statistics re-estimated on the target),
            # measured on a copy: adaptation method auto's AdaBN candidate, and a hint for a
            # user who measured the target
            adapted = copy.deepcopy(model)
            adabn(adapted.backbone, self.train, collate, device, max(tc.batch_size, 64))
            out["adabn"] = self.measures(adapted, collate, device, task, classes, tc)
        return out


def load_unlabelled(data_cfg: Any) -> Any:
    """Target inputs without labels: a table's input column, or every image file under a
    folder (class subfolders or none). Each gets the placeholder class "(unlabelled)"."""
    import pandas as pd


    kind, where = resolve_source(data_cfg.source)
    if kind == "folder":
        files = sorted(p for p in Path(where).rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise UserError(f"adaptation.target {where} holds no image files")
        return LabelledData(str(where), "image", "single_label", list(files),
                            np.zeros(len(files), dtype=np.int64), ["(unlabelled)"])
    if kind != "table":
        raise UserError(f"adaptation.target {data_cfg.source}: give a folder or a table")
    path = Path(where)
    fmt = table_format(path)
    try:
        frame = (pd.read_parquet(path) if fmt == "parquet" else
                 pd.read_json(path, lines=True, dtype=False) if fmt == "jsonl" else
                 # as training tables are read: 'NA', 'None' or 'nan' are texts, not gaps
                 pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", dtype=str,
                             keep_default_na=False, na_values=[""]))
    except Exception as e:  # noqa: BLE001 - every parser has its own errors
        raise UserError(f"cannot read {path} ({e}); fix the file") from None
    modality, column = input_column(frame, data_cfg, path)
    values = _target_cells(frame[column].tolist(), modality, column, path)
    if not values:
        raise UserError(f"column {column!r} of {path} holds no inputs")
    inputs: list[Any] = values
    if modality == "image":
        inputs = [p if p.is_absolute() else path.parent / p
                  for p in (Path(v).expanduser() for v in values)]
    return LabelledData(str(path), modality, "single_label", inputs,
                        np.zeros(len(inputs), dtype=np.int64), ["(unlabelled)"])


def _target_cells(values: list[Any], modality: str, column: str, path: Path) -> list[str]:
    """The inputs of an unlabelled target column through the same cell checks as training
    data (``tlkit.data.cells``): an empty cell is a gap in the pool and is left out; a cell
    that is not a text or an image path (a number, a list, a dict, undecodable bytes) is an
    error naming its rows, never read as its repr."""
    out, _, wrong = read_cells(values, text_cell if modality == "text" else image_cell)
    if wrong:
        shown = "; ".join(f"data row {i + 1}: {why}" for i, why in wrong[:5])
        raise UserError(f"column {column!r} of adaptation.target {path} holds {len(wrong)} "
                        f"cell(s) that are not {'texts' if modality == 'text' else 'image paths'}"
                        f" ({shown}{' ...' if len(wrong) > 5 else ''}); fix or remove those rows")
    return out


def load_target(data_cfg: Any, classes: list[str] | None) -> tuple[Any, bool]:
    """The target data and whether its labels name the source's classes (then the target
    metrics can be reported); a target without usable labels is read as unlabelled. Its test
    set is not part of it (``load_target_test``)."""
    if getattr(data_cfg, "test", None) is not None and hasattr(data_cfg, "model_copy"):
        data_cfg = data_cfg.model_copy(update={"test": None})
    if classes is not None:
        try:
            return load_source(data_cfg, classes), True
        except UserError:
            pass
    try:
        return load_source(data_cfg), False
    except UserError:
        return load_unlabelled(data_cfg), False


def load_target_test(cfg: Config, train: LabelledData, test_limit: int | None = None
                     ) -> LabelledData | None:
    """``adaptation.target.test``, read as ``data.test`` is (``load_given``: the same readers,
    checks and messages, onto the training classes) with the target section's column settings
    (whose task the config holds to the source's: ``rules.target_test_fits``); cut as the
    source's test split is under ``test_limit``. None without one. Cheap: a wrong file fails
    before the model loads."""
    target = cfg.adaptation.target
    if target is None or target.test is None:
        return None
    data = load_given(target, TEST_KEY, target.test, train, cfg.data.source)
    if len(data) == 0:
        raise UserError(f"{TEST_KEY} {target.test} holds no labelled examples; give a file or "
                        "folder of target examples with their labels, or remove the key")
    if test_limit is not None and len(data) > test_limit:
        data = subset(data, test_limit, cfg.data.seed)
    return cast(LabelledData, data)


def prepare_target(cfg: Config, modality: str, classes: list[str] | None, prep: Any,
                   backbone: Any, n_groups: int, source: Any, collate: Any,
                   device: torch.device, event: Callable[[str, dict[str, Any]], None],
                   test: LabelledData | None = None) -> Target:
    ad = cfg.adaptation
    assert ad.target is not None
    event("stage", {"what": f"loading target data {ad.target.source}"})
    data, labelled = load_target(ad.target, classes)
    if data.modality != modality:
        raise UserError(f"adaptation.target {ad.target.source} is {data.modality} data but the "
                        f"source data is {modality}; give target data of the same kind")
    if len(data) == 0:
        raise UserError(f"adaptation.target {ad.target.source} holds no examples")
    used = data
    if ad.target_limit is not None and ad.target_limit < len(data):
        rng = np.random.default_rng(cfg.transfer_config.seed)
        used = data.subset(np.sort(rng.permutation(len(data))[: ad.target_limit]))
    train = build_dataset(used, prep)
    t = Target(ad.method, ad.target.source, train,
               (train if used is data else build_dataset(data, prep)) if labelled else None,
               build_adapter(ad.method, backbone.feature_dim, ad.dann_gamma), n_groups,
               min(cfg.diagnostics.sample, len(source), len(train)), cfg.transfer_config.seed,
               labelled_is_train=labelled and used is data,
               test=None if test is None else build_dataset(test, prep))
    event("stage", {"what": "adaptation: proxy A-distance of the pretrained features"})
    t.pad_before = t.pad(backbone.to(device), source, collate, device,
                         cfg.transfer_config.mixed_precision)
    return t
