"""The pages of ``compare`` (the equal-budget leaderboard) and ``rank`` (transferability scores),
in the run report's style, from the result dicts those commands return."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tlkit.diagnose.classical import classical_note
from tlkit.report import plots
from tlkit.report.html import (badge, cards, details, esc, fmt, img, note, page, pre, table,
                               write_page)


def write_compare_page(result: dict[str, Any], path: str | Path) -> Path:
    """``result``: what tlkit.select.compare.compare returns."""
    return write_page(Path(path), compare_html(result, Path(path).parent))


def compare_html(result: dict[str, Any], base: Path) -> str:
    rows = result["leaderboard"]
    subtitle = (f"{result.get('source_model', '?')} on {result.get('data', '?')}: "
                f"{fmt(result.get('n_train'))} training examples, {fmt(result.get('n_test'))} "
                f"test examples, {result.get('epochs', '?')} epochs for every strategy")
    return page("tlkit compare: equal-budget leaderboard", subtitle, [
        ("leaderboard", "Leaderboard", compare_table(rows, base)),
        ("plot", "Accuracy and margin over scratch", img(
            plots.to_data_uri(plots.leaderboard(rows)), "leaderboard")
            + note("Colour: the verdict against the from-scratch baseline (green positive "
                   "transfer, red negative, grey no measurable effect).")),
        ("advice", "What advise picked", compare_advice(result)),
        ("json", "Raw result", details("compare result as JSON",
                                       pre(json.dumps(result, indent=2, default=str)))),
    ])


def _strategy_cell(r: dict[str, Any]) -> str:
    name = r.get("row") or r["strategy"]
    if r.get("settings"):
        name += " (" + ", ".join(f"{k} {v}" for k, v in r["settings"].items()) + ")"
    return name + ("  ← advise" if r.get("advised") else "")


def _margin_cell(r: dict[str, Any]) -> str:
    if r.get("margin") is None:
        return "-"
    return (f"{100 * r['margin']:+.1f} [{100 * r['margin_low']:+.1f}, "
            f"{100 * r['margin_high']:+.1f}]")


def _relative(run_dir: str | None, base: Path) -> str:
    if not run_dir:
        return "-"
    try:
        return str(Path(run_dir).resolve().relative_to(base.resolve()))
    except ValueError:
        return run_dir


def compare_table(rows: list[dict[str, Any]], base: Path) -> str:
    body = [[i + 1, _strategy_cell(r), fmt(r["test_accuracy"]),
             f"{r['low']:.3f}-{r['high']:.3f}", _margin_cell(r), r.get("verdict", "baseline"),
             fmt(r.get("trainable_parameters")), fmt(r.get("seconds"), ".1f"),
             _relative(r.get("run_dir"), base)]
            for i, r in enumerate(rows)]
    return (table(["#", "strategy", "test acc", "95% interval", "vs scratch, points",
                   "verdict", "trainable", "seconds", "run directory"], body,
                  numeric={0, 2, 3, 4, 6, 7}, marked={i for i, r in enumerate(rows)
                                                      if r.get("advised")})
            + note("Ordered by test accuracy; intervals: 95%, bootstrap over the test "
                   "examples (the margin: paired with the scratch run)."
                   + (" Highlighted: advise's pick." if any(r.get("advised") for r in rows)
                      else "")))


def compare_advice(result: dict[str, Any]) -> str:
    advice = result.get("advice")
    if not advice:
        return ""
    gap = result.get("advised_gap_points")
    head = (f"<p>{badge(advice.get('strategy', '?'), 'warn')} "
            + (esc(f"{gap:.2f} points below the best strategy" if gap else
                   "the best strategy on this leaderboard") if gap is not None else "")
            + "</p>")
    reasons = "".join(f"<li>{esc(r)}</li>" for r in advice.get("reasons") or [])
    return head + (f"<ul>{reasons}</ul>" if reasons else "")


def write_rank_page(result: dict[str, Any], path: str | Path) -> Path:
    """``result``: what tlkit.diagnose.rank.rank returns."""
    return write_page(Path(path), rank_html(result))


def rank_html(result: dict[str, Any]) -> str:
    rows = result["candidates"]
    by = {"logme": "LogME"}.get(result.get("ranked_by", "logme"), result.get("ranked_by"))
    subtitle = (f"{len(rows)} candidates ranked by {by} on the "
                f"pooled features of {fmt(result.get('n_train'))} training examples")
    tau = result.get("kendall_tau_logme_vs_probe")
    summary = cards([("best candidate", rows[0]["candidate"] if rows else "-"),
                     ("seconds, all candidates", fmt(result.get("seconds"), ".1f"))]
                    + ([("Kendall's tau, LogME vs probe", fmt(tau, ".3f"))]
                       if "kendall_tau_logme_vs_probe" in result else []))
    c = result.get("classical")
    said = classical_note(result)
    return page("tlkit rank: transferability of candidate backbones", subtitle, [
        ("ranking", "Ranking", summary + rank_table(rows + ([{**c, "rank": "-"}] if c else []))
         + (note(said) if said else "")),
        ("plot", "Scores", img(plots.to_data_uri(plots.rank_scores(result)), "scores")),
        ("json", "Raw result", details("rank result as JSON",
                                       pre(json.dumps(result, indent=2, default=str)))),
    ])


def rank_table(rows: list[dict[str, Any]]) -> str:
    probe = any("probe_accuracy" in r for r in rows)
    head = ["rank", "candidate", "LogME", "H-score", "LEEP", "NCE", "feature dim", "seconds"]
    if probe:
        head.insert(6, "probe val acc")
    body = []
    for r in rows:
        cells = [r.get("rank"), r["candidate"], fmt(r.get("logme")), fmt(r.get("hscore")),
                 fmt(r.get("leep")), fmt(r.get("nce")), fmt(r.get("feature_dim")),
                 fmt(r.get("seconds"), ".1f")]
        if probe:
            cells.insert(6, fmt(r.get("probe_accuracy")))
        body.append(cells)
    return (table(head, body, numeric=set(range(len(head))) - {1}, marked={0})
            + note("LEEP and NCE need the classifier a candidate was pretrained with ('-': "
                   "none). LogME ranks every candidate; with --probe, a linear probe on "
                   "validation measures what the scores predict."))

