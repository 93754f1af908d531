"""The evaluation's figures (PNG): both modes in one figure, labelled axes.

Figures are made as `matplotlib.figure.Figure` objects and saved, not through pyplot: importing this module leaves
the process's backend alone (a notebook that imports it still shows its own plots), and no GUI is needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

MODE_COLORS = {"short": "tab:blue", "long": "tab:orange", "auto": "tab:green"}


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def mode_label(mode: str, budget: int | None = None, samples: int | None = None,
               truncation: float | None = None) -> str:
    """`long mode (budget 8192, n=16, 12% truncated)`: what a reader needs to weigh a mode's point."""
    facts = [f"budget {budget}" if budget else "", f"n={samples}" if samples is not None else "",
             f"{truncation:.0%} truncated" if truncation is not None else ""]
    facts = [f for f in facts if f]
    return f"{mode} mode" + (f" ({', '.join(facts)})" if facts else "")


def _budget_lines(ax, budgets: dict[str, int], shown: set[str], x_max: float) -> None:
    """A dashed vertical line at each shown mode's token budget that falls within 1.5x the data's range (a far one
    would flatten the points; the legend names every budget)."""
    for mode, budget in budgets.items():
        if mode in shown and budget and budget <= 1.5 * x_max:
            ax.axvline(budget, color=MODE_COLORS.get(mode), linestyle="--", linewidth=1, alpha=0.7)


def accuracy_vs_tokens(points: list[dict], out: Path, metric: str = "accuracy",
                       budgets: dict[str, int] | None = None) -> Path:
    """points: {label, mode, tokens_mean, <metric>, samples?, truncation_rate?}; one line per mode through its
    checkpoints, each point labelled; the legend gives each mode's token budget (`budgets`: mode -> max_new_tokens),
    sample count and truncation rate (of its last point), and budgets within range are drawn as dashed lines."""
    budgets = budgets or {}
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    shown, x_max = set(), 0.0
    for mode in dict.fromkeys(p["mode"] for p in points):
        sel = [p for p in points if p["mode"] == mode and p.get(metric) is not None and p["tokens_mean"] is not None]
        if not sel:
            continue
        xs, ys = [p["tokens_mean"] for p in sel], [p[metric] for p in sel]
        shown.add(mode)
        x_max = max(x_max, *xs)
        label = mode_label(mode, budgets.get(mode), sel[-1].get("samples"), sel[-1].get("truncation_rate"))
        ax.plot(xs, ys, "o-", color=MODE_COLORS.get(mode), label=label)
        for p, x, y in zip([sel[0], sel[-1]] if len(sel) > 1 else sel, [xs[0], xs[-1]], [ys[0], ys[-1]]):
            ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    _budget_lines(ax, budgets, shown, x_max)
    _against_tokens(ax, metric, "per mode")
    ax.legend()
    return _save(fig, out)


def _against_tokens(ax, metric: str, what: str) -> None:
    """The axes of a plot of `metric` against mean completion tokens (a share is shown on [0, 1])."""
    if metric != "reward_mean":
        ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("mean completion tokens")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{metric.replace('_', ' ').capitalize()} against tokens spent, {what}")
    ax.grid(alpha=0.3)


def length_histograms(tokens: dict[str, list[int]], out: Path, title: str = "",
                      budgets: dict[str, int] | None = None) -> Path:
    """tokens: mode -> completion lengths; side-by-side bars per shared bin (no mode hides another); the legend gives
    each mode's sample count, budget (`budgets`: mode -> max_new_tokens) and the share at the budget (truncated),
    and budgets within range are dashed lines."""
    budgets = budgets or {}
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    shown = {mode: ts for mode, ts in tokens.items() if ts}
    values = [t for ts in shown.values() for t in ts]
    edges = np.histogram_bin_edges(values or [0], bins=max(5, min(30, len(set(values)))))
    if shown:
        labels = [mode_label(m, budgets.get(m), len(ts),
                             sum(t >= budgets[m] for t in ts) / len(ts) if budgets.get(m) else None)
                  for m, ts in shown.items()]
        ax.hist(list(shown.values()), bins=edges, color=[MODE_COLORS.get(m) for m in shown], label=labels)
        _budget_lines(ax, budgets, set(shown), max(values))
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.set_title(title or "Completion length per mode")
    ax.legend()
    return _save(fig, out)


def curves_over_steps(points: list[dict], out: Path, metrics: tuple[str, ...] = ("accuracy", "tokens_mean")) -> Path:
    """points: {step, mode, <metrics>}; one panel per metric, one line per mode."""
    fig = Figure(figsize=(5 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for mode in dict.fromkeys(p["mode"] for p in points):
            sel = sorted((p["step"], p[metric]) for p in points
                         if p["mode"] == mode and p.get(metric) is not None and p.get("step") is not None)
            if sel:
                ax.plot(*zip(*sel), "o-", color=MODE_COLORS.get(mode), label=f"{mode} mode")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Per-mode evaluation over training")
    return _save(fig, out)


ARM_MARKERS = "osD^vP*X"


def arms(points: list[dict], out: Path, metric: str = "accuracy") -> Path:
    """points: {arm, mode, tokens_mean, <metric>, think_rate?}; one marker per arm, one colour per mode, each point
    labelled with its arm (and auto mode's think rate)."""
    fig = Figure(figsize=(7.2, 4.8))
    ax = fig.subplots()
    names = list(dict.fromkeys(p["arm"] for p in points))
    for p in points:
        if p.get(metric) is None or p.get("tokens_mean") is None:
            continue
        marker = ARM_MARKERS[names.index(p["arm"]) % len(ARM_MARKERS)]
        ax.scatter(p["tokens_mean"], p[metric], s=80, marker=marker, color=MODE_COLORS.get(p["mode"]))
        label = p["arm"] + (f" (thinks {p['think_rate']:.0%})" if p["mode"] == "auto" and
                            p.get("think_rate") is not None else "")
        ax.annotate(label, (p["tokens_mean"], p[metric]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    handles = [ax.scatter([], [], marker="o", color=MODE_COLORS[m], label=f"{m} mode")
               for m in MODE_COLORS if any(p["mode"] == m for p in points)]
    handles += [ax.scatter([], [], marker=ARM_MARKERS[i % len(ARM_MARKERS)], color="gray", label=name)
                for i, name in enumerate(names)]
    ax.legend(handles=handles, fontsize=8)
    _against_tokens(ax, metric, "arms and modes")
    return _save(fig, out)
