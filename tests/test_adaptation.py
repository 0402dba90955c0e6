"""Domain adaptation: the losses, AdaBN, and a DANN run that crashes mid-way and resumes to the
same result as one that never stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tlkit.adapt.adabn import adabn
from tlkit.adapt.losses import CORAL, DANN, MMD, dann_coefficient, grad_reverse
from tlkit.config import validate
from tlkit.errors import UserError


def test_gradient_reversal_flips_and_scales_the_gradient() -> None:
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.5).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), -0.5))


def test_dann_coefficient_grows_from_zero_to_near_one() -> None:
    assert dann_coefficient(0.0) == 0.0
    assert 0.99 < dann_coefficient(1.0) < 1.0
    vals = [dann_coefficient(p / 10) for p in range(11)]
    assert vals == sorted(vals)


def test_alignment_losses_are_small_for_one_distribution_and_grow_with_a_shift() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 8, generator=g), torch.randn(256, 8, generator=g)
    for loss in (MMD(), CORAL()):
        same = float(loss(a, b, 0.5))
        shifted = float(loss(a, b * 3 + 2, 0.5))
        assert shifted > 10 * max(same, 1e-6), type(loss).__name__
    d = DANN(8)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    for _ in range(200):  # the domain classifier alone learns to tell a shifted target apart
        opt.zero_grad()
        d(a, b + 3, 1.0).backward()
        opt.step()
    assert d.domain_accuracy(a, b + 3) > 0.95


def test_adabn_sets_batchnorm_statistics_to_the_targets() -> None:
    bn = torch.nn.Sequential(torch.nn.BatchNorm1d(4))
    g = torch.Generator().manual_seed(0)  # a fixed sample: the estimate's noise is not the test
    data = [(torch.randn(4, generator=g) * 2 + 5, 0) for _ in range(300)]

    def collate(items: list) -> tuple:
        return torch.stack([x for x, _ in items]), torch.zeros(len(items))

    assert adabn(bn, data, collate, torch.device("cpu")) == 1
    assert torch.allclose(bn[0].running_mean, torch.full((4,), 5.0), atol=0.35)
    assert torch.allclose(bn[0].running_var, torch.full((4,), 4.0), atol=1.0)
    assert bn[0].momentum == 0.1  # restored


def test_config_refuses_an_alignment_loss_that_cannot_train_anything() -> None:
    raw = {"transfer_config": {"source_model": "mobilenetv2", "freeze_strategy": "all_frozen"},
           "data": {"source": "fashion_mnist"},
           "adaptation": {"method": "mmd", "target": {"source": "digits"}}}
    with pytest.raises(UserError, match="may train only the head"):
        validate(raw)
    raw["adaptation"] = {"method": "dann"}
    with pytest.raises(UserError, match="needs unlabelled target data"):
        validate(raw)


RAW = {
    "transfer_config": {"source_model": "timm:test_efficientnet", "pretrained_weights": "none",
                        "freeze_strategy": "top_n_unfrozen", "top_n": 2, "head_lr": 1e-2,
                        "backbone_lr": 3e-3, "epochs": 2, "batch_size": 16,
                        "early_stopping_patience": None, "device": "cpu"},
    "data": {"source": "digits", "image_size": 32, "limit": 160},
    "adaptation": {"method": "dann", "target": {"source": "digits", "image_size": 32},
                   "target_limit": 96},
    "diagnostics": {"sample": 60, "check_preprocessing": "off"},
}


class Crash(Exception):
    pass


@pytest.mark.slow
def test_a_dann_run_resumed_mid_way_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tlkit.run import fit_run

    cfg = validate(RAW)
    whole = fit_run(cfg, tmp_path / "whole", checkpoint_every=2)

    def crash_at_step_5(kind: str, info: dict) -> None:
        if kind == "step" and info["batch"] == 5 and info["epoch"] == 1:
            raise Crash()

    with pytest.raises(Crash):
        fit_run(cfg, tmp_path / "killed", checkpoint_every=2, event=crash_at_step_5)
    ckpt = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert "adaptation" in ckpt and ckpt["state"]["epoch"] == 1  # the domain classifier too
    resumed = fit_run(cfg, tmp_path / "killed", resume=True, checkpoint_every=2)

    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert whole["test"]["accuracy"] == resumed["test"]["accuracy"]
    assert whole["adaptation"]["target_test"] == resumed["adaptation"]["target_test"]
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text()
            .splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1]
    assert all(r["train_adaptation_loss"] > 0 for r in rows)
    rep = whole["adaptation"]
    assert rep["method"] == "dann" and 0 <= rep["pad_before"] <= 2 and 0 <= rep["pad_after"] <= 2


@pytest.mark.slow
def test_pretrain_continues_masked_lm_training_and_writes_a_backbone(
        tmp_path: Path, tiny_bert_dir: Path) -> None:
    from tlkit.adapt.pretrain import pretrain
    from tlkit.backbones.hf import HFBackbone

    raw = {"transfer_config": {"source_model": f"hf:{tiny_bert_dir}",
                               "pretrained_weights": str(tiny_bert_dir), "device": "cpu"},
           "data": {"source": "rotten_tomatoes", "max_length": 32},
           "adaptation": {"target": {"source": "rotten_tomatoes"},
                          "pretrain": {"max_examples": 256, "epochs": 3, "lr": 1e-3,
                                       "objective": "mlm", "patience": None}}}
    res = pretrain(validate(raw), tmp_path / "out")
    losses = res["loss_per_epoch"]
    assert res["objective"] == "mlm" and len(res["held_out_loss_per_epoch"]) == 3
    assert len(losses) == 3 and losses[-1] < losses[0]  # it learns the target's text
    before, after = HFBackbone(str(tiny_bert_dir)), HFBackbone(str(tmp_path / "out"))
    moved = [n for (n, a), (_, b) in zip(before.named_parameters(), after.named_parameters())
             if not torch.equal(a, b)]
    assert moved, "the written backbone holds the continued-pretrained weights"
    with pytest.raises(UserError, match="holds a finished pretraining; choose another --out"):
        pretrain(validate(raw), tmp_path / "out")


def test_pretrain_refuses_an_image_backbone() -> None:
    from tlkit.adapt.pretrain import pretrain

    raw = {"transfer_config": {"source_model": "mobilenetv2"},
           "data": {"source": "fashion_mnist"},
           "adaptation": {"target": {"source": "rotten_tomatoes"}}}
    with pytest.raises(UserError, match="not a transformers text model"):
        pretrain(validate(raw), Path("/tmp/never-written"))


def test_a_target_without_labels_loads_as_unlabelled(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from tlkit.adapt.target import load_target
    from tlkit.config import DataConfig

    (tmp_path / "t.csv").write_text("text\nhello there\nnice film\n")
    data, labelled = load_target(DataConfig(source=str(tmp_path / "t.csv")), ["neg", "pos"])
    assert not labelled and data.inputs == ["hello there", "nice film"]
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), i * 40, np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    data, labelled = load_target(DataConfig(source=str(tmp_path / "imgs")), ["a", "b"])
    assert not labelled and len(data) == 3 and data.modality == "image"
