"""Training end to end on a tiny random model: the run directory, exact resume after SIGKILL,
predict from a moved run directory, and the user errors of fit."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_runner import kill_9_when, run_cli

from tlkit.train.schedule import lr_factor, rewarm_factor


TINY = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
{strategy}  head_lr: 1e-2
  backbone_lr: 3e-3
  warmup_steps: 3
  dropout: 0.2
  epochs: {epochs}
  batch_size: 16
  early_stopping_patience: null
data:
  source: {source}
  image_size: 32
  limit: {limit}
"""


GRADUAL = """\
  freeze_strategy: gradual
  unfreeze_schedule:
    - {epoch: 1, unfreeze: last_block}
    - {epoch: 2, unfreeze: all}
"""


def tiny(epochs: int, source: str, limit: int) -> str:
    strategy = GRADUAL if epochs >= 3 else "  freeze_strategy: top_n_unfrozen\n  top_n: 2\n"
    return TINY.format(epochs=epochs, source=source, limit=limit, strategy=strategy)


def write_cfg(tmp: Path, name: str = "tiny.yaml", epochs: int = 3, source: str = "digits",
              limit: int = 240) -> Path:
    p = tmp / name
    p.write_text(tiny(epochs, source, limit))
    return p


def load_weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


# ------------------------------------------------------------------------------------------------


def test_schedule_warmup_then_cosine_reaches_zero() -> None:
    assert lr_factor(0, 100, 10) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(50, 100, 0, "linear") == pytest.approx(0.5)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    values = [lr_factor(s, 100, 10) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_a_group_unfrozen_later_warms_up_from_its_unfreezing() -> None:
    assert rewarm_factor(5, 0, 10) == 1.0  # trained from the start: the run's warmup only
    assert rewarm_factor(40, 40, 10) == pytest.approx(0.1)
    assert rewarm_factor(44, 40, 10) == pytest.approx(0.5)
    assert rewarm_factor(49, 40, 10) == rewarm_factor(80, 40, 10) == 1.0
    assert rewarm_factor(41, 40, 0) == 1.0


@pytest.mark.slow
def test_fit_writes_the_run_directory_and_evaluate_agrees(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path)
    run = tmp_path / "run"
    r = run_cli("fit", str(cfg), "--out", str(run))
    assert r.returncode == 0, r.stderr
    for f in ("config.yaml", "plan.txt", "metrics.jsonl", "summary.json", "model/model.json",
              "model/model.safetensors", "checkpoints/last.pt", "checkpoints/best.safetensors"):
        assert (run / f).exists(), f
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r_["epoch"] for r_ in rows] == [0, 1, 2]
    assert [r_["phase"] for r_ in rows] == [1, 2, 3]
    # the trainable part grows with the schedule and each group's rate is logged
    assert rows[0]["trainable_params"] < rows[1]["trainable_params"] < rows[2]["trainable_params"]
    assert set(rows[0]["lr"]) >= {"head", "stem"}
    summary = json.loads((run / "summary.json").read_text())
    ev = run_cli("evaluate", str(run))
    assert ev.returncode == 0, ev.stderr
    metrics = json.loads(ev.stdout)
    assert metrics["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert set(metrics) >= {"accuracy", "f1_macro", "per_class", "loss"}
    assert set(next(iter(metrics["per_class"].values()))) >= {"precision", "recall", "f1"}
    # the best epoch's weights are the ones saved: the lowest validation loss, the later on a tie
    best = min(rows, key=lambda r_: (r_["val_loss"], -r_["epoch"]))
    assert summary["best_epoch"] == best["epoch"]


@pytest.mark.slow
def test_predict_from_a_moved_run_directory_matches_evaluate(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, epochs=2, limit=160)
    run = tmp_path / "run"
    assert run_cli("fit", str(cfg), "--out", str(run)).returncode == 0
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    run.rename(moved)  # nothing may point back at the old path
    ev = json.loads(run_cli("evaluate", str(moved)).stdout)
    pr = run_cli("predict", str(moved), "--data", "test")
    assert pr.returncode == 0, pr.stderr
    rows = [json.loads(x) for x in pr.stdout.splitlines()]
    assert len(rows) == ev["n"]
    from types import SimpleNamespace

    from tlkit.data import load_source, make_splits

    settings = SimpleNamespace(source="digits", task="single_label", text_column=None,
                               image_column=None, label_column=None, limit=160,
                               val_fraction=0.1, test_fraction=0.1, seed=0, image_size=32,
                               max_length=None, on_bad_image="skip", label_separator="|")
    test = make_splits(load_source(settings), settings).test
    truth = [test.classes[int(t)] for t in test.targets]
    acc = np.mean([r_["label"] == t for r_, t in zip(rows, truth)])
    assert acc == pytest.approx(ev["accuracy"])
    assert all(abs(sum(r_["probabilities"].values()) - 1) < 1e-3 for r_ in rows)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """With DataLoader workers and random augmentation: the uninterrupted run builds its
    batches in the main process, the killed and resumed one in two workers, and the weights
    agree bitwise (each batch is a pure function of seed, epoch and batch)."""
    workers = 2
    cfg = write_cfg(tmp_path, epochs=3, limit=320)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    aug = ["--set", "data.augment=flip"] if workers else []
    assert run_cli("fit", str(cfg), "--out", str(whole), *aug,
                   "--set", "data.workers=0").returncode == 0

    last = killed / "checkpoints" / "last.pt"
    # once training is under way in the second epoch, killed without warning
    kill_9_when(["fit", cfg, "--out", killed, "--checkpoint-every", "1", *aug, "--set",
                 f"data.workers={workers}"], [last, killed / "metrics.jsonl"], settle=0.3)
    state = torch.load(last, weights_only=True)["state"]
    assert 0 < state["epoch"] < 3 or state["batch_in_epoch"] > 0

    r = run_cli("fit", str(cfg), "--out", str(killed), "--resume", *aug, "--set",
                f"data.workers={workers}")
    assert r.returncode == 0, r.stderr
    assert "resumed" in r.stderr
    a, b = load_weights(whole), load_weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "weights differ after resume"
    sa = json.loads((whole / "summary.json").read_text())
    sb = json.loads((killed / "summary.json").read_text())
    assert sa["test"] == sb["test"]
    rows_a = [json.loads(x) for x in (whole / "metrics.jsonl").read_text().splitlines()]
    rows_b = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r_.items() if k != "seconds"} for r_ in rows]  # noqa: E731
    assert strip(rows_a) == strip(rows_b)


