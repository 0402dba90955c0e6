"""A finished run's test predictions read back (``predictions.npz``, which ``RunDir.write_predictions``
writes): for ``compare``'s leaderboard and the baselines' verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlkit.errors import UserError
from tlkit.rundir import RunDir


def test_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test outputs (logits or values) and targets a finished run saved."""
    f = RunDir(Path(path)).predictions
    if not f.is_file():
        raise UserError(f"{path} has no predictions.npz; it was trained by an older tlkit or "
                        "did not finish; run fit again")
    with np.load(f) as z:
        return z["test_outputs"], z["test_targets"]


def question_scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A finished question-answering run's exact match and F1 (0..1) of each test question."""
    f = RunDir(Path(path)).predictions
    with np.load(f) as z:
        if "test_question_f1" not in z.files:
            raise UserError(f"{path}'s predictions.npz holds no per-question scores; it was "
                            "trained by an older tlkit: run fit again")
        return z["test_question_em"], z["test_question_f1"]
