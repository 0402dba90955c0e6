"""Strategies beyond freezing: L2-SP, LoRA through PEFT, linear probing then fine-tuning (lp_ft).

Tiny random models only (timm's test_efficientnet / test_vit, a 2-layer BERT saved to disk with
MiniLM's tokenizer files, MiniLM's own architecture without its weights)."""

from __future__ import annotations

import dataclasses

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tlkit.assemble import assemble
from tlkit.cli import main
from tlkit.config import TransferConfig, validate
from tlkit.errors import UserError
from tlkit.backbones.lora import is_adapter_param, lora_spec, merge_lora
from tlkit.plan import HEAD
from tlkit.plan.apply import apply_phase
from tlkit.regularization import L2SP, l2sp_penalty






@pytest.fixture(scope="module")
def texts_csv(tmp_path_factory) -> Path:
    """80 short labelled texts: a word list decides the label, so even a tiny model learns."""
    rng = np.random.default_rng(0)
    good, bad = ["great", "fine", "lovely", "superb"], ["awful", "dull", "poor", "bad"]
    filler = ["the", "film", "was", "a", "plot", "story", "really", "quite"]
    rows = ["text,label"]
    for i in range(80):
        label = "pos" if i % 2 else "neg"
        words = list(rng.choice(filler, 4)) + [str(rng.choice(good if i % 2 else bad))]
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{label}")
    path = tmp_path_factory.mktemp("texts") / "texts.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def efficientnet_weights(tmp_path_factory) -> Path:
    """A 'pretrained' test_efficientnet: L2-SP needs weights to pull toward."""
    import timm

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    return path


def _tc(source: str = "timm:test_efficientnet", **kw) -> TransferConfig:
    kw.setdefault("pretrained_weights", "none")
    return TransferConfig(source_model=source, **kw)


def _tokens(folder: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    return dict(tok(texts, padding=True, return_tensors="pt"))


def _backbone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.backbone.named_parameters()}


