"""Self-supervised continued pretraining (tlkit pretrain): the contrastive loss, the objective
chosen by what the backbone was trained with, the held-out guard and CKA, and a kill -9 resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from cli_runner import kill_9_when, run_cli
from tlkit.adapt.contrastive import info_nce
from tlkit.adapt.pretrain import choose_objective
from tlkit.config import validate


def test_the_contrastive_loss_is_lower_for_two_views_of_one_example_than_for_others() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=g)
    same = info_nce(a, a + 0.01 * torch.randn(16, 32, generator=g))
    other = info_nce(a, torch.randn(16, 32, generator=g))
    shuffled = info_nce(a, a[torch.randperm(16, generator=g)])
    assert float(same) < 0.1 < float(other) and float(same) < float(shuffled)
    # a loss of log(batch) at chance: nothing tells the positive from the negatives
    assert float(info_nce(torch.ones(8, 4), torch.ones(8, 4))) == pytest.approx(
        float(torch.log(torch.tensor(8.0))), rel=1e-4)


def test_the_objective_follows_what_the_checkpoint_was_trained_with(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    from transformers import BertConfig, BertForMaskedLM

    kind, why = choose_objective(str(tiny_bert_dir), "auto")
    assert kind == "simcse" and "no masked-LM head" in why
    cfg = BertConfig(vocab_size=100, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8)
    BertForMaskedLM(cfg).save_pretrained(tmp_path / "mlm")
    assert choose_objective(str(tmp_path / "mlm"), "auto")[0] == "mlm"
    assert choose_objective(str(tiny_bert_dir), "mlm") == ("mlm", "set by adaptation.pretrain."
                                                                  "objective")


def _raw(bert: Path, **pretrain: object) -> dict:
    return {"transfer_config": {"source_model": f"hf:{bert}", "pretrained_weights": str(bert),
                                "device": "cpu"},
            "data": {"source": "rotten_tomatoes", "max_length": 24},
            "adaptation": {"target": {"source": "rotten_tomatoes"},
                           "pretrain": {"max_examples": 200, "epochs": 2, "lr": 1e-3,
                                        "batch_size": 16, **pretrain}}}


@pytest.mark.slow
def test_simcse_pretraining_writes_a_backbone_with_its_held_out_loss_and_cka(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    import shutil

    from tlkit.adapt.pretrain import pretrain
    from tlkit.backbones.hf import HFBackbone

    # a sentence-transformers folder (pooling, then Normalize: cosine-trained, as MiniLM)
    st = tmp_path / "st"
    shutil.copytree(tiny_bert_dir, st)
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (st / "2_Normalize").mkdir()
    assert HFBackbone(str(st)).cosine
    res = pretrain(validate(_raw(st, patience=None)), tmp_path / "out")
    assert res["objective"] == "simcse" and res["held_out"] == 10 and res["examples"] == 190
    assert len(res["held_out_loss_per_epoch"]) == 2
    assert res["loss_per_epoch"][-1] < res["loss_per_epoch"][0]
    cka = res["cka_to_start"]
    assert set(cka) >= {"embeddings", "encoder.layer.0", "encoder.layer.1"}
    assert all(0 <= v <= 1.0001 for v in cka.values())
    # a finished pretraining leaves a backbone folder, not its checkpoints
    assert not (tmp_path / "out" / "checkpoints").exists()
    after = HFBackbone(str(tmp_path / "out"))  # fit loads it as source_model: hf:OUT
    before = HFBackbone(str(st))
    # SimCSE keeps the cosine geometry: the folder is still a sentence-transformers one, and
    # head.normalize auto still reads it as cosine-trained
    assert after.cosine and (tmp_path / "out" / "1_Pooling" / "config.json").is_file()
    assert any(not torch.equal(a, b) for (_, a), (_, b) in
               zip(before.named_parameters(), after.named_parameters()))


def _whole_and_killed(cfg: Path, tmp_path: Path, weights: str) -> tuple[Path, Path]:
    """A pretraining run whole, and one killed with SIGKILL after a checkpoint, refused
    without --resume and resumed with it: both write the same ``weights``."""
    from safetensors.torch import load_file

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_cli("pretrain", str(cfg), "--out", str(whole))
    assert r.returncode == 0, r.stderr
    kill_9_when(["pretrain", cfg, "--out", killed, "--checkpoint-every", "1"],
                [killed / "checkpoints" / "last.pt"], settle=0.5)
    r = run_cli("pretrain", str(cfg), "--out", str(killed))
    assert r.returncode == 2 and "--resume" in r.stderr
    r = run_cli("pretrain", str(cfg), "--out", str(killed), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    a, b = load_file(str(whole / weights)), load_file(str(killed / weights))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return whole, killed


@pytest.mark.slow
def test_a_pretraining_killed_with_sigkill_resumes_to_the_same_weights(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(_raw(tiny_bert_dir, patience=None, max_examples=320)))
    whole, killed = _whole_and_killed(cfg, tmp_path, "model.safetensors")
    ra = json.loads((whole / "pretrain.json").read_text())
    rb = json.loads((killed / "pretrain.json").read_text())
    assert ra["held_out_loss_per_epoch"] == rb["held_out_loss_per_epoch"]


def _image_raw(**pretrain: object) -> dict:
    return {"transfer_config": {"source_model": "timm:test_efficientnet",
                                "pretrained_weights": "none", "device": "cpu"},
            "data": {"source": "digits", "image_size": 32},
            "adaptation": {"target": {"source": "digits", "image_size": 32},
                           "pretrain": {"max_examples": 96, "epochs": 2, "batch_size": 16,
                                        "lr": 1e-3, "top_groups": 2, **pretrain}}}


def test_image_views_are_random_crops_of_the_same_image() -> None:
    from tlkit.adapt.simclr import views

    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    a, b = views(x), views(x)
    assert a.shape == x.shape and not torch.equal(a, b)
    torch.manual_seed(0)
    assert torch.equal(views(x), a)  # drawn from torch's generator: a resume redraws them


@pytest.mark.slow
def test_simclr_pretraining_trains_the_top_groups_and_writes_weights_fit_loads(
        tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tlkit.adapt.pretrain import pretrain
    from tlkit.backbones.registry import load_backbone

    res = pretrain(validate(_image_raw(patience=None)), tmp_path / "out")
    assert res["objective"] == "simclr" and "SimCLR" in res["why"]
    assert res["examples"] + res["held_out"] == 96 and len(res["held_out_loss_per_epoch"]) == 2
    weights = tmp_path / "out" / "backbone.safetensors"
    assert res["use"] == f"pretrained_weights: {weights}"
    # fit loads it as it loads any weights file of that architecture
    after = load_backbone("timm:test_efficientnet", str(weights))
    saved = load_file(str(weights))
    groups = after.layer_groups()
    top = {n for g in groups[-2:] for n in g.param_names}
    torch.manual_seed(validate(_image_raw()).transfer_config.seed)
    start = load_backbone("timm:test_efficientnet", "none")  # pretrain's seeded random start
    assert all(torch.equal(p, saved[n.removeprefix("model.")])
               for n, p in after.named_parameters())  # what fit loads is what pretrain wrote
    moved = {n for n, p in start.named_parameters()
             if not torch.equal(p, saved[n.removeprefix("model.")])}
    assert moved and moved <= top  # only the top two groups trained
    # the frozen groups' BatchNorm statistics stayed too
    assert torch.equal(start.state_dict()["model.bn1.running_mean"], saved["bn1.running_mean"])
    cka = res["cka_to_start"]
    assert set(cka) and all(0 <= v <= 1.0001 for v in cka.values())


@pytest.mark.slow
def test_an_image_pretraining_killed_with_sigkill_resumes_to_the_same_weights(
        tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    # 48 steps: 12 (2 epochs) could all run in the half second after the first checkpoint
    # on an idle machine, and the kill then found a finished pretraining
    cfg.write_text(yaml.safe_dump(_image_raw(patience=None, epochs=8)))
    _whole_and_killed(cfg, tmp_path, "backbone.safetensors")


def test_word_deletion_views_drop_words_and_keep_one() -> None:
    from tlkit.adapt.contrastive import delete_words

    text = "a quietly moving film about two brothers and their father"
    assert delete_words(text, 0.0) == text
    torch.manual_seed(0)
    views = [delete_words(text, 0.3) for _ in range(20)]
    assert all(set(v.split()) <= set(text.split()) and v for v in views)
    assert len(set(views)) > 1 and any(len(v.split()) < len(text.split()) for v in views)
    assert delete_words("word", 0.99) == "word"  # one word: nothing to drop
    torch.manual_seed(0)
    assert [delete_words(text, 0.3) for _ in range(20)] == views  # a resume redraws them


@pytest.mark.slow
def test_tsdae_pretraining_reconstructs_damaged_texts_and_writes_only_the_encoder(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    from tlkit.adapt.pretrain import pretrain
    from tlkit.backbones.hf import HFBackbone

    res = pretrain(validate(_raw(tiny_bert_dir, objective="tsdae", patience=None, epochs=3)),
                   tmp_path / "out")
    assert res["objective"] == "tsdae" and res["why"].startswith("set by")
    assert res["loss_per_epoch"][-1] < res["loss_per_epoch"][0]
    assert len(res["held_out_loss_per_epoch"]) == 3
    # the folder is the encoder fit loads (the decoder and its cross-attention are dropped)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert not saved.get("add_cross_attention") and not saved.get("is_decoder")
    HFBackbone(str(tmp_path / "out"))
