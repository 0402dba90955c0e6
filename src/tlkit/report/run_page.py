"""``tlkit report RUN_DIR``: RUN_DIR/report.html from the files of a finished run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlkit.report import plots
from tlkit.report.domains import adapted_note, interval, test_name, target_test
from tlkit.report.html import (badge, cards, details, esc, facts, fmt, img, note, page, pre, table,
                               verdict_kind, write_page)
from tlkit.report.rundata import RunData, load_run

# summary.json keys the page shows in their own sections; any other dict or list goes to "more"
SHOWN = {"source_model", "strategy", "task", "data", "skipped_images", "best_epoch",
         "epochs_run", "stopped_early", "train_seconds", "total_seconds", "test_limit",
         "parameters", "trainable_parameters_last_phase", "val", "test",
         "preprocessing_findings", "calibration", "forgetting", "baseline", "auto",
         "classical_baseline", "target_test", "test_domain", "model_domain"}


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes RUN_DIR/report.html (or ``out``) and returns its path; a UserError for a
    directory that is not a finished run, or a place that cannot be written."""
    run = load_run(Path(run_dir))
    return write_page(Path(out) if out is not None else run.path / "report.html",
                      report_html(run))


def report_html(run: RunData) -> str:
    s = run.summary
    data = s.get("data") or {}
    subtitle = (f"{s.get('source_model', '?')} · strategy {s.get('strategy', '?')} · "
                f"{data.get('source', '?')} ({s.get('task', '?')}) · {run.path}")
    test = test_name(s)
    return page(f"tlkit run report: {run.path.name}", subtitle, [
        ("overview", "Overview", overview(run)),
        ("target", "Target domain test", target_section(s)),
        ("auto", "freeze_strategy auto: the trials", auto_trials(s)),
        ("stack", "Layer stack per phase", layer_stacks(run)),
        ("curves", "Training and validation curves", training_curves(run)),
        ("lr", "Learning rate of each group", learning_rates(run)),
        ("confusion", f"Confusion matrix ({test} split)", confusion(s)),
        ("per-class", f"Metrics per class ({test} split)", per_class(s)),
        ("calibration", "Calibration", calibration(s)),
        ("baseline", "Transfer against training from scratch", baseline(s)),
        ("classical", "Transfer against the classical baseline", classical_baseline(s)),
        ("forgetting", "Forgetting", forgetting(s)),
        ("subgroups", f"Subgroups ({test} split)", subgroups(s)),
        ("preprocessing", "Preprocessing check", findings(s)),
        ("config", "Resolved config", pre(run.config_text, "long") if run.config_text else ""),
        ("more", "Other results", more(s)),
    ])


def _headline(metrics: dict[str, Any]) -> list[tuple[str, float]]:
    return [(k, v) for k, v in metrics.items() if isinstance(v, (int, float))
            and not isinstance(v, bool)]


def overview(run: RunData) -> str:
    s = run.summary
    items = [(f"{test_name(s)} {k.replace('_', ' ')}", fmt(v))
             for k, v in _headline(s.get("test") or {})]
    items += [(f"target domain test {k.replace('_', ' ')}", fmt(v))
              for k, v in _headline(target_test(s) or {}) if k != "n"]
    items += [(f"val {k.replace('_', ' ')}", fmt(v)) for k, v in _headline(s.get("val") or {})
              if k != "loss"]
    items.append(("epochs run (best epoch)",
                  f"{s.get('epochs_run', '-')} ({s.get('best_epoch', '-')})"))
    if "trainable_parameters_last_phase" in s:
        items.append(("trainable parameters, last phase / all",
                      f"{fmt(s['trainable_parameters_last_phase'])} / {fmt(s.get('parameters'))}"))
    if "total_seconds" in s:
        items.append(("seconds (training)",
                      f"{s['total_seconds']:.0f} ({s.get('train_seconds', 0):.0f})"))
    sizes = (s.get("data") or {}).get("sizes") or {}
    parts = [cards(items)]
    said = adapted_note(s)
    if said:
        parts.append(note(said))
    if sizes:
        named = {(test_name(s) if k == "test" else k): v for k, v in sizes.items()}
        target_n = (target_test(s) or {}).get("n")
        if isinstance(target_n, int):
            named["target domain test"] = target_n
        parts.append(note("examples: " + ", ".join(f"{k} {v:,}" for k, v in named.items())
                          + ("; stopped early" if s.get("stopped_early") else "")
                          + (f"; {s['skipped_images']} unreadable images skipped"
                             if s.get("skipped_images") else "")))
    for key in ("baseline", "classical_baseline"):
        if key in s:
            b = s[key]
            parts.append(f"<p>{badge(b.get('verdict', '?'), verdict_kind(b.get('verdict')))} "
                         f"{esc(b.get('text', ''))}</p>")
    return "".join(parts)


