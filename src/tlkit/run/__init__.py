"""A run from config to run directory in three steps (prepare, train, finalize), and evaluate /
predict on a finished one."""

from __future__ import annotations

from tlkit.predictions import test_predictions
from tlkit.run.fit import fit_run
from tlkit.run.inference import (dumps_jsonl, evaluate_run, is_unlabelled_source,
                                 predict_answers, predict_run, score_run)

__all__ = ["dumps_jsonl", "evaluate_run", "fit_run", "is_unlabelled_source", "predict_answers",
           "predict_run", "score_run", "test_predictions"]
