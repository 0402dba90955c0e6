"""No training batch of a single example reaches BatchNorm layers in training mode (they
normalise by the batch's own statistics, which one example cannot give): a pass whose last
batch would hold one joins it to the batch before, the plan's step count follows, and a
training split of one example is refused with a message. Runs whose batches never reach a
training BatchNorm with one example are batched as before."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from user_runs import cli, error_line

from tlkit.adapt.adabn import adabn
from tlkit.assemble import assemble
from tlkit.config import TransferConfig, validate
from tlkit.errors import UserError
from tlkit.plan.apply import batchnorm_trains
from tlkit.plan.length import length_of
from tlkit.train.batches import epoch_batches

# 37 digits: 33 train (batches of 16, 16 and 1), 2 validation, 2 test
RAW = {
    "transfer_config": {"source_model": "timm:test_efficientnet", "pretrained_weights": "none",
                        "freeze_strategy": "none", "head_lr": 1e-2, "backbone_lr": 3e-3,
                        "epochs": 2, "batch_size": 16, "early_stopping_patience": None,
                        "min_steps": 0, "cache": {"disk": False}, "device": "cpu"},
    "data": {"source": "digits", "image_size": 32, "limit": 37},
    "diagnostics": {"check_preprocessing": "off"},
}


def _settings(**kw: object) -> SimpleNamespace:
    base = dict(batch_size=16, gradient_accumulation_steps=1, epochs=1, min_steps=0,
                warmup_steps=0, warmup_ratio=0.0)
    return SimpleNamespace(**{**base, **kw})


# ---------------------------------------------------------------------------------------------
# the batches and the length (pure)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooled", [False, True])
def test_a_last_batch_of_one_joins_the_one_before_and_the_length_counts_it(pooled: bool) -> None:
    for n in [*range(2, 40), 97, 161, 801]:
        for bs in (2, 3, 16):
            # texts: pools of 2 batches sorted by length (a last pool of one example at 161/16)
            lengths = [(7 * i) % 13 for i in range(n)] if pooled else None
            got = epoch_batches(n, bs, 5, 1, lengths, pool=2, smallest=2)
            assert min(map(len, got)) >= 2 and max(map(len, got)) <= bs + 1
            assert sorted(i for b in got for i in b) == list(range(n))  # each once
            for acc in (1, 2, 3):
                length = length_of(n, _settings(batch_size=bs, gradient_accumulation_steps=acc),
                                   batchnorm=True)
                assert length.batches_per_pass == len(got)
                assert length.steps_per_epoch == -(-len(got) // acc)
                assert length.joined == (n % bs == 1)
            # without BatchNorm in training: the batches of before, one example or not
            plain = epoch_batches(n, bs, 5, 1, lengths, pool=2)
            assert len(plain) == length_of(n, _settings(batch_size=bs)).batches_per_pass
            if lengths is None:
                order = torch.randperm(n, generator=torch.Generator().manual_seed(
                    5 * 100_003 + 1)).tolist()
                assert plain == [order[i:i + bs] for i in range(0, n, bs)]
            if n % bs != 1:
                assert got == plain


def test_the_balanced_sampler_and_min_steps_passes_join_too() -> None:
    weights = [1.0] * 20 + [4.0] * 13  # 33 draws with replacement
    got = epoch_batches(33, 16, 0, 3, weights=weights, smallest=2)
    assert [len(b) for b in got] == [16, 17]
    length = length_of(33, _settings(min_steps=10), batchnorm=True)
    assert (length.passes, length.batches_per_pass, length.total_steps) == (5, 2, 10)
    assert "joins the batch before it (a batch of 17)" in length.describe()
    assert "joins" not in length_of(34, _settings(), batchnorm=True).describe()
    assert "joins" not in length_of(33, _settings()).describe()


def test_a_single_training_example_under_batchnorm_training_is_refused() -> None:
    with pytest.raises(UserError, match="freeze_norm_stats: all"):
        length_of(1, _settings(), batchnorm=True)
    assert length_of(1, _settings()).batches_per_pass == 1  # no BatchNorm training: as before


# ---------------------------------------------------------------------------------------------
# which runs' batches reach BatchNorm in training mode
# ---------------------------------------------------------------------------------------------


GRADUAL = {"epochs": 3, "unfreeze_schedule": [{"epoch": 1, "unfreeze": "last_block"},
                                              {"epoch": 2, "unfreeze": "all"}]}


@pytest.mark.parametrize("source,kw,trains", [
    ("timm:test_efficientnet", {"freeze_strategy": "none"}, True),
    ("timm:test_efficientnet", {"freeze_strategy": "top_n_unfrozen", "top_n": 1}, True),
    ("timm:test_efficientnet", {"freeze_strategy": "all_frozen"}, False),
    # the head alone first: auto keeps every statistic (norm_stats all)
    ("timm:test_efficientnet", {"freeze_strategy": "gradual", **GRADUAL}, False),
    ("timm:test_efficientnet", {"freeze_strategy": "gradual", **GRADUAL,
                                "freeze_norm_stats": True}, True),
    ("timm:test_efficientnet", {"freeze_strategy": "none", "freeze_norm_stats": "all"}, False),
    # frozen groups' BatchNorm layers lie below the cut, which the cache serves
    ("timm:test_efficientnet", {"freeze_strategy": "all_frozen", "freeze_norm_stats": False},
     False),
    ("timm:test_vit", {"freeze_strategy": "none"}, False),  # LayerNorm only
])
def test_batchnorm_trains_where_a_phase_trains_a_group_holding_one(
        source: str, kw: dict, trains: bool) -> None:
    tc = TransferConfig(source_model=source, pretrained_weights="none", **kw)
    asm = assemble(tc, 3)
    assert batchnorm_trains(asm.model, asm.groups, asm.plan, tc.freeze_norm_stats) is trains


def test_adabn_joins_a_last_batch_of_one() -> None:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    data = [(torch.randn(3), 0) for _ in range(5)]

    def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([x for x, _ in items]), torch.zeros(len(items))

    assert adabn(backbone, data, collate, torch.device("cpu"), batch_size=4) == 1
    with torch.no_grad():
        h = backbone[0](torch.stack([x for x, _ in data]))
    assert torch.allclose(backbone[1].running_mean, h.mean(0), atol=1e-6)  # one batch of 5


# ---------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------


class Crash(Exception):
    pass


def test_33_examples_at_batch_16_train_and_resume_exactly(tmp_path: Path) -> None:
    """The colleague's case: a BatchNorm backbone fully fine-tuned on 33 examples at batch 16
    crashed on its last batch of one. It trains in batches of 16 and 17, the steps the plan
    gives, and a run killed mid-way resumes to the same weights."""
    from safetensors.torch import load_file

    from tlkit.run import fit_run

    cfg = validate(RAW)
    events: list[tuple[str, dict]] = []
    whole = fit_run(cfg, tmp_path / "whole", checkpoint_every=1,
                    event=lambda kind, info: events.append((kind, info)))
    assert whole["data"]["sizes"]["train"] == 33
    plan = json.loads((tmp_path / "whole" / "plan.json").read_text())
    assert [ph["optimizer_steps"] for ph in plan["phases"]] == [[0, 3]]  # 2 epochs x 2 steps
    steps = [info for kind, info in events if kind == "step"]
    assert [(s["epoch"], s["batch"], s["batches"]) for s in steps] == [
        (0, 1, 2), (0, 2, 2), (1, 1, 2), (1, 2, 2)]
    last = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    assert last["state"]["step"] == 4
    assert any("a batch of 17" in info.get("what", "") for kind, info in events)

    def crash(kind: str, info: dict) -> None:  # after the batch of 17, before its checkpoint
        if kind == "step" and info["epoch"] == 1 and info["batch"] == 2:
            raise Crash()

    with pytest.raises(Crash):
        fit_run(cfg, tmp_path / "killed", checkpoint_every=1, event=crash)
    mid = torch.load(tmp_path / "killed" / "checkpoints" / "last.pt", weights_only=True)
    assert (mid["state"]["epoch"], mid["state"]["batch_in_epoch"], mid["state"]["step"]) == (
        1, 1, 3)
    resumed = fit_run(cfg, tmp_path / "killed", resume=True, checkpoint_every=1)
    a = load_file(str(tmp_path / "whole" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole["test"] == resumed["test"]


def test_a_single_training_example_exits_2_with_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(
            tmp_path / f"{i}.png")
    (tmp_path / "train.csv").write_text("image,target\n0.png,0.5\n")
    (tmp_path / "val.csv").write_text("image,target\n1.png,0.1\n2.png,0.2\n3.png,0.9\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "transfer_config:\n  source_model: timm:test_efficientnet\n  pretrained_weights: none\n"
        "  freeze_strategy: none\n  epochs: 1\n  batch_size: 16\n  cache: {disk: false}\n"
        f"data:\n  source: {tmp_path / 'train.csv'}\n  validation: {tmp_path / 'val.csv'}\n"
        "  test_fraction: 0\n  task: regression\n  image_size: 32\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert "training split holds 1 example" in line and "BatchNorm" in line
    assert "freeze_norm_stats: all" in line and "all_frozen" in line
    assert not (tmp_path / "run" / "checkpoints").exists()
    # the fix it names trains
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "fixed", "--set",
                    "transfer_config.freeze_norm_stats=all")
    assert code == 0, err
