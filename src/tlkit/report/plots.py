"""The report's figures, drawn with matplotlib's Agg canvas (no pyplot, no display, no torch) and
returned as PNG data URIs to embed in the page."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from tlkit.report.rundata import PhasePlan

# The concept's colours: frozen blue, trainable amber, the new head green.
FROZEN = "#7fa8d8"
TRAINABLE = "#f2a93b"
HEAD = "#4caf6a"
EDGE = "#33415c"
INK = "#1f2937"
MUTED = "#9aa5b5"
VERDICT_COLOURS = {"positive transfer": HEAD, "negative transfer": "#d9534f",
                   "no measurable effect": MUTED}


def figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _lr_text(lr: float) -> str:
    return f"{lr:.3g}"


# ---------------------------------------------------------------- the layer stack of a phase


def layer_stack(phase: PhasePlan) -> Figure:
    """The concept's figure: the blocks stacked input (bottom) to head (top), frozen blue,
    trainable amber, the head green; beside it each block's learning rate."""
    n = len(phase.blocks)
    fig = figure(6.4, 0.9 + 0.42 * n)
    stack, rates = fig.subplots(1, 2, sharey=True, width_ratios=[1.15, 1])
    _draw_blocks(stack, phase)
    _draw_rates(rates, phase)
    fig.suptitle(f"phase {phase.index} ({_epochs_text(phase.epochs)}): {phase.label}",
                 fontsize=11, color=INK)
    return fig


def _epochs_text(epochs: tuple[int, int]) -> str:
    first, last = epochs
    return f"epoch {first}" if first == last else f"epochs {first}-{last}"


def block_colour(block: Any, is_head: bool) -> str:
    if is_head:
        return HEAD
    return TRAINABLE if block.trainable and not block.adapters_only else FROZEN


def _draw_blocks(ax: Axes, phase: PhasePlan) -> None:
    n = len(phase.blocks)
    for i, b in enumerate(phase.blocks):
        is_head = i == n - 1
        ax.add_patch(Rectangle((0.04, i + 0.08), 0.92, 0.84, facecolor=block_colour(b, is_head),
                               edgecolor=EDGE, linewidth=1,
                               hatch="///" if b.adapters_only and b.trainable else None))
        state = "new head" if is_head else ("LoRA" if b.adapters_only and b.trainable
                                            else "trainable" if b.trainable else "frozen")
        name = b.name if len(b.name) <= 28 else b.name[:27] + "…"
        ax.text(0.5, i + 0.5, f"{name}  ·  {b.n_params:,}  ·  {state}", ha="center",
                va="center", fontsize=8.5, color=INK, clip_on=True)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, n)
    ax.set_axis_off()
    ax.set_title("layer stack (input at the bottom)", fontsize=9, color=INK)


def _draw_rates(ax: Axes, phase: PhasePlan) -> None:
    n = len(phase.blocks)
    ys = [i + 0.5 for i in range(n)]
    lrs = [b.lr for b in phase.blocks]
    colours = [block_colour(b, i == n - 1) if b.trainable else "#e3e8ef"
               for i, b in enumerate(phase.blocks)]
    ax.barh(ys, lrs, height=0.6, color=colours, edgecolor=EDGE, linewidth=0.6)
    positive = [lr for lr in lrs if lr > 0]
    if positive:  # rates span decades: a log axis, with room for the labels on the right
        ax.set_xscale("log")
        ax.set_xlim(min(positive) / 3, max(positive) * 12)
    for y, b in zip(ys, phase.blocks):
        text = _lr_text(b.lr) if b.trainable else f"({_lr_text(b.lr)}) frozen"
        ax.text(b.lr * 1.15, y, text, va="center", fontsize=8,
                color=INK if b.trainable else MUTED)
    ax.set_title("learning rate", fontsize=9, color=INK)
    ax.tick_params(left=False, labelleft=False, labelsize=8)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)


# ---------------------------------------------------------------- curves over the epochs


def _phase_marks(ax: Axes, metrics: Sequence[dict[str, Any]], labels: dict[int, str],
                 annotate: bool) -> None:
    """A dashed line where the phase changes, and the new phase's label beside it."""
    for prev, row in zip(metrics, metrics[1:]):
        if row.get("phase") != prev.get("phase"):
            x = row["epoch"] - 0.5
            ax.axvline(x, color=MUTED, linestyle="--", linewidth=1)
            if annotate:
                ax.text(x, 1.0, f" phase {row['phase']}: {labels.get(row['phase'], '')}",
                        transform=ax.get_xaxis_transform(), rotation=90, va="top", ha="right",
                        fontsize=7.5, color="#5b6678")


