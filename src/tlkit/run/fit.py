"""A fit in three steps: prepare (config, data, model, plan), train, finalize (diagnostics)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.config import Config
from tlkit.events import Event
from tlkit.run.finalize import finalize
from tlkit.run.prepare import open_run, prepare
from tlkit.run.train import train
from tlkit.rundir import claim
from tlkit.select.adapt_auto import resolve_adaptation
from tlkit.select.auto import resolve_auto


def _silent(kind: str, info: dict[str, Any]) -> None:
    pass


def fit_run(cfg: Config, out: Path, resume: bool = False, event: Event = _silent,
            checkpoint_every: int | None = None, test_limit: int | None = None) -> dict[str, Any]:
    """Train per ``cfg`` into the run directory ``out``. ``test_limit`` evaluates the test split
    on a stratified subset of that many examples (benchmarks on slow machines; the summary
    says so). Under torchrun or accelerate launch each process trains its share of every batch
    (``tlkit.distributed``); rank 0 alone writes ``out`` and returns the summary, the others
    return the validation and test metrics."""
    run, resume, dist, starting_over = open_run(cfg, Path(out), resume)
    if not dist.is_main:
        event = _silent  # rank 0 reports
    if dist.is_main:
        claim(run.path, "run")  # marked as tlkit's before anything else is written
        run.lock()
        removed = run.remove_leftovers()  # what a killed writer left, now that none writes
        if removed:
            event("stage", {"what": f"removed {len(removed)} temporary file(s) an interrupted "
                                    f"run left: {', '.join(removed[:5])}"})
    try:
        if starting_over:
            event("stage", {"what": f"nothing to resume in {out} (no checkpoint yet): starting "
                                    "from the beginning"})
        adapted, adaptation = resolve_adaptation(cfg, run, resume, fit_run, event)
        trained, choice = resolve_auto(adapted, run, resume, dist, event)
        prepared = prepare(trained, run, resume, dist, event, test_limit, given=cfg)
        state = train(prepared, checkpoint_every)
        return finalize(prepared, state, auto=None if choice is None else choice.to_dict(),
                        adaptation_auto=adaptation)
    finally:
        run.unlock()
