"""``--format hf``: a text run on a transformers backbone as a folder that transformers loads.
A question-answering run is written as its encoder's stock ``AutoModelForQuestionAnswering``
(``export_hf_answers``); the rest as below.

``AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)`` and
``AutoTokenizer.from_pretrained(folder)`` load it, with ``id2label``. The encoder is the
backbone's own transformers architecture; its pooling (mean over real tokens, the first token, or
the pooler) and tlkit's head come in ``modeling_tlkit.py``, copied beside the weights
(transformers' custom-code mechanism: no stock class pools by the mean). LoRA adapters are merged
into the weights first: the export needs no PEFT.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.backbones.lora import merge_lora
from tlkit.errors import UserError
from tlkit.export.common import Runner, labels, require_backbone, text_inputs

MODELING = Path(__file__).resolve().parent / "modeling_tlkit.py"  # copied into each export


def export_hf(saved: Any, out: Path) -> Runner:
    """Write ``saved`` (a ``tlkit.saved.SavedModel``) to the folder ``out``; the folder loaded
    back by transformers, as a runner."""
    require_backbone(saved, "hf", "text", "hf", "transformers")
    if saved.task == "question_answering":
        return export_hf_answers(saved, out)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tlkit.export.modeling_tlkit import TlkitConfig, TlkitForSequenceClassification

    model = copy.deepcopy(saved.model)
    if saved.meta.get("lora"):
        merge_lora(model)  # plain layers: the export needs no PEFT
    spec, head = saved.meta["backbone"], saved.meta["head"]
    names = labels(saved)
    cfg = TlkitConfig(
        encoder=dict(spec["config"]), pooling=spec["pooling"],
        add_pooling_layer=spec.get("add_pooling_layer"), head_type=head["type"],
        head_hidden_size=int(head["hidden_size"]), head_dropout=float(head["dropout"]),
        head_normalize=bool(head.get("normalize", False)),
        task=saved.task, num_labels=len(names), id2label=names,
        label2id={v: k for k, v in names.items()},
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
    shutil.copy(MODELING, out / "modeling_tlkit.py")
    tok = AutoTokenizer.from_pretrained(str(saved.preprocessing.tokenizer))
    tok.model_max_length = int(saved.preprocessing.max_length)
    tok.save_pretrained(str(out))

    loaded = AutoModelForSequenceClassification.from_pretrained(str(out),
                                                                trust_remote_code=True).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            return loaded(**text_inputs(inputs)).logits.float().numpy()

    return run


def export_hf_answers(saved: Any, out: Path) -> Runner:
    """A question-answering run as the stock ``AutoModelForQuestionAnswering`` of its encoder
    (BERT's ``BertForQuestionAnswering``, ...): the encoder's weights, and tlkit's linear head
    as ``qa_outputs`` (its two outputs are the start and the end logit, as transformers reads
    them). No custom code: any transformers that has the architecture loads it (and
    transformers 4's ``pipeline("question-answering", model=out)``; version 5 removed that
    pipeline)."""
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    model = copy.deepcopy(saved.model)
    if saved.meta.get("lora"):
        merge_lora(model)
    layers = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)]
    if len(layers) != 1 or saved.meta["head"].get("normalize"):
        raise UserError("--format hf writes a question-answering run's head as the model's "
                        "qa_outputs, one linear layer; this run's head is not one: use --format "
                        "onnx")
    encoder = dict(saved.meta["backbone"]["config"])
    config = AutoConfig.for_model(encoder.pop("model_type"), **encoder)
    config.num_labels = 2  # qa_outputs: start, end
    try:
        hf_model = AutoModelForQuestionAnswering.from_config(config)
    except ValueError:
        raise UserError(f"transformers has no question-answering model for "
                        f"{config.model_type}; use --format onnx") from None
    head = getattr(hf_model, "qa_outputs", None)
    if not isinstance(head, torch.nn.Linear):
        raise UserError(f"{type(hf_model).__name__} has no linear qa_outputs to hold the run's "
                        "head; use --format onnx")
    getattr(hf_model, hf_model.base_model_prefix).load_state_dict(
        model.backbone.model.state_dict())
    head.load_state_dict(layers[0].state_dict())
    hf_model.config.architectures = [type(hf_model).__name__]
    out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(saved.preprocessing.tokenizer))
    tok.model_max_length = int(saved.preprocessing.max_length)
    tok.save_pretrained(str(out))
    loaded = AutoModelForQuestionAnswering.from_pretrained(str(out)).eval()

    def run(inputs: Any) -> np.ndarray:
        with torch.no_grad():
            found = loaded(**text_inputs(inputs))
        return torch.stack([found.start_logits, found.end_logits], dim=-1).float().numpy()

    return run
