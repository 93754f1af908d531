"""Several runs (arms) side by side: each arm is an `rl-eval` output folder, the table and the plot put every
mode of every arm on the same axes (accuracy against tokens spent, how often auto mode thinks).

    rl-eval --compare short_only=runs/a/eval long_only=runs/b/eval hybrid=runs/c/eval --out runs/compare

Arms are compared on the rows they were evaluated on; arms evaluated on different rows are an error (a comparison
across different questions says nothing), unless told otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import plots

COLUMNS = ("samples", "accuracy", "reward_mean", "tokens_mean", "tokens_p90", "truncation_rate", "think_rate")
"""What the comparison keeps of each arm's per-mode summary (`rl.evaluation.summary.summarize_mode`)."""


def read_arm(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no summary.json (an rl-eval --out folder is expected)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None


def compare(arms: dict[str, str | Path], out: str | Path, same_rows: bool = True) -> dict:
    """Write out/comparison.json (per arm and mode: `COLUMNS`, of the arm's last checkpoint; each arm's data) and
    out/comparison.png; return what was written. same_rows: refuse arms evaluated on different rows."""
    if not arms:
        raise ValueError("no arms to compare: give NAME=FOLDER pairs")
    summaries = {name: read_arm(folder) for name, folder in arms.items()}
    data = {name: s.get("data", {}) for name, s in summaries.items()}
    seen = {(d.get("path"), d.get("rows"), d.get("used")) for d in data.values()}
    if same_rows and len(seen) > 1:
        said = "; ".join(f"{name}: {d.get('used') or d.get('path')}" for name, d in data.items())
        raise ValueError(f"the arms were evaluated on different rows ({said}): evaluate each with the same --data "
                         "(or compare anyway with --different-rows)")
    table = {name: {mode: {c: values.get(c) for c in COLUMNS} for mode, values in s["modes"].items()}
             for name, s in summaries.items()}
    budgets = {name: {m: v.get("max_new_tokens") for m, v in s.get("settings", {}).get("sampling", {}).items()}
               for name, s in summaries.items()}
    result = {"arms": table, "data": data, "budgets": budgets}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps(result, indent=2) + "\n")
    points = [{"arm": name, "mode": mode, **values} for name, modes in table.items() for mode, values in modes.items()]
    metric = "accuracy" if any(p["accuracy"] is not None for p in points) else "reward_mean"
    plots.arms(points, out / "comparison.png", metric)
    return result


def format_table(result: dict) -> str:
    """The comparison as a fixed-width table, one line per arm and mode."""
    lines = [f"{'arm':<16}{'mode':<7}" + "".join(f"{c:>16}" for c in COLUMNS)]
    for name, modes in result["arms"].items():
        for mode, values in modes.items():
            cells = "".join(f"{'-' if values[c] is None else format(values[c], '.3g'):>16}" for c in COLUMNS)
            lines.append(f"{name:<16}{mode:<7}{cells}")
    return "\n".join(lines)
