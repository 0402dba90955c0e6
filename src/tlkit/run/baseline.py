"""The from-scratch baseline and the negative-transfer verdict.

The same architecture from random initialisation, trained under the same budget (data, splits,
epochs, batch size; every layer at ``diagnostics.scratch_lr``), once per seed in
``diagnostics.baseline_seeds``, each an ordinary run directory under ``RUN_DIR/baseline/``. The
verdict compares the transferred model's test predictions with the baselines': positive
transfer, no measurable effect, or negative transfer, with the margin and its 95% interval (a
paired bootstrap over the test examples, and across seeds where there are several).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.config import Config, derive
from tlkit.diagnose.verdict import transfer_verdict
from tlkit.errors import UserError
from tlkit.run.fit import fit_run
from tlkit.run.inference import test_predictions
from tlkit.rundir import RunDir
from tlkit.variants import check_comparable, variant


def baseline(cfg: Config, run_dir: Path, event: Any = lambda k, i: None,
             test_limit: int | None = None) -> dict[str, Any]:
    """Train the scratch baselines beside the finished run in ``run_dir`` (a finished baseline
    is kept: an interrupted --baseline picks up where it stopped) and return the verdict."""
    check_comparable(cfg, "--baseline")
    outputs, targets = test_predictions(run_dir)
    transfer_ok = outputs.argmax(1) == targets
    scratch_ok, accs = [], []
    scratch = variant(cfg, "scratch")
    for k in range(cfg.diagnostics.baseline_seeds):
        seeded = derive(scratch, f"baseline seed {k}",
                        transfer_config={"seed": cfg.transfer_config.seed + k})
        sub = Path(run_dir) / "baseline" / f"seed-{k}"
        if not (sub / "summary.json").is_file():
            event("stage", {"what": f"baseline: from scratch, seed {k + 1} of "
                                    f"{cfg.diagnostics.baseline_seeds} ({sub})"})
            fit_run(seeded, sub,
                    resume=(sub / "checkpoints" / "last.pt").is_file(), event=event,
                    test_limit=test_limit)
        o, t = test_predictions(sub)
        if len(t) != len(targets) or not np.array_equal(t, targets):
            raise UserError(f"the baseline in {sub} was tested on other examples than the run; "
                            "delete that folder and run --baseline again")
        scratch_ok.append(o.argmax(1) == t)
        accs.append(float(scratch_ok[-1].mean()))
    v = transfer_verdict(transfer_ok, scratch_ok, resamples=cfg.diagnostics.bootstrap,
                         seed=cfg.transfer_config.seed)
    return {**v, "transfer_accuracy": float(transfer_ok.mean()),
            "scratch_accuracies": accs, "scratch_lr": scratch.transfer_config.backbone_lr}


def add_to_summary(run_dir: Path, verdict: dict[str, Any]) -> None:
    rd = RunDir(Path(run_dir))
    summary = json.loads(rd.summary.read_text())
    summary["baseline"] = verdict
    rd.write_json(rd.summary, summary)
