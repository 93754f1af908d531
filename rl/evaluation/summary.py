"""Per-mode summaries of evaluation records, and their flat `eval/...` form for metrics.jsonl."""

from __future__ import annotations

import numpy as np

from ..metrics import mean


def summarize_mode(records: list[dict]) -> dict:
    """accuracy (share of samples whose `acc` part is 1; None without an acc part), reward mean, completion tokens
    (mean, p50, p90), truncation rate, compliance rate (the mode's think-block rule), think rate, counts."""
    tokens = [r["tokens"] for r in records if r["error"] is None]
    ok = [r for r in records if r["error"] is None]
    return {
        "samples": len(records),
        "rows": len({r["row_id"] for r in records}),
        "failed": sum(r["error"] is not None for r in records),
        "unscored": sum(r["error"] is None and r["reward"] is None for r in records),
        "accuracy": mean(r["correct"] for r in ok),
        "reward_mean": mean(r["reward"] for r in ok),
        "tokens_mean": mean(tokens),
        "tokens_p50": float(np.percentile(tokens, 50)) if tokens else None,
        "tokens_p90": float(np.percentile(tokens, 90)) if tokens else None,
        "truncation_rate": mean(float(r["truncated"]) for r in ok),
        "compliance_rate": mean(float(r["compliant"]) for r in ok),
        "think_rate": mean(float(r["thinks"]) for r in ok),
    }


def summarize(records: list[dict], modes: list[str]) -> dict[str, dict]:
    """mode -> summarize_mode over that mode's records (modes in the given order)."""
    return {mode: summarize_mode([r for r in records if r["mode"] == mode]) for mode in modes}


# summary key -> metrics.jsonl key (MODE filled in): the names of the training metrics, under eval/.
FLAT_KEYS = {"reward_mean": "reward/{mode}/mean", "accuracy": "accuracy/{mode}", "tokens_mean": "tokens/{mode}/mean",
             "tokens_p50": "tokens/{mode}/p50", "tokens_p90": "tokens/{mode}/p90",
             "truncation_rate": "truncation/{mode}", "compliance_rate": "compliance/{mode}",
             "think_rate": "think_rate/{mode}"}


def flat_metrics(summary: dict[str, dict], prefix: str = "eval/") -> dict[str, float]:
    """`{"short": {"accuracy": 0.5}}` -> `{"eval/accuracy/short": 0.5}` (None values left out)."""
    return {prefix + key.format(mode=mode): values[name]
            for mode, values in summary.items() for name, key in FLAT_KEYS.items() if values.get(name) is not None}