def _epoch_axis(ax: Axes, metrics: Sequence[dict[str, Any]]) -> None:
    epochs = [r["epoch"] for r in metrics]
    ax.set_xlabel("epoch", fontsize=9)
    if len(epochs) <= 20:
        ax.set_xticks(epochs)
    ax.set_xlim(min(epochs) - 0.6, max(epochs) + 0.6)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def curves(metrics: Sequence[dict[str, Any]], labels: dict[int, str]) -> Figure:
    """Training and validation loss, and the validation metrics, per epoch."""
    fig = figure(10, 3.8)
    loss_ax, metric_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in metrics]
    for key, colour in (("train_loss", "#3b6fb6"), ("val_loss", "#d9822b")):
        ax_values = [r.get(key) for r in metrics]
        if any(v is not None for v in ax_values):
            loss_ax.plot(epochs, _floats(ax_values), marker="o", color=colour,
                         label=key.replace("_", " "))
    loss_ax.set_title("loss", fontsize=10)
    others = [k for k in metrics[0] if k.startswith("val_") and k != "val_loss"
              and isinstance(metrics[0][k], (int, float))]
    for key in others:
        metric_ax.plot(epochs, _floats([r.get(key) for r in metrics]), marker="o",
                       label=key[4:].replace("_", " "))
    metric_ax.set_title("validation metrics", fontsize=10)
    for ax in (loss_ax, metric_ax):
        _phase_marks(ax, metrics, labels, annotate=True)
        _epoch_axis(ax, metrics)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    return fig


def _floats(values: Sequence[Any]) -> list[float]:
    return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]


def learning_rates(metrics: Sequence[dict[str, Any]], phases: Sequence[PhasePlan],
                   labels: dict[int, str]) -> Figure:
    """Each group's learning rate at the end of each epoch; dotted where the group is frozen
    (its rate then applies only once it unfreezes)."""
    groups = list(metrics[0].get("lr", {}))
    trainable: dict[int | None, dict[str, bool]] = {p.index: p.trainable for p in phases}
    fig = figure(10, 4.2)
    ax = fig.subplots()
    cmap = colormaps["viridis"]
    epochs = [r["epoch"] for r in metrics]
    for i, g in enumerate(groups):
        colour = HEAD if g == "head" else cmap(0.1 + 0.75 * i / max(1, len(groups) - 1))
        values = _floats([r.get("lr", {}).get(g) for r in metrics])
        on = [v if trainable.get(r.get("phase"), {}).get(g, True) else math.nan
              for v, r in zip(values, metrics)]
        ax.plot(epochs, values, linestyle=":", color=colour, alpha=0.5, linewidth=1)
        ax.plot(epochs, on, marker="o", color=colour, label=g, linewidth=2 if g == "head" else 1.5)
    if any(v > 0 for r in metrics for v in r.get("lr", {}).values()):
        ax.set_yscale("log")
    ax.set_ylabel("learning rate", fontsize=9)
    ax.set_title("learning rate of each group (dotted: frozen)", fontsize=10)
    _phase_marks(ax, metrics, labels, annotate=False)
    _epoch_axis(ax, metrics)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=7.5, loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)  # the head on top, as in the stack
    return fig


# ---------------------------------------------------------------- evaluation


def confusion(matrix: Sequence[Sequence[int]], names: Sequence[str]) -> Figure:
    """Rows: the true class; colour: the share of that class predicted as each column."""
    k = len(names)
    side = min(10, max(3.4, 0.34 * k + 2.6))
    fig = figure(side + 1, side)
    ax = fig.subplots()
    norm = [[c / max(1, sum(row)) for c in row] for row in matrix]
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the true class")
    if k <= 25:
        for i, row in enumerate(matrix):
            for j, c in enumerate(row):
                ax.text(j, i, str(c), ha="center", va="center", fontsize=8,
                        color="white" if norm[i][j] > 0.55 else INK)
    short = [n if len(n) <= 14 else n[:13] + "…" for n in names]
    ax.set_xticks(range(k), short, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center",
                  fontsize=8)
    ax.set_yticks(range(k), short, fontsize=8)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    return fig


def reliability(calibration: dict[str, Any]) -> Figure:
    """Accuracy against confidence per bin, before and after temperature scaling."""
    fig = figure(10, 4.2)
    axes = fig.subplots(1, 2, sharey=True)
    t = calibration.get("temperature")
    for ax, when in zip(axes, ("before", "after")):
        diagram = calibration.get(f"reliability_{when}") or {}
        _reliability_panel(ax, diagram)
        ece = calibration.get(f"ece_{when}")
        title = f"{when} temperature scaling" + (f" (T = {t:.3g})" if when == "after" and t
                                                 else "")
        ax.set_title(title + (f"\nECE {ece:.4f}" if ece is not None else ""), fontsize=10)
    axes[0].set_ylabel("accuracy", fontsize=9)
    return fig