def target_section(s: dict[str, Any]) -> str:
    """adaptation.target.test's metrics with their 95% intervals."""
    t = target_test(s)
    if t is None:
        return ""
    rows = [[k.replace("_", " "), fmt(v),
             f"{fmt(ci[0])} to {fmt(ci[1])}" if (ci := interval(t, k)) else "-"]
            for k, v in _headline(t) if k != "n"]
    where = ((s.get("data") or {}).get("origins") or {}).get("target_test", "")
    resamples = (t.get("intervals") or {}).get("resamples")
    return (table(["metric", "value", "95% interval"], rows, numeric={1})
            + note(f"{fmt(t.get('n'))} labelled examples of the target domain "
                   f"(adaptation.target.test {where}), never used to train or to choose"
                   + (f"; intervals: percentile bootstrap over them, {resamples} resamples"
                      if resamples else "") + "."))


def layer_stacks(run: RunData) -> str:
    if not run.phases:
        return note("plan.txt is missing or has no phases; the stack cannot be drawn.")
    legend = ('<p class="legend"><span style="background:#7fa8d8"></span>frozen (no gradient)'
              '<span style="background:#f2a93b"></span>trainable'
              '<span style="background:#4caf6a"></span>new task head</p>')
    figs = "".join(img(plots.to_data_uri(plots.layer_stack(p)), f"layer stack, phase {p.index}")
                   for p in run.phases)
    return (legend + f'<div class="stacks">{figs}</div>'
            + note("Beside each stack, its blocks' peak learning rates (before warm-up and decay "
                   "by the scheduler); a frozen block's rate applies once it unfreezes.")
            + details("plan.txt", pre(run.plan_text)))


def _phase_labels(run: RunData) -> dict[int, str]:
    return {p.index: p.label for p in run.phases}


def training_curves(run: RunData) -> str:
    if not run.metrics:
        return note("metrics.jsonl has no rows.")
    fig = plots.curves(run.metrics, _phase_labels(run))
    return (img(plots.to_data_uri(fig), "loss and validation metrics per epoch")
            + note("Dashed lines: a new phase of the plan starts (training loss is the mean "
                   "over the epoch's batches; validation at the epoch's end)."))


def learning_rates(run: RunData) -> str:
    if not run.metrics or not run.metrics[0].get("lr"):
        return ""
    fig = plots.learning_rates(run.metrics, run.phases, _phase_labels(run))
    return (img(plots.to_data_uri(fig), "learning rate of each group per epoch")
            + note("The rate each optimizer group had at the end of each epoch, after warm-up "
                   "and the scheduler."))


def confusion(s: dict[str, Any]) -> str:
    test = s.get("test") or {}
    matrix, classes = test.get("confusion_matrix"), list((test.get("per_class") or {}))
    if not matrix:
        return ""
    names = classes if len(classes) == len(matrix) else [str(i) for i in range(len(matrix))]
    return (img(plots.to_data_uri(plots.confusion(matrix, names)), "confusion matrix", "square")
            + note(f"Counts of {test_name(s)} examples; colour: the share of the true class "
                   "(row)."))


