"""LoRA (Hu et al., 2021) through PEFT: low-rank adapter matrices train beside the layers named in
``lora.target_modules``, the pretrained weights stay frozen (``tlkit.backbones.lora`` injects
them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tlkit.strategies.base import PhaseSpec, Strategy, StrategySettings


class LoraSettings(BaseModel):
    """The ``lora`` section (``freeze_strategy: lora``): matrices of rank ``r`` train beside the
    modules named in ``target_modules`` (PEFT's own matching: a module's full name or a suffix
    after a dot; null picks a default for the backbone: the attention projections of a
    transformer, the pointwise convolutions of a CNN)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    r: int = Field(default=8, ge=1, le=4096)
    alpha: float = Field(default=16.0, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    target_modules: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _not_empty(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and (not v or any(not t.strip() for t in v)):
            raise ValueError("give module names (for example [query, value]) or null for the "
                             "backbone's default")
        return v


def lora_settings(settings: Any) -> LoraSettings:
    """The ``lora`` section, or its defaults when the config leaves it out."""
    return settings.lora if settings.lora is not None else LoraSettings()


class LoRA(Strategy):
    name = "lora"
    summary = "LoRA (PEFT): low-rank adapters and the head train, the base weights stay frozen"
    auto_rank = 4

    class Settings(StrategySettings):
        lora: LoraSettings | None = None  # null: the defaults

    def phases(self, n_groups: int, settings: Any) -> list[PhaseSpec]:
        return [PhaseSpec(0, settings.epochs, n_groups,
                          "LoRA: adapters and head train, base weights frozen",
                          adapters_only=True)]

    def prepare(self, backbone: Any, groups: list[Any], settings: Any) -> list[Any]:
        from tlkit.backbones.lora import add_lora  # PEFT and torch: imported when LoRA is used

        lc = lora_settings(settings)
        return add_lora(backbone, groups, lc.r, lc.alpha, lc.dropout, lc.target_modules)

    def notes(self, settings: Any, backbone: Any) -> list[str]:
        from tlkit.backbones.lora import lora_spec  # PEFT and torch: imported when LoRA is used

        lc = lora_settings(settings)
        layers = sorted({n.split(".lora_A")[0] for n, _ in backbone.named_parameters()
                         if ".lora_A." in n})
        kinds = list((lora_spec(backbone) or {}).get("target_modules") or [])
        if len(kinds) > 6:  # a long list of full names (a CNN's pointwise convolutions)
            kinds = sorted({n.rsplit(".", 1)[-1] for n in kinds})
            if any(k.isdigit() for k in kinds):  # numbered layers (torchvision)
                kinds = [n.removeprefix("model.") for n in layers]
        return [f"LoRA (PEFT): r {lc.r}, alpha {lc.alpha:g}, dropout {lc.dropout:g} on "
                f"{len(layers)} layers ({', '.join(kinds[:6])}"
                f"{', ...' if len(kinds) > 6 else ''}); set lora.target_modules to change."]

    def variant(self, tc: dict[str, Any], own: Any, rates: Any) -> None:
        tc["lora"] = own.lora.model_dump() if own.freeze_strategy == self.name and own.lora \
            else None
        # one rate for every adapter: a random low-rank update needs larger steps
        tc.update(backbone_lr=rates.lora_lr or 10 * own.backbone_lr, lr_decay_per_layer=1.0,
                  l2sp_lambda=0.0)


STRATEGY = LoRA()
