"""What ``model/model.json`` may hold, checked with a user config's strictness before anything
is built from it.

predict, evaluate, export and report rebuild the network from this file. It is the run's own,
but a file on disk can be edited or damaged: a ``num_hidden_layers`` of 5,000 or a
``num_outputs`` of a billion would exhaust memory, a shortened ``classes`` list would name the
wrong labels, a missing ``head`` would end in a traceback. So the file is read as typed, bounded
data (pydantic), its parts are checked against each other (classes against outputs, task
against classes), and against the weights' shapes read from ``model.safetensors``'s header
(no tensor is loaded): the head's output width, the transformer's layer count, width and
vocabulary. A mismatch is a UserError naming the field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tlkit.errors import UserError

_FIX = "model.json is written by fit: restore it from a backup, or run fit again"


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")  # fields a newer tlkit adds are kept


class Head(_Part):
    type: Literal["linear", "mlp"]
    hidden_size: int = Field(ge=1, le=65_536)
    dropout: float = Field(ge=0, lt=1)
    num_outputs: int = Field(ge=1, le=1_000_000)
    normalize: bool = False  # unit-length features before the layers (older files: absent)


class Backbone(_Part):
    adapter: Literal["timm", "hf", "torchvision", "pixels"]
    size: int | None = Field(default=None, ge=1, le=1_024)  # pixels: the square's side
    model_name: str | None = Field(default=None, max_length=200)  # timm
    name: str | None = Field(default=None, max_length=200)  # torchvision
    config: dict[str, Any] | None = None  # hf: the transformers config
    cfg_overlay: dict[str, Any] | None = None

    @field_validator("config")
    @classmethod
    def _bounded(cls, config: dict[str, Any] | None) -> dict[str, Any] | None:
        if config is None:
            return None
        if not isinstance(config.get("model_type"), str):
            raise ValueError("config.model_type must name a transformers model type")
        for key, limit in (("num_hidden_layers", 1_000), ("hidden_size", 65_536),
                           ("intermediate_size", 262_144), ("num_attention_heads", 1_024),
                           ("vocab_size", 4_000_000), ("max_position_embeddings", 1_000_000)):
            value = config.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or not 1 <= value <= limit):
                raise ValueError(f"config.{key} is {value!r}: must be a whole number in 1.."
                                 f"{limit:,}")
        return config


class Preprocessing(_Part):
    kind: Literal["image", "text"]
    input_size: int | None = Field(default=None, ge=1, le=4096)
    resize_size: int | None = Field(default=None, ge=1, le=8192)
    mean: list[float] | None = Field(default=None, min_length=1, max_length=4)
    std: list[float] | None = Field(default=None, min_length=1, max_length=4)
    tokenizer: str | None = None
    max_length: int | None = Field(default=None, ge=1, le=1_000_000)


class Pairs(_Part):
    text_column: str | None = None
    text_pair_column: str = Field(min_length=1)


class ModelJson(_Part):
    format: Literal[1]
    backbone: Backbone
    preprocessing: Preprocessing
    head: Head
    task: Literal["single_label", "multi_label", "regression", "token_classification",
                  "question_answering"]
    classes: list[str] | None
    lora: dict[str, Any] | None = None
    pairs: Pairs | None = None  # a sentence-pair model: the columns of its two texts


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"]) or "(the whole file)"


def _shapes(weights: Path) -> dict[str, list[int]]:
    """Each tensor's shape from the safetensors header; nothing is loaded."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001 - safetensors' own error type: a damaged file
        raise UserError(f"{weights} cannot be read ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:200]}); the run directory is "
                        "damaged: run fit again") from None


def _index(key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\.(\d+)\.", "." + key))


def _consistent(meta: ModelJson, shapes: dict[str, list[int]]) -> list[str]:
    """Where the file and the weights disagree, each as 'field: what'."""
    out = []
    h = meta.head
    if meta.task == "question_answering" and h.num_outputs != 2:
        out.append(f"head.num_outputs: {h.num_outputs}, but question answering's head has 2 "
                   "(start, end)")
    if meta.task not in ("regression", "question_answering"):
        if meta.classes is None:
            out.append(f"classes: missing, but task {meta.task} needs the class names")
        elif len(meta.classes) != h.num_outputs:
            out.append(f"classes: {len(meta.classes)} names for head.num_outputs "
                       f"{h.num_outputs}")
        elif len(set(meta.classes)) != len(meta.classes):
            out.append("classes: a name appears twice")
    linear = sorted((k for k, s in shapes.items()
                     if k.startswith("head.") and k.endswith(".weight") and len(s) == 2),
                    key=_index)
    if not linear:
        out.append("head: the weights hold no head layer")
    else:
        if shapes[linear[-1]][0] != h.num_outputs:
            out.append(f"head.num_outputs: {h.num_outputs}, but the weights' head has "
                       f"{shapes[linear[-1]][0]} outputs")
        if h.type == "mlp" and len(linear) >= 2 and shapes[linear[0]][0] != h.hidden_size:
            out.append(f"head.hidden_size: {h.hidden_size}, but the weights' hidden layer "
                       f"has {shapes[linear[0]][0]}")
        if h.type == "linear" and len(linear) != 1:
            out.append(f"head.type: linear, but the weights' head has {len(linear)} layers")
    config = meta.backbone.config
    if meta.backbone.adapter == "hf" and config is not None:
        layers = {m.group(1) for k in shapes
                  if (m := re.search(r"\.layers?\.(\d+)\.", k)) and k.startswith("backbone.")}
        n = config.get("num_hidden_layers")
        if layers and n is not None and n != len(layers):
            out.append(f"backbone.config.num_hidden_layers: {n}, but the weights hold "
                       f"{len(layers)} layers")
        embed = next((s for k, s in shapes.items() if k.endswith("word_embeddings.weight")),
                     None)
        if embed is not None:
            for key, got in (("vocab_size", embed[0]), ("hidden_size", embed[1])):
                if config.get(key) is not None and config[key] != got:
                    out.append(f"backbone.config.{key}: {config[key]}, but the weights have "
                               f"{got}")
    if meta.backbone.adapter == "timm" and not meta.backbone.model_name:
        out.append("backbone.model_name: missing for a timm backbone")
    if meta.backbone.adapter == "torchvision" and not meta.backbone.name:
        out.append("backbone.name: missing for a torchvision backbone")
    if meta.backbone.adapter == "hf" and config is None:
        out.append("backbone.config: missing for a transformers backbone")
    if meta.backbone.adapter == "pixels" and meta.backbone.size is None:
        out.append("backbone.size: missing for the pixels backbone")
    return out


def checked(raw: Any, meta_path: Path, weights: Path) -> ModelJson:
    """``raw`` (model.json as parsed) as typed data consistent with itself and the weights;
    a UserError naming the first wrong field otherwise."""
    if not isinstance(raw, dict):
        raise UserError(f"{meta_path} holds {type(raw).__name__}, not the model's description "
                        f"(an object); {_FIX}")
    try:
        meta = ModelJson.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        raise UserError(f"{meta_path}: field {_where(first)}: {first['msg']} (got "
                        f"{str(first.get('input'))[:80]!r}); {_FIX}") from None
    wrong = _consistent(meta, _shapes(weights))
    if wrong:
        raise UserError(f"{meta_path} does not match the model's weights: {wrong[0]}"
                        + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
                        + f"; {_FIX}")
    return meta
