"""``--format peft``: a LoRA run on a transformers backbone as PEFT's adapter folder.

PEFT's ``save_pretrained`` folder (``adapter_config.json``, ``adapter_model.safetensors``) that
``PeftModel.from_pretrained(AutoModel.from_pretrained(base), folder)`` applies to the base model
named in the adapter config; the pooling and head (not part of the base model) in
``tlkit_head.safetensors`` and ``tlkit_head.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.backbones.registry import hf_base_path
from tlkit.errors import UserError
from tlkit.export.common import Runner, labels, text_inputs


def export_peft(saved: Any, out: Path, run_config: dict[str, Any]) -> Runner:
    """Write the adapters and head of ``saved`` (a ``tlkit.saved.SavedModel``) to the folder
    ``out``, the base named from ``run_config`` (the run's config.yaml); the folder applied by
    PEFT to that base, as a runner."""
    if not saved.meta.get("lora"):
        raise UserError("--format peft exports the LoRA adapters of a run with freeze_strategy "
                        "lora; this run has none: use --format hf, onnx or torchscript")
    if saved.meta["backbone"].get("adapter") != "hf":
        raise UserError("--format peft exports LoRA runs on a transformers backbone; use "
                        "--format onnx or torchscript")
    if saved.task == "question_answering":
        raise UserError("--format peft writes a pooled head beside the adapters; a "
                        "question-answering run's head reads every token: use --format hf "
                        "(the adapters merged into AutoModelForQuestionAnswering)")
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModel

    tc = run_config.get("transfer_config", {})
    base_path = hf_base_path(str(tc.get("source_model")), str(tc.get("pretrained_weights",
                                                                     "packaged")))
    spec, lora = saved.meta["backbone"], saved.meta["lora"]
    extra = ({} if spec.get("add_pooling_layer") is None
             else {"add_pooling_layer": spec["add_pooling_layer"]})
    base = AutoModel.from_pretrained(base_path, **extra)
    config = LoraConfig(r=int(lora["r"]), lora_alpha=lora["alpha"],
                        lora_dropout=float(lora["dropout"]),
                        target_modules=lora["target_modules"], bias="none")
    peft_model = get_peft_model(base, config)
    inner: Any = peft_model.base_model.model
    trained = saved.model.backbone.model.state_dict()
    own = inner.state_dict()
    differs = [k for k, v in trained.items()
               if "lora_" not in k and k in own and not torch.equal(v, own[k])]
    if differs:
        raise UserError(f"this LoRA run also changed {len(differs)} of the base model's tensors "
                        f"(e.g. {differs[0]}), which an adapter does not carry; use --format hf, "
                        "which exports the whole model")
    inner.load_state_dict(trained, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out))
    cfg_path = out / "adapter_config.json"
    adapter_cfg = json.loads(cfg_path.read_text())
    adapter_cfg["base_model_name_or_path"] = base_path
    cfg_path.write_text(json.dumps(adapter_cfg, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in saved.model.head.state_dict().items()},
              str(out / "tlkit_head.safetensors"))
    (out / "tlkit_head.json").write_text(json.dumps({
        "pooling": spec["pooling"], "head": saved.meta["head"], "task": saved.task,
        "labels": labels(saved), "base_model": base_path,
        "how": "PeftModel.from_pretrained(AutoModel.from_pretrained(base_model), folder); pool "
               "last_hidden_state (mean over attention_mask, or the first token), then the head "
               + ("(the pooled vector scaled to unit length, Dropout, Linear: keys 2.weight / "
                  "2.bias)" if saved.meta["head"].get("normalize") else
                  "(Dropout, Linear: keys 1.weight / 1.bias)")}, indent=2) + "\n")

    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(base_path, **extra),
                                       str(out)).eval()
    head = copy.deepcopy(saved.model.head).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            o = loaded(**text_inputs(inputs))
            pooled = _pool(o, inputs["attention_mask"], spec["pooling"])
            return head(pooled).float().numpy()

    return run


def _pool(out: Any, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "pooler":
        return out.pooler_output
    hidden = out.last_hidden_state
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
