"""freeze_strategy contrastive (SetFit-like): its pair sampler, its losses, its phases on the
loop (the head solved on the trained body's features, never the pretrained ones), its refusals,
and an exact resume after kill -9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cli_runner import kill_9_when, run_cli
from user_runs import cli, config, error_line, metric_rows

from tlkit.train.head_solver import C_AFTER_TRAINING
from tlkit.strategies.contrastive import (
    cosine_pair_loss, loss_for, pair_batches, setfit_pairs, supcon_loss,
)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# the pair sampler
# ---------------------------------------------------------------------------------------------


def test_pairs_are_balanced_and_drawn_from_the_labels() -> None:
    labels = np.array([0] * 7 + [1] * 5 + [2] * 3 + [3])  # a class of one example among them
    rows = np.concatenate(pair_batches(labels, 40, 16, seed=3, epoch=0))
    assert len(rows) == len(labels) * 40  # SetFit's num_iterations 20: 40 pairs an example
    pos, neg = rows[rows[:, 2] == 1], rows[rows[:, 2] == 0]
    assert len(pos) == len(neg)  # half positive, half negative
    # every example is the anchor of as many positive as negative pairs
    assert (np.bincount(pos[:, 0], minlength=16) == 20).all()
    assert (np.bincount(neg[:, 0], minlength=16) == 20).all()
    assert (labels[pos[:, 0]] == labels[pos[:, 1]]).all()
    assert (labels[neg[:, 0]] != labels[neg[:, 1]]).all()
    # a positive is another example of the class, except for the class of one
    two_or_more = labels[pos[:, 0]] != 3
    assert (pos[two_or_more, 0] != pos[two_or_more, 1]).all()
    # a negative partner is drawn from every other class
    assert set(labels[neg[labels[neg[:, 0]] == 0, 1]].tolist()) == {1, 2, 3}


def test_by_default_as_many_pairs_as_setfit_draws_at_most_the_papers_40() -> None:
    """SetFit's default sampling: every distinct pair of the commoner kind, as many of the
    other; with k examples in each of two classes, k pairs an example; at most 40 an example
    and 10,000 an epoch."""
    assert setfit_pairs(np.repeat([0, 1], 8)) == 8
    assert setfit_pairs(np.repeat([0, 1], 16)) == 16
    assert setfit_pairs(np.repeat([0, 1], 64)) == 40  # the paper's num_iterations 20
    # past 10,000 pairs an epoch, fewer an example: 1,152 examples, 8 each (9,216 pairs)
    assert setfit_pairs(np.repeat(np.arange(20), 1152 // 20 + 1)[:1152]) == 8
    assert setfit_pairs(np.repeat([0, 1], 20_000)) == 2
    rows = np.concatenate(pair_batches(np.repeat([0, 1], 8), None, 16, seed=0, epoch=0))
    assert len(rows) == 16 * 8


def test_pairs_are_a_pure_function_of_seed_and_epoch() -> None:
    labels = np.random.default_rng(0).integers(0, 3, 50)
    a = pair_batches(labels, 10, 16, seed=1, epoch=2)
    b = pair_batches(labels, 10, 16, seed=1, epoch=2)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    for other in (pair_batches(labels, 10, 16, seed=2, epoch=2),
                  pair_batches(labels, 10, 16, seed=1, epoch=3)):
        assert not np.array_equal(np.concatenate(a), np.concatenate(other))


def test_a_batch_of_pairs_encodes_fewer_examples_than_its_pairs_have_sides() -> None:
    """SetFit encodes both sides of every pair (32 encodings a batch of 16); here each distinct
    example of a batch is encoded once, and partners come from the batch's anchors."""
    labels = np.repeat(np.arange(2), 50)
    batches = pair_batches(labels, 40, 16, seed=0, epoch=0)
    distinct = [len(np.unique(b[:, :2])) for b in batches]
    assert max(len(b) for b in batches) == 16
    assert np.mean(distinct) <= 10  # 8 anchors, and few partners from outside the batch


def test_one_class_has_no_negative_pair() -> None:
    from tlkit.errors import UserError

    with pytest.raises(UserError, match="two classes or more"):
        pair_batches(np.zeros(10, dtype=np.int64), 4, 16, 0, 0)


# ---------------------------------------------------------------------------------------------
# the losses
# ---------------------------------------------------------------------------------------------


