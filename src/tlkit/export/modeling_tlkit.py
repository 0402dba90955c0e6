"""A tlkit run as a transformers model: the encoder, its pooling (mean over real tokens, the
first token, or the encoder's pooler) and the trained head.

``tlkit export RUN --format hf`` copies this file into the exported folder, whose config.json
maps ``AutoModelForSequenceClassification`` to ``TlkitForSequenceClassification`` (transformers'
custom-code mechanism): ``AutoModelForSequenceClassification.from_pretrained(folder,
trust_remote_code=True)`` then builds it without tlkit installed. Only transformers and torch
are imported here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class TlkitConfig(PretrainedConfig):
    model_type = "tlkit_sequence_classification"

    def __init__(self, encoder: dict[str, Any] | None = None, pooling: str = "mean",
                 add_pooling_layer: bool | None = None, head_type: str = "linear",
                 head_hidden_size: int = 256, head_dropout: float = 0.0,
                 task: str = "single_label", head_normalize: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder or {}
        self.pooling = pooling
        self.add_pooling_layer = add_pooling_layer
        self.head_type = head_type
        self.head_hidden_size = head_hidden_size
        self.head_dropout = head_dropout
        self.head_normalize = head_normalize
        self.task = task


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x, dim=-1)


class TlkitForSequenceClassification(PreTrainedModel):
    config_class = TlkitConfig
    base_model_prefix = "encoder"

    def __init__(self, config: TlkitConfig) -> None:
        super().__init__(config)
        enc = dict(config.encoder)
        enc_config = AutoConfig.for_model(enc.pop("model_type"), **enc)
        extra = ({} if config.add_pooling_layer is None
                 else {"add_pooling_layer": config.add_pooling_layer})
        self.encoder = AutoModel.from_config(enc_config, **extra)
        width, n = int(enc_config.hidden_size), int(config.num_labels or 1)
        # the pooled vector scaled to unit length first, where the run's head did (no weights)
        first = [Normalize()] if getattr(config, "head_normalize", False) else []
        if config.head_type == "linear":
            self.head = nn.Sequential(*first, nn.Dropout(config.head_dropout),
                                      nn.Linear(width, n))
        else:
            h = int(config.head_hidden_size)
            self.head = nn.Sequential(*first, nn.Dropout(config.head_dropout), nn.Linear(width, h),
                                      nn.GELU(), nn.Dropout(config.head_dropout),
                                      nn.Linear(h, n))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # every weight comes from the exported file

    def forward(self, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Any) -> SequenceClassifierOutput:
        if input_ids is None:
            raise ValueError("input_ids is required")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        out = self.encoder(**inputs)
        if self.config.pooling == "pooler":
            pooled = out.pooler_output
        elif self.config.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            hidden = out.last_hidden_state
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        logits = self.head(pooled)
        loss = None
        if labels is not None:
            if self.config.task == "single_label":
                loss = nn.functional.cross_entropy(logits, labels)
            elif self.config.task == "multi_label":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
            else:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        return SequenceClassifierOutput(loss=loss, logits=logits)
