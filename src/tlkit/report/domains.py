"""Which domain each test number of a run measures, in words, for every place that shows them
(fit's closing lines, report.html, the model card). A run adapted to a target domain, or one
given a labelled target test set (``adaptation.target.test``), has two: summary.json's
``test``, marked ``test_domain: source``, and ``target_test``; an adapted one also says
``model_domain: target``. A number on the source's test split says little about the target's,
so it is never shown as the plain "test" there. Other runs read as they always did."""

from __future__ import annotations

import json
from typing import Any


def test_name(s: dict[str, Any]) -> str:
    """The source's test split: "source domain test" where the run has two domains."""
    return "source domain test" if s.get("test_domain") == "source" else "test"


def target_test(s: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics on ``adaptation.target.test``, or None."""
    t = s.get("target_test")
    return t if isinstance(t, dict) else None


def adaptation(s: dict[str, Any]) -> dict[str, Any]:
    """summary.json's adaptation section ({} without one)."""
    a = s.get("adaptation")
    return a if isinstance(a, dict) else {}


def adapted_note(s: dict[str, Any]) -> str | None:
    """In an adapted run: that the model is meant for the target domain, and whether it is
    measured there; None in other runs."""
    if s.get("model_domain") != "target":
        return None
    a = adaptation(s)
    auto = a.get("auto") if isinstance(a.get("auto"), dict) else None
    method = f"auto, which chose {auto.get('chosen')}" if auto else str(a.get("method", "?"))
    said = (f"The adapted model (adaptation method {method}) is meant for the target domain: "
            "the source domain test split says how it does on the source domain")
    if target_test(s) is not None:
        return said + ", the target domain test set how it does on the target."
    pool: dict[str, Any] = a["target_test"] if isinstance(a.get("target_test"), dict) else {}
    on_pool = (f" (by their own labels, which adaptation never reads, the target examples "
               f"it adapted to score accuracy {pool['accuracy']:.4f}: summary.json's "
               "adaptation.target_test)"
               if isinstance(pool.get("accuracy"), float) else "")
    return (said + ", not on the target; give adaptation.target.test (a labelled target file "
            f"or folder) to measure it there{on_pool}.")


def interval(metrics: dict[str, Any], name: str) -> tuple[float, float] | None:
    """The 95% interval of metric ``name`` a section carries (``target_test``'s), or None."""
    got = (metrics.get("intervals") or {}).get(name)
    if isinstance(got, list) and len(got) == 2 and all(isinstance(x, (int, float)) for x in got):
        return float(got[0]), float(got[1])
    return None


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """A section's numbers (not its tables, its size or its intervals), rounded to 4 places."""
    return {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}


def target_line(s: dict[str, Any]) -> str | None:
    """fit's closing line for the target domain test set, with its intervals."""
    t = target_test(s)
    if t is None:
        return None
    shown = headline(t)
    cis = [f"{k} {ci[0]:.4f} to {ci[1]:.4f}" for k in shown if (ci := interval(t, k))]
    return (f"target domain test {json.dumps(shown)} ({t.get('n', '?')} examples"
            + (f"; 95% intervals: {', '.join(cis)})" if cis else ")"))
