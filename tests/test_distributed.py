"""Data-parallel fit: two CPU processes (gloo) give the single process's result, and a run
killed on two processes resumes on one.

The model is a 2-layer BERT without dropout (its LayerNorm normalises each token alone), trained
with gradual unfreezing: the cached activations are computed in shards and gathered, backbone
layers join the trained set mid-run, and every step is the single-process step of the same
global batch up to the order of float additions.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tlkit.distributed import SINGLE, Dist

BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

CONFIG = """\
transfer_config:
  source_model: hf:{bert}
  pretrained_weights: none
  freeze_strategy: gradual
  unfreeze_schedule:
    - {{epoch: 1, unfreeze: last_block}}
    - {{epoch: 2, unfreeze: last_two_blocks}}
  head_lr: 1e-2
  backbone_lr: 3e-3
  warmup_steps: 2
  dropout: 0.0
  epochs: 3
  batch_size: 16
  early_stopping_patience: null
  cache: {{disk: false}}
data:
  source: {data}
  text_column: text
  label_column: label
  val_fraction: 0.2
  test_fraction: 0.2
  max_length: 32
"""


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory, tiny_bert_no_dropout_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("dist")
    bert = tiny_bert_no_dropout_dir
    r = random.Random(0)
    good, bad = "fine warm bright funny clever".split(), "dull flat tired clumsy grim".split()
    filler = "the a film story plot actor scene music it was and quite very".split()
    with open(root / "texts.jsonl", "w") as f:
        for i in range(240):
            words = [r.choice(filler) for _ in range(r.randint(4, 14))]
            for _ in range(r.randint(1, 3)):
                words.insert(r.randrange(len(words)), r.choice(good if i % 2 else bad))
            f.write(json.dumps({"text": " ".join(words), "label": "pos" if i % 2 else "neg"})
                    + "\n")
    path = root / "tiny.yaml"
    path.write_text(CONFIG.format(bert=bert, data=root / "texts.jsonl"))
    return path


def fit(launcher: list[str], cfg: Path, out: Path, *extra: str
        ) -> subprocess.CompletedProcess[str]:
    cmd = [*launcher, "-m", "tlkit.cli", "fit", str(cfg), "--out", str(out), "--no-report",
           *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)


def fit_here(cfg: Path, out: Path, *extra: str) -> int:
    """One process: `tlkit fit` in this one (whose imports are done: seconds saved)."""
    from tlkit.cli import main

    return main(["fit", str(cfg), "--out", str(out), "--no-report", *extra])


# `accelerate launch --multi_gpu --num_processes 2` starts the same workers through torch's own
# launcher (docs/scaling.md shows its run); its command line takes ten seconds more to start
# here, so the test uses torchrun.
TORCHRUN = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]


@pytest.fixture(scope="module")
def one_process(cfg: Path) -> Path:
    out = cfg.parent / "one"
    assert fit_here(cfg, out) == 0
    return out


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def rows(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(a: Path, b: Path) -> None:
    ra, rb = rows(a), rows(b)
    assert [r["epoch"] for r in ra] == [r["epoch"] for r in rb] == [0, 1, 2]
    for x, y in zip(ra, rb):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4, abs=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-4, abs=1e-5)
        assert x["val_accuracy"] == y["val_accuracy"]
    ta = json.loads((a / "summary.json").read_text())["test"]
    tb = json.loads((b / "summary.json").read_text())["test"]
    assert ta["accuracy"] == tb["accuracy"]
    assert ta["loss"] == pytest.approx(tb["loss"], rel=1e-4, abs=1e-5)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-4, msg=k)


def test_two_processes_give_the_single_process_result(cfg: Path, one_process: Path) -> None:
    out = cfg.parent / "two"
    r = fit(TORCHRUN, cfg, out)
    assert r.returncode == 0, r.stderr
    assert "processes=2" in r.stderr
    assert "computed activations at cut 1 of train once in 2 shards" in r.stderr
    assert json.loads((out / "summary.json").read_text())["processes"] == 2
    # rank 0 alone wrote the run directory: one row per epoch, one log line per epoch
    assert len(rows(out)) == 3
    assert (out / "train.log").read_text().count("epoch 0 done") == 1
    assert_same_run(one_process, out)


def test_a_run_killed_on_two_processes_resumes_on_one(cfg: Path, one_process: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    import psutil

    out = cfg.parent / "killed"
    cmd = [*TORCHRUN, "-m", "tlkit.cli", "fit", str(cfg), "--out", str(out), "--no-report",
           "--checkpoint-every", "1"]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").is_file() and (out / "metrics.jsonl").read_text():
            break
        time.sleep(0.05)
    # the launcher and both workers (each in its own session) die without warning
    procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert proc.poll() is None, "the run finished before it could be killed"
    for p in reversed(procs):
        p.send_signal(signal.SIGKILL)
    proc.wait()
    psutil.wait_procs(procs, timeout=30)
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    # killed mid-run (in epoch 0's last step at the earliest: its metrics row was written)
    assert saved["processes"] == 2 and saved["state"]["step"] > 0 and saved["state"]["epoch"] < 3
    assert not (out / "summary.json").exists()

    capfd.readouterr()
    assert fit_here(cfg, out, "--resume") == 0
    assert "resumed at epoch" in capfd.readouterr().err
    assert_same_run(one_process, out)


@pytest.mark.parametrize("n", [0, 1, 5, 16, 17])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shares_and_blocks_cover_the_data_once_in_order(n: int, world: int) -> None:
    procs = [Dist(r, world, r, torch.device("cpu")) for r in range(world)]
    batch = list(range(100, 100 + n))
    shares = [d.share(batch) for d in procs]
    assert sorted(i for s in shares for i in s) == batch
    assert [i for d in procs for i in d.block(n)] == list(range(n))
    assert SINGLE.share(batch) == batch and list(SINGLE.block(n)) == list(range(n))


def test_other_commands_refuse_several_processes(cfg: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from tlkit.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["plan", str(cfg)]) == 2
    assert "only `tlkit fit` runs on several processes" in capsys.readouterr().err
