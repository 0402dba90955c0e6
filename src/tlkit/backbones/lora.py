"""LoRA through the PEFT library: low-rank adapters beside chosen layers of a pretrained backbone.

``add_lora`` injects them into the backbone's inner model (PEFT's ``inject_adapter_in_model``, so
the backbone keeps its own forward) and returns the layer groups with every new parameter placed:
a LoRA matrix goes in the group of the layer it adapts, and an adapted layer's own weights move
from ``x.weight`` to ``x.base_layer.weight`` in the same group. Which parameters train is the
plan's business (an ``adapters_only`` phase trains the LoRA matrices and the head).

The settings travel with the saved model (``lora_spec``), so ``saved.load_model`` rebuilds the
adapters before it loads the weights; ``merge_lora`` folds them into the base weights for export.
PEFT is imported on use: building a plan or a config never needs it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tlkit.backbones.base import Backbone, LayerGroup
from tlkit.backbones.groups import UnplacedParameterError
from tlkit.errors import UserError

ADAPTER = "default"  # PEFT's adapter name; one adapter per model
_PEFT_PARTS = ("base_layer",)

# BERT-like encoders: the attention projections (query, key, value and the attention's output
# projection). PEFT's own default for BERT is query and value only.
_BERT_LIKE = ("bert", "roberta", "xlm-roberta", "electra", "camembert")
_BERT_TARGETS = ["query", "key", "value", "attention.output.dense"]
_OTHER_TEXT_TARGETS = {
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin"],
    "deberta-v2": ["query_proj", "key_proj", "value_proj", "attention.output.dense"],
}


def is_adapter_param(name: str) -> bool:
    """Whether a parameter name (relative to any module above it) is a LoRA matrix."""
    return any(part.startswith("lora_") for part in name.split("."))


def _inner(backbone: nn.Module) -> nn.Module:
    # The library model inside the adapter (HF AutoModel, timm or torchvision model).
    inner = getattr(backbone, "model", None)
    return inner if isinstance(inner, nn.Module) else backbone


def default_targets(backbone: Backbone) -> list[str]:
    """Target modules for a backbone kind, in PEFT's terms (full names or dotted suffixes,
    relative to the inner model): a transformer's attention projections; for a CNN its
    pointwise (1x1, ungrouped) convolutions; else every Linear and ungrouped Conv2d."""
    inner = _inner(backbone)
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    if model_type in _BERT_LIKE:
        return list(_BERT_TARGETS)
    if model_type in _OTHER_TEXT_TARGETS:
        return list(_OTHER_TEXT_TARGETS[model_type])
    if model_type is not None:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        found = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
        if found:
            return list(found)
    modules = dict(inner.named_modules())
    attn = [n for n, m in modules.items()
            if isinstance(m, nn.Linear) and n.endswith((".attn.qkv", ".attn.proj"))]
    if attn:  # timm ViT-like blocks
        return ["attn.qkv", "attn.proj"]
    convs = {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups == 1}
    pointwise = [n for n, m in convs.items() if m.kernel_size == (1, 1)]
    # Inverted-residual nets (MobileNet, EfficientNet) hold most weights in pointwise convs;
    # plain ones (ResNet basic blocks) in 3x3 convs, where the 1x1s are only shortcuts.
    if 2 * sum(convs[n].weight.numel() for n in pointwise) >= sum(
            m.weight.numel() for m in convs.values()) > 0:
        return pointwise
    generic = [n for n, m in modules.items()
               if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)]
    if generic:
        return generic
    raise UserError(
        f"found no layer that LoRA can adapt in {backbone.spec.get('adapter')} backbone; set "
        "transfer_config.lora.target_modules to module names (Linear or Conv2d layers)"
    )


def inject_lora(backbone: Backbone, r: int, alpha: float, dropout: float,
                target_modules: list[str] | None = None) -> list[str]:
    """Add LoRA adapters to ``backbone`` in place; return the target modules used."""
    from peft import LoraConfig, inject_adapter_in_model

    if any(is_adapter_param(n) for n, _ in backbone.named_parameters()):
        raise ValueError("this backbone already carries LoRA adapters")
    targets = list(target_modules) if target_modules else default_targets(backbone)
    # PEFT annotates lora_alpha as int but takes any number: its scaling is lora_alpha / r.
    config = LoraConfig(r=r, lora_alpha=alpha,  # type: ignore[arg-type]
                        lora_dropout=dropout, target_modules=targets, bias="none")
    inner = _inner(backbone)
    try:
        inject_adapter_in_model(config, inner, adapter_name=ADAPTER)
    except ValueError as e:
        names = [n for n, m in inner.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        raise UserError(
            f"LoRA could not adapt {targets[:6]}: {(str(e).splitlines() or [''])[0][:300]}; fix "
            f"transfer_config.lora.target_modules (Linear / Conv2d layers here look like "
            f"{', '.join(names[:4])})"
        ) from None
    return targets


def lora_spec(model: nn.Module) -> dict[str, Any] | None:
    """The LoRA settings of a model's backbone, as ``model.json`` records them; None without."""
    backbone = getattr(model, "backbone", model)
    configs = getattr(_inner(backbone), "peft_config", None)
    if not configs or ADAPTER not in configs:
        return None
    c = configs[ADAPTER]
    targets = c.target_modules
    return {"r": int(c.r), "alpha": float(c.lora_alpha), "dropout": float(c.lora_dropout),
            "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple))
            else targets}


