"""The evaluation's figures (PNG, matplotlib's Agg backend): both modes in one figure, labelled axes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MODE_COLORS = {"short": "tab:blue", "long": "tab:orange", "auto": "tab:green"}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def accuracy_vs_tokens(points: list[dict], out: Path, metric: str = "accuracy") -> Path:
    """points: {label, mode, tokens_mean, <metric>}; one line per mode through its checkpoints, each point labelled."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for mode in dict.fromkeys(p["mode"] for p in points):
        sel = [p for p in points if p["mode"] == mode and p.get(metric) is not None and p["tokens_mean"] is not None]
        if not sel:
            continue
        xs, ys = [p["tokens_mean"] for p in sel], [p[metric] for p in sel]
        ax.plot(xs, ys, "o-", color=MODE_COLORS.get(mode), label=f"{mode} mode")
        for p, x, y in zip([sel[0], sel[-1]] if len(sel) > 1 else sel, [xs[0], xs[-1]], [ys[0], ys[-1]]):
            ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    if metric != "reward_mean":
        ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("mean completion tokens")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"{metric.replace('_', ' ').capitalize()} against tokens spent, per mode")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, out)


def length_histograms(tokens: dict[str, list[int]], out: Path, title: str = "") -> Path:
    """tokens: mode -> completion lengths; side-by-side bars per shared bin (no mode hides another)."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    shown = {mode: ts for mode, ts in tokens.items() if ts}
    values = [t for ts in shown.values() for t in ts]
    edges = np.histogram_bin_edges(values or [0], bins=max(5, min(30, len(set(values)))))
    if shown:
        ax.hist(list(shown.values()), bins=edges, color=[MODE_COLORS.get(m) for m in shown],
                label=[f"{m} mode (n={len(ts)})" for m, ts in shown.items()])
    ax.set_xlabel("completion tokens")
    ax.set_ylabel("samples")
    ax.set_title(title or "Completion length per mode")
    ax.legend()
    return _save(fig, out)


def curves_over_steps(points: list[dict], out: Path, metrics: tuple[str, ...] = ("accuracy", "tokens_mean")) -> Path:
    """points: {step, mode, <metrics>}; one panel per metric, one line per mode."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
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
