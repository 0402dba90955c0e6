"""The frozen head's solver with one BLAS thread against BLAS's default thread count.

``tlkit.threads.one_blas_thread`` wraps every scikit-learn fit of the convex head
(``tlkit.train.head_solver``), the PAD divergence and the linear probe. This times
``head_solver.solve`` (the strength by 5-fold cross-validation over the grid, then the refit:
31 logistic regressions) on seeded synthetic features of a few shapes, once as tlkit runs it and
once with the limit lifted (BLAS at its default thread count), in the same process, alternating,
best of ``--repeats``; and checks that both give the same head to the solver's tolerance.

    .venv/bin/python bench/blas_threads.py
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any

import common

SHAPES = ((200, 768, 10), (1000, 384, 2), (2000, 1280, 10))


def _problem(n: int, d: int, k: int, seed: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, d)) + 0.5 * np.eye(k, d)[y] * np.sqrt(d / k)
    return x, y


def _time(x: Any, y: Any, k: int, limited: bool) -> tuple[float, Any]:
    from tlkit.train import head_solver

    if not limited:  # the limit lifted: BLAS's own thread count
        head_solver.one_blas_thread = contextlib.nullcontext  # type: ignore[assignment]
    t0 = time.perf_counter()
    w, _, _ = head_solver.solve("single_label", x, y, x[:0], y[:0], k, refit=True)
    seconds = time.perf_counter() - t0
    from tlkit.threads import one_blas_thread

    head_solver.one_blas_thread = one_blas_thread
    return seconds, w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    import numpy as np
    from threadpoolctl import threadpool_info

    blas = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    body, rows = [], []
    for n, d, k in SHAPES:
        x, y = _problem(n, d, k, 0)
        best = {True: float("inf"), False: float("inf")}
        heads = {}
        for _ in range(args.repeats):
            for limited in (False, True):
                s, w = _time(x, y, k, limited)
                best[limited] = min(best[limited], s)
                heads[limited] = w
        gap = float(np.abs(heads[True] - heads[False]).max() / np.abs(heads[False]).max())
        rows.append({"shape": [n, d, k], "one": best[True], "default": best[False], "gap": gap})
        body.append([f"{n:,} x {d:,}, {k} classes", f"{best[False]:.2f}", f"{best[True]:.2f}",
                     f"{best[False] / best[True]:.1f}x", f"{gap:.1e}"])
    head = ["features, classes", f"BLAS default ({blas} threads), s", "one BLAS thread, s",
            "speed-up", "head difference (relative)"]
    text = "\n".join([common.table(head, body, {1, 2, 3, 4}), "", "Notes:",
                      "- seconds: one `head_solver.solve` with the strength by 5-fold "
                      "cross-validation (31 fits), best of "
                      f"{args.repeats}; head difference: the largest weight difference over the "
                      "largest weight.",
                      f"- machine: {common.machine_line(1)}.",
                      f"- command: {common.command_line(__file__, argv)}"])
    print(text)
    common.save_json(args.json, {"argv": argv, "rows": rows, "table": text})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