def apply_lora_spec(backbone: Backbone, spec: dict[str, Any]) -> None:
    """Rebuild the adapters a saved model was trained with (their weights load afterwards)."""
    inject_lora(backbone, int(spec["r"]), float(spec["alpha"]), float(spec["dropout"]),
                spec["target_modules"])


def regroup(groups: list[LayerGroup], backbone: Backbone) -> list[LayerGroup]:
    """The layer groups of ``backbone`` after adapters were injected, from those before: each
    renamed base parameter stays in its group, each LoRA matrix joins the group of the layer it
    adapts. Every parameter must land in exactly one group."""
    group_of = {q: i for i, g in enumerate(groups) for q in g.param_names}
    members: list[list[str]] = [[] for _ in groups]
    unplaced = []
    for name, _ in backbone.named_parameters():
        parts = name.split(".")
        if is_adapter_param(name):
            cut = next(i for i, p in enumerate(parts) if p.startswith("lora_"))
            layer = ".".join(parts[:cut]) + "."
            i = next((group_of[q] for q in group_of if q.startswith(layer)), None)
        else:
            i = group_of.get(".".join(p for p in parts if p not in _PEFT_PARTS))
        if i is None:
            unplaced.append(name)
        else:
            members[i].append(name)
    if unplaced:
        raise UnplacedParameterError(
            f"after adding LoRA, parameter(s) {', '.join(unplaced[:3])} fall in no layer group"
        )
    return [LayerGroup(g.name, tuple(m), g.modules) for g, m in zip(groups, members, strict=True)]


def add_lora(backbone: Backbone, groups: list[LayerGroup], r: int, alpha: float,
             dropout: float, target_modules: list[str] | None = None) -> list[LayerGroup]:
    """Inject LoRA into ``backbone`` and return its groups with the adapters placed."""
    inject_lora(backbone, r, alpha, dropout, target_modules)
    return regroup(groups, backbone)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the LoRA matrices into the weights they adapt (W + B A * alpha / r) and put the
    plain layers back, in place: the model then has the original architecture, computes the
    same outputs, and saves and exports like one that never had adapters."""
    from peft.tuners.lora import LoraLayer

    backbone = getattr(model, "backbone", model)
    inner = _inner(backbone)
    for name, module in list(inner.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            parent = inner.get_submodule(parent_name) if parent_name else inner
            setattr(parent, child, module.get_base_layer())
    if hasattr(inner, "peft_config"):
        del inner.peft_config
    return model
