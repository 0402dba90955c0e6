"""The student of a distillation: a truncated copy of the teacher, initialised from its trained
weights (``distill.student: truncate``), or any backbone the config names (``backbone``).

Truncation keeps what the architecture allows without new shapes:

- transformers encoders: ``distill.layers`` of the encoder layers (default half), evenly spaced
  with the first and the last kept, as DistilBERT (Sanh et al., 2019) was initialised from
  every other layer of BERT; the embeddings (and pooler) are the teacher's;
- timm EfficientNet-family CNNs (MobileNetV2, EfficientNet): the first block of each stage;
  the later blocks of a stage are residual (same shape in and out), so dropping them leaves a
  network whose every remaining weight fits where it was (depth reduced, width kept).

The teacher's head is the student's starting head (it reads features of the same size).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from tlkit.backbones.lora import lora_spec, merge_lora
from tlkit.backbones.timm_backbone import keep_blocks
from tlkit.errors import UserError

# timm classes whose ``blocks`` is a sequence of stages, each a sequence of blocks of which
# only the first changes the shape (the others skip around themselves)
_STAGED = ("EfficientNet", "MobileNetV3")


def evenly_spaced(total: int, keep: int) -> list[int]:
    """``keep`` indices of ``range(total)``, evenly spaced with the first and the last (6 -> 3:
    0, 3, 5; 12 -> 6: 0, 2, 4, 7, 9, 11, DistilBERT's choice)."""
    if keep >= total:
        return list(range(total))
    if keep == 1:
        return [total - 1]
    return sorted({int(i) for i in np.floor(np.linspace(0, total - 1, keep) + 0.5)})


def truncate_hf(backbone: Any, layers: int | None) -> str:
    """Keep ``layers`` (default half) of a transformers backbone's encoder layers, in place;
    returns what was kept, for the log."""
    enc = getattr(getattr(backbone.model, "encoder", None), "layer", None)
    if enc is None:
        raise UserError(f"distill.student truncate: the teacher's transformers model "
                        f"({type(backbone.model).__name__}) has no encoder.layer list to "
                        "truncate; set distill.student: backbone with a smaller "
                        "transfer_config.source_model (tlkit distill --student NAME)")
    total = len(enc)
    keep_n = layers if layers is not None else max(1, total // 2)
    if keep_n >= total:
        raise UserError(f"distill.layers {keep_n} keeps every one of the teacher's {total} "
                        f"encoder layers: give fewer (1..{total - 1})")
    keep = evenly_spaced(total, keep_n)
    backbone.model.encoder.layer = torch.nn.ModuleList([enc[i] for i in keep])
    backbone.model.config.num_hidden_layers = len(keep)
    backbone.spec = {**backbone.spec, "config": {**backbone.spec["config"],
                                                 "num_hidden_layers": len(keep)}}
    return (f"encoder layers {', '.join(map(str, keep))} of the teacher's {total} "
            f"(0 = the lowest)")


def truncate_timm(backbone: Any, layers: int | None) -> str:
    """The first block of each stage of a timm EfficientNet-family backbone, in place."""
    model = backbone.model
    if type(model).__name__ not in _STAGED or not hasattr(model, "blocks"):
        raise UserError(f"distill.student truncate knows timm EfficientNet-family CNNs "
                        f"(MobileNetV2, EfficientNet), not {type(model).__name__}; set "
                        "distill.student: backbone with a smaller transfer_config.source_model "
                        "(tlkit distill --student NAME)")
    if layers is not None:
        raise UserError("distill.layers counts a transformers encoder's layers; a CNN student "
                        "keeps the first block of each stage: remove distill.layers")
    before = sum(len(s) for s in model.blocks)
    if before == len(model.blocks):
        raise UserError(f"distill.student truncate: every stage of the teacher's "
                        f"{backbone.spec.get('model_name')} holds one block, so there is no "
                        "repeated block to drop; set distill.student: backbone with a smaller "
                        "transfer_config.source_model (tlkit distill --student NAME)")
    kept = [[0] for _ in model.blocks]
    keep_blocks(model, kept)
    backbone.spec = {**backbone.spec, "blocks_kept": kept}
    return f"the first block of each of its {len(kept)} stages ({len(kept)} of {before} blocks)"


def truncated(teacher_model: Any, layers: int | None) -> tuple[Any, dict[str, torch.Tensor], str]:
    """A truncated copy of the teacher's backbone with its trained weights, the teacher's head
    weights, and what was kept (for the log and the model card)."""
    model = copy.deepcopy(teacher_model)
    if lora_spec(model) is not None:  # a LoRA teacher: its adapters folded into its weights
        merge_lora(model)
    backbone = model.backbone
    adapter = backbone.spec.get("adapter")
    if adapter == "hf":
        said = truncate_hf(backbone, layers)
    elif adapter == "timm":
        said = truncate_timm(backbone, layers)
    else:
        raise UserError(f"distill.student truncate knows transformers and timm backbones, not "
                        f"{adapter}; set distill.student: backbone with a smaller "
                        "transfer_config.source_model (tlkit distill --student NAME)")
    head = {k: v.detach().clone() for k, v in teacher_model.head.state_dict().items()}
    return backbone, head, said
