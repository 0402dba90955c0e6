"""Config mistakes are refused when the config loads or before the model does, naming the key:
rates, batch sizes, epochs and seeds out of range, a key given twice, a warmup longer than the
run; a bare ``off`` is the word. Each case is in docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from user_runs import cli, config, default_config, error_line

from tlkit.config import load_config
from tlkit.errors import UserError


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLKIT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("override, where", [
    ("transfer_config.head_lr=1e6", "head_lr"),
    ("transfer_config.head_lr=0", "head_lr"),
    ("transfer_config.backbone_lr=-1e-4", "backbone_lr"),
    ("transfer_config.backbone_lr=100", "backbone_lr"),
    ("transfer_config.head_lr=.nan", "head_lr"),
    ("transfer_config.head_lr=.inf", "head_lr"),
    ("transfer_config.batch_size=0", "batch_size"),
    ("transfer_config.batch_size=10000000", "batch_size"),
    ("transfer_config.batch_size=16.5", "batch_size"),
    ("transfer_config.epochs=0", "epochs"),
    ("transfer_config.epochs=100000", "epochs"),
    ("transfer_config.epochs=-3", "epochs"),
    ("transfer_config.gradient_accumulation_steps=0", "gradient_accumulation_steps"),
    ("transfer_config.warmup_steps=-1", "warmup_steps"),
    ("transfer_config.max_grad_norm=.inf", "max_grad_norm"),
    ("transfer_config.seed=-1", "transfer_config.seed"),
    ("transfer_config.seed=4294967296", "transfer_config.seed"),
    ("data.seed=99999999999999999999", "data.seed"),
    ("data.label_separator=''", "label_separator"),
    ("adaptation.pretrain.lr=2", "adaptation.pretrain.lr"),
    ("diagnostics.scratch_lr=0", "diagnostics.scratch_lr"),
])
def test_rates_batch_sizes_and_epochs_out_of_range_are_refused_when_the_config_loads(
        tmp_path: Path, override: str, where: str) -> None:
    cfg = config(tmp_path)
    with pytest.raises(UserError) as info:
        load_config(cfg, [override])
    assert where in str(info.value)


def test_an_absurd_learning_rate_exits_2_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run", "--set",
                    "transfer_config.head_lr=1e6")
    assert code == 2
    assert "transfer_config.head_lr: Input should be less than or equal to 10" in err
    assert not (tmp_path / "run").exists()


def test_a_key_given_twice_is_refused_with_both_line_numbers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = default_config(tmp_path)
    cfg.write_text(cfg.read_text() + "transfer_config:\n  epochs: 50\n")
    code, err = cli(capsys, "fit", cfg, "--out", tmp_path / "run")
    assert code == 2
    line = error_line(err)
    assert "'transfer_config' is given twice" in line and "lines 1 and 13" in line
    assert not (tmp_path / "run").exists()
    cfg.write_text(default_config(tmp_path).read_text().replace("  epochs: 1\n",
                                                          "  epochs: 1\n  epochs: 2\n"))
    code, err = cli(capsys, "plan", cfg)
    assert code == 2 and "'epochs' is given twice" in error_line(err)


def test_a_warmup_longer_than_the_run_is_refused_before_the_model_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = cli(capsys, "fit", default_config(tmp_path, tc="  warmup_steps: 1e20\n"),
                    "--out", tmp_path / "a")
    assert code == 2 and "transfer_config.warmup_steps" in err and "Traceback" not in err
    code, err = cli(capsys, "fit", default_config(tmp_path, tc="  warmup_steps: 1e6\n"),
                    "--out", tmp_path / "a")
    assert code == 2 and "warmup_steps is 1,000,000, more than the run's" in error_line(err)
    code, err = cli(capsys, "fit", default_config(tmp_path, tc="  warmup_steps: 500\n"),
                    "--out", tmp_path / "b")
    assert code == 2
    line = error_line(err)
    assert "warmup_steps is 500, more than the run's" in line and "warmup_ratio" in line
    assert "loading backbone" not in err


def test_a_bare_off_is_read_as_the_word(tmp_path: Path) -> None:
    from tlkit.config import load_config

    cfg = default_config(tmp_path)
    cfg.write_text(cfg.read_text() + "diagnostics:\n  check_preprocessing: off\n")
    assert load_config(str(cfg)).diagnostics.check_preprocessing == "off"
