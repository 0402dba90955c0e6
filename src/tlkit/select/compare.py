"""Every strategy, a from-scratch baseline and the classical baseline under one budget, as a
leaderboard.

Each strategy is the user's config with ``freeze_strategy`` (and what that strategy needs)
changed, nothing else: the same data, splits, epochs, batch size, rates and seed. The baseline is
the same architecture from random initialisation (``pretrained_weights: none``), every layer
training at one rate. The classical baseline (TF-IDF or raw pixels + logistic regression,
``tlkit.diagnose.classical``) is fitted on the same splits, so the board shows whether any
transfer beats what a user would otherwise do. Each run is an ordinary run directory under the
output folder, so a finished run is kept and an interrupted compare picks up where it stopped
(``--resume``).

With ``adaptation.method: auto`` the strategies train source-only (the target measured, not
adapted to), and a second board ranks the adaptations (none, AdaBN, DANN, MMD and CORAL at each of
``adaptation.auto_weights``) on the config's own strategy by the label-free score, as ``fit``
would choose among them (``tlkit.select.adapt_auto``); their runs are kept under ``adaptation/``.

The leaderboard gives each run's test metric with a 95% interval (a bootstrap over the test
examples), its margin over the baseline with the verdict (positive transfer, no measurable
effect, negative transfer), trainable parameters and seconds, and marks the strategy ``advise``
recommends.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tlkit import strategies
from tlkit.config import AUTO, Config, dump_config
from tlkit.diagnose.probe import text_table
from tlkit.diagnose.verdict import paired_bootstrap, transfer_verdict
from tlkit.errors import UserError
from tlkit.outputs import check_output, claim, config_inputs
from tlkit.predictions import test_predictions
from tlkit.select.adapt_auto import Fit, format_record, run_trials, source_only
from tlkit.select.classical import fit_on_splits
from tlkit.select.variants import SCRATCH, check_comparable, variant
from tlkit.summary_json import read_summary

Log = Callable[[str], None]


def compare(cfg: Config, out: Path, names: list[str], fit: Fit, advice: Any | None = None,
            resume: bool = False, test_limit: int | None = None,
            log: Log = lambda s: None, event: Any = lambda k, i: None) -> dict[str, Any]:
    """Every strategy in ``names``, the scratch baseline and the classical one under one budget
    (the module's docstring), each run trained by ``fit`` (``tlkit.run.fit_run``) into ``out``;
    the leaderboard."""
    known = [*strategies.names(), AUTO]
    unknown = [s for s in names if s not in known]
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r} in --strategies; choose from "
                        f"{', '.join(known)}")
    check_comparable(cfg, "compare")
    out = Path(out)
    # the output rule (tlkit.outputs): never a run directory or another tlkit folder, a user's
    # folder, or the config's data
    check_output(out, "compare", inputs=config_inputs(cfg.model_dump()))
    if out.exists() and any(out.iterdir()) and not resume:
        raise UserError(f"{out} is not empty; add --resume to finish that compare, or choose "
                        "another --out (nothing was changed)")
    claim(out, "compare")
    runs = [*names, SCRATCH]
    settings: dict[str, dict[str, Any]] = {}
    strategy_of = {s: s for s in runs}
    picked = None
    if advice is not None and advice.strategy in strategies.names():
        # advise's pick as it would train it: its own row when its settings differ from the
        # strategy's as the config has it, so the plain strategy stays on the board too
        picked = "advised" if advice.settings else advice.strategy
        if picked not in runs:
            runs.insert(len(names), picked)
        strategy_of[picked] = advice.strategy
        settings[picked] = advice.settings
    # every variant is checked before the first run trains
    configs = {s: variant(source_only(cfg), strategy_of[s], settings.get(s)) for s in runs}
    results: dict[str, dict[str, Any]] = {}
    for s in runs:
        run_dir = out / s
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():
            saved = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml"
                                                               ).is_file() else None
            if saved != dump_config(configs[s]):
                raise UserError(f"{run_dir} holds a run of another config than this compare's "
                                f"{s}; remove that folder, or choose another --out")
            log(f"compare: {s}: finished before, kept ({run_dir})")
        else:
            log(f"compare: {s} ({runs.index(s) + 1} of {len(runs)})")
            fit(configs[s], run_dir, resume=(run_dir / "checkpoints" / "last.pt").is_file(),
                event=event, test_limit=test_limit)
            from tlkit.report.model_card import write_card

            write_card(run_dir)  # each variant is a run directory like fit's, card included
        results[s] = {"summary": read_summary(run_dir), "pred": test_predictions(run_dir)}

    scratch_pred = results[SCRATCH]["pred"]
    scratch_ok = scratch_pred[0].argmax(1) == scratch_pred[1]
    rows = [_row(cfg, s, results[s], scratch_ok, out, strategy_of[s], settings.get(s, {}),
                 s == picked) for s in runs]
    log("compare: classical baseline")
    rows.append(_classical_row(cfg, scratch_pred[1], scratch_ok, test_limit, event))
    rows.sort(key=lambda r: r["test_accuracy"], reverse=True)
    best = rows[0]
    adaptation = None
    if cfg.adaptation.method == "auto":  # the adaptations ranked without the target's labels
        log("compare: adaptations on the unlabelled target")
        adaptation = run_trials(cfg, fit, event, where=out / "adaptation")
    result: dict[str, Any] = {
        "source_model": cfg.transfer_config.source_model, "data": cfg.data.source,
        "n_train": results[SCRATCH]["summary"]["data"]["sizes"]["train"],
        "n_test": int(len(scratch_ok)), "epochs": cfg.transfer_config.epochs,
        "leaderboard": rows, "best": best["row"],
        **({"adaptation": adaptation} if adaptation is not None else {}),
    }
    if picked is not None:
        mine = next(r for r in rows if r["advised"])
        result["advice"] = advice.to_dict()  # type: ignore[union-attr]
        result["advised_gap_points"] = round(100 * (best["test_accuracy"]
                                                    - mine["test_accuracy"]), 2)
    return result


def _row(cfg: Config, name: str, result: dict[str, Any], scratch_ok: np.ndarray, out: Path,
         strategy: str, settings: dict[str, Any], advised: bool) -> dict[str, Any]:
    """One run's line of the leaderboard: its accuracy with a 95% interval, and its margin over
    the scratch baseline with the verdict."""
    seed, resamples = cfg.transfer_config.seed, cfg.diagnostics.bootstrap
    summ, (outputs, targets) = result["summary"], result["pred"]
    correct = outputs.argmax(1) == targets
    # the accuracy's own interval: the bootstrap of its difference from nothing right
    ci = paired_bootstrap(correct, np.zeros(len(correct)), resamples, seed)
    row = {
        "strategy": strategy, "row": name, "run_dir": str(out / name), "settings": settings,
        "test_accuracy": float(correct.mean()), "low": ci["low"], "high": ci["high"],
        "test_f1_macro": summ["test"].get("f1_macro"),
        "trainable_parameters": summ["trainable_parameters_last_phase"],
        "parameters": summ["parameters"],
        "seconds": summ["total_seconds"], "train_seconds": summ["train_seconds"],
        "advised": advised,
        # auto's row: the strategy its trials picked
        **({"chosen": summ["auto"]["chosen"]} if "auto" in summ else {}),
    }
    if name != SCRATCH:
        v = transfer_verdict(correct, [scratch_ok], resamples=resamples, seed=seed)
        row.update(margin=v["margin"], margin_low=v["low"], margin_high=v["high"],
                   verdict=v["verdict"])
    return row


def _classical_row(cfg: Config, targets: np.ndarray, scratch_ok: np.ndarray,
                   test_limit: int | None, event: Any) -> dict[str, Any]:
    """The classical baseline's line (TF-IDF or raw pixels + logistic regression on the same
    splits; no run directory), with its margin over scratch like every strategy's."""
    result, splits = fit_on_splits(cfg, test_limit, event)
    if splits.test is None or not np.array_equal(splits.test.targets, targets):
        raise UserError("the classical baseline's test split differs from the runs'; the data "
                        "changed during the compare: run it again in a new --out")
    assert result.test_outputs is not None
    seed, resamples = cfg.transfer_config.seed, cfg.diagnostics.bootstrap
    correct = result.test_outputs.argmax(1) == targets
    ci = paired_bootstrap(correct, np.zeros(len(correct)), resamples, seed)
    v = transfer_verdict(correct, [scratch_ok], resamples=resamples, seed=seed)
    f1 = result.record(cfg.data.task, splits.val, splits.test, splits.classes)["test"]
    return {"strategy": "classical", "row": "classical", "run_dir": None, "settings": {},
            "name": result.name, "test_accuracy": float(correct.mean()), "low": ci["low"],
            "high": ci["high"], "test_f1_macro": f1.get("f1_macro"),
            "trainable_parameters": result.parameters, "parameters": result.parameters,
            "seconds": round(result.seconds, 2), "train_seconds": round(result.seconds, 2),
            "advised": False, "margin": v["margin"], "margin_low": v["low"],
            "margin_high": v["high"], "verdict": v["verdict"]}


