"""The run directory's model/: weights in safetensors and a JSON with everything predict needs
(backbone architecture, head, task, labels, preprocessing, tokenizer files). Loading it needs no
training config and no network."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tlkit.backbones import backbone_from_spec
from tlkit.backbones.base import Preprocessing, TextPreprocessing, preprocessing_from_dict
from tlkit.data import load_tokenizer
from tlkit.errors import UserError
from tlkit.files import deferred_signals, disk_full, write_error
from tlkit.heads import build_head
from tlkit.backbones.lora import apply_lora_spec, lora_spec
from tlkit.model import TransferModel
from tlkit.model_json import checked

META = "model.json"
WEIGHTS = "model.safetensors"


@dataclass
class SavedModel:
    model: TransferModel
    meta: dict[str, Any]
    preprocessing: Preprocessing

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def pairs(self) -> dict[str, Any] | None:
        """For a sentence-pair model, the columns it was trained on (``text_column``, None
        where found by its default name, and ``text_pair_column``); None otherwise."""
        pairs = self.meta.get("pairs")
        return pairs if isinstance(pairs, dict) else None


def save_model(folder: Path, model: TransferModel, preprocessing: Preprocessing,
               head: dict[str, Any], task: str, classes: list[str] | None,
               extra: dict[str, Any] | None = None) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    try:
        with deferred_signals():  # Ctrl-C waits until model/ is whole, old or new
            _write_model(tmp, folder, model, preprocessing, head, task, classes, extra)
    except Exception as e:
        # A full disk: the folder is written beside model/ and moved in place at the end, so
        # nothing is half-written; the run's checkpoint is untouched.
        if isinstance(e, OSError) or disk_full(e):
            shutil.rmtree(tmp, ignore_errors=True)
            raise write_error(folder, e) from None
        raise


def _write_model(tmp: Path, folder: Path, model: TransferModel, preprocessing: Preprocessing,
                 head: dict[str, Any], task: str, classes: list[str] | None,
                 extra: dict[str, Any] | None) -> None:
    from safetensors.torch import save_model as st_save

    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    prep = preprocessing.to_dict()
    if isinstance(preprocessing, TextPreprocessing):
        load_tokenizer(preprocessing.tokenizer).save_pretrained(str(tmp / "tokenizer"))
        prep["tokenizer"] = "tokenizer"  # relative to model/, so the folder can move
    st_save(model, str(tmp / WEIGHTS))
    meta = {"format": 1, "backbone": model.backbone.spec, "preprocessing": prep, "head": head,
            "task": task, "classes": classes, **(extra or {})}
    lora = lora_spec(model)
    if lora is not None:
        meta["lora"] = lora  # load_model rebuilds the adapters before loading the weights
    (tmp / META).write_text(json.dumps(meta, indent=2, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def load_model(folder: Path) -> SavedModel:
    from safetensors.torch import load_model as st_load

    meta_path = folder / META
    if not meta_path.is_file() or not (folder / WEIGHTS).is_file():
        raise UserError(f"{folder} holds no saved model ({META} and {WEIGHTS}); give a run "
                        "directory whose fit finished")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise UserError(f"{meta_path} cannot be read ({e}); the run directory is damaged: run "
                        "fit again with --resume") from None
    checked(meta, meta_path, folder / WEIGHTS)  # typed, bounded, matching the weights
    try:
        model, prep = _build(folder, meta)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the model library raises on a bad spec
        raise UserError(f"{meta_path} describes a model that cannot be built ({type(e).__name__}"
                        f": {(str(e).splitlines() or [''])[0][:200]}); model.json is written by "
                        "fit: restore it, or run fit again") from None
    try:
        missing, unexpected = st_load(model, str(folder / WEIGHTS), strict=False)
    except Exception as e:  # noqa: BLE001 - safetensors' own error type: a damaged file
        raise UserError(f"{folder / WEIGHTS} cannot be read ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:200]}); the run directory is "
                        "damaged: run fit again with --resume") from None
    if missing or unexpected:
        raise UserError(f"{folder / WEIGHTS} does not fit the saved architecture (missing "
                        f"{list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    model.eval()
    return SavedModel(model, meta, prep)


def _build(folder: Path, meta: dict[str, Any]) -> tuple[TransferModel, Preprocessing]:
    prep_d = dict(meta["preprocessing"])
    if prep_d.get("kind") == "text":
        prep_d["tokenizer"] = str(folder / prep_d["tokenizer"])
    prep = preprocessing_from_dict(prep_d)
    backbone = backbone_from_spec(meta["backbone"], prep_d)
    backbone.preprocessing = prep
    if meta.get("lora"):
        apply_lora_spec(backbone, meta["lora"])
    h = meta["head"]
    head = build_head(backbone.feature_dim, h["num_outputs"], h["type"], h["hidden_size"],
                      h["dropout"], normalize=bool(h.get("normalize", False)))
    return TransferModel(backbone, head), prep


def model_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
