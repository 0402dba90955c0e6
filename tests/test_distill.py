"""tlkit distill: the loss (soft targets at temperature T scaled by T^2, plus the labels), the
truncated student (its layers copied from the teacher, rebuilt from model.json), the student as
an ordinary run (summary against the teacher, model card, predict), an exact resume after
kill -9, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cli_runner import kill_9_when, run_cli
from user_runs import checksum, cli, config, error_line, metric_rows

from tlkit.distillation.objective import distill_batches, kd_loss
from tlkit.distillation.student import evenly_spaced, keep_blocks, truncated


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------


def test_the_loss_is_soft_targets_at_t_scaled_by_t_squared_plus_the_labels() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    every = torch.ones(6, dtype=torch.bool)
    T, a = 3.0, 0.7
    p_t = F.softmax(t / T, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(s / T, dim=1))).sum(1).mean()
    expected = a * T * T * kl + (1 - a) * F.cross_entropy(s, y)
    got = kd_loss(s, t, y, every, "single_label", T, a)
    assert torch.allclose(got, expected, atol=1e-6)
    # alpha 1: the soft term alone; a student that outputs the teacher's logits: zero
    assert torch.allclose(kd_loss(s, t, y, every, "single_label", T, 1.0), T * T * kl,
                          atol=1e-6)
    assert float(kd_loss(t, t, y, every, "single_label", T, 1.0)) == pytest.approx(0, abs=1e-6)


def test_unlabelled_rows_count_in_the_soft_term_only() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    y = torch.tensor([0, 1, 2, 0])
    labelled = torch.tensor([True, True, False, False])
    soft = kd_loss(s, t, None, labelled, "single_label", 2.0, 0.5)
    got = kd_loss(s, t, y, labelled, "single_label", 2.0, 0.5)
    assert torch.allclose(got, 0.5 * soft + 0.5 * F.cross_entropy(s[:2], y[:2]), atol=1e-6)
    # changing an unlabelled row's label changes nothing
    y2 = y.clone()
    y2[3] = 2
    assert torch.equal(kd_loss(s, t, y2, labelled, "single_label", 2.0, 0.5), got)
    # a batch of unlabelled inputs only: the soft term at its weight
    none = torch.zeros(4, dtype=torch.bool)
    assert torch.allclose(kd_loss(s, t, y, none, "single_label", 2.0, 0.5), 0.5 * soft)


def test_the_t_squared_factor_keeps_the_soft_gradients_size_as_t_grows() -> None:
    """Hinton et al.'s reason for T^2: the soft term's gradients scale as 1/T^2."""
    g = torch.Generator().manual_seed(2)
    t = torch.randn(64, 5, generator=g)
    base = torch.randn(64, 5, generator=g)
    norms = []
    for T in (4.0, 8.0, 16.0):
        s = (base * 0.1).requires_grad_(True)
        kd_loss(s, t * 0.1, None, torch.zeros(64, dtype=torch.bool), "single_label", T,
                1.0).backward()
        norms.append(float(s.grad.norm()))  # type: ignore[union-attr]
    # without the factor they would fall as 1/T^2 (16x from T 4 to 16); with it, one size
    assert max(norms) / min(norms) < 1.1


def test_regression_and_multi_label_have_their_own_soft_terms() -> None:
    s, t = torch.tensor([[0.5], [1.0]]), torch.tensor([[1.5], [0.0]])
    y = torch.tensor([1.0, 1.0])
    every = torch.ones(2, dtype=torch.bool)
    expected = 0.5 * F.mse_loss(s, t) + 0.5 * F.mse_loss(s.squeeze(1), y)
    assert torch.allclose(kd_loss(s, t, y, every, "regression", 4.0, 0.5), expected)
    sm, tm = torch.tensor([[2.0, -1.0]]), torch.tensor([[0.0, 3.0]])
    got = kd_loss(sm, tm, None, torch.ones(1, dtype=torch.bool), "multi_label", 2.0, 1.0)
    want = F.binary_cross_entropy_with_logits(sm / 2, torch.sigmoid(tm / 2)) * 4
    assert torch.allclose(got, want)


def test_batches_cover_every_example_once_a_pure_function_of_seed_and_epoch() -> None:
    b = distill_batches(37, 8, seed=3, epoch=1)
    assert sorted(i for batch in b for i in batch) == list(range(37))
    assert b == distill_batches(37, 8, seed=3, epoch=1)
    assert b != distill_batches(37, 8, seed=3, epoch=2)


# ---------------------------------------------------------------------------------------------
# the truncated student
# ---------------------------------------------------------------------------------------------


def test_layers_are_evenly_spaced_with_the_first_and_the_last() -> None:
    assert evenly_spaced(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice from BERT
    assert evenly_spaced(6, 3) == [0, 3, 5]
    assert evenly_spaced(4, 2) == [0, 3]
    assert evenly_spaced(6, 1) == [5]


def _tiny_bert(folder: Path, layers: int = 4) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, intermediate_size=48,
                         max_position_embeddings=64)).save_pretrained(folder)
    return folder


def test_the_truncated_transformer_keeps_the_teachers_layers_and_rebuilds_from_its_spec(
        tmp_path: Path) -> None:
    from tlkit.backbones.hf import HFBackbone
    from tlkit.backbones.registry import backbone_from_spec
    from tlkit.heads import build_head
    from tlkit.model import TransferModel

    bb = HFBackbone(str(_tiny_bert(tmp_path / "bert")))
    teacher = TransferModel(bb, build_head(32, 3, "linear", None, 0.0))
    backbone, head, said = truncated(teacher, 2)
    assert "encoder layers 0, 3 of the teacher's 4" in said
    t_sd, s_sd = teacher.backbone.state_dict(), backbone.state_dict()
    for s_i, t_i in ((0, 0), (1, 3)):
        for k, v in s_sd.items():
            if f"encoder.layer.{s_i}." in k:
                assert torch.equal(v, t_sd[k.replace(f"layer.{s_i}.", f"layer.{t_i}.")])
    assert all(torch.equal(v, t_sd[k]) for k, v in s_sd.items() if "embeddings" in k)
    assert not any("encoder.layer.2." in k for k in s_sd)
    assert all(torch.equal(head[k], v) for k, v in teacher.head.state_dict().items())
    # the teacher is untouched, and model.json's spec rebuilds the student's architecture
    assert len(teacher.backbone.model.encoder.layer) == 4
    rebuilt = backbone_from_spec(backbone.spec, {"kind": "text", "tokenizer": "x",
                                                 "max_length": 16})
    assert rebuilt.state_dict().keys() == s_sd.keys()
    ids = {"input_ids": torch.tensor([[101, 2000, 102]]), "attention_mask": torch.ones(1, 3,
                                                                                       dtype=torch.long)}
    rebuilt.load_state_dict(s_sd)
    backbone.eval(), rebuilt.eval()
    assert torch.allclose(backbone(ids), rebuilt(ids))


def test_the_truncated_cnn_keeps_the_first_block_of_each_stage_with_the_teachers_weights(
        ) -> None:
    from tlkit.backbones.registry import backbone_from_spec
    from tlkit.backbones.timm_backbone import TimmBackbone
    from tlkit.heads import build_head
    from tlkit.model import TransferModel

    torch.manual_seed(0)
    bb = TimmBackbone("mobilenetv2_050")
    teacher = TransferModel(bb, build_head(bb.feature_dim, 10, "linear", None, 0.0)).eval()
    backbone, _, said = truncated(teacher, None)
    stages = [len(s) for s in teacher.backbone.model.blocks]
    assert [len(s) for s in backbone.model.blocks] == [1] * len(stages)
    assert f"({len(stages)} of {sum(stages)} blocks)" in said
    t_sd = teacher.backbone.state_dict()
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, t_sd[k]), k  # block s.0 is the teacher's block s.0
    x = torch.randn(2, 3, 32, 32)
    backbone.eval()
    assert backbone(x).shape == teacher.backbone(x).shape  # the same features, fewer blocks
    rebuilt = backbone_from_spec(backbone.spec, {"kind": "image", "input_size": 32,
                                                 "resize_size": 32, "mean": [0.5] * 3,
                                                 "std": [0.5] * 3})
    rebuilt.load_state_dict(backbone.state_dict())
    rebuilt.eval()
    assert torch.allclose(rebuilt(x), backbone(x))
    with pytest.raises(ValueError):
        keep_blocks(rebuilt.model, [[0]])


# ---------------------------------------------------------------------------------------------
# the student as a run
# ---------------------------------------------------------------------------------------------


def _teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str], *, epochs: int = 2,
             limit: int = 120) -> Path:
    cfg = config(tmp_path, model="timm:mobilenetv2_050", epochs=epochs, limit=limit)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "teacher", "--no-report")
    assert code == 0, err
    return tmp_path / "teacher"


@pytest.mark.slow
def test_the_student_is_an_ordinary_run_compared_with_its_teacher(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = _teacher(tmp_path, capsys)
    before = checksum(teacher)
    student = tmp_path / "student"
    code, err = cli(capsys, "distill", teacher, "--out", student, "--epochs", "2")
    assert code == 0, err
    assert "distillation: the teacher's outputs on" in err
    s = json.loads((student / "summary.json").read_text())
    d = s["distillation"]
    assert d["teacher"] == str(teacher.resolve())
    assert "first block of each" in d["student"] and d["trained_on"]["labelled"] > 0
    t = d["test"]
    assert t["metric"] == "accuracy" and t["examples"] > 0
    assert t["student"] == pytest.approx(s["test"]["accuracy"])
    teacher_acc = json.loads((teacher / "summary.json").read_text())["test"]["accuracy"]
    assert t["teacher"] == pytest.approx(teacher_acc)  # the same test split, the teacher's way
    assert t["difference"]["low"] <= t["difference"]["value"] <= t["difference"]["high"]
    assert 0 <= t["agreement"]["low"] <= t["agreement"]["value"] <= t["agreement"]["high"] <= 1
    # fewer parameters than the teacher, and the usual run directory around it
    assert s["parameters"] < json.loads((teacher / "summary.json").read_text())["parameters"]
    card = (student / "README.md").read_text()  # the model card
    assert f"Distilled from `{teacher.resolve()}`" in card
    assert (student / "report.html").is_file()
    from tlkit.cli import main

    capsys.readouterr()
    code = main(["predict", str(student), "--data", "test"])
    assert code == 0 and capsys.readouterr().out.count("\n") == t["examples"]
    assert checksum(teacher) == before  # the teacher's run directory is read, never written


@pytest.mark.slow
def test_unlabelled_inputs_are_labelled_by_the_teacher(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    teacher = _teacher(tmp_path, capsys, epochs=1, limit=60)
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(pool / f"{i}.png")
    code, err = cli(capsys, "distill", teacher, "--out", tmp_path / "s", "--epochs", "1",
                    "--unlabelled", pool, "--unlabelled-limit", "7", "--no-report")
    assert code == 0, err
    d = json.loads((tmp_path / "s" / "summary.json").read_text())["distillation"]
    assert d["trained_on"]["unlabelled"] == 7
    assert "and 7 unlabelled inputs" in err


@pytest.mark.slow
def test_a_distillation_killed_with_sigkill_resumes_to_the_same_student(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import load_file

    teacher = _teacher(tmp_path, capsys, epochs=1)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    args = ["distill", str(teacher), "--epochs", "3", "--no-report"]
    r = run_cli(*args, "--out", str(whole))
    assert r.returncode == 0, r.stderr
    last = killed / "checkpoints" / "last.pt"
    kill_9_when([*args, "--out", killed, "--checkpoint-every", "1"],
                [last, killed / "metrics.jsonl"], settle=0.0)
    state = torch.load(last, weights_only=True)["state"]
    assert state["epoch"] < 3, "killed after the last epoch"
    r = run_cli(*args, "--out", str(killed), "--resume")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    a = load_file(str(whole / "checkpoints" / "best.safetensors"))
    b = load_file(str(killed / "checkpoints" / "best.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    assert metric_rows(whole) == metric_rows(killed)
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["test"] == sb["test"] and sa["distillation"] == sb["distillation"]


# ---------------------------------------------------------------------------------------------
# refusals: exit 2, one line, nothing written
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_what_cannot_be_distilled_exits_2_naming_the_fix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = _teacher(tmp_path, capsys, epochs=1, limit=60)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((teacher / "config.yaml").read_text())
    cases = [
        (["distill", tmp_path / "nowhere", "--out", tmp_path / "o1"], "no run directory"),
        (["distill", unfinished, "--out", tmp_path / "o2"], "holds no finished run"),
        (["distill", teacher, "--out", tmp_path / "o3", "--student", "no-such-net"],
         "unknown backbone"),
        (["distill", teacher, "--out", tmp_path / "o4", "--layers", "2"],
         "remove --layers"),
        (["distill", teacher, "--out", tmp_path / "o5", "--set",
          "transfer_config.freeze_strategy=all_frozen"], "use one of none"),
        (["distill", teacher, "--out", tmp_path / "o6", "--alpha", "1.5"], "alpha"),
        (["distill", teacher, "--out", teacher], "run"),
        (["distill", teacher, "--out", tmp_path / "o7", "--unlabelled", tmp_path / "nothing"],
         "nothing"),
    ]
    before = checksum(teacher)
    for args, said in cases:
        code, err = cli(capsys, *args)
        assert code == 2, (args, err)
        assert said in err, (args, err)
        assert error_line(err).startswith("tlkit distill: error: ")  # and no traceback
    for i in range(1, 8):  # refused before the data or the model was read into a run
        o = tmp_path / f"o{i}"
        assert not any((o / name).exists() for name in ("config.yaml", "data.json", "model",
                                                         "checkpoints")), i
    assert checksum(teacher) == before


@pytest.mark.slow
def test_the_api_distills_as_the_command_does(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import tlkit

    teacher = _teacher(tmp_path, capsys, epochs=1, limit=60)
    run = tlkit.distill(tlkit.load(teacher), tmp_path / "api", epochs=1, temperature=4.0,
                        progress=False)
    d = run.summary["distillation"]
    assert d["temperature"] == 4.0 and d["test"]["examples"] > 0
    assert (tmp_path / "api" / "model" / "model.json").is_file()
    assert run.evaluate()["accuracy"] == pytest.approx(d["test"]["student"])