@pytest.mark.slow
def test_a_finished_run_is_not_overwritten(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, epochs=1, limit=120)
    run = tmp_path / "run"
    assert run_cli("fit", str(cfg), "--out", str(run)).returncode == 0
    before = (run / "model" / "model.safetensors").read_bytes()
    r = run_cli("fit", str(cfg), "--out", str(run))
    assert r.returncode == 2 and "--resume" in r.stderr and "Traceback" not in r.stderr
    assert (run / "model" / "model.safetensors").read_bytes() == before


def _folder(tmp: Path, classes: dict[str, int], bad: int = 0) -> Path:
    root = tmp / "imgs"
    rng = np.random.default_rng(0)
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = (rng.random((20, 20)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    for i in range(bad):
        (root / next(iter(classes)) / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    return root


@pytest.mark.parametrize("case", ["missing_path", "no_label_column", "single_class",
                                  "no_images"])
@pytest.mark.slow
def test_data_mistakes_exit_2_with_a_clear_message(tmp_path: Path, case: str) -> None:
    source = str(tmp_path / "nope.csv")
    extra = ""
    expect = "nope.csv"
    if case == "no_label_column":
        p = tmp_path / "t.csv"
        p.write_text("text,category\nhello,a\nworld,b\n")
        source, extra, expect = str(p), "  label_column: sentiment\n", "sentiment"
    elif case == "single_class":
        source, expect = str(_folder(tmp_path, {"only": 6})), "class"
    elif case == "no_images":
        (tmp_path / "empty" / "a").mkdir(parents=True)
        (tmp_path / "empty" / "b").mkdir(parents=True)
        (tmp_path / "empty" / "a" / "notes.txt").write_text("x")
        source, expect = str(tmp_path / "empty"), "image"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny(1, source, 100) + extra)
    r = run_cli("fit", str(cfg), "--out", str(tmp_path / "run"), timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert expect.lower() in r.stderr.lower()


@pytest.mark.slow
def test_unreadable_images_are_skipped_and_counted(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": 30, "b": 30}, bad=2)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny(1, str(root), 100).replace(
        "  image_size: 32\n", "  image_size: 32\n  val_fraction: 0.2\n  test_fraction: 0.2\n"))
    r = run_cli("fit", str(cfg), "--out", str(tmp_path / "run"))
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped_images"] == 2
    assert math.isfinite(summary["test"]["loss"])


def test_patience_running_out_ends_the_phase_not_the_run(tmp_path: Path) -> None:
    """lp_ft with patience 1: once the probe stops improving, fine-tuning starts at once."""
    from tlkit.config import validate
    from tlkit.run import fit_run

    raw = {"transfer_config": {"source_model": "timm:test_efficientnet",
                               "pretrained_weights": "none", "freeze_strategy": "lp_ft",
                               "lp_epochs": 6, "epochs": 8, "head_lr": 1e-9, "backbone_lr": 1e-3,
                               "early_stopping_patience": 1, "batch_size": 32,
                               "head_solver": "sgd",  # the probe by SGD epochs: patience ends it
                               "cache": {"disk": False}},
           "data": {"source": "digits", "image_size": 32, "limit": 200}}
    # a head rate this small leaves validation accuracy where it starts: the probe stalls
    fit_run(validate(raw), tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    phases = [r["phase"] for r in rows]
    assert 2 in phases, "the fine-tuning phase never ran"
    first_ft = phases.index(2)
    assert rows[first_ft]["epoch"] == 6  # the phase starts at its planned epoch
    assert first_ft == 2  # after epochs 0 and 1 of the probe, patience (1) ran out
    assert rows[1].get("phase_ended_early") is True


@pytest.mark.slow
def test_evaluate_computes_as_fit_did_in_mixed_precision(tmp_path: Path) -> None:
    """A bf16 run: evaluate runs in bf16 too, so it reproduces fit's test metrics exactly."""
    cfg = tmp_path / "amp.yaml"
    cfg.write_text(tiny(1, "digits", 160).replace("  dropout: 0.2\n",
                                                   "  dropout: 0.2\n  mixed_precision: true\n"))
    run = tmp_path / "run"
    r = run_cli("fit", str(cfg), "--out", str(run), "--no-report")
    assert r.returncode == 0, r.stderr
    test = json.loads((run / "summary.json").read_text())["test"]
    ev = json.loads(run_cli("evaluate", str(run)).stdout)
    assert ev["loss"] == test["loss"] and ev["f1_macro"] == test["f1_macro"]
