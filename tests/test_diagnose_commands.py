"""rank, probe and advise: the advisor's table as a pure function, and the commands end to end
on a tiny random model (and, marked packaged, on the real packaged ones)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli_runner import run_cli

from tlkit.select.advise import Evidence, recommend


TINY = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  head_lr: 1e-2
  backbone_lr: 3e-3
  epochs: 2
  batch_size: 16
  early_stopping_patience: null
data:
  source: digits
  image_size: 32
  limit: 240
"""


def _ev(n: int, accs: list[float], modality: str = "image", pad: float | None = None,
        n_val: int = 500) -> Evidence:
    probes = [{"cut": i + 1, "group": f"g{i}", "accuracy": a, "train_accuracy": 1.0}
              for i, a in enumerate(accs)]
    return Evidence(n, n_val, modality, "m", len(accs), [p["group"] for p in probes], probes,
                    pad=pad)


TC = SimpleNamespace(lr_decay_per_layer=0.7)


def test_advice_follows_the_concepts_table() -> None:
    rising = [0.5, 0.6, 0.7, 0.8, 0.9]  # the top probes best: similar
    peaked = [0.5, 0.7, 0.85, 0.75, 0.7]  # a lower group probes best: the top two are specific
    assert recommend(_ev(300, rising), TC).strategy == "all_frozen"
    small_diff = recommend(_ev(300, peaked), TC)
    assert small_diff.strategy == "top_n_unfrozen" and small_diff.settings["top_n"] == 2
    assert small_diff.similar is False
    big_sim = recommend(_ev(50_000, rising), TC)
    assert big_sim.strategy == "none" and big_sim.settings["lr_decay_per_layer"] <= 0.5
    big_diff = recommend(_ev(50_000, peaked), TC)
    assert big_diff.strategy == "none" and big_diff.settings["lr_decay_per_layer"] >= 0.8
    # a far reference makes a rising profile count as a different domain
    assert recommend(_ev(300, rising, pad=1.9), TC).similar is False
    assert recommend(_ev(300, rising, pad=0.4), TC).similar is True
    # text transformers fine-tune from a few hundred labels on, with L2-SP when data is small
    text = recommend(_ev(300, rising, modality="text"), TC)
    assert text.strategy == "none" and text.settings.get("l2sp_lambda", 0) > 0
    # every advice says why, and how to train it
    assert any("small data" in r for r in small_diff.reasons)
    assert "transfer_config.top_n=2" in small_diff.overrides()


def test_a_lower_peak_within_the_noise_of_a_small_validation_set_is_not_evidence() -> None:
    # 0.02 better on 50 validation examples: one example; the top still counts as best
    ev = _ev(200, [0.5, 0.80, 0.78], n_val=50)
    assert recommend(ev, TC).similar is True
    ev = _ev(200, [0.5, 0.80, 0.78], n_val=20_000)
    assert recommend(ev, TC).similar is False


