"""A loss that becomes NaN or infinite stops the run naming the step and the likely cause, and
keeps the last good checkpoint. Each case is in docs/reliability.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from user_runs import cli, config, error_line, image_table

from tlkit.train.checkpoint import load_checkpoint


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tlkit.train import loop

    real = loop.loss_function

    def loss_function(task: str, *args: Any, **kwargs: Any) -> Any:
        fn, calls = real(task, *args, **kwargs), [0]

        class Diverging(torch.nn.Module):
            def forward(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                calls[0] += 1
                loss = fn(out, target)
                return loss * float("nan") if calls[0] >= 5 else loss  # the 5th batch diverges

        return Diverging()

    monkeypatch.setattr(loop, "loss_function", loss_function)
    cfg = config(tmp_path, epochs=1, limit=120)
    run = tmp_path / "run"
    code, err = cli(capsys, "fit", cfg, "--out", run, "--checkpoint-every", "1", "--no-report")
    assert code == 2
    msg = error_line(err)
    assert "the training loss became nan at epoch 0, batch 4 (optimizer step 4)" in msg
    assert "learning rate too high" in msg and "last good checkpoint is kept" in msg
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_an_infinite_regression_target_stops_the_run_with_the_cause(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = image_table(tmp_path, 60, lambda i: "inf" if i % 4 == 0 else i / 10)
    cfg = config(tmp_path, source=str(table), limit=None, data="  task: regression\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--no-report")
    assert code == 2
    msg = error_line(err)
    assert "the training loss became inf at epoch 0" in msg and "bad targets" in msg
