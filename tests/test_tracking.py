"""MLflow tracking (``tracking: {mlflow: ...}``): a fit's params, per-epoch metrics, summary and
run directory, read back with MLflow's own client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tlkit.cli import main

CFG = """\
transfer_config:
  source_model: timm:test_efficientnet
  pretrained_weights: none
  freeze_strategy: top_n_unfrozen
  top_n: 1
  head_lr: 1e-2
  backbone_lr: 3e-3
  warmup_steps: 0
  epochs: 2
  batch_size: 16
  min_steps: 0
  early_stopping_patience: null
  device: cpu
data:
  source: digits
  image_size: 32
  limit: 100
tracking:
  mlflow: {uri: MLRUNS, experiment: tiny}
"""


@pytest.mark.slow
def test_mlflow_client_reads_back_params_and_metrics_of_a_fit(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    mlflow = pytest.importorskip("mlflow")
    store = tmp_path / "mlruns"
    (tmp_path / "tiny.yaml").write_text(CFG.replace("MLRUNS", str(store)))
    run = tmp_path / "run"
    assert main(["fit", str(tmp_path / "tiny.yaml"), "--out", str(run), "--no-report"]) == 0
    assert "logged to MLflow" in capsys.readouterr().err
    client = mlflow.tracking.MlflowClient(store.resolve().as_uri())
    experiment = client.get_experiment_by_name("tiny")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert found.data.params["transfer_config.head_lr"] == "0.01"
    assert found.data.params["data.source"] == "digits"
    history = client.get_metric_history(found.info.run_id, "val_loss")
    logged = [json.loads(x)["val_loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx(logged)
    summary = json.loads((run / "summary.json").read_text())
    assert found.data.metrics["test_accuracy_final"] == pytest.approx(summary["test"]["accuracy"])
    names = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert {"summary.json", "run"} <= names
    inside = {a.path for a in client.list_artifacts(found.info.run_id, "run")}
    assert "run/model" in inside and "run/README.md" in inside and "run/checkpoints" not in inside


def test_tracking_without_mlflow_installed_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "mlflow" else real(name, *a))
    (tmp_path / "tiny.yaml").write_text(CFG.replace("MLRUNS", str(tmp_path / "mlruns")))
    assert main(["fit", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'tlkit[tracking]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "mlruns").exists()
