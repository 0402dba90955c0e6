"""What ``tlkit fit`` and ``tlkit.fit`` both do around ``fit_run``, in one place: the tracker and
TensorBoard fed the run's events (the tracker ended FAILED, or KILLED on Ctrl-C / SIGTERM, when
the fit does not finish), then on the process that writes: the baselines (``--baseline``), the
model card, the report, the tracker's end.

The trained run stands whatever happens after it: with someone to tell (``say``: the CLI's
lines), a card or report that fails is said with its fix, not raised; the API, which prints none
of these lines, gets the card's error raised."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.config import Config
from tlkit.distributed import is_main_process
from tlkit.errors import Terminated
from tlkit.events import Event
from tlkit.run.fit import fit_run

if TYPE_CHECKING:
    from tlkit.tracking import MlflowLog

Say = Callable[[str], None]


def fit_and_finish(cfg: Config, out: Path, *, event: Event, say: Say | None = None,
                   tracker: MlflowLog | None = None, tensorboard: bool = False,
                   baseline: bool = False, report: bool = True, resume: bool = False,
                   checkpoint_every: int | None = None, test_limit: int | None = None) -> bool:
    """Train per ``cfg`` into ``out`` (``fit_run``) and do the steps after it; whether the
    tracker logged everything (False without one, and on a process other than rank 0).

    ``event``: the run's progress (the fit's and the baselines'); ``say``: the closing lines for
    people (the metrics, the verdicts, a step that failed, where the run is), None for none;
    ``tracker``: already contacted (``tlkit.tracking.tracker``), fed the events before
    ``event``; ``tensorboard``: also write RUN/tensorboard/; ``baseline``: the baselines of
    diagnostics.baselines and their verdicts in summary.json; ``report``: report.html;
    ``test_limit``: the test split cut to that many examples (a fixed, seeded sample), the
    baselines' too."""
    summary = _fit(cfg, out, event, tracker, tensorboard, resume, checkpoint_every,
                   test_limit)
    if not is_main_process():  # one of several processes: rank 0 reports and writes
        return False
    if say is not None:
        _say_metrics(summary, say)
    if baseline:
        _baselines(cfg, out, event, say, test_limit)
    _card(out, say)
    if report:
        _report(out, say)
    # a service that failed during the run was said in the log; the results stand
    logged = (tracker is not None
              and tracker.finish(json.loads((out / "summary.json").read_text())))
    if say is not None:
        if logged and tracker is not None:
            say(f"[tlkit] logged to MLflow: {tracker.uri}, experiment {tracker.experiment}, "
                f"run {tracker.run_id}")
        say(f"[tlkit] run directory: {out}")
    return logged


def _say_metrics(summary: dict[str, Any], say: Say) -> None:
    """The closing lines of the metrics: the test split's (the validation split's where there
    is none), named by its domain where the run has two, and the target domain test set's."""
    from tlkit.report.domains import adapted_note, headline, target_line, test_name

    which = "test" if summary["test"] is not None else "val"  # val: no test split
    name = test_name(summary)
    if which == "val":
        name = name.replace("test", "validation") + " (no test split)"
    say(f"[tlkit] {name} {json.dumps(headline(summary[which]))}")
    for line in (adapted_note(summary), target_line(summary)):
        if line is not None:
            say(f"[tlkit] {line}")


def _fit(cfg: Config, out: Path, event: Event, tracker: MlflowLog | None, tensorboard: bool,
         resume: bool, checkpoint_every: int | None, test_limit: int | None = None
         ) -> dict[str, Any]:
    """``fit_run`` with the events through the tracker, then TensorBoard, then ``event``; the
    tracker ended when the fit raises, the event files closed whatever happens."""
    tb = None
    if tensorboard:
        from tlkit.tensorboard import TensorBoardLog

        tb = TensorBoardLog(out / "tensorboard", forward=event)  # writes, then passes on
    if tracker is not None:
        tracker.forward = tb or event
    try:
        return fit_run(cfg, out, resume=resume, event=tracker or tb or event,
                       checkpoint_every=checkpoint_every, test_limit=test_limit)
    except BaseException as e:
        if tracker is not None:  # bounded, and never raises for the service: the error is e
            tracker.finish(None, interrupted=isinstance(e, (KeyboardInterrupt, Terminated)))
        raise
    finally:
        if tb is not None:
            tb.close()


def _baselines(cfg: Config, out: Path, event: Event, say: Say | None,
               test_limit: int | None = None) -> None:
    """The baselines' verdicts, into summary.json and said."""
    from tlkit.run.baseline import add_to_summary, baselines

    verdicts = baselines(cfg, out, event=event, test_limit=test_limit)
    add_to_summary(out, verdicts)
    if say is None:
        return
    if "classical_baseline" in verdicts:
        c = verdicts["classical_baseline"]
        say(f"[tlkit] against the classical baseline: {c['text']} ({c['seconds']:.1f} s "
            f"against the transfer run's {c['transfer_seconds']:.1f} s)")
    if "baseline" in verdicts:
        say(f"[tlkit] against training from scratch: {verdicts['baseline']['text']}")


def _card(out: Path, say: Say | None) -> None:
    """The model card (README.md), whatever ``report`` says; like the report, a card that
    fails is said, not raised, where there is someone to say it to (``tlkit report`` writes it
    again)."""
    try:
        from tlkit.report.model_card import write_card

        write_card(out)
    except Exception as e:  # noqa: BLE001 - the fit succeeded; say why the card did not
        if say is None:
            raise
        say(f"[tlkit] the model card could not be written ({type(e).__name__}: {e}); "
            f"run `tlkit report {out}` to try again")


def _report(out: Path, say: Say | None) -> None:
    """report.html. The trained run stands whatever happens here: a report that fails is said,
    not raised (``tlkit report`` draws it again)."""
    try:
        from tlkit.report import write_report

        page = write_report(out)
        if say is not None:
            say(f"[tlkit] report: {page}")
    except Exception as e:  # noqa: BLE001 - the fit succeeded; say why the report did not
        if say is not None:
            say(f"[tlkit] the report could not be written ({type(e).__name__}: {e}); "
                f"run `tlkit report {out}` to try again")