def per_class(s: dict[str, Any]) -> str:
    test = s.get("test") or {}
    per = test.get("per_class") or test.get("per_label") or test.get("per_type")
    if not per:
        return ""
    rows = [[name, fmt(m.get("precision")), fmt(m.get("recall")), fmt(m.get("f1")),
             fmt(m.get("support"))] for name, m in per.items()]
    worst = min(range(len(rows)), key=lambda i: list(per.values())[i].get("f1", 1.0))
    return (table(["class", "precision", "recall", "F1", "support"], rows, numeric={1, 2, 3, 4},
                  marked={worst})
            + note("Highlighted: the class with the lowest F1."))


def calibration(s: dict[str, Any]) -> str:
    c = s.get("calibration")
    if not c:
        return ""
    rows = [["expected calibration error", fmt(c.get("ece_before")), fmt(c.get("ece_after"))],
            ["negative log-likelihood", fmt(c.get("nll_before")), fmt(c.get("nll_after"))]]
    return (img(plots.to_data_uri(plots.reliability(c)), "reliability diagram")
            + table([f"on the {test_name(s)} split", "before", "after temperature scaling"],
                    rows, numeric={1, 2})
            + note(f"Temperature {fmt(c.get('temperature'), '.4g')}, fitted on the validation "
                   f"split; the percentages are each bin's share of the {test_name(s)} "
                   "examples."))


def auto_trials(s: dict[str, Any]) -> str:
    """freeze_strategy auto's record: every candidate's trials (or why it was skipped), the
    pick and why."""
    a = s.get("auto")
    if not a:
        return ""
    metric = a.get("metric", "metric")
    rows = [[t["strategy"], "-" if t["rung"] < 0 else t["rung"], t["epochs"], t["steps"],
             "-" if t["val_loss"] is None else fmt(t["val_loss"]),
             "-" if t["val_metric"] is None else fmt(t["val_metric"]), fmt(t["seconds"]),
             t.get("note", "")] for t in a.get("trials", [])]
    marked = [i for i, t in enumerate(a.get("trials", [])) if t["strategy"] == a.get("chosen")]
    return (f"<p>{badge('picked ' + str(a.get('chosen')), 'good')} trials "
            f"{fmt(a.get('spent_seconds'))} s of a {fmt(a.get('budget_seconds'))} s budget</p>"
            + table(["strategy", "rung", "epochs", "steps", "val loss", f"val {metric}",
                     "seconds", "note"], rows, numeric=(1, 2, 3, 4, 5, 6), marked=marked)
            + "".join(note(r) for r in a.get("reasons", [])))


def baseline(s: dict[str, Any]) -> str:
    b = s.get("baseline")
    if not b:
        return ""
    scratch = b.get("scratch_accuracies") or []
    measure = b.get("measure", "accuracy")  # token classification: token accuracy
    pairs = [(f"transferred model, test {measure}", fmt(b.get("transfer_accuracy"))),
             (f"from scratch, test {measure}", ", ".join(fmt(a) for a in scratch) or "-"),
             *([("transferred model, test entity F1", fmt(b.get("transfer_entity_f1"))),
                ("from scratch, test entity F1",
                 ", ".join(fmt(a) for a in b.get("scratch_entity_f1") or []) or "-")]
               if "transfer_entity_f1" in b else []),
             *([("transferred model, test exact match", fmt(b.get("transfer_exact_match"))),
                ("from scratch, test exact match",
                 ", ".join(fmt(a) for a in b.get("scratch_exact_match") or []) or "-")]
               if "transfer_exact_match" in b else []),
             ("margin, points", fmt(100 * b["margin"], "+.1f") if "margin" in b else "-"),
             (f"{100 * b.get('level', 0.95):.0f}% interval, points",
              f"{100 * b['low']:+.1f} to {100 * b['high']:+.1f}" if "low" in b else "-"),
             ("method", b.get("method", "-"))]
    return (f"<p>{badge(b.get('verdict', '?'), verdict_kind(b.get('verdict')))} "
            f"{esc(b.get('text', ''))}</p>" + facts(pairs))


