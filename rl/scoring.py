"""Scoring rollouts with the run's combined reward: one path for training steps, evaluation and `rl-eval`."""

from __future__ import annotations

from rewards import CombineConfig, RewardInput, RewardRunner, score_combined
from rollouts.types import RolloutResult

Scored = tuple[RolloutResult, list, list]
"""(result, one total per sample (None = unscored), one {part: score} per sample)."""


def score_results(results: list[RolloutResult], runner: RewardRunner, combine: CombineConfig,
                  default_reward: str) -> list[Scored]:
    """Every sample of every result scored; the samples of one result form one group (z-normalised parts)."""
    inputs, owners = [], []
    for k, result in enumerate(results):
        meta = result.request.meta
        for s in result.samples:
            inputs.append(RewardInput.make(s.text, meta.get("answer"), s.mode, dict(
                meta.get("reward_meta", {}), verifier=meta.get("reward", default_reward),
                completion_tokens=len(s.completion_token_ids))))
            owners.append(k)
    combined = score_combined(inputs, owners, combine, runner) if inputs else None
    out = []
    for k, result in enumerate(results):
        idx = [i for i, o in enumerate(owners) if o == k]
        totals = [combined.total[i].score for i in idx]
        parts = [{name: outs[i].score for name, outs in combined.parts.items()} for i in idx]
        out.append((result, totals, parts))
    return out


def metric_rows(scored: list[Scored]) -> list[dict]:
    """One row per sample for `rl.metrics.mode_metrics`: mode, reward, parts, tokens, truncated."""
    return [{"mode": s.mode, "reward": total, "parts": part, "tokens": len(s.completion_token_ids),
             "truncated": s.truncated}
            for result, totals, parts in scored for s, total, part in zip(result.samples, totals, parts)]
