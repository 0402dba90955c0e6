"""Data-parallel fit: two CPU processes (gloo) give the single process's result, and a run
killed on two processes resumes on one.

The model is a 2-layer BERT without dropout (its LayerNorm normalises each token alone), trained
with gradual unfreezing: the cached activations are computed in shards and gathered, backbone
layers join the trained set mid-run, and every step is the single-process step of the same
global batch up to the order of float additions.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
  batch_size: 17
  gradient_accumulation_steps: 2
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
        # A key bias adds the same amount to every score of a query, which softmax ignores: its
        # gradient is zero but for rounding, and Adam scales that rounding up to whole steps, so
        # two processes' summation order moves it by the learning rate. Nothing depends on it.
        if k.endswith("attention.self.key.bias"):
            continue
        torch.testing.assert_close(wa[k], wb[k], atol=1e-4, rtol=1e-4, msg=k)


@pytest.mark.slow
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


@pytest.mark.slow
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


class _Body(torch.nn.Module):
    """A backbone stand-in: a frozen layer, BatchNorm, a trained layer, and a trained layer the
    forward does not use (only L2-SP's penalty reaches it)."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(4, 6)
        self.bn = torch.nn.BatchNorm1d(6)
        self.top = torch.nn.Linear(6, 5)
        self.aside = torch.nn.Linear(5, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.top(self.bn(self.frozen(x))))


class _Head(torch.nn.Module):
    """A head with a trained layer no loss reaches at all."""

    def __init__(self) -> None:
        super().__init__()
        self.out = torch.nn.Linear(5, 3)
        self.spare = torch.nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x)


def test_ddp_averages_to_the_global_batch_step(tmp_path: Path) -> None:
    """Through the loop's own `_backward` and a real DDP wrapper (on a one-process gloo group,
    so DDP averages over one process; the test averages the simulated processes as DDP would
    over two): the average is the one-process gradient of the whole batch with the shared
    L2-SP penalty counted once, including for a batch smaller than the processes (the empty
    share runs a stand-in weighted 0). A parameter no loss reaches is left out of DDP and keeps
    no gradient; a stand-in moves no BatchNorm statistics."""
    from types import SimpleNamespace

    import torch.distributed as tdist

    from tlkit.model import TransferModel
    from tlkit.regularization import L2SP
    from tlkit.train.evaluate import loss_function
    from tlkit.train.feed import Feed
    from tlkit.train.hooks import NO_IO, Step
    from tlkit.plan.length import Length
    from tlkit.train.loop import _backward, _Run
    from tlkit.train.parallel import parallel_for

    torch.manual_seed(0)
    model = TransferModel(_Body(), _Head())  # type: ignore[arg-type]
    penalty = L2SP(model.backbone, 0.5)
    with torch.no_grad():  # away from the source weights: a penalty with a gradient
        for p in model.backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.backbone.frozen.requires_grad_(False)
    model.set_frozen_norm_modules([model.backbone.frozen])  # kept in eval mode by train()
    model.eval()  # BatchNorm from its statistics: the same function whatever the shares
    data = [(torch.randn(4), i % 3) for i in range(5)]
    feed = Feed({"train": data}, lambda items: (torch.stack([x for x, _ in items]),
                                                torch.tensor([y for _, y in items])),
                torch.device("cpu"))

    def run(dist: Dist, parallel: Any) -> _Run:
        settings = SimpleNamespace(gradient_accumulation_steps=1, head_lr=0.1, backbone_lr=0.1)
        return _Run(SimpleNamespace(model=model), SimpleNamespace(task="single_label"),
                    settings, NO_IO, [penalty], dist, None,  # type: ignore[arg-type]
                    Length(5, 5, 1, 1, 1, 1, 0),
                    loss_function("single_label"), parallel=parallel)

    def grads(r: _Run, mine: list[int], size: int, n: int) -> dict[str, torch.Tensor | None]:
        model.zero_grad(set_to_none=True)
        _backward(r, feed, mine, n, Step(0, 0, size, 0, 0.0, contextlib.nullcontext))
        return {k: None if p.grad is None else p.grad.clone()
                for k, p in model.named_parameters()}

    tdist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                             world_size=1)
    try:
        par = parallel_for(None, model, feed, 0, [penalty], SINGLE)
        assert parallel_for(par, model, feed, 0, [penalty], SINGLE) is par
        assert par.wrapped.parameters_to_ignore == {"model.head.spare.weight",  # type: ignore[union-attr]
                                                    "model.head.spare.bias"}
        for batch in ([0, 1, 2, 3, 4], [3]):
            one = grads(run(SINGLE, None), batch, len(batch), len(batch))
            procs = [Dist(r, 2, 0, torch.device("cpu")) for r in range(2)]
            each = [grads(run(d, par), d.share(batch) or batch[:1], len(d.share(batch)),
                          len(batch)) for d in procs]
            for k, g in one.items():
                if g is None:
                    assert each[0][k] is None and each[1][k] is None, k
                    continue
                mean = (each[0][k] + each[1][k]) / 2  # type: ignore[operator]
                torch.testing.assert_close(mean, g, atol=1e-6, rtol=1e-5, msg=k)
            assert one["backbone.aside.weight"] is not None  # reached by the penalty alone
            assert one["head.spare.weight"] is None and one["backbone.frozen.weight"] is None

        model.train()
        before = model.backbone.bn.running_mean.clone()
        par(feed.batch("train", [0, 1])[0], sync=True, stand_in=True).sum().backward()
        assert model.training and not model.backbone.frozen.training
        assert torch.equal(model.backbone.bn.running_mean, before)
        model.backbone.frozen.requires_grad_(True)  # the next phase: wrapped anew
        assert parallel_for(par, model, feed, 1, [penalty], SINGLE) is not par
    finally:
        tdist.destroy_process_group()


def test_an_fsdp_launch_is_refused_before_anything_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkit.distributed import setup
    from tlkit.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match="FSDP .* is not supported yet"):
        setup("cpu")