def classical_baseline(s: dict[str, Any]) -> str:
    b = s.get("classical_baseline")
    if not b:
        return ""
    test, val = b.get("test") or {}, b.get("val") or {}
    pairs = [("classical model", b.get("name", "-")),
             ("its test metrics", ", ".join(f"{k} {fmt(v)}" for k, v in test.items()) or "-"),
             ("its validation metrics", ", ".join(f"{k} {fmt(v)}" for k, v in val.items())
              or "-"),
             ("seconds: classical / transfer run",
              f"{fmt(b.get('seconds'), '.1f')} / {fmt(b.get('transfer_seconds'), '.1f')}"),
             ("regularisation", b.get("chosen_on", "-")),
             ("features, coefficients", f"{fmt(b.get('feature_dim'))}, "
                                        f"{fmt(b.get('parameters'))}")]
    return (f"<p>{badge(b.get('verdict', '?'), verdict_kind(b.get('verdict')))} "
            f"{esc(b.get('text', ''))}</p>" + facts(pairs)
            + note("The alternative a user would weigh against transfer: a linear model on "
                   "TF-IDF (text) or raw pixels at a small size (images), its L2 strength "
                   "chosen by cross-validation on the training split, fitted on the same "
                   "splits (tlkit fit --baseline; diagnostics.baselines)."))


def forgetting(s: dict[str, Any]) -> str:
    f = s.get("forgetting")
    if not f:
        return ""
    parts = []
    if f.get("cka"):
        parts.append(img(plots.to_data_uri(plots.cka_bars(f["cka"])), "CKA per group"))
        parts.append(note(f"Linear CKA between each group's pretrained and adapted "
                          f"representation on {f.get('sample', '?')} validation examples; "
                          f"least similar: {f.get('least_similar', '-')}."))
    src = f.get("source_task")
    if src:
        parts.append("<h3>Source task</h3>" + table(
            ["source classifier accuracy", "before", "after", "drop, points", "examples"],
            [["on the source-task data", fmt(src.get("accuracy_before")),
              fmt(src.get("accuracy_after")), fmt(src.get("drop_points"), ".2f"),
              fmt(src.get("n"))]], numeric={1, 2, 3, 4}))
    return "".join(parts)


def subgroups(s: dict[str, Any]) -> str:
    groups = (s.get("test") or {}).get("subgroups")
    if not groups:
        return ""
    names = [k for k, v in groups.items() if isinstance(v, dict)]
    cols = [k for k in groups[names[0]] if k != "n"] if names else []
    rows = [[n, fmt(groups[n].get("n"))] + [fmt(groups[n].get(c)) for c in cols] for n in names]
    worst = groups.get("worst_group")
    return (table(["group", "examples", *cols], rows, numeric=set(range(1, len(cols) + 2)),
                  marked={i for i, n in enumerate(names) if n == worst})
            + note(f"Worst group (highlighted): {worst or '-'}; gap in "
                   f"{groups.get('gap_metric', '?')} between the best and the worst: "
                   f"{fmt(groups.get('gap'))}."))


def findings(s: dict[str, Any]) -> str:
    found = s.get("preprocessing_findings")
    if found is None:
        return ""
    if not found:
        return note("The preprocessed inputs match what the backbone expects: no findings.")
    kinds = {"refuse": "bad", "error": "bad", "warn": "warn", "warning": "warn", "info": "info"}
    items = "".join(
        f"<li>{badge(f.get('severity', '?'), kinds.get(f.get('severity', ''), ''))} "
        f"{esc(f.get('what', ''))}" + (f"<br><em>fix:</em> {esc(f['fix'])}" if f.get("fix")
                                       else "") + "</li>"
        for f in found)
    return f"<ul>{items}</ul>"


def more(s: dict[str, Any]) -> str:
    rest = {k: v for k, v in s.items() if k not in SHOWN}
    if not rest:
        return ""
    return details(", ".join(rest), pre(json.dumps(rest, indent=2, default=str)))