def _views(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy views of 3 class centres, 4 examples each, and their labels."""
    centres = torch.randn(3, 16, generator=gen)
    labels = torch.arange(3).repeat_interleave(4)
    return centres[labels] + 0.1 * torch.randn(12, 16, generator=gen), labels


def test_the_losses_are_lower_for_views_of_one_class_than_of_different_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    emb, labels = _views(gen)
    mixed = emb[torch.randperm(12, generator=gen)]  # the same labels on shuffled embeddings
    i, j = torch.combinations(torch.arange(12)).T
    same = (labels[i] == labels[j]).float()
    assert cosine_pair_loss(emb[i], emb[j], same) < 0.5 * cosine_pair_loss(mixed[i], mixed[j],
                                                                           same)
    assert supcon_loss(emb, labels) < supcon_loss(mixed, labels) - 0.5
    # two views of one class: a positive pair costs little, the same pair called negative much
    a, b = emb[:1], emb[1:2]
    assert cosine_pair_loss(a, b, torch.ones(1)) < 0.05 < cosine_pair_loss(a, b, torch.zeros(1))


def test_the_loss_auto_is_supcon_for_images_and_setfits_cosine_for_text() -> None:
    assert loss_for("auto", "image") == "supcon" and loss_for("auto", "text") == "cosine"
    assert loss_for("cosine", "image") == "cosine" and loss_for("supcon", "text") == "supcon"


def test_supcon_without_a_positive_in_the_batch_takes_no_step() -> None:
    emb = torch.randn(3, 8, requires_grad=True)
    loss = supcon_loss(emb, torch.arange(3))
    loss.backward()
    assert float(loss.detach()) == 0.0 and emb.grad is not None and not emb.grad.any()


# ---------------------------------------------------------------------------------------------
# the phases on the loop
# ---------------------------------------------------------------------------------------------


TC = ("  freeze_strategy: contrastive\n  contrastive_pairs: 4\n  contrastive_epochs: 1\n")


@pytest.mark.slow
def test_the_plan_trains_the_body_then_solves_the_head(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, epochs=2, tc=TC)
    cfg.write_text(cfg.read_text().replace("  freeze_strategy: none\n", "", 1))
    from tlkit.cli import main

    code = main(["plan", str(cfg)])
    out = capsys.readouterr().out
    assert code == 0
    assert "contrastive: the backbone trains on pairs" in out
    assert "the head solved on the trained features" in out
    assert "contrastive_lr 2e-05" in out
    # contrastive_loss auto on images: the supervised contrastive loss (measured better there)
    assert "supcon loss (contrastive_loss auto, for image data)" in out
    # phase 1's table shows what trains: every body group at contrastive_lr, the head frozen
    phase1 = out.split("phase 1")[1].split("phase 2")[0]
    rows = [line.split() for line in phase1.splitlines()[2:] if line.strip()
            and not line.lstrip().startswith("total")]
    assert rows and all(r[2] == ("frozen" if r[0] == "head" else "trainable") for r in rows)
    assert all(r[3] == "2e-05" for r in rows if r[0] != "head")
    # the training length counts the pair batches the loop will run, not passes of the split
    from tlkit.config import load_config
    from tlkit.inputs import load_data

    raw = load_config(cfg)
    train = load_data(raw)[1].train
    n = len(pair_batches(train.targets, 4, 16, raw.transfer_config.seed, 0))  # TC: 4 pairs
    assert (f"training length: {n} optimizer steps = 1 epoch x {n} steps (batches of 16 pairs"
            in out)
    assert "(min_steps)" not in out


@pytest.mark.slow
def test_phase_two_solves_the_head_on_the_trained_features_not_the_pretrained_ones(
        tmp_path: Path) -> None:
    """auto's trials share one cache over the pretrained backbone; a contrastive trial's head
    must be solved on its trained backbone's features, computed afresh."""
    from tlkit.cache import CacheHook
    from tlkit.config import load_config
    from tlkit.inputs import build_inputs, config_for, load_data, with_model
    from dataclasses import replace

    from tlkit.plan.length import length_for
    from tlkit.train.hooks import NO_IO
    from tlkit.train.loop import fit

    path = config(tmp_path, epochs=2, limit=60, tc=TC)
    path.write_text(path.read_text().replace("  freeze_strategy: none\n", "", 1))
    raw = load_config(path)
    frozen = config_for(raw, "all_frozen", reason="test")
    data, splits = load_data(frozen)
    base = build_inputs(frozen, splits, data.modality)
    assert base.cache is not None
    n = base.n_groups
    pretrained = base.cache.get("train", base.train_ds, n)  # what the shared cache holds
    inputs = with_model(base, raw)
    cached = next(h for h in inputs.hooks if isinstance(h, CacheHook))
    assert cached.cache.backbone is inputs.backbone and cached.cache is not base.cache
    steps: list[dict] = []
    io = replace(NO_IO, event=lambda kind, info: steps.append(info) if kind == "step" else None)
    state = fit(inputs.asm, inputs.training_data(), raw.transfer_config.loop_settings, io,
                hooks=inputs.hooks)
    assert [r["phase"] for r in state.history] == [1, 2]
    # phase 1 took the optimizer steps the plan and the log announce (its pair batches)
    planned = length_for(splits.train, raw.transfer_config)
    assert len(steps) == planned.steps_per_epoch * raw.transfer_config.contrastive_epochs
    assert all(s["epoch"] == 0 for s in steps)
    assert "head_solver" in state.history[-1]
    # its strength is not cross-validated over the labels the body trained on (SetFit's head)
    solved = state.history[-1]["head_solver"]
    assert solved["c"] == C_AFTER_TRAINING and solved["standardized"] is False
    assert "val_loss" not in state.history[0]  # no best epoch while the head is untrained
    used = cached.cache.get("train", base.train_ds, n)  # what phase 2 was solved on
    model = inputs.asm.model.eval()
    with torch.no_grad():
        x, _ = inputs.collate([inputs.train_ds[i] for i in range(len(inputs.train_ds))])
        trained = model.backbone(x)
    assert used is not None and pretrained is not None
    torch.testing.assert_close(used.dense, trained, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(used.dense, pretrained.dense, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# what is refused
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tc, says", [
    ("  freeze_strategy: contrastive\n  contrastive_epochs: 3\n", "leaves no epoch for the head"),
    ("  freeze_strategy: contrastive\n  head_solver: sgd\n", "head_solver: convex"),
    ("  freeze_strategy: contrastive\n  head: {type: mlp}\n", "head.type: linear"),
    ("  contrastive_pairs: 8\n", "freeze_strategy contrastive"),
    ("  freeze_strategy: contrastive\n  contrastive_loss: triplet\n", "contrastive_loss"),
])
def test_settings_that_cannot_work_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          tc: str, says: str) -> None:
    cfg = config(tmp_path, epochs=3, tc=tc)
    if "freeze_strategy" in tc:
        cfg.write_text(cfg.read_text().replace("  freeze_strategy: none\n", "", 1))
    code, err = cli(capsys, "plan", cfg)
    assert code == 2 and "Traceback" not in err
    assert says in " ".join(err.split())