def _reliability_panel(ax: Axes, d: dict[str, Any]) -> None:
    edges = d.get("edges") or [0.0, 1.0]
    acc, conf, count = d.get("accuracy") or [], d.get("confidence") or [], d.get("count") or []
    lefts, widths = edges[:-1], [b - a for a, b in zip(edges, edges[1:])]
    ax.plot([0, 1], [0, 1], linestyle="--", color=MUTED, label="perfectly calibrated")
    bars = [(x, w, a, c) for x, w, a, c in zip(lefts, widths, acc, conf) if a is not None]
    if bars:
        ax.bar([b[0] for b in bars], [b[2] for b in bars], width=[b[1] for b in bars],
               align="edge", color="#3b6fb6", edgecolor="white", label="accuracy")
        ax.hlines([b[3] for b in bars], [b[0] for b in bars], [b[0] + b[1] for b in bars],
                  colors="#d9534f", linewidth=2.5, label="mean confidence")
    total = sum(count) or 1
    for x, w, c in zip(lefts, widths, count):
        if c:
            ax.text(x + w / 2, 0.02, f"{100 * c / total:.0f}%", ha="center", fontsize=6.5,
                    color="white" if c / total > 0.02 else INK, rotation=90, va="bottom")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7.5, loc="upper left")
    ax.grid(alpha=0.3)


def cka_bars(cka: dict[str, float]) -> Figure:
    """Linear CKA between each group's pretrained and adapted representation: 1 = unchanged."""
    names = list(cka)
    fig = figure(8, 0.8 + 0.38 * len(names))
    ax = fig.subplots()
    values = [float(cka[n]) for n in names]
    ax.barh(range(len(names)), values, color=[TRAINABLE if v < 0.9 else FROZEN for v in values],
            edgecolor=EDGE, linewidth=0.6)
    for i, v in enumerate(values):
        ax.text(min(v, 1.0) + 0.01, i, f"{v:.3f}", va="center", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("linear CKA, pretrained vs adapted (1 = unchanged)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return fig


# ---------------------------------------------------------------- compare and rank


def leaderboard(rows: Sequence[dict[str, Any]]) -> Figure:
    """Test accuracy with its 95% interval per strategy, and the margin over scratch."""
    names = [_row_name(r) for r in rows][::-1]
    fig = figure(10, 1.2 + 0.45 * len(rows))
    acc_ax, margin_ax = fig.subplots(1, 2, sharey=True)
    ys = range(len(rows))
    for y, r in zip(ys, rows[::-1]):
        colour = VERDICT_COLOURS.get(r.get("verdict", ""), EDGE)
        acc_ax.errorbar(r["test_accuracy"], y, xerr=[[r["test_accuracy"] - r["low"]],
                                                     [r["high"] - r["test_accuracy"]]],
                        fmt="o", color=colour, capsize=4)
        if r.get("margin") is not None:
            m = 100 * r["margin"]
            margin_ax.errorbar(m, y, xerr=[[m - 100 * r["margin_low"]],
                                           [100 * r["margin_high"] - m]],
                               fmt="o", color=colour, capsize=4)
    acc_ax.set_yticks(list(ys), names, fontsize=8.5)
    acc_ax.set_ylim(-0.6, len(rows) - 0.4)
    acc_ax.set_title("test accuracy, 95% interval", fontsize=10)
    margin_ax.axvline(0, color=MUTED, linestyle="--")
    margin_ax.set_title("margin over scratch, points (95% interval)", fontsize=10)
    for ax in (acc_ax, margin_ax):
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(labelsize=8)
    return fig


def _row_name(r: dict[str, Any]) -> str:
    name = r.get("row") or r["strategy"]
    return name + ("  (advised)" if r.get("advised") else "")


def rank_scores(result: dict[str, Any]) -> Figure:
    """LogME per candidate, and against the linear probe's accuracy where it ran."""
    rows = result["candidates"]
    probed = [r for r in rows if r.get("probe_accuracy") is not None]
    fig = figure(10, 1.4 + 0.45 * len(rows))
    axes = fig.subplots(1, 2) if probed else [fig.subplots()]
    ax = axes[0]
    names = [r["candidate"] for r in rows][::-1]
    ax.barh(range(len(rows)), [r["logme"] for r in rows][::-1],
            color=[HEAD if r["rank"] == 1 else FROZEN for r in rows][::-1], edgecolor=EDGE)
    ax.set_yticks(range(len(rows)), names, fontsize=8.5)
    ax.set_xlabel("LogME (higher: more transferable)", fontsize=9)
    ax.axvline(0, color=MUTED, linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(nbins=5))
        a.tick_params(labelsize=8)
    if probed:
        sc = axes[1]
        sc.scatter([r["logme"] for r in probed], [r["probe_accuracy"] for r in probed],
                   color=TRAINABLE, edgecolor=EDGE, zorder=3)
        for r in probed:
            sc.annotate(r["candidate"], (r["logme"], r["probe_accuracy"]), fontsize=7.5,
                        xytext=(4, 4), textcoords="offset points")
        tau = result.get("kendall_tau_logme_vs_probe")
        sc.set_title("LogME against linear-probe accuracy"
                     + (f" (Kendall's tau {tau:.2f})" if tau is not None else ""), fontsize=10)
        sc.set_xlabel("LogME", fontsize=9)
        sc.set_ylabel("probe accuracy (validation)", fontsize=9)
        sc.grid(alpha=0.3)
    return fig
