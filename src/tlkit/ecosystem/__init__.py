"""Exports the ecosystem loads: a run's model as a folder that transformers, timm or PEFT read
with their own loading code, no tlkit needed.

- ``hf``: text runs on a transformers backbone. ``AutoModelForSequenceClassification
  .from_pretrained(folder, trust_remote_code=True)`` and ``AutoTokenizer.from_pretrained(folder)``
  load it, with ``id2label``. The encoder is the backbone's own transformers architecture; its
  pooling (mean over real tokens, the first token, or the pooler) and tlkit's head come in
  ``modeling_tlkit.py``, copied beside the weights (transformers' custom-code mechanism: no
  stock class pools by the mean).
- ``timm``: image runs on a timm backbone with a linear head, through timm's own
  ``save_for_hf``: the architecture with the head as its classifier, ``model.safetensors`` and a
  ``config.json`` holding the run's preprocessing and label names;
  ``timm.create_model("local-dir:FOLDER", pretrained=True)`` loads it.
- ``peft``: LoRA runs on a transformers backbone. PEFT's ``save_pretrained`` folder
  (``adapter_config.json``, ``adapter_model.safetensors``) that ``PeftModel.from_pretrained(
  AutoModel.from_pretrained(base), folder)`` applies to the base model named in the adapter
  config; the pooling and head (not part of the base model) in ``tlkit_head.safetensors`` and
  ``tlkit_head.json``.

Each export returns a runner: the loaded export on tlkit's own collated inputs, which the export
command checks against the run's model (``tlkit.export``).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.errors import UserError

FORMATS = ("hf", "timm", "peft")
Runner = Callable[[Any], np.ndarray]
_HERE = Path(__file__).resolve().parent


def export_folder(saved: Any, fmt: str, out: Path, run_config: dict[str, Any]) -> Runner:
    """Write ``saved`` (a ``tlkit.saved.SavedModel``) to the folder ``out`` in ``fmt``; the
    loaded export as a runner."""
    kind, adapter = saved.preprocessing.kind, saved.meta["backbone"].get("adapter")
    if fmt == "hf":
        if kind != "text" or adapter != "hf":
            raise UserError("--format hf exports text runs on a transformers backbone; this run "
                            f"is {kind} on {adapter}: use --format onnx or torchscript")
        return _hf(saved, out)
    if fmt == "timm":
        if kind != "image" or adapter != "timm":
            raise UserError("--format timm exports image runs on a timm backbone; this run is "
                            f"{kind} on {adapter}: use --format onnx or torchscript")
        return _timm(saved, out)
    if not saved.meta.get("lora"):
        raise UserError("--format peft exports the LoRA adapters of a run with freeze_strategy "
                        "lora; this run has none: use --format hf, onnx or torchscript")
    if adapter != "hf":
        raise UserError("--format peft exports LoRA runs on a transformers backbone; use "
                        "--format onnx or torchscript")
    return _peft(saved, out, run_config)


def _labels(saved: Any) -> dict[int, str]:
    n = int(saved.meta["head"]["num_outputs"])
    names = saved.classes or [f"output_{i}" for i in range(n)]
    return {i: str(c) for i, c in enumerate(names)}


# --------------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------------


def _hf(saved: Any, out: Path) -> Runner:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tlkit.ecosystem.modeling_tlkit import TlkitConfig, TlkitForSequenceClassification
    from tlkit.lora import merge_lora

    model = copy.deepcopy(saved.model)
    if saved.meta.get("lora"):
        merge_lora(model)  # plain layers: the export needs no PEFT
    spec, head = saved.meta["backbone"], saved.meta["head"]
    labels = _labels(saved)
    cfg = TlkitConfig(
        encoder=dict(spec["config"]), pooling=spec["pooling"],
        add_pooling_layer=spec.get("add_pooling_layer"), head_type=head["type"],
        head_hidden_size=int(head["hidden_size"]), head_dropout=float(head["dropout"]),
        task=saved.task, num_labels=len(labels), id2label=labels,
        label2id={v: k for k, v in labels.items()},
        problem_type={"single_label": "single_label_classification",
                      "multi_label": "multi_label_classification"}.get(saved.task,
                                                                       "regression"),
        architectures=["TlkitForSequenceClassification"],
        auto_map={"AutoConfig": "modeling_tlkit.TlkitConfig",
                  "AutoModelForSequenceClassification":
                      "modeling_tlkit.TlkitForSequenceClassification"})
    hf_model = TlkitForSequenceClassification(cfg)
    hf_model.encoder.load_state_dict(model.backbone.model.state_dict())
    hf_model.head.load_state_dict(model.head.state_dict())
    out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out))
    shutil.copy(_HERE / "modeling_tlkit.py", out / "modeling_tlkit.py")
    tok = AutoTokenizer.from_pretrained(str(saved.preprocessing.tokenizer))
    tok.model_max_length = int(saved.preprocessing.max_length)
    tok.save_pretrained(str(out))

    loaded = AutoModelForSequenceClassification.from_pretrained(str(out),
                                                                trust_remote_code=True).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            return loaded(**_text_inputs(inputs)).logits.float().numpy()

    return run


def _text_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in inputs.items()
            if k in ("input_ids", "attention_mask", "token_type_ids")}


# --------------------------------------------------------------------------------------------------
# timm
# --------------------------------------------------------------------------------------------------


def _timm(saved: Any, out: Path) -> Runner:
    import timm
    from timm.models import save_for_hf

    head = saved.meta["head"]
    if head["type"] != "linear":
        raise UserError("--format timm needs a linear head (timm's classifier is one layer); "
                        "this run has an MLP head: use --format onnx or torchscript")
    spec = saved.meta["backbone"]
    labels = _labels(saved)
    body = saved.model.backbone.model
    model: Any = timm.create_model(spec["model_name"], pretrained=False, num_classes=len(labels),
                              pretrained_cfg_overlay=spec.get("cfg_overlay") or None)
    state = {k: v for k, v in body.state_dict().items()}
    linear = saved.model.head[-1]
    classifier = model.get_classifier()
    names = [n for n, m in model.named_modules() if m is classifier]
    state[f"{names[0]}.weight"], state[f"{names[0]}.bias"] = linear.weight, linear.bias
    model.load_state_dict(state, strict=True)
    prep = saved.meta["preprocessing"]
    size = int(prep["input_size"])
    data_config = {"input_size": (3, size, size), "interpolation": prep["interpolation"],
                   "mean": tuple(prep["mean"]), "std": tuple(prep["std"]),
                   "crop_pct": size / float(prep["resize_size"]), "crop_mode": "center"}
    out.mkdir(parents=True, exist_ok=True)
    save_for_hf(model, str(out), model_config={"label_names": list(labels.values())},
                safe_serialization=True, data_config=data_config)
    loaded: Any = timm.create_model(f"local-dir:{out.resolve()}", pretrained=True).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            return loaded(inputs).float().numpy()

    return run


# --------------------------------------------------------------------------------------------------
# PEFT
# --------------------------------------------------------------------------------------------------


def _peft(saved: Any, out: Path, run_config: dict[str, Any]) -> Runner:
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import save_file
    from transformers import AutoModel

    from tlkit.backbones.registry import hf_base_path

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
        "labels": _labels(saved), "base_model": base_path,
        "how": "PeftModel.from_pretrained(AutoModel.from_pretrained(base_model), folder); pool "
               "last_hidden_state (mean over attention_mask, or the first token), then the head "
               "(Dropout, Linear: keys 1.weight / 1.bias)"}, indent=2) + "\n")

    loaded = PeftModel.from_pretrained(AutoModel.from_pretrained(base_path, **extra),
                                       str(out)).eval()
    head = copy.deepcopy(saved.model.head).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            o = loaded(**_text_inputs(inputs))
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

