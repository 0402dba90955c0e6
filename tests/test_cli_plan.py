"""`tlkit plan` and `tlkit backbones` as a user runs them: exit codes, messages, the plan."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tlkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
TLKIT = Path(sys.executable).parent / "tlkit"

TINY_IMAGE = [
    "--set", "transfer_config.source_model=timm:test_vit",
    "--set", "transfer_config.pretrained_weights=none",
    "--set", "data.source=fashion_mnist",
]




def run_main(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_cli(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run([str(TLKIT), *argv], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT, check=False)


def assert_user_error(code: int, out: str, err: str, *expected: str) -> None:
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    for e in expected:
        assert e in err, f"{e!r} not in {err!r}"


@pytest.fixture
def config(tmp_path):
    def _config(text: str) -> str:
        p = tmp_path / "c.yaml"
        p.write_text(text)
        return str(p)

    return _config


def parse_plan(text: str) -> list[dict[str, tuple[int, bool, float]]]:
    """Per phase: group -> (params, trainable, lr), from `tlkit plan`'s table."""
    phases = []
    row = re.compile(r"^\s+(\S+)\s+([\d,]+)\s+(trainable|frozen)\s+\(?([0-9.e+-]+)\)?\s")
    for block in text.split("\nphase ")[1:]:
        rows = {}
        for line in block.splitlines():
            m = row.match(line)
            if m:
                rows[m.group(1)] = (int(m.group(2).replace(",", "")), m.group(3) == "trainable",
                                    float(m.group(4)))
        phases.append(rows)
    return phases


# --------------------------------------------------------------------------------------------------
# User errors: exit 2, one message, no traceback
# --------------------------------------------------------------------------------------------------


def test_concept_schedule_form(config):
    text = QUICKSTART.read_text().replace("    - {epoch: 3, unfreeze: all}",
                                          '    - epoch: 3, unfreeze: "last_block"')
    line = text.splitlines().index('    - epoch: 3, unfreeze: "last_block"') + 1
    start = time.perf_counter()
    r = run_cli("plan", config(text))
    assert time.perf_counter() - start < 30
    assert_user_error(r.returncode, r.stdout, r.stderr, f"line {line}", "column 7",
                      "{epoch: 3, unfreeze: last_block}")


def test_unknown_key(capsys):
    code, out, err = run_main(capsys, "plan", str(QUICKSTART), "--set",
                              "transfer_config.head.typ=mlp")
    assert_user_error(code, out, err, "transfer_config.head.typ", "type")


def test_unknown_key_in_the_file(capsys, config):
    text = QUICKSTART.read_text().replace("  warmup_steps: 50", "  warmup_step: 50")
    code, out, err = run_main(capsys, "plan", config(text))
    assert_user_error(code, out, err, "transfer_config.warmup_step", "warmup_steps")


def test_unknown_backbone_suggests_the_closest(capsys):
    code, out, err = run_main(capsys, "plan", str(QUICKSTART), "--set",
                              "transfer_config.source_model=minilm-l66")
    assert_user_error(code, out, err, "minilm-l66", "'minilm-l6'")


def test_unknown_strategy_lists_the_strategies(capsys):
    code, out, err = run_main(capsys, "plan", str(QUICKSTART), "--set",
                              "transfer_config.freeze_strategy=frozen")
    assert_user_error(code, out, err, "frozen", "all_frozen", "top_n_unfrozen", "gradual")


def test_bad_selector(capsys):
    code, out, err = run_main(capsys, "plan", str(QUICKSTART), *TINY_IMAGE, "--set",
                              "transfer_config.unfreeze_schedule=[{epoch: 1, unfreeze: "
                              "last_99_blocks}]")
    assert_user_error(code, out, err, "last_99_blocks")


def test_missing_config_file(capsys, tmp_path):
    code, out, err = run_main(capsys, "plan", str(tmp_path / "nope.yaml"))
    assert_user_error(code, out, err, "nope.yaml")


def test_text_folder_without_a_model(capsys, tmp_path):
    code, out, err = run_main(capsys, "plan", str(QUICKSTART), "--set",
                              f"transfer_config.source_model=hf:{tmp_path}")
    assert_user_error(code, out, err, str(tmp_path))


def test_weights_file_of_another_model(capsys, tmp_path):
    import timm

    f = tmp_path / "vit.pth"
    torch.save(timm.create_model("test_vit").state_dict(), f)
    code, out, err = run_main(capsys, "plan", str(QUICKSTART),
                              "--set", "data.source=fashion_mnist",
                              "--set", "transfer_config.source_model=timm:test_resnet",
                              "--set", f"transfer_config.pretrained_weights={f}")
    assert_user_error(code, out, err, "does not fit")