@pytest.mark.parametrize("task, data, says", [
    ("multi_label", "  task: multi_label\n", "data.task is multi_label: use lp_ft"),
    ("augment", "  augment: flip\n", "set data.augment: none"),
])
def test_tasks_it_cannot_pair_exit_2_naming_what_to_use(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str, data: str,
        says: str) -> None:
    if task == "multi_label":
        import pandas as pd

        rows = [{"text": f"w{i} w{i % 3}", "label": ["a|b", "b", "a"][i % 3]} for i in range(30)]
        pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
        cfg = tmp_path / "c.yaml"
        cfg.write_text("transfer_config:\n  source_model: minilm-l6\n"
                       "  pretrained_weights: none\n" + TC + "  epochs: 2\n"
                       "  cache: {disk: false}\n"
                       f"data:\n  source: {tmp_path / 't.csv'}\n{data}")
    else:
        cfg = config(tmp_path, epochs=2, tc=TC, data=data)
        cfg.write_text(cfg.read_text().replace("  freeze_strategy: none\n", "", 1))
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 2
    assert says in error_line(err)


# ---------------------------------------------------------------------------------------------
# kill -9 in phase 1, resumed: the same run
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_in_the_contrastive_phase_then_resume_equals_an_uninterrupted_run(
        tmp_path: Path) -> None:
    from safetensors.torch import load_file

    cfg = config(tmp_path, epochs=3, limit=40,
                 tc="  freeze_strategy: contrastive\n  contrastive_pairs: 2\n"
                    "  contrastive_batch_size: 8\n  contrastive_epochs: 2\n")
    cfg.write_text(cfg.read_text().replace("  freeze_strategy: none\n", "", 1))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_cli("fit", str(cfg), "--out", str(whole), "--no-report")
    assert r.returncode == 0, r.stderr
    last = killed / "checkpoints" / "last.pt"
    # in the second contrastive epoch (the first one's row written), killed without warning
    kill_9_when(["fit", cfg, "--out", killed, "--checkpoint-every", "1", "--no-report"],
                [last, killed / "metrics.jsonl"], settle=0.0)
    state = torch.load(last, weights_only=True)["state"]
    assert state["epoch"] < 2, "killed after the contrastive phase"
    r = run_cli("fit", str(cfg), "--out", str(killed), "--resume", "--no-report")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    a = load_file(str(whole / "checkpoints" / "best.safetensors"))
    b = load_file(str(killed / "checkpoints" / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert metric_rows(whole) == metric_rows(killed)
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["test"] == sb["test"]
