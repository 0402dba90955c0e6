"""Untrusted files: weights, checkpoints and feature-cache files whose pickle carries code or
that are damaged, YAML with Python tags or alias bombs. Nothing such a file holds ever runs; a
damaged one is a user error (exit 2 naming it) or, in the feature cache, computed again. Each
case is in docs/reliability.md."""

from __future__ import annotations

import os
import pickle
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from user_runs import cli, config, error_line

from tlkit.config import dump_config, load_config
from tlkit.errors import UserError
from tlkit.rundir import claim
from tlkit.train.checkpoint import load_checkpoint


SRC = Path(__file__).resolve().parents[1] / "src" / "tlkit"


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


class Payload:
    """A pickle that runs a shell command when unpickled (a harmless marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.marker}",))


def pickle_with_code(path: Path, marker: Path, kind: str = "torch") -> Path:
    if kind == "torch":
        torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker)}, path)
    else:
        with open(path, "wb") as f:
            pickle.dump({"w": Payload(marker)}, f)
    return path


def test_src_loads_pickles_only_with_weights_only_and_yaml_only_safely() -> None:
    """Every torch.load in tlkit passes weights_only=True; nothing calls pickle.load, np.load
    with allow_pickle, or yaml.load with an unsafe loader."""
    problems = []
    for f in sorted(SRC.rglob("*.py")):
        text = f.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start(): text.find(")", m.end()) + 1]
            if "weights_only=True" not in call:
                problems.append(f"{f.name}: {call}")
        for bad in ("pickle.load(", "pickle.loads(", "allow_pickle=True", "yaml.unsafe_load",
                    "yaml.full_load", "Loader=yaml.Loader", "Loader=yaml.FullLoader",
                    "Loader=yaml.UnsafeLoader", "weights_only=False"):
            if bad in text:
                problems.append(f"{f.name}: {bad}")
    assert not problems, problems


@pytest.mark.parametrize("kind", ["torch", "plain"])
def test_pretrained_weights_whose_pickle_carries_code_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    marker = tmp_path / "PWNED"
    weights = pickle_with_code(tmp_path / f"evil_{kind}.pth", marker, kind)
    cfg = config(tmp_path, weights=str(weights))
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    msg = error_line(err)
    assert "pickled Python objects" in msg and "refused" in msg and "safetensors" in msg
    if kind == "torch":
        assert "posix.system" in msg  # the offending global is named
    assert not marker.exists(), "the pickle's code ran"


def test_a_hf_folder_whose_pytorch_model_bin_carries_code_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import BertConfig, BertModel

    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                         num_attention_heads=1, intermediate_size=8)).save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "PWNED"
    pickle_with_code(folder / "pytorch_model.bin", marker)
    (tmp_path / "t.csv").write_text("text,label\n" + "".join(
        f"example {i},{'ab'[i % 2]}\n" for i in range(40)))
    cfg = config(tmp_path, source=str(tmp_path / "t.csv"), model=f"hf:{folder}",
                 weights="packaged", limit=None)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert "pytorch_model.bin holds pickled Python objects" in error_line(err)
    assert not marker.exists()


def _started_run(tmp: Path, cfg: Path) -> Path:
    """A run directory as a fit leaves it: its resolved config and a checkpoint."""
    run = tmp / "run"
    claim(run, "run")  # tlkit's run directory, marked as fit marks it
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(dump_config(load_config(cfg)))
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n')
    return run


def test_resume_refuses_a_checkpoint_whose_pickle_carries_code(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    run = _started_run(tmp_path, cfg)
    marker = tmp_path / "PWNED"
    pickle_with_code(run / "checkpoints" / "last.pt", marker)
    before = (run / "checkpoints" / "last.pt").read_bytes()
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume")
    assert code == 2
    msg = error_line(err)
    assert "last.pt holds pickled Python objects (posix.system)" in msg and "refused" in msg
    assert not marker.exists()
    # nothing already there was lost
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert (run / "metrics.jsonl").read_text() == '{"epoch": 0}\n'


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint"])
def test_resume_from_a_damaged_checkpoint_is_a_user_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes) -> None:
    cfg = config(tmp_path)
    run = _started_run(tmp_path, cfg)
    (run / "checkpoints" / "last.pt").write_bytes(content)
    code, err = cli(capsys, "fit", cfg, "--out", run, "--resume")
    assert code == 2
    assert "last.pt" in error_line(err) and "delete it" in error_line(err)


def test_a_state_dict_given_as_a_checkpoint_is_a_user_error(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, tmp_path / "last.pt")
    with pytest.raises(UserError, match="is not a tlkit checkpoint"):
        load_checkpoint(tmp_path / "last.pt")


def test_a_yaml_config_with_a_python_tag_is_refused_and_never_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    cfg = config(tmp_path, tc=f"  scheduler: !!python/object/apply:os.system ['touch {marker}']\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    assert "never builds objects from tags" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "run").exists()


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="expands to more than"):
        load_config(p)
    assert time.perf_counter() - t0 < 5


def test_a_damaged_feature_cache_file_is_computed_again(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, limit=120).read_text().replace(
        "freeze_strategy: none", "freeze_strategy: all_frozen").replace(
        "cache: {disk: false}", "cache: {disk: true}")
    (tmp_path / "c.yaml").write_text(cfg)
    code, err = cli(capsys, "fit", tmp_path / "c.yaml", "--out", tmp_path / "a", "--no-report")
    assert code == 0, err
    files = list((tmp_path / "cache" / "features").rglob("*.pt"))
    assert files
    for f in files:
        f.write_bytes(f.read_bytes()[:100])  # cut short, as by a crash or a full disk
    code, err = cli(capsys, "fit", tmp_path / "c.yaml", "--out", tmp_path / "b", "--no-report")
    assert code == 0, err
    assert "cannot be used" in err and "computing the features again" in err
