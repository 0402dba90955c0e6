"""Experiment tracking in MLflow (``tracking: {mlflow: {uri, experiment}}``), through the real
``mlflow`` package (the ``tracking`` extra installs mlflow-skinny).

An event consumer like ``tlkit.tensorboard``'s: at the first epoch's end it opens an MLflow run named
after the run directory and logs the config as params (flattened, ``transfer_config.head_lr``);
at each epoch's end the epoch's metrics (step = the epoch); at the end ``finish`` logs the test
metrics, summary.json as a dict and the run directory as artifacts (checkpoints/ left out:
they are for resuming, and the model is in model/). A fit that fails ends its MLflow run FAILED.

MLflow 3 keeps its file store (a local folder) in maintenance mode and asks for an opt-in; a
local folder is what the default ``mlruns`` names, so tlkit opts in for file stores only.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tlkit.errors import require

Event = Callable[[str, dict[str, Any]], None]


def tracking_uri(uri: str) -> str:
    """A local folder as an absolute file: URI; any URI with a scheme as given."""
    if "://" in uri or uri.startswith("file:"):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def flat_params(raw: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_params(v, key + "."))
        elif v is not None:
            out[key] = str(v)[:500]  # MLflow's limit on a param's value
    return out


class MlflowLog:
    """Logs to MLflow, then passes every event on to ``forward``."""

    def __init__(self, uri: str, experiment: str, run_dir: Path, params: dict[str, Any],
                 forward: Event | None = None) -> None:
        require(("mlflow",), "tracking", "tracking.mlflow")
        self.uri, self.experiment = tracking_uri(uri), experiment
        self.run_dir, self.params, self.forward = Path(run_dir), params, forward
        self.run_id: str | None = None

    def _start(self) -> Any:
        import mlflow

        if self.uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(self.experiment)
        run = mlflow.start_run(run_name=self.run_dir.name)
        self.run_id = run.info.run_id
        mlflow.log_params(flat_params(self.params))
        mlflow.set_tag("tlkit.run_dir", str(self.run_dir.resolve()))
        return mlflow

    def __call__(self, kind: str, info: dict[str, Any]) -> None:
        if kind == "epoch_end":
            mlflow = self._start() if self.run_id is None else _mlflow()
            metrics = {k: float(v) for k, v in info.items()
                       if k.startswith(("train_", "val_")) and isinstance(v, (int, float))
                       and not isinstance(v, bool)}
            metrics["phase"] = float(info.get("phase", 0))
            mlflow.log_metrics(metrics, step=int(info["epoch"]))
        if self.forward is not None:
            self.forward(kind, info)

    def finish(self, summary: dict[str, Any] | None) -> None:
        """Log the outcome and close the MLflow run (FAILED without a summary)."""
        mlflow = self._start() if self.run_id is None else _mlflow()
        if summary is None:
            mlflow.end_run(status="FAILED")
            return
        for split in ("val", "test"):
            for k, v in (summary.get(split) or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    mlflow.log_metric(f"{split}_{k}_final", float(v))
        mlflow.log_dict(summary, "summary.json")
        for entry in sorted(self.run_dir.iterdir()):
            if entry.name in ("checkpoints", ".lock") or entry.name.startswith("."):
                continue
            if entry.is_dir():
                mlflow.log_artifacts(str(entry), f"run/{entry.name}")
            else:
                mlflow.log_artifact(str(entry), "run")
        mlflow.end_run()


def _mlflow() -> Any:
    import mlflow

    return mlflow