def format_leaderboard(result: dict[str, Any]) -> str:
    head = ["#", "strategy", "test acc", "95% interval", "vs scratch", "verdict",
            "trainable", "seconds"]
    body = []
    for i, r in enumerate(result["leaderboard"]):
        name = r["strategy"] + (" (" + ", ".join(f"{k} {v}" for k, v in r["settings"].items())
                                + ")" if r["settings"] else "")
        name += f" -> {r['chosen']}" if r.get("chosen") else ""
        name += f" ({r['name']})" if r["strategy"] == "classical" else ""
        name += "  <- advise" if r["advised"] else ""
        vs = ("-" if r["strategy"] == SCRATCH
              else f"{100 * r['margin']:+.1f} [{100 * r['margin_low']:+.1f}, "
                   f"{100 * r['margin_high']:+.1f}]")
        body.append([str(i + 1), name, f"{r['test_accuracy']:.4f}",
                     f"{r['low']:.3f}-{r['high']:.3f}", vs, r.get("verdict", "baseline"),
                     f"{r['trainable_parameters']:,}", f"{r['seconds']:.1f}"])
    lines = [text_table(head, body, right={0, 2, 3, 4, 6, 7}), "",
             f"{result['source_model']} on {result['data']}: {result['n_train']} training "
             f"examples, {result['n_test']:,} test examples, {result['epochs']} epochs for every "
             "run. vs scratch: test accuracy points over the from-scratch baseline with a 95% "
             "paired-bootstrap interval."]
    if "advised_gap_points" in result:
        adv = result["advice"]
        picked = adv["strategy"] + (" (" + ", ".join(f"{k} {v}" for k, v in
                                                      adv["settings"].items()) + ")"
                                    if adv["settings"] else "")
        lines.append(f"advise recommended {picked}: "
                     f"{result['advised_gap_points']:.2f} points below the best "
                     f"({result['best']}).")
    if "adaptation" in result:
        lines += ["", "adaptations on the unlabelled target, ranked without its labels (the "
                      "strategies above trained source-only):", format_record(result["adaptation"])]
    return "\n".join(lines)