@pytest.mark.slow
def test_probe_rank_and_advise_run_on_a_tiny_model(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out = tmp_path / "probe.json"
    r = run_cli("probe", str(cfg), "--json", str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    probes = json.loads(out.read_text())["probes"]
    assert [p["group"] for p in probes][0] == "stem" and len(probes) >= 3
    assert all(0 <= p["accuracy"] <= 1 for p in probes)
    assert "probe val acc" in r.stdout

    out = tmp_path / "rank.json"
    r = run_cli("rank", str(cfg), "--backbones",
                "timm:test_efficientnet@none,timm:test_vit@none", "--probe", "--json",
                str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert [c["rank"] for c in res["candidates"]] == [1, 2]
    logme = [c["logme"] for c in res["candidates"]]
    assert logme == sorted(logme, reverse=True)
    assert "kendall_tau_logme_vs_probe" in res and "Kendall" in r.stdout
    # the classical baseline is listed beside the candidates, measured as a probe is
    assert res["classical"]["candidate"] == "classical: pixels + logistic regression"
    assert 0 <= res["classical"]["probe_accuracy"] <= 1
    assert "classical: pixels + logistic regression" in r.stdout

    # advise reads a config with freeze_strategy auto and its own budget (kept short here)
    cfg.write_text(TINY.replace("  head_lr", "  freeze_strategy: auto\n  auto_budget: 1\n  head_lr"))
    out = tmp_path / "advice.json"
    r = run_cli("advise", str(cfg), "--json", str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    adv = json.loads(out.read_text())["advice"]
    # advise's pick is the one fit's freeze_strategy auto measures, with its trials and rates
    # raw pixels beat this random-feature model on digits: the pick is the pixels' model, said
    # as the all_frozen head on source_model pixels (a fine-tuning pick: tests/test_auto.py)
    assert adv["trials"]["chosen"] == "pixels"
    assert adv["strategy"] == "all_frozen" and adv["settings"]["source_model"] == "pixels"
    assert "transfer_config.source_model=pixels" in adv["set"]
    # the command it prints is accepted as written: auto's budget goes back to its default
    assert "transfer_config.auto_budget=5.0" in adv["set"]
    plan = run_cli("plan", str(cfg), *(a for o in adv["set"] for a in ("--set", o)))
    assert plan.returncode == 0, plan.stderr
    assert adv["trials"]["trials"][0]["strategy"] == "all_frozen"
    assert "recommended: freeze_strategy" in r.stdout and "tlkit fit" in r.stdout
    assert "trials (what `tlkit fit` with freeze_strategy auto measures)" in r.stdout
    assert "rates: head_lr" in r.stdout and "optimizer steps" in r.stdout

    r = run_cli("advise", str(cfg), "--table-only", "--json", str(out),
                cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["advice"]["trials"] is None


@pytest.mark.slow
def test_rank_refuses_an_unknown_candidate_before_computing_anything(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    r = run_cli("rank", str(cfg), "--backbones", "timm:test_efficientnet@none,mobilenet_v9",
                cache=tmp_path / "cache")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown backbone 'mobilenet_v9'" in r.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.pt"))


@pytest.mark.packaged
@pytest.mark.slow
def test_rank_puts_a_random_initialisation_below_the_pretrained_weights(tmp_path: Path) -> None:
    cfg = tmp_path / "fm.yaml"
    cfg.write_text("transfer_config:\n  source_model: mobilenetv2\ndata:\n  source: "
                   "fashion_mnist\n  image_size: 64\n  limit: 250\n  val_fraction: 0.2\n")
    out = tmp_path / "rank.json"
    r = run_cli("rank", str(cfg), "--backbones", "mobilenetv2@none,mobilenetv2", "--json",
                str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    ranked = [c["candidate"] for c in json.loads(out.read_text())["candidates"]]
    assert ranked == ["mobilenetv2", "mobilenetv2@none"]
    leep = {c["candidate"]: c["leep"] for c in json.loads(out.read_text())["candidates"]}
    assert leep["mobilenetv2"] is not None and leep["mobilenetv2@none"] is None


@pytest.mark.slow
def test_probe_measures_divergence_to_a_reference_at_each_group(tmp_path: Path) -> None:
    cfg = tmp_path / "ref.yaml"
    cfg.write_text(TINY + "diagnostics:\n  reference:\n    source: fashion_mnist\n"
                   "    image_size: 32\n  sample: 100\n")
    out = tmp_path / "probe.json"
    r = run_cli("probe", str(cfg), "--json", str(out), cache=tmp_path / "cache")
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    div = res["divergence"]
    assert res["reference"] == "fashion_mnist"
    assert list(div) == [p["group"] for p in res["probes"]]  # every group's output
    for d in div.values():
        assert 0.0 <= d["pad"] <= 2.0 and d["mmd"] >= 0 and 0 <= d["domain_error"] <= 1
    # digits against clothing: a linear classifier tells them apart at the output
    assert list(div.values())[-1]["pad"] > 1.0
    assert "proxy A-distance" in r.stdout
