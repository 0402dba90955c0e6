"""Hugging Face transformers text backbones: ``AutoModel`` without any task head, pooled to one
vector per sequence (mean over real tokens, the first token, or the model's pooler), or not
pooled (``tokens``: every token's state, for question answering's start / end head)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tlkit.backbones.base import Backbone, LayerGroup, TextPreprocessing
from tlkit.backbones.groups import groups_by_generic_rule
from tlkit.errors import UserError


# "tokens" is not a config choice: question answering's runs take it (tlkit.assemble)
POOLINGS = ("mean", "cls", "pooler", "tokens")


def quiet_transformers() -> None:
    # Library code does no printing: transformers' load reports and bars go to our log instead.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def words_of(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Each word's hidden state at its first sub-word (``positions`` index the flattened batch
    x sequence; a word cut off, -1, takes the first position's state: the loss leaves it out
    and it is predicted O, see tlkit.token_rows)."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    return flat[positions.clamp(min=0)]


DEFAULT_MAX_LENGTH = 128  # tokens, where neither the config nor the model folder says


def _model_file(name_or_path: str, filename: str) -> Path | None:
    """``filename`` in the model folder, or in the local hub cache for a hub id (never
    downloaded); None where neither has it."""
    path = Path(name_or_path) / filename
    if path.is_file():
        return path
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name_or_path, filename)
    except Exception:  # noqa: BLE001 - not a hub id, or no cache: not there
        return None
    return Path(found) if isinstance(found, str) else None


def cosine_trained(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is a sentence-transformers model whose modules end with
    ``Normalize`` (its embeddings were trained to be compared by cosine): read from its
    ``modules.json``."""
    path = _model_file(name_or_path, "modules.json")
    if path is None:
        return False
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
        return any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def declared_max_length(name_or_path: str) -> int | None:
    """The text length a sentence-transformers model was trained and is used at: its
    ``sentence_bert_config.json``'s ``max_seq_length`` (all-MiniLM-L6-v2: 256), the length
    SetFit and sentence-transformers' ``encode`` cut at; None where the folder declares none."""
    path = _model_file(name_or_path, "sentence_bert_config.json")
    if path is None:
        return None
    try:
        n = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    except (OSError, ValueError, AttributeError):
        return None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else None