def _head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.head.named_parameters()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _train_steps(asm, inputs, targets, steps: int = 3, lr: float = 1e-2) -> None:
    """A few AdamW steps on everything that requires grad after the plan's first phase."""
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    params = [p for p in asm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    asm.model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(asm.model(inputs), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _run_cfg(**tc) -> dict:
    base = {"epochs": 2, "batch_size": 16, "head_lr": 1e-2, "backbone_lr": 3e-3,
            "warmup_steps": 0, "early_stopping_patience": None, "device": "cpu"}
    return {**base, **tc}


# --------------------------------------------------------------------------------------------------
# L2-SP
# --------------------------------------------------------------------------------------------------


def test_l2sp_penalty_is_the_formula():
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    p0 = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert float(l2sp_penalty(zip(p, p0), 0.5)) == pytest.approx(0.5 * (1 + 4 + 4))
    assert float(l2sp_penalty([], 0.5)) == 0.0


def test_l2sp_is_zero_at_the_source_and_grows_quadratically():
    asm = assemble(_tc(freeze_strategy="none"), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    reg = L2SP(asm.model.backbone, 0.3)
    assert float(reg(asm.model).detach()) == 0.0
    torch.manual_seed(0)
    direction = {n: torch.randn_like(p) for n, p in asm.model.backbone.named_parameters()}
    norm2 = sum(float(d.pow(2).sum()) for d in direction.values())
    start = _backbone_state(asm.model)
    values = []
    for eps in (1e-3, 2e-3, 4e-3):
        with torch.no_grad():
            for n, p in asm.model.backbone.named_parameters():
                p.copy_(start[n] + eps * direction[n])
        values.append(float(reg(asm.model).detach()))
        assert values[-1] == pytest.approx(0.3 * eps**2 * norm2, rel=1e-3)
    assert values[1] / values[0] == pytest.approx(4, rel=1e-3)
    assert values[2] / values[1] == pytest.approx(4, rel=1e-3)


def test_l2sp_gradient_is_that_of_the_formula():
    asm = assemble(_tc(freeze_strategy="none"), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    reg = L2SP(asm.model.backbone, 0.7)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in asm.model.backbone.parameters():
            p.add_(torch.randn_like(p) * 1e-2)
    named = dict(asm.model.backbone.named_parameters())
    for _ in range(2):  # the scratch tensors are reused from one step to the next
        asm.model.zero_grad(set_to_none=True)
        value = reg(asm.model)
        value.backward()
        fast = {n: p.grad.clone() for n, p in named.items()}
        asm.model.zero_grad(set_to_none=True)
        reference = l2sp_penalty(((named[n], reg.source[n]) for n in named), 0.7)
        reference.backward()
        assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=1e-5)
        for n, p in named.items():
            torch.testing.assert_close(fast[n], p.grad, rtol=1e-5, atol=1e-8)
            torch.testing.assert_close(fast[n], 2 * 0.7 * (p.detach() - reg.source[n]))


def test_l2sp_leaves_the_head_alone():
    asm = assemble(_tc(freeze_strategy="none"), 3)
    apply_phase(asm.model, asm.groups, asm.plan.phases[0])
    reg = L2SP(asm.model.backbone, 1.0)
    assert not any(n.startswith("head") for n in reg.source)
    with torch.no_grad():
        for p in asm.model.head.parameters():
            p.add_(1.0)  # the head moves far: no penalty
    assert float(reg(asm.model).detach()) == 0.0
    with torch.no_grad():
        next(asm.model.backbone.parameters()).add_(0.1)
    penalty = reg(asm.model)
    assert float(penalty.detach()) > 0
    penalty.backward()
    assert all(p.grad is None for p in asm.model.head.parameters())
    assert next(asm.model.backbone.parameters()).grad is not None


def test_l2sp_counts_only_what_trains_across_gradual_unfreezing():
    tc = _tc(freeze_strategy="gradual", epochs=2,
             unfreeze_schedule=[{"epoch": 1, "unfreeze": "last_block"}])
    asm = assemble(tc, 3)
    reg = L2SP(asm.model.backbone, 1.0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    # phase 1: head only; the backbone does not move and there is nothing to pull back
    _train_steps(asm, x, y)
    assert float(reg(asm.model).detach()) == 0.0 and reg.distance(asm.model) == 0.0
    # phase 2: the top group moves; the frozen ones stay at the source and add nothing
    apply_phase(asm.model, asm.groups, asm.plan.phases[1])
    params = [p for p in asm.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for _ in range(2):
        loss = nn.functional.cross_entropy(asm.model(x), y) + reg(asm.model)
        opt.zero_grad()
        loss.backward()
        opt.step()
    penalty = float(reg(asm.model).detach())
    assert penalty > 0
    assert penalty == pytest.approx(reg.distance(asm.model), rel=1e-5)
    top = set(asm.groups[-1].param_names)
    named = dict(asm.model.backbone.named_parameters())
    assert all(torch.equal(named[n], reg.source[n]) for n in named if n not in top)


@pytest.mark.slow
def test_l2sp_in_a_run_logs_the_penalty_and_keeps_pulling_toward_pretrained_after_resume(
        tmp_path, efficientnet_weights):
    from tlkit.run import fit_run

    raw = {"transfer_config": _run_cfg(source_model="timm:test_efficientnet",
                                       pretrained_weights=str(efficientnet_weights),
                                       freeze_strategy="none", l2sp_lambda=0.05,
                                       min_steps=0),  # one pass per epoch: it drifts
           "data": {"source": "digits", "image_size": 32, "limit": 160}}
    cfg = validate(raw)
    full = fit_run(cfg, tmp_path / "full")
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["train_penalty"] > 0 for r in rows)
    assert rows[1]["train_penalty"] > rows[0]["train_penalty"]  # it drifts further; pulled back
    plan = (tmp_path / "full" / "plan.txt").read_text()
    assert "L2-SP" in plan

    class Stop(Exception):
        pass

    def stop_after_first_epoch(kind, info):
        if kind == "epoch_end" and info["epoch"] == 0:
            raise Stop

    with pytest.raises(Stop):
        fit_run(cfg, tmp_path / "cut", event=stop_after_first_epoch)
    resumed = fit_run(cfg, tmp_path / "cut", resume=True)
    rows2 = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    # measured from the pretrained weights, as in the uninterrupted run (not from the checkpoint)
    assert rows2[1]["train_penalty"] == pytest.approx(rows[1]["train_penalty"], rel=1e-4)
    assert resumed["test"]["accuracy"] == pytest.approx(full["test"]["accuracy"])


# --------------------------------------------------------------------------------------------------
# LoRA
# --------------------------------------------------------------------------------------------------


def test_lora_plan_places_every_parameter_in_its_layer_group(tiny_bert_dir):
    asm = assemble(_tc(f"hf:{tiny_bert_dir}", pretrained_weights="packaged",
                       freeze_strategy="lora"), 2)
    total = sum(p.numel() for p in asm.model.parameters())
    assert asm.plan.total_params == total
    phase = asm.plan.phases[0]
    assert sum(r.n_params for r in phase.rows) == total
    lora = [n for n, _ in asm.model.backbone.named_parameters() if is_adapter_param(n)]
    assert lora, "no LoRA matrices were added"
    for g in asm.groups:
        for n in g.param_names:
            if is_adapter_param(n):  # e.g. model.encoder.layer.1....query.lora_A.default.weight
                assert g.name == "encoder.layer." + n.split("encoder.layer.")[1].split(".")[0]
    rows = {r.name: r for r in phase.rows}
    assert not rows["embeddings"].trainable  # nothing adapted there
    assert rows["encoder.layer.0"].trainable and rows["encoder.layer.0"].adapters_only
    params = dict(asm.model.backbone.named_parameters())
    for g in asm.groups:
        assert rows[g.name].n_adapter == sum(params[n].numel() for n in g.param_names
                                             if is_adapter_param(n))
    # what the plan says trains is what requires grad
    apply_phase(asm.model, asm.groups, phase)
    trainable = {n for n, p in asm.model.named_parameters() if p.requires_grad}
    assert trainable == {f"backbone.{n}" for n in lora} | {
        f"head.{n}" for n, _ in asm.model.head.named_parameters()}
    assert phase.trainable_params == sum(p.numel() for p in asm.model.parameters()
                                         if p.requires_grad)


def test_lora_trains_under_two_percent_of_minilm():
    from tlkit.backbones.packaged import minilm_folder

    folder = minilm_folder()
    assert folder is not None
    # MiniLM's architecture (22.7M parameters) at random: the count does not need its weights
    asm = assemble(_tc(f"hf:{folder}", freeze_strategy="lora"), 2)
    share = asm.plan.phases[0].trainable_params / asm.plan.total_params
    assert 0 < share < 0.02, share
    assert asm.plan.total_params > 22_000_000


def test_lora_leaves_the_base_weights_untouched(tiny_bert_dir):
    asm = assemble(_tc(f"hf:{tiny_bert_dir}", pretrained_weights="packaged",
                       freeze_strategy="lora"), 2)
    before = _backbone_state(asm.model)
    head_before = _head_state(asm.model)
    inputs = _tokens(tiny_bert_dir, ["a fine film", "dull and poor", "great story", "bad plot"])
    _train_steps(asm, inputs, torch.tensor([1, 0, 1, 0]), steps=4)
    after = _backbone_state(asm.model)
    base = [n for n in before if not is_adapter_param(n)]
    assert all(torch.equal(before[n], after[n]) for n in base)
    lora_b = [n for n in before if ".lora_B." in n]
    assert lora_b and all(not torch.equal(before[n], after[n]) for n in lora_b)
    assert not _same(head_before, _head_state(asm.model))


@pytest.mark.parametrize("source", ["timm:test_efficientnet", "timm:test_vit", "bert"])
def test_lora_model_saves_loads_and_merges(tmp_path, tiny_bert_dir, source):
    from tlkit.backbones.base import TextPreprocessing
    from tlkit.saved import load_model, save_model

    if source == "bert":
        asm = assemble(_tc(f"hf:{tiny_bert_dir}", pretrained_weights="packaged",
                           freeze_strategy="lora"), 2)
        inputs = _tokens(tiny_bert_dir, ["a fine film", "dull and poor", "great story"])
        prep = TextPreprocessing(tokenizer=str(tiny_bert_dir), max_length=64)
    else:
        asm = assemble(_tc(source, freeze_strategy="lora", lora={"r": 4, "alpha": 8}), 2)
        torch.manual_seed(0)
        inputs = torch.randn(3, 3, 32, 32)
        prep = asm.model.backbone.preprocessing
    # LoRA B starts at zero: give it values, as training would, so that merging matters
    with torch.no_grad():
        for n, p in asm.model.backbone.named_parameters():
            if ".lora_B." in n:
                p.normal_(0, 0.05)
    asm.model.eval()
    with torch.no_grad():
        expected = asm.model(inputs)
    head = {"type": "linear", "hidden_size": 256, "dropout": 0.1, "num_outputs": 2}
    save_model(tmp_path / "model", asm.model, prep, head, "single_label", ["a", "b"])
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["lora"]["r"] == (8 if source == "bert" else 4)
    # loaded from model/ alone: no training config anywhere near it
    moved = tmp_path / "elsewhere"
    shutil.move(str(tmp_path / "model"), moved)
    saved = load_model(moved)
    with torch.no_grad():
        got = saved.model(inputs)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # merged into the base weights: the plain architecture, the same outputs
    merged = merge_lora(saved.model)
    assert not any(is_adapter_param(n) for n, _ in merged.named_parameters())
    assert not any(".base_layer." in n for n, _ in merged.named_parameters())
    assert lora_spec(merged) is None
    with torch.no_grad():
        torch.testing.assert_close(merged(inputs), expected, rtol=0, atol=1e-5)


def test_lora_run_directory_predicts_the_same_without_the_config(tmp_path, tiny_bert_dir,
                                                                 texts_csv):
    from tlkit.run import evaluate_run, fit_run

    raw = {"transfer_config": _run_cfg(source_model=f"hf:{tiny_bert_dir}",
                                       pretrained_weights="packaged", freeze_strategy="lora",
                                       lora={"r": 4, "alpha": 8, "dropout": 0.0},
                                       lr_decay_per_layer=1.0),
           "data": {"source": str(texts_csv), "max_length": 32}}
    run = tmp_path / "run"
    summary = fit_run(validate(raw), run)
    assert summary["trainable_parameters_last_phase"] < 0.02 * summary["parameters"]
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["lora"]["target_modules"] == sorted(["query", "key", "value",
                                                     "attention.output.dense"])
    # base weights in the saved model are the pretrained ones, bit for bit
    from safetensors.torch import load_file

    saved = load_file(str(run / "model" / "model.safetensors"))
    source = load_file(str(tiny_bert_dir / "model.safetensors"))
    compared = 0
    for key, value in source.items():
        name = "backbone.model." + key
        if name not in saved:
            name = name.replace(".weight", ".base_layer.weight").replace(".bias",
                                                                          ".base_layer.bias")
        if name in saved:
            assert torch.equal(saved[name], value), name
            compared += ".base_layer." in name
    assert compared == 2 * 4 * 2  # 2 layers x 4 adapted projections x (weight, bias)
    (run / "config.yaml").rename(run / "config.moved")  # model/ must not need it
    from tlkit.saved import load_model

    model = load_model(run / "model").model
    assert lora_spec(model) is not None
    (run / "config.moved").rename(run / "config.yaml")  # evaluate reads the data split from it
    ev = evaluate_run(run)
    assert ev["loss"] == pytest.approx(summary["test"]["loss"], abs=1e-5)
    assert ev["accuracy"] == pytest.approx(summary["test"]["accuracy"])


def test_lora_settings_are_checked():
    with pytest.raises(UserError, match="only used by freeze_strategy lora"):
        validate({"transfer_config": {"source_model": "timm:test_vit", "lora": {"r": 4}},
                  "data": {"source": "digits"}})
    with pytest.raises(UserError, match="valid keys in transfer_config.lora: r, alpha"):
        validate({"transfer_config": {"source_model": "timm:test_vit", "freeze_strategy": "lora",
                                      "lora": {"rank": 4}}, "data": {"source": "digits"}})
    with pytest.raises(UserError, match="lora.target_modules"):
        assemble(_tc("timm:test_vit", freeze_strategy="lora",
                     lora={"target_modules": ["no_such_layer"]}), 2)


# --------------------------------------------------------------------------------------------------
# lp_ft
# --------------------------------------------------------------------------------------------------


def test_lp_ft_phases():
    asm = assemble(_tc(freeze_strategy="lp_ft", epochs=5, lp_epochs=2,
                       early_stopping_patience=None), 3)
    p1, p2 = asm.plan.phases
    assert (p1.start_epoch, p1.end_epoch, p2.start_epoch, p2.end_epoch) == (0, 2, 2, 5)
    assert [r.trainable for r in p1.rows] == [False] * len(asm.groups) + [True]
    assert all(r.trainable for r in p2.rows)
    assert p1.trainable_params == p1.rows[-1].n_params
    assert p2.trainable_params == asm.plan.total_params
    # the default: half the epochs probe
    asm = assemble(_tc(freeze_strategy="lp_ft", epochs=4), 3)
    assert asm.plan.phases[1].start_epoch == 2


def test_lp_ft_settings_are_checked():
    def check(**kw):
        validate({"transfer_config": {"source_model": "timm:test_vit", **kw},
                  "data": {"source": "digits"}})

    with pytest.raises(UserError, match="no epoch for fine-tuning"):
        check(freeze_strategy="lp_ft", epochs=3, lp_epochs=3)
    with pytest.raises(UserError, match="only used by freeze_strategy lp_ft"):
        check(freeze_strategy="none", lp_epochs=2)
    # patience shorter than the probe is fine: it ends the probe phase, not the run
    check(freeze_strategy="lp_ft", epochs=10, lp_epochs=5, early_stopping_patience=2)


def test_lp_ft_second_phase_starts_from_the_head_the_first_trained():
    from tlkit.config import DataConfig
    from tlkit.data import build_collate, build_dataset, load_source, make_splits
    from tlkit.data.transforms import resolve_preprocessing
    from tlkit.train.hooks import NO_IO
    from tlkit.train.loop import TrainData, fit

    dcfg = DataConfig(source="digits", image_size=32, limit=120)
    splits = make_splits(load_source(dcfg), dcfg)
    tc = _tc(freeze_strategy="lp_ft", epochs=3, lp_epochs=1, early_stopping_patience=None,
             head_lr=1e-2, backbone_lr=3e-3, batch_size=16, device="cpu")
    torch.manual_seed(0)
    asm = assemble(tc, 10)
    prep = resolve_preprocessing(asm.model.backbone.preprocessing, dcfg)
    head_object = asm.model.head
    seen: dict[str, dict[str, torch.Tensor]] = {"init_head": _head_state(asm.model),
                                                "init_backbone": _backbone_state(asm.model)}

    def event(kind, info):
        if kind == "epoch_end" and info["epoch"] == 0:
            seen["probe_head"] = _head_state(asm.model)
            seen["probe_backbone"] = _backbone_state(asm.model)
        if kind == "epoch_start" and info["phase"] == 2 and "ft_start_head" not in seen:
            seen["ft_start_head"] = _head_state(asm.model)
            seen["ft_trainable"] = {n: p.requires_grad for n, p in asm.model.named_parameters()}

    data = TrainData(build_dataset(splits.train, prep), build_dataset(splits.val, prep),
                     build_collate(prep), "single_label", splits.classes)
    fit(asm, data, tc.loop_settings, dataclasses.replace(NO_IO, event=event))
    assert asm.model.head is head_object
    # phase 1 trained the head and nothing else
    assert not _same(seen["init_head"], seen["probe_head"])
    assert _same(seen["init_backbone"], seen["probe_backbone"])
    # phase 2 starts from exactly that head, with everything trainable, and moves the backbone
    assert _same(seen["ft_start_head"], seen["probe_head"])
    assert all(seen["ft_trainable"].values())
    assert not _same(seen["probe_backbone"], _backbone_state(asm.model))


# --------------------------------------------------------------------------------------------------
# tlkit plan
# --------------------------------------------------------------------------------------------------


def _plan_text(capsys, tmp_path, text: str) -> str:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    code = main(["plan", str(cfg)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_tlkit_plan_lora(capsys, tmp_path, tiny_bert_dir, texts_csv):
    out = _plan_text(capsys, tmp_path, f"""\
transfer_config:
  source_model: hf:{tiny_bert_dir}
  freeze_strategy: lora
  lora: {{r: 4, alpha: 8}}
  epochs: 3
data:
  source: {texts_csv}
""")
    assert "strategy lora" in out and "trainable" in out.splitlines()[3]
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^\s+(\S+)\s+([\d,]+)\s+([\d,]+)\s+(lora|trainable|frozen)\s", line)
        if m:
            rows[m.group(1)] = (int(m.group(2).replace(",", "")),
                                int(m.group(3).replace(",", "")), m.group(4))
    assert rows["embeddings"][1:] == (0, "frozen")
    for i in (0, 1):  # q, k, v, attention output: 4 layers x r (32 + 32)
        assert rows[f"encoder.layer.{i}"][1:] == (4 * 4 * 64, "lora")
    assert rows[HEAD][0] == rows[HEAD][1] and rows[HEAD][2] == "trainable"
    total = re.search(r"^\s+total\s+([\d,]+)\s+([\d,]+)$", out, re.M)
    assert int(total.group(2).replace(",", "")) == sum(r[1] for r in rows.values())
    assert "LoRA (PEFT): r 4, alpha 8" in out and "8 layers" in out


def test_tlkit_plan_lp_ft(capsys, tmp_path):
    out = _plan_text(capsys, tmp_path, """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: lp_ft
  lp_epochs: 2
  epochs: 5
data:
  source: digits
""")
    blocks = out.split("\nphase ")[1:]
    assert len(blocks) == 2
    # digits: 1,797 images less 10% validation and 10% test: 1,455 to train, 46 batches of 32
    # per epoch; 5 epochs make 230 steps, over min_steps (100): one pass per epoch
    assert blocks[0].startswith("1 (epochs 0-1, optimizer steps 0-91): linear probe")
    assert blocks[1].startswith("2 (epochs 2-4, optimizer steps 92-229)")
    assert "training length: 230 optimizer steps = 5 epochs x 46 steps" in out
    assert "fine-tune" in blocks[1].splitlines()[0]
    row = re.compile(r"^\s+(\S+)\s+[\d,]+\s+(trainable|frozen)\s")
    states = [{m.group(1): m.group(2) for m in map(row.match, b.splitlines()) if m}
              for b in blocks]
    assert states[0].pop(HEAD) == "trainable" and set(states[0].values()) == {"frozen"}
    assert set(states[1].values()) == {"trainable"} and HEAD in states[1]
    assert "lp_ft (Kumar et al., 2022)" in out


# --------------------------------------------------------------------------------------------------
# bench/strategies.py
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("epochs", [2, 3, 5, 8])
def test_the_benchmark_builds_a_valid_config_for_every_run(epochs):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "strategies.py"
    spec = importlib.util.spec_from_file_location("bench_strategies", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = bench.main.__globals__["argparse"].Namespace(
        epochs=epochs, seed=0, max_length=None, image_size=None, amp=False, device="cpu",
        l2sp_lambda=0.1, lora_r=8)
    for set_name in bench.SETS:
        for strategy in bench.STRATEGIES:
            for budget in (200, 2000):
                cfg = validate(bench.build_config(set_name, strategy, budget, args))
                tc = cfg.transfer_config
                assert tc.epochs == epochs and tc.early_stopping_patience is None
                assert cfg.data.limit == round(budget / 0.8)
                assert (tc.pretrained_weights == "none") == (strategy == "scratch")