@pytest.mark.parametrize("name", ["resnet50", "bert-base-uncased"])
def test_hub_backbone_while_offline_in_process(capsys, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    code, out, err = run_main(capsys, "plan", str(QUICKSTART), "--set",
                              f"transfer_config.source_model={name}")
    assert time.perf_counter() - start < 30
    assert_user_error(code, out, err, "hub", "minilm-l6")


@pytest.mark.slow
def test_hub_backbone_while_offline_command():
    start = time.perf_counter()
    r = run_cli("plan", str(QUICKSTART), "--set", "transfer_config.source_model=resnet50")
    assert time.perf_counter() - start < 30
    assert_user_error(r.returncode, r.stdout, r.stderr, "resnet50", "hub", "offline")


# --------------------------------------------------------------------------------------------------
# The printed plan
# --------------------------------------------------------------------------------------------------


def _check_rates(phase: dict, groups: list[str], backbone_lr: float, decay: float,
                 head_lr: float) -> None:
    L = len(groups)
    for level, g in enumerate(groups, start=1):
        expected = backbone_lr * decay ** (L - level)
        assert phase[g][2] == pytest.approx(expected, rel=5e-3), (g, phase[g], expected)
    assert phase["head"][2] == pytest.approx(head_lr)
    assert phase["head"][1] is True


def test_quickstart_plan(capsys):
    from tlkit.backbones import load_backbone

    code, out, err = run_main(capsys, "plan", str(QUICKSTART))
    assert code == 0, err
    groups = ["embeddings"] + [f"encoder.layer.{i}" for i in range(6)]
    phases = parse_plan(out)
    assert len(phases) == 4  # head only, then last_block, last_two_blocks, all
    backbone_params = sum(p.numel() for p in load_backbone("minilm-l6").parameters())
    total = backbone_params + 384 * 2 + 2  # rotten_tomatoes: 2 classes
    for phase in phases:
        assert set(phase) == set(groups) | {"head"}
        _check_rates(phase, groups, 1e-4, 0.5, 1e-3)
        assert sum(v[0] for v in phase.values()) == total
    assert f"{total:,}" in out.splitlines()[0]
    # the text length, and why: MiniLM's own (its sentence_bert_config.json), or the config's
    assert "texts cut at 256 tokens: the model's own max_seq_length" in out
    code, given, err = run_main(capsys, "plan", str(QUICKSTART), "--set", "data.max_length=64")
    assert code == 0, err
    assert "texts cut at 64 tokens: data.max_length" in given
    trainable = [[phase[g][1] for g in groups] for phase in phases]
    assert trainable == [
        [False] * 7,
        [False] * 6 + [True],
        [False] * 5 + [True] * 2,
        [True] * 7,
    ]


def test_plan_with_overrides_on_a_tiny_model(capsys):
    code, out, err = run_main(
        capsys, "plan", str(QUICKSTART), *TINY_IMAGE,
        "--set", "transfer_config.freeze_strategy=top_n_unfrozen",
        "--set", "transfer_config.top_n=3",
        "--set", "transfer_config.unfreeze_schedule=[]",
        "--set", "transfer_config.backbone_lr=2e-4",
        "--set", "transfer_config.lr_decay_per_layer=0.8",
    )
    assert code == 0, err
    (phase,) = parse_plan(out)
    groups = [g for g in phase if g != "head"][::-1]  # printed top first
    assert groups[0] == "stem"
    _check_rates(phase, groups, 2e-4, 0.8, 1e-3)
    assert [phase[g][1] for g in groups] == [False] * (len(groups) - 3) + [True] * 3
    assert phase["head"][0] == 64 * 10 + 10  # test_vit features x fashion_mnist classes


@pytest.mark.slow
def test_plan_command_end_to_end():
    r = run_cli("plan", str(QUICKSTART), *TINY_IMAGE)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert len(parse_plan(r.stdout)) == 4


# --------------------------------------------------------------------------------------------------
# tlkit backbones
# --------------------------------------------------------------------------------------------------


def test_backbones_lists_the_packaged_ones_as_offline(capsys):
    code, out, err = run_main(capsys, "backbones")
    assert code == 0, err
    for name in ("minilm-l6", "mobilenetv2", "efficientnet-lite0"):
        line = next(ln for ln in out.splitlines() if ln.split()[:1] == [name])
        assert re.search(r"\byes\b", line), line


def test_backbones_json(capsys):
    import json

    code, out, _ = run_main(capsys, "backbones", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert all(rows[n]["offline"] for n in ("minilm-l6", "mobilenetv2", "efficientnet-lite0"))