class HFBackbone(Backbone):
    kind = "text"

    def __init__(
        self,
        name_or_path: str,
        pretrained: bool = True,
        pooling: str = "mean",
        max_length: int | None = None,
        tokenizer: str | None = None,
    ) -> None:
        """``max_length``: tokens a text is cut at; None: the model's own
        (``declared_max_length``), else ``DEFAULT_MAX_LENGTH``; never past its position
        embeddings. ``length_said`` says which and why."""
        super().__init__()
        from transformers import AutoConfig, AutoModel  # heavy: imported on use

        quiet_transformers()
        if pooling not in POOLINGS:
            raise UserError(f"pooling {pooling!r} is not one of mean, cls, pooler")
        self.pooling = pooling
        extra: dict[str, Any] = {}
        try:
            config = AutoConfig.from_pretrained(name_or_path)
        except (OSError, ValueError) as e:
            raise UserError(
                f"cannot read a transformers model config from {name_or_path}: "
                f"{(str(e).splitlines() or [''])[0][:300]}; fix: point at a folder saved with "
                "save_pretrained (it holds config.json) or a hub id"
            ) from None
        if getattr(config, "model_type", "") in ("bert", "roberta", "xlm-roberta", "electra"):
            extra["add_pooling_layer"] = pooling == "pooler"
        if pretrained:
            try:
                model, info = AutoModel.from_pretrained(
                    name_or_path, output_loading_info=True, **extra
                )
            except (OSError, ValueError) as e:
                raise UserError(
                    f"cannot load the weights in {name_or_path}: "
                    f"{(str(e).splitlines() or [''])[0][:300]}; fix: point at a complete "
                    "checkpoint, or set pretrained_weights: none for a random initialisation"
                ) from None
            missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
            bad = info.get("mismatched_keys", [])
            if missing or bad:
                raise UserError(
                    f"weights in {name_or_path} do not fit the architecture: missing "
                    f"{missing[:3]}, mismatched shapes {bad[:3]}; fix: point at a complete "
                    "checkpoint of this model"
                )
        else:
            model = AutoModel.from_config(config, **extra)
        if pooling == "pooler" and getattr(model, "pooler", None) is None:
            raise UserError(f"{name_or_path} has no pooler; use pooling: mean or cls")
        self.model = model
        self.feature_dim = int(config.hidden_size)
        limit = int(getattr(config, "max_position_embeddings", 512) or 512)
        own = declared_max_length(name_or_path) if max_length is None else None
        wanted = max_length or own or DEFAULT_MAX_LENGTH
        length = min(wanted, limit)
        self.length_said = (
            f"texts cut at {length} tokens: " + (
                "data.max_length" if max_length is not None else
                "the model's own max_seq_length (its sentence_bert_config.json)" if own else
                "tlkit's default (the model declares no max_seq_length); set "
                "data.max_length to change it")
            + (f" (capped at its {limit} position embeddings)" if length < wanted else ""))
        self.preprocessing = TextPreprocessing(
            tokenizer=tokenizer or name_or_path, max_length=length
        )
        self.spec = {"adapter": "hf", "config": config.to_dict(), "pooling": pooling,
                     "add_pooling_layer": extra.get("add_pooling_layer")}
        self.cosine = pooling == "mean" and cosine_trained(name_or_path)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], tokenizer: str, max_length: int) -> "HFBackbone":
        """Rebuild the architecture (no weights) from a saved spec, offline."""
        from transformers import AutoConfig, AutoModel

        quiet_transformers()
        self = cls.__new__(cls)
        Backbone.__init__(self)
        cfg_dict = dict(spec["config"])
        config = AutoConfig.for_model(cfg_dict.pop("model_type"), **cfg_dict)
        extra = {}
        if spec.get("add_pooling_layer") is not None:
            extra["add_pooling_layer"] = spec["add_pooling_layer"]
        self.pooling = spec["pooling"]
        self.model = AutoModel.from_config(config, **extra)
        self.feature_dim = int(config.hidden_size)
        self.preprocessing = TextPreprocessing(tokenizer=tokenizer, max_length=max_length)
        self.spec = spec
        return self

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = inputs["attention_mask"]
        kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask",
                                                              "token_type_ids")}
        out = self.model(**kwargs)
        if "word_positions" in inputs:  # token classification: one row per word
            return words_of(out.last_hidden_state, inputs["word_positions"])
        if self.pooling == "tokens":  # question answering: (batch, tokens, width)
            return out.last_hidden_state
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    # the trunk as a chain (embeddings, then each encoder layer), for the frozen-prefix cache
    def units(self) -> list[str] | None:
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if getattr(self.model, "embeddings", None) is None or layers is None:
            return None
        if getattr(self.model.config, "is_decoder", False):
            return None
        return ["model.embeddings"] + [f"model.encoder.layer.{i}" for i in range(len(layers))]

    def begin(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        # token classification's word positions travel with the state to the end (and into
        # the cache)
        words = {"word_positions": inputs["word_positions"]} if "word_positions" in inputs \
            else {}
        return {"inputs": inputs, "attention_mask": inputs["attention_mask"], **words}

    def _extended_mask(self, hidden: torch.Tensor, mask: torch.Tensor) -> Any:
        try:
            from transformers.masking_utils import create_bidirectional_mask

            return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden,
                                             attention_mask=mask)
        except ImportError:  # older transformers
            return self.model.get_extended_attention_mask(mask, mask.shape)

    def run_unit(self, index: int, state: dict[str, Any]) -> dict[str, Any]:
        if index == 0:
            inp = state["inputs"]
            hidden = self.model.embeddings(input_ids=inp["input_ids"],
                                           token_type_ids=inp.get("token_type_ids"))
            return {"hidden": hidden, **{k: v for k, v in state.items() if k != "inputs"}}
        if "ext" not in state:
            state = {**state, "ext": self._extended_mask(state["hidden"],
                                                         state["attention_mask"])}
        out = self.model.encoder.layer[index - 1](state["hidden"], state["ext"])
        hidden = out[0] if isinstance(out, tuple) else out
        return {**state, "hidden": hidden}

    def export_state(self, state: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {k: state[k] for k in ("hidden", "attention_mask", "word_positions")
                if k in state}

    def import_state(self, cached: dict[str, torch.Tensor]) -> dict[str, Any]:
        return dict(cached)

    def end(self, state: dict[str, Any]) -> torch.Tensor:
        hidden, mask = state["hidden"], state["attention_mask"]
        if "word_positions" in state:  # token classification: one row per word
            return words_of(hidden, state["word_positions"])
        if self.pooling == "tokens":
            return hidden
        if self.pooling == "pooler":
            return self.model.pooler(hidden)
        if self.pooling == "cls":
            return hidden[:, 0]
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)

    def layer_groups(self) -> list[LayerGroup]:
        names = [n for n, _ in self.named_parameters()]
        base = self.model
        layers = getattr(getattr(base, "encoder", None), "layer", None)
        if getattr(base, "embeddings", None) is not None and layers is not None:
            # BERT-like: embeddings, each encoder layer, pooler (when pooled through it)
            groups = [LayerGroup("embeddings",
                                 tuple(n for n in names if n.startswith("model.embeddings.")),
                                 ("model.embeddings",))]
            for i in range(len(layers)):
                p = f"model.encoder.layer.{i}."
                groups.append(LayerGroup(f"encoder.layer.{i}",
                                         tuple(n for n in names if n.startswith(p)),
                                         (p.rstrip("."),)))
            rest = [n for n in names if not any(n in g.param_names for g in groups)]
            pooler = tuple(n for n in rest if n.startswith("model.pooler."))
            if pooler:
                groups.append(LayerGroup("pooler", pooler, ("model.pooler",)))
            others = [n for n in rest if n not in pooler]
            if not others:
                return groups
        return groups_by_generic_rule(self)
